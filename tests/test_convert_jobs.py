"""`convert --jobs N` writes the same run as one process."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from tbweights.cli import main
from tbweights.convert import convert


def make_checkpoints(folder: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for step in (100, 200, 300):
        path = folder / f"checkpoint-{step}.safetensors"
        save_file(
            {
                "fc1.weight": rng.standard_normal((64, 32)).astype(np.float32),
                "fc1.bias": rng.standard_normal(64).astype(np.float32),
                "emb.weight": rng.standard_normal((50, 16)).astype(ml_dtypes.bfloat16),
                "steps": np.array([step], dtype=np.int64),
            },
            str(path),
        )
        paths.append(path)
    broken = folder / "checkpoint-250.safetensors"
    broken.write_bytes(paths[0].read_bytes()[:200])  # truncated: fails in both modes
    return [paths[0], paths[1], broken, paths[2]]


def run_contents(read_run, logdir: Path) -> dict[str, list[tuple[int, bytes]]]:
    run = read_run(logdir)
    return {tag: [(event.step, event.tensor_proto.SerializeToString())
                  for event in run.accumulator.Tensors(tag)] for tag in sorted(run.tags)}


def test_jobs_write_the_same_run(tmp_path: Path, read_run) -> None:
    paths = make_checkpoints(tmp_path)
    one = convert(paths, tmp_path / "one", exclude=["steps"])
    two = convert(paths, tmp_path / "two", exclude=["steps"], jobs=2)
    assert [(p, r.step, len(r.results)) for p, r in one.steps] == [(p, r.step, len(r.results)) for p, r in two.steps]
    assert [f.path for f in one.failed] == [f.path for f in two.failed] == [str(paths[2])]
    assert [f.reason for f in one.failed] == [f.reason for f in two.failed]
    contents = run_contents(read_run, tmp_path / "one")
    assert contents == run_contents(read_run, tmp_path / "two")
    assert len(contents) == 7  # three tensors x (histogram, text) + the overview
    assert [step for step, _ in contents["fc1/weight"]] == [100, 200, 300]


def test_cli_jobs_flag(tmp_path: Path, read_run, capsys: pytest.CaptureFixture[str]) -> None:
    paths = make_checkpoints(tmp_path)
    del paths[2]
    code = main(["convert", *map(str, paths), "--logdir", str(tmp_path / "cli"), "--jobs", "2", "-q"])
    assert code == 0
    assert read_run(tmp_path / "cli").steps("fc1/weight") == [100, 200, 300]
    with pytest.raises(SystemExit) as usage:
        main(["convert", str(paths[0]), "--logdir", str(tmp_path / "x"), "--jobs", "0"])
    assert usage.value.code == 2
    assert "--jobs" in capsys.readouterr().err
