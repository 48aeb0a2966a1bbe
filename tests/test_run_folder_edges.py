"""Awkward run folders: repeated steps, steps beyond int64, broken links, an empty folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from tbweights.checkpoints.runs import step_from_file_name
from tbweights.cli import main


def save(path: Path, value: float, mtime: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"fc1.weight": np.full((2, 3), value, dtype=np.float32)}, str(path))
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def test_repeated_step_keeps_newest_and_real_steps(tmp_path: Path, read_run, capsys) -> None:
    """Lightning's `-v1` copy of a step must not renumber the run by position."""
    run, logdir = tmp_path / "checkpoints", tmp_path / "logs"
    save(run / "epoch=0-step=4.safetensors", 4.0, mtime=1_000)
    save(run / "epoch=0-step=8-v1.safetensors", 8.5, mtime=3_000)
    save(run / "epoch=0-step=8.safetensors", 8.0, mtime=2_000)
    assert main(["convert", str(run), "--logdir", str(logdir)]) == 0
    err = capsys.readouterr().err
    assert f"{run / 'epoch=0-step=8.safetensors'}: step 8 again; epoch=0-step=8-v1.safetensors" in err
    reader = read_run(logdir)
    assert reader.steps("fc1/weight") == [4, 8]
    assert reader.value("fc1/weight", 8)[0, 0] == 8.5

    save(run / "epoch=1-step=12.safetensors", 12.0, mtime=4_000)
    assert main(["convert", str(run), "--logdir", str(logdir)]) == 0
    assert read_run(logdir).steps("fc1/weight") == [4, 8, 12]


