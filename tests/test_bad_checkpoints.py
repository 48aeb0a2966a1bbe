"""Broken checkpoint files: one clear error each, naming the path; convert goes on."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from checkpoint_zoo import BROKEN, state_dict, torch_zip, unreadable
from tbweights.checkpoints import read_checkpoint
from tbweights.cli import main
from tbweights.convert import convert
from tbweights.errors import CheckpointError
from tbweights.stats import compute_stats

torch = pytest.importorskip("torch")

SRC = str(Path(__file__).resolve().parents[1] / "src")


def build(tmp_path: Path, case: str) -> Path:
    file_name, builder, _ = BROKEN[case]
    folder = tmp_path / case
    folder.mkdir()
    return builder(folder / file_name)


def read_all(path: Path) -> None:
    for tensor in read_checkpoint(path):
        compute_stats(tensor.load())


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_checkpoint_error(tmp_path: Path, case: str) -> None:
    path = build(tmp_path, case)
    with pytest.raises(CheckpointError) as caught:
        read_all(path)
    assert caught.value.path == str(path)
    assert BROKEN[case][2] in str(caught.value)
    assert str(caught.value).startswith(f"{path}: ")


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_checkpoint_cli(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = build(tmp_path, case)
    assert main(["show", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("error: ") == 1
    assert f"error: {path}: " in err
    assert BROKEN[case][2] in err


def test_convert_skips_broken_and_keeps_going(tmp_path: Path, read_run) -> None:
    good_first = torch_zip(tmp_path / "step-1.pt")
    broken = [build(tmp_path, case) for case in sorted(BROKEN)]
    good_last = torch_zip(tmp_path / "step-2.pt")
    logdir = tmp_path / "run"

    report = convert([good_first, *broken, good_last], logdir, start_step=0)

    assert [path for path, _ in report.steps] == [str(good_first), str(good_last)]
    assert [failed.path for failed in report.failed] == [str(path) for path in broken]
    reader = read_run(logdir)
    assert reader.steps("fc/weight") == [0, len(broken) + 1]


def test_convert_cli_reports_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = torch_zip(tmp_path / "good.pt")
    broken = [build(tmp_path, case) for case in ("empty", "lfs_pointer", "missing")]
    code = main(["convert", str(good), *map(str, broken), "--logdir", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in captured.err
    assert "error: 3 of 4 checkpoint(s) skipped" in captured.err
    for path in broken:
        assert f"error: {path}: " in captured.err
    assert "wrote 1 step(s)" in captured.out


def test_debug_shows_traceback(tmp_path: Path) -> None:
    path = build(tmp_path, "empty")
    with pytest.raises(CheckpointError, match="the file is empty"):
        main(["show", str(path), "--debug"])


# Imports everything first (the interpreter's files may be unreadable to nobody),
# then drops root so the file's permission bits apply.
DROP_PRIVILEGES_AND_SHOW = """
import os, sys
from tbweights import checkpoints, cli
checkpoints.formats()
if os.geteuid() == 0:
    os.setgid(65534)
    os.setuid(65534)
sys.exit(cli.main(["show", sys.argv[1]]))
"""


def test_unreadable_file(tmp_path: Path) -> None:
    """Read permission is checked as an unprivileged user (root reads anything)."""
    folder = Path(tempfile.mkdtemp(prefix="tbweights-perm-"))
    try:
        os.chmod(folder, 0o755)
        path = unreadable(folder / "model.pt")
        result = subprocess.run(
            [sys.executable, "-c", DROP_PRIVILEGES_AND_SHOW, str(path)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": SRC},
        )
        assert result.returncode == 1
        assert result.stderr.strip() == f"error: {path}: permission denied; check the file's read permission"
    finally:
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()


def _save_with_cuda_tags(path: Path, legacy: bool) -> None:
    """torch.save a CPU state dict whose storages are tagged `cuda:0`, as a GPU save tags them.

    torch.save asks the registered location taggers for each storage's location
    string; a tagger registered ahead of the built-in ones makes every storage
    read `cuda:0`. The file is then byte-for-byte what a CUDA save writes except
    the values, which is what a CPU-only loader has to cope with.
    """
    import torch.serialization as serialization

    saved = list(serialization._package_registry)
    serialization.register_package(-1, lambda storage: "cuda:0", lambda obj, location: None)
    try:
        torch.save(state_dict(), path, _use_new_zipfile_serialization=not legacy)
    finally:
        serialization._package_registry[:] = saved


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_cuda_saved_checkpoint_loads_on_cpu(tmp_path: Path, legacy: bool) -> None:
    path = tmp_path / "cuda.pt"
    _save_with_cuda_tags(path, legacy)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA device"):
            torch.load(path, weights_only=True)  # proves the storages are tagged cuda
    tensors = {t.name: compute_stats(t.load()) for t in read_checkpoint(path)}
    expected = state_dict()
    assert set(tensors) == set(expected)
    assert tensors["fc.bias"].max == float(expected["fc.bias"].max())  # type: ignore[attr-defined]
