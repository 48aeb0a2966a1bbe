"""Training-run folders: each checkpoint becomes one step, in step order, and converting again appends."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.compat.proto import event_pb2

from tbweights.checkpoints import LoadOptions, read_checkpoint
from tbweights.checkpoints.runs import scan_run_folder, step_from_name
from tbweights.cli import main
from tbweights.convert import convert, find_checkpoints
from tbweights.errors import CheckpointError
from tbweights.event_steps import logged_steps
from tbweights.summaries import fmt_first, fmt_shape

OVERVIEW = "tbweights/overview"


def weights(step: int) -> dict[str, np.ndarray]:
    """Tensors whose values tell the step they were saved at."""
    return {
        "fc1.weight": np.arange(12, dtype=np.float32).reshape(3, 4) + step,
        "fc1.bias": np.full(3, -step, dtype=np.float32),
    }


def save_steps(folder: Path, name: str, steps: list[int]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for step in steps:
        path = folder / name.format(step=step)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(weights(step), str(path))
        paths.append(path)
    return paths


@pytest.mark.parametrize(
    ("name", "step"),
    [
        ("epoch=3-step=1200", 1200),
        ("epoch=3", 3),
        ("checkpoint-500", 500),
        ("ckpt-1000", 1000),
        ("model_00010", 10),
        ("epoch=0-step=100-v1", 100),
        ("last", None),
        ("model-00001-of-00002", None),
    ],
)
def test_step_from_name(name: str, step: int | None) -> None:
    assert step_from_name(name) == step


def test_find_checkpoints_numeric_order(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_steps(run, "model_{step}.safetensors", [100, 2, 10])
    others = {"trainer_state.json": "{}", "hparams.yaml": "lr: 0.1\n", "train.log": "loss 1.0\n"}
    for name, text in others.items():
        (run / name).write_text(text)
    save_file({"exp_avg": np.ones(3, np.float32)}, str(run / "optimizer_20.safetensors"))
    (run / "logs_7").mkdir()  # a step-numbered folder that is no checkpoint
    found = find_checkpoints(run)
    assert [Path(p).name for p in found] == ["model_2.safetensors", "model_10.safetensors", "model_100.safetensors"]


def test_find_checkpoints_rejects_plain_folder(tmp_path: Path) -> None:
    save_file(weights(0), str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="not a folder of training checkpoints"):
        find_checkpoints(tmp_path)


def test_cli_converts_run_in_step_order(tmp_path: Path, read_run, capsys) -> None:
    run = tmp_path / "run"
    save_steps(run, "model_{step}.safetensors", [100, 2, 10])
    logdir = tmp_path / "logs"
    assert main(["convert", str(run), "--logdir", str(logdir)]) == 0
    out = capsys.readouterr().out
    assert out.index("step 2:") < out.index("step 10:") < out.index("step 100:")
    reader = read_run(logdir)
    assert reader.steps("fc1/weight") == [2, 10, 100]
    assert reader.steps(OVERVIEW) == [2, 10, 100]
    for step in (2, 10, 100):
        histogram = reader.value("fc1/weight", step)
        assert histogram[:, 2].sum() == 12
        assert histogram[0, 0] == step  # the minimum of arange(12) + step
        text = reader.text("fc1/weight/stats", step)
        assert "(3, 4)" in text
        assert f"{step}, {step + 1}, {step + 2}" in text


def test_trainer_output_folder(tmp_path: Path, read_run, capsys) -> None:
    """checkpoint-N/ subfolders are the steps; the final model beside them has no step."""
    run = tmp_path / "output"
    for step in (1000, 500):
        folder = run / f"checkpoint-{step}"
        save_steps(folder, "model.safetensors", [step])
        save_file({"state.0.exp_avg": np.ones(3, np.float32)}, str(folder / "optimizer.safetensors"))
        (folder / "trainer_state.json").write_text('{"global_step": %d}' % step)
    save_file(weights(2000), str(run / "model.safetensors"))
    save_steps(run / "best", "model.safetensors", [700])
    (run / "runs").mkdir()  # the Trainer's own TensorBoard logs
    (run / "runs" / "events.out.tfevents.1.host.1.0").write_bytes(b"")
    assert main(["convert", str(run), "--logdir", str(tmp_path / "logs")]) == 0
    err = capsys.readouterr().err
    assert f"{run / 'model.safetensors'}: no step number in its name; left out of the run" in err
    assert f"{run / 'best'}: no step number in its name; left out of the run" in err
    assert "runs" not in err.replace(str(run), "")
    reader = read_run(tmp_path / "logs")
    assert reader.steps("fc1/bias") == [500, 1000]
    assert reader.value("fc1/bias", 1000)[0, 0] == -1000
    assert not any("exp_avg" in tag for tag in reader.tags)


def test_single_checkpoint_folder_stays_one(tmp_path: Path, read_run) -> None:
    folder = tmp_path / "output" / "checkpoint-500"
    save_steps(folder, "model.safetensors", [500])
    save_file({"state.0.exp_avg": np.ones(3, np.float32)}, str(folder / "optimizer.safetensors"))
    assert scan_run_folder(folder) is None
    assert main(["convert", str(folder), "--logdir", str(tmp_path / "logs")]) == 0
    assert read_run(tmp_path / "logs").steps("fc1/weight") == [500]
    assert main(["show", str(folder)]) == 0


def test_folder_with_one_stepped_file(tmp_path: Path, read_run) -> None:
    """The first conversion of a run that has saved one checkpoint gets that checkpoint's step."""
    save_steps(tmp_path / "run", "epoch=0-step=50.safetensors", [50])
    assert main(["convert", str(tmp_path / "run"), "--logdir", str(tmp_path / "logs")]) == 0
    assert read_run(tmp_path / "logs").steps("fc1/weight") == [50]
    assert main(["show", str(tmp_path / "run")]) == 0


