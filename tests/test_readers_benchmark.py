"""`benchmarks/readers.py` at tiny sizes, so that it keeps working (no timing checks).

The script runs for GGUF and ONNX (a single file and a file with its external
data) and no peer: about 5 s on 2 CPUs. All four formats took 13 s, and each peer
process adds 2 to 3 s of imports per format. The writers and the peers' loading
code of every format are checked in this process instead. For each format the
peer must yield as many tensors, of the same sizes, as tbweights reads from the
same file, so that the benchmark compares like with like.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
FORMATS = {"gguf": ["gguf"], "onnx": ["onnx"], "flax-msgpack": ["flax"], "orbax": ["orbax.checkpoint", "jax"]}


def require(kind: str) -> None:
    for module in FORMATS[kind]:
        pytest.importorskip(module)


@pytest.fixture()
def benchmark_modules(monkeypatch: pytest.MonkeyPatch) -> tuple[object, object]:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import format_files
    import reader_peers

    return format_files, reader_peers


SCRIPT_FORMATS = ["gguf", "onnx"]


def test_script_runs_gguf_and_onnx(tmp_path: Path) -> None:
    for kind in SCRIPT_FORMATS:
        require(kind)
    out = tmp_path / "results.json"
    command = [sys.executable, str(BENCHMARKS / "readers.py"), "--scale", "smoke", "--peers", "",
               "--formats", ",".join(SCRIPT_FORMATS), "--workdir", str(tmp_path), "--out", str(out)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]
    ran = {(row["format"], row["tool"]) for row in rows if "median_s" in row and "error" not in row}
    for kind in SCRIPT_FORMATS:
        assert (kind, "cat") in ran, rows
        assert (kind, "tbweights convert") in ran, rows
    assert all(row["bytes"] > 0 and row["max_rss_mib"] > 0 for row in rows)
    assert "| gguf | 0 | tbweights convert |" in finished.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # the checkpoints are deleted


@pytest.mark.parametrize("kind", list(FORMATS))
def test_peer_reads_what_tbweights_reads(kind: str, tmp_path: Path, benchmark_modules: tuple) -> None:
    require(kind)
    format_files, reader_peers = benchmark_modules
    from tbweights.checkpoints import read_checkpoint

    path = format_files.write(kind, tmp_path / kind, "smoke")
    ours = {t.name: int(np.prod(t.shape)) for t in read_checkpoint(path)}
    theirs = {name: array.size for name, array in reader_peers.tensors(kind, path, reader_peers.Clock())}
    assert sorted(theirs.values()) == sorted(ours.values())
    assert len(theirs) == len(ours)
    assert len(ours) > 3
