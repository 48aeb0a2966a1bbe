"""The `tbweights` command, run as users run it, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file


def tbweights(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tbweights", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def checkpoints(tmp_path):
    paths = []
    for step in (100, 200):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        path = folder / "model.safetensors"
        save_file(
            {"fc1.weight": np.full((3, 4), step / 100, np.float32), "fc1.bias": np.zeros(3, np.float32)},
            str(path),
        )
        paths.append(path)
    return paths


def test_convert_steps_from_folder_names(checkpoints, tmp_path, read_run) -> None:
    result = tbweights("convert", *map(str, checkpoints), "--logdir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "step 100: 2 tensors" in result.stdout
    assert "tensorboard --logdir" in result.stdout
    run = read_run(tmp_path / "run")
    assert run.steps("fc1/weight") == [100, 200]
    assert run.value("fc1/weight", 200)[-1, 0] == 2.0


def test_convert_explicit_step(checkpoints, tmp_path, read_run) -> None:
    result = tbweights("convert", *map(str, checkpoints), "--logdir", str(tmp_path / "run"), "--step", "7")
    assert result.returncode == 0, result.stderr
    assert read_run(tmp_path / "run").steps("fc1/bias") == [7, 8]


def test_convert_options(checkpoints, tmp_path, read_run) -> None:
    args = ["--logdir", str(tmp_path / "run"), "--buckets", "5", "--first", "2", "--exclude", "*.bias"]
    assert tbweights("convert", str(checkpoints[0]), *args).returncode == 0
    run = read_run(tmp_path / "run")
    assert run.value("fc1/weight", 100).shape == (5, 3)
    assert "fc1/bias" not in run.tags
    assert "| first 2 (row-major) | 1, 1 |" in run.text("fc1/weight/stats", 100)


def test_convert_goes_on_after_a_bad_file(checkpoints, tmp_path, read_run) -> None:
    missing = tmp_path / "checkpoint-50.pt"
    result = tbweights("convert", str(missing), *map(str, checkpoints), "--logdir", str(tmp_path / "run"))
    assert result.returncode == 1
    assert f"error: {missing}: no such file or directory" in result.stderr
    assert "1 of 3 checkpoint(s) skipped" in result.stderr
    assert "Traceback" not in result.stderr
    assert read_run(tmp_path / "run").steps("fc1/weight") == [100, 200]


def test_show_prints_a_row_per_tensor(checkpoints) -> None:
    result = tbweights("show", str(checkpoints[0]), "--first", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["name", "shape", "dtype"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert sorted(rows) == ["fc1.bias", "fc1.weight"]
    assert rows["fc1.weight"].split()[1:4] == ["(3,", "4)", "float32"]
    assert rows["fc1.weight"].endswith("1, 1")


def test_known_error_is_one_line(tmp_path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    result = tbweights("show", str(junk))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {junk}: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_debug_shows_traceback(tmp_path) -> None:
    result = tbweights("show", str(tmp_path / "missing.pt"), "--debug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr


def test_usage_error_exits_2() -> None:
    result = tbweights("convert", "x.pt")
    assert result.returncode == 2
    assert "--logdir" in result.stderr


def test_failed_convert_leaves_no_event_file(tmp_path) -> None:
    result = tbweights("convert", str(tmp_path / "missing.pt"), "--logdir", str(tmp_path / "run"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.pt'}: no such file or directory"]
    assert list((tmp_path / "run").iterdir()) == []


def test_demo_writes_initial_mlp(tmp_path, read_run) -> None:
    result = tbweights("demo", "--logdir", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    run = read_run(tmp_path / "demo")
    assert run.value("fc1/weight")[:, 2].sum() == 784 * 128
    assert run.steps("fc2/bias") == [0]


def test_convert_sorts_by_step(tmp_path, read_run) -> None:
    paths = []
    for step in (1000, 500):
        path = tmp_path / f"model-step{step}.safetensors"
        save_file({"w": np.full(4, step, np.float32)}, str(path))
        paths.append(str(path))
    result = tbweights("convert", *paths, "--logdir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.index("step 500:") < result.stdout.index("step 1000:")
    assert read_run(tmp_path / "run").steps("w") == [500, 1000]


def test_convert_duplicate_steps_use_positions(tmp_path, read_run) -> None:
    paths = []
    for name in ("a_step10", "b_step10"):
        path = tmp_path / f"{name}.safetensors"
        save_file({"w": np.ones(4, np.float32)}, str(path))
        paths.append(str(path))
    result = tbweights("convert", *paths, "--logdir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "several checkpoints named with step 10" in result.stderr
    assert read_run(tmp_path / "run").steps("w") == [0, 1]


def test_convert_expands_quoted_glob(checkpoints, tmp_path, read_run) -> None:
    pattern = str(tmp_path / "checkpoint-*" / "model.safetensors")
    result = tbweights("convert", pattern, "--logdir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert read_run(tmp_path / "run").steps("fc1/weight") == [100, 200]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--step", "abc"], "argument --step: invalid integer: 'abc'"),
        (["--step", str(2**63)], "argument --step: must be between 0 and"),
        (["--buckets", "0"], "argument --buckets: must be between 1 and 10000, got 0"),
    ],
)
def test_convert_rejects_bad_numbers(checkpoints, tmp_path, args, message) -> None:
    result = tbweights("convert", str(checkpoints[0]), "--logdir", str(tmp_path / "run"), *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_show_into_closed_pipe(checkpoints) -> None:
    command = f"{sys.executable} -m tbweights show {checkpoints[0]} | head -c 10"
    result = subprocess.run(command, shell=True, capture_output=True, text=True)
    assert "Traceback" not in result.stderr


def test_closed_stdout_exits_141(checkpoints) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before the first write, so that write fails with EPIPE
    process = subprocess.run(
        [sys.executable, "-m", "tbweights", "show", str(checkpoints[0])],
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(write_end)
    assert process.returncode == 141
    assert process.stderr == ""


def test_convert_warns_about_a_lone_shard(tmp_path, read_run) -> None:
    path = tmp_path / "model-00001-of-00002.safetensors"
    save_file({"w": np.ones(4, np.float32)}, str(path))
    result = tbweights("convert", str(path), "--logdir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "is one shard of a sharded checkpoint; pass its folder or index file" in result.stderr
    assert read_run(tmp_path / "run").steps("w") == [0]


@pytest.mark.parametrize(
    ("tensors", "patterns", "message"),
    [
        ({}, [], "no tensors found in"),
        ({"w": np.ones(2, np.float32)}, ["--include", "nothing*"], "matched the --include/--exclude patterns"),
    ],
)
def test_nothing_to_log_warning(tmp_path, tensors, patterns, message) -> None:
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    for command in (["convert", str(path), "--logdir", str(tmp_path / "run")], ["show", str(path)]):
        result = tbweights(*command, *patterns)
        assert result.returncode == 0, result.stderr
        assert result.stderr.startswith("warning: ")
        assert message in result.stderr