def test_show_run_folder_names_checkpoints(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    for step in range(1, 9):
        save_steps(run / f"checkpoint-{step * 100}", "model.safetensors", [step])
    assert main(["show", str(run)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "contains 8 checkpoint(s) of a training run" in err
    shown = "checkpoint-100, checkpoint-200, checkpoint-300, ..., checkpoint-600, checkpoint-700, checkpoint-800"
    assert f"({shown})" in err
    assert "pass one of them" in err
    assert f"tbweights convert {run} --logdir DIR" in err
    with pytest.raises(CheckpointError, match="pass one of them"):
        list(read_checkpoint(run))


def test_append_writes_only_new_steps(tmp_path: Path, read_run, capsys) -> None:
    run = tmp_path / "run"
    logdir = tmp_path / "logs"
    save_steps(run, "ckpt-{step}.safetensors", [500, 1000])
    assert main(["convert", str(run), "--logdir", str(logdir)]) == 0
    capsys.readouterr()

    save_steps(run, "ckpt-{step}.safetensors", [1500, 2000, 750])
    assert main(["convert", str(run), "--logdir", str(logdir)]) == 0
    captured = capsys.readouterr()
    assert f"step 500 already in {logdir}, skipped" in captured.out
    assert f"step 1000 already in {logdir}, skipped" in captured.out
    assert "step 1500: 2 tensors" in captured.out
    assert "step 750 is below step 1000, the last one already in" in captured.err

    assert len([p for p in os.listdir(logdir) if "tfevents" in p]) == 2
    reader = read_run(logdir)
    assert reader.steps("fc1/weight") == [500, 1000, 1500, 2000]
    assert reader.steps(OVERVIEW) == [500, 1000, 1500, 2000]
    assert reader.value("fc1/weight", 2000)[0, 0] == 2000

    assert main(["convert", str(run), "--logdir", str(logdir)]) == 0
    assert "nothing new to write" in capsys.readouterr().out
    assert read_run(logdir).steps(OVERVIEW) == [500, 1000, 1500, 2000]


def test_unfinished_orbax_save_is_left_out(tmp_path: Path) -> None:
    """Orbax writes a step into `<step>.orbax-checkpoint-tmp[-<time>]/` and renames it when done."""
    run = tmp_path / "run"
    save_steps(run, "{step}/model.safetensors", [0, 100])
    save_steps(run, "200.orbax-checkpoint-tmp-1712345678/model.safetensors", [0])
    found = scan_run_folder(run)
    assert found is not None
    assert found.steps == [0, 100]
    assert any("unfinished Orbax save" in note for note in found.left_out)


def test_append_library_report(tmp_path: Path) -> None:
    paths = save_steps(tmp_path / "run", "model_{step}.safetensors", [1, 2])
    first = convert(paths[:1], tmp_path / "logs")
    assert [step for _, step in first.already_logged] == []
    second = convert(paths, tmp_path / "logs")
    assert second.already_logged == [(str(paths[0]), 1)]
    assert [report.step for _, report in second.steps] == [2]


def test_logged_steps_match_tensorboard(tmp_path: Path) -> None:
    paths = save_steps(tmp_path / "run", "model_{step}.safetensors", [3, 30, 7])
    convert(paths, tmp_path / "logs")
    expected = set()
    for name in os.listdir(tmp_path / "logs"):
        loader = event_file_loader.RawEventFileLoader(str(tmp_path / "logs" / name))
        for record in loader.Load():
            event = event_pb2.Event.FromString(record)
            expected.update(event.step for value in event.summary.value if value.tag == OVERVIEW)
    assert expected == {3, 7, 30}
    assert logged_steps(tmp_path / "logs") == expected


def test_logged_steps_stop_at_corrupt_record(tmp_path: Path) -> None:
    paths = save_steps(tmp_path / "run", "model_{step}.safetensors", [3, 30])
    report = convert(paths, tmp_path / "logs")
    assert report.event_file is not None
    data = Path(report.event_file).read_bytes()
    Path(report.event_file).write_bytes(data[:-10])  # the last record, step 30's overview, is cut
    assert logged_steps(tmp_path / "logs") == {3}


def test_torchscript_in_run_folder_needs_trust(tmp_path: Path, read_run, capsys) -> None:
    torch = pytest.importorskip("torch")
    run = tmp_path / "run"
    save_steps(run, "model_{step}.safetensors", [1])
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    module.eval()
    traced = torch.jit.trace(module, torch.randn(2, 3))
    traced.save(str(run / "model_2.pt"))

    assert main(["convert", str(run), "--logdir", str(tmp_path / "logs")]) == 1
    err = capsys.readouterr().err
    assert "model_2.pt: this is a TorchScript archive; loading it runs code from the file" in err
    assert "--trust-checkpoint" in err
    assert read_run(tmp_path / "logs").steps("fc1/weight") == [1]

    assert main(["convert", str(run / "model_2.pt"), "--logdir", str(tmp_path / "logs2"), "--trust-checkpoint"]) == 0
    reader = read_run(tmp_path / "logs2")
    state = module.state_dict()
    assert set(state) == {"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                          "1.num_batches_tracked"}
    for name, tensor in state.items():
        tag = name.replace(".", "/")
        histogram = reader.value(tag, 2)
        assert histogram[:, 2].sum() == tensor.numel()
        text = reader.text(f"{tag}/stats", 2)
        assert f"| shape | {fmt_shape(tensor.shape)} |" in text
        assert f"| count | {tensor.numel()} |" in text
        first = tensor.flatten()[:5].tolist()
        assert f"| first {len(first)} (row-major) | {fmt_first(first)} |" in text


def test_scripted_module_values_match(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 3), torch.nn.BatchNorm1d(3))
    with torch.no_grad():
        module[1].running_mean.uniform_()
    path = tmp_path / "scripted.pt"
    torch.jit.script(module).save(str(path))
    with pytest.raises(CheckpointError, match="TorchScript archive; loading it runs code"):
        list(read_checkpoint(path))

    found = {t.name: t for t in read_checkpoint(path, LoadOptions(trust=True))}
    state = module.state_dict()
    assert sorted(found) == sorted(state)
    for name, tensor in state.items():
        assert found[name].shape == tuple(tensor.shape)
        np.testing.assert_array_equal(np.asarray(found[name].load()).ravel()[:5], tensor.numpy().ravel()[:5])
