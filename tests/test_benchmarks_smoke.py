"""The benchmark harness at tiny sizes, so that it keeps working (no timing checks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorboardX")

HARNESS = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"


def test_harness_runs_every_case_kind(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    markdown = tmp_path / "results.md"
    command = [
        sys.executable, str(HARNESS), "--scale", "smoke", "--out", str(out), "--markdown", str(markdown),
        "--tools", "tbweights-stats,tbweights,torch-30,tensorboardx-default,tbweights-tbcrc,bfloat16,bfloat16-astype",
        "--checkpoints", "safetensors-float32,torch-bfloat16", "--workdir", str(tmp_path),
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = result["results"]
    ran = {(row["case"], row["tool"]) for row in rows if "median_s" in row}
    for expected in [
        ("tensor", "tbweights"), ("tensor", "torch-30"), ("model", "tbweights"), ("model", "tensorboardx-default"),
        ("events", "tbweights"), ("events", "tbweights-tbcrc"), ("upcast", "bfloat16"),
        ("convert", "tbweights convert"), ("convert", "cat"), ("jobs", "--jobs 2"), ("startup", "import"),
    ]:
        assert expected in ran, f"{expected} did not run; rows: {rows}"
    assert all(row["max_rss_mib"] > 0 for row in rows if "median_s" in row)
    tables = markdown.read_text()
    assert "### One float32 tensor" in tables
    assert "### Converting checkpoints" in tables
