"""The peer way to get weight histograms from a checkpoint, in one fresh process.

    python benchmarks/reader_peers.py WRITER FORMAT PATH LOGDIR [--import-only]

WRITER is `torch` (`torch.utils.tensorboard.SummaryWriter`) or `tensorboardx`.
The checkpoint is loaded with its format's own library, as its users would, and
`add_histogram` (default bins) is called for every tensor:

- gguf: `gguf.GGUFReader`, then `gguf.quants.dequantize` per tensor;
- onnx: `onnx.load` (external data included), then `numpy_helper.to_array` per initializer;
- flax-msgpack: `flax.serialization.msgpack_restore` of the file's bytes;
- orbax: `orbax.checkpoint.StandardCheckpointer().restore`, then `np.asarray` per leaf.

With `--import-only` the process imports the same modules and exits: its max RSS
is the baseline that `readers.py` subtracts. Otherwise it prints one JSON line:
tensors, elements, and the seconds spent loading and in `add_histogram`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def import_modules(kind: str, writer: str) -> None:
    if writer == "torch":
        import torch.utils.tensorboard  # noqa: F401
    else:
        import tensorboardX  # noqa: F401
    if kind == "gguf":
        import gguf.quants  # noqa: F401
    elif kind == "onnx":
        import onnx.numpy_helper  # noqa: F401
    elif kind == "flax-msgpack":
        import flax.serialization  # noqa: F401
        import flax.traverse_util  # noqa: F401
    elif kind == "orbax":
        import jax  # noqa: F401
        import orbax.checkpoint  # noqa: F401
    else:
        raise ValueError(f"unknown format {kind!r}")


class Clock:
    """Seconds spent inside `with clock:` blocks, added up."""

    def __init__(self) -> None:
        self.total = 0.0
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *_: object) -> None:
        self.total += time.perf_counter() - self._start


def tensors(kind: str, path: Path, clock: Clock) -> Iterator[tuple[str, np.ndarray]]:
    """(name, array) of every tensor; the time spent loading goes to `clock`."""
    if kind == "gguf":
        import gguf
        from gguf.quants import dequantize

        with clock:
            reader = gguf.GGUFReader(str(path))
        for tensor in reader.tensors:
            with clock:
                array = dequantize(tensor.data, tensor.tensor_type)
            yield tensor.name, array
    elif kind == "onnx":
        import onnx
        from onnx import numpy_helper

        with clock:
            model = onnx.load(str(path))
        for initializer in model.graph.initializer:
            with clock:
                array = numpy_helper.to_array(initializer)
            yield initializer.name, array
    elif kind == "flax-msgpack":
        from flax import serialization, traverse_util

        with clock:
            tree = serialization.msgpack_restore(path.read_bytes())
        for names, array in traverse_util.flatten_dict(tree).items():
            yield "/".join(names), array
    elif kind == "orbax":
        import jax
        import orbax.checkpoint as ocp

        with clock:
            restored: Any = ocp.StandardCheckpointer().restore(path.resolve())
        for keys, leaf in jax.tree_util.tree_flatten_with_path(restored)[0]:
            with clock:
                array = np.asarray(leaf)
            yield "/".join(str(getattr(k, "key", k)) for k in keys), array
    else:
        raise ValueError(f"unknown format {kind!r}")


def main(argv: list[str]) -> None:
    writer_name, kind, path, logdir = argv[:4]
    import_modules(kind, writer_name)
    if "--import-only" in argv:
        return
    if writer_name == "torch":
        from torch.utils.tensorboard import SummaryWriter
    else:
        from tensorboardX import SummaryWriter
    writer = SummaryWriter(logdir)
    load, histogram = Clock(), Clock()
    count = elements = 0
    for name, array in tensors(kind, Path(path), load):
        with histogram:
            writer.add_histogram(name, array, 0)
        count += 1
        elements += array.size
    with histogram:
        writer.close()
    print(json.dumps({"tensors": count, "elements": elements, "load_s": load.total, "histogram_s": histogram.total}))


if __name__ == "__main__":
    main(sys.argv[1:])