def test_step_beyond_int64_is_named(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    save(run / "ckpt-5.safetensors", 5.0)
    save(run / "ckpt-99999999999999999999.safetensors", 1.0)
    assert main(["convert", str(run), "--logdir", str(tmp_path / "logs")]) == 0
    err = capsys.readouterr().err
    assert "step number 99999999999999999999 is beyond TensorBoard's largest step" in err


def test_broken_link_is_reported(tmp_path: Path, read_run, capsys) -> None:
    run = tmp_path / "run"
    save(run / "ckpt-5.safetensors", 5.0)
    (run / "ckpt-9.safetensors").symlink_to(tmp_path / "gone.safetensors")
    assert main(["convert", str(run), "--logdir", str(tmp_path / "logs")]) == 0
    err = capsys.readouterr().err
    assert f"{run / 'ckpt-9.safetensors'}: broken symbolic link to {tmp_path / 'gone.safetensors'}" in err
    assert read_run(tmp_path / "logs").steps("fc1/weight") == [5]


def test_empty_folder_says_so(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["convert", str(tmp_path / "empty"), "--logdir", str(tmp_path / "logs")]) == 1
    err = capsys.readouterr().err
    expected = "the folder is empty; pass a checkpoint file or a folder that contains one"
    assert err.strip() == f"error: {tmp_path / 'empty'}: {expected}"


def test_rerun_does_not_claim_every_step(tmp_path: Path, capsys) -> None:
    """A checkpoint below the last logged step is left out, so the logdir does not hold every step."""
    run, logdir = tmp_path / "run", tmp_path / "logs"
    save(run / "ckpt-3.safetensors", 3.0)
    assert main(["convert", str(run), "--logdir", str(logdir)]) == 0
    save(run / "ckpt-1.safetensors", 1.0)
    capsys.readouterr()
    assert main(["convert", str(run), "--logdir", str(logdir)]) == 0
    out = capsys.readouterr().out
    assert "already contains every step" not in out
    assert f"nothing new to write to {logdir}; 1 checkpoint(s) left out, see above" in out


def test_onnx_run_folder(tmp_path: Path, read_run) -> None:
    """`model_00010.onnx` files are steps like any other weight file, external data included."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    run = tmp_path / "run"
    run.mkdir()
    for step in (2, 10):
        weight = numpy_helper.from_array(np.full((2, 3), float(step), np.float32), "fc1.weight")
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "fc1.weight"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
            [weight],
        )
        path = run / f"model_{step:05d}.onnx"
        onnx.save_model(
            helper.make_model(graph),
            str(path),
            save_as_external_data=step == 10,
            location=f"{path.name}.data",
            size_threshold=0,
        )
    assert (run / "model_00010.onnx.data").is_file()
    assert main(["convert", str(run), "--logdir", str(tmp_path / "logs")]) == 0
    reader = read_run(tmp_path / "logs")
    assert reader.steps("fc1/weight") == [2, 10]
    assert reader.value("fc1/weight", 10)[0, 0] == 10.0


def test_checkpoint_folder_without_model_is_reported(tmp_path: Path, read_run, capsys) -> None:
    """A Trainer `checkpoint-N/` that is still being saved contains no model file yet, so convert must warn."""
    run = tmp_path / "output"
    save(run / "checkpoint-100" / "model.safetensors", 100.0)
    (run / "checkpoint-200").mkdir()
    save_file({"state.0.exp_avg": np.ones(3, np.float32)}, str(run / "checkpoint-200" / "optimizer.safetensors"))
    (run / "logs_7").mkdir()  # a numbered folder that is no checkpoint folder: not reported
    assert main(["convert", str(run), "--logdir", str(tmp_path / "logs")]) == 0
    err = capsys.readouterr().err
    assert f"{run / 'checkpoint-200'}: no model file in this checkpoint folder; left out of the run" in err
    assert "logs_7" not in err
    assert read_run(tmp_path / "logs").steps("fc1/weight") == [100]


def _save_gguf(path: Path, value: float) -> None:
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("fc1.weight", np.full((2, 3), value, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _save_flax_msgpack(path: Path, value: float) -> None:
    serialization = pytest.importorskip("flax.serialization")
    path.write_bytes(serialization.to_bytes({"fc1": {"weight": np.full((2, 3), value, np.float32)}}))


@pytest.mark.parametrize(("suffix", "save_one"), [(".gguf", _save_gguf), (".msgpack", _save_flax_msgpack)])
def test_run_folder_of_other_formats(tmp_path: Path, read_run, suffix: str, save_one) -> None:
    """Each weight-file format that `convert` reads also works as the steps of a run folder."""
    run = tmp_path / "run"
    run.mkdir()
    for step in (2, 10):
        save_one(run / f"model_{step:05d}{suffix}", float(step))
    assert main(["convert", str(run), "--logdir", str(tmp_path / "logs")]) == 0
    reader = read_run(tmp_path / "logs")
    assert reader.steps("fc1/weight") == [2, 10]
    assert reader.value("fc1/weight", 10)[0, 0] == 10.0


@pytest.mark.parametrize(
    ("name", "step"),
    [
        ("val_loss=0.50-step=100.ckpt", 100),
        ("epoch=2-step=300-val_loss=0.123.ckpt", 300),
        ("model.ckpt-100", 100),
        ("ckpt-1000.pt", 1000),
        ("model-v1.2.pt", None),
        ("last.ckpt", None),
        ("model-00001-of-00002.safetensors", None),
    ],
)
def test_step_from_file_name(name: str, step: int | None) -> None:
    assert step_from_file_name(name) == step


def test_metric_before_step_in_file_name(tmp_path: Path, read_run) -> None:
    """Lightning's `filename="{val_loss:.2f}-{step}"` puts a dot before the step."""
    run = tmp_path / "run"
    save(run / "val_loss=0.90-step=100.safetensors", 100.0)
    save(run / "val_loss=0.50-step=200.safetensors", 200.0)
    assert main(["convert", str(run), "--logdir", str(tmp_path / "logs")]) == 0
    reader = read_run(tmp_path / "logs")
    assert reader.steps("fc1/weight") == [100, 200]
    assert reader.value("fc1/weight", 200)[0, 0] == 200.0
