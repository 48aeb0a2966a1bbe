"""PyTorch distributed checkpoints: `torch.distributed.checkpoint` directories.

Such a directory holds a `.metadata` file (global shape, dtype and chunk layout
of every tensor) and `.distcp` data files written by all ranks. Each tensor is
read on its own, in one process and without a process group: a tensor of its
global shape is allocated and `torch.distributed.checkpoint.load` fills it from
whichever files hold its chunks, so peak memory stays near the largest tensor.
Non-tensor entries (step counters, strings) are left out.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tbweights.checkpoints import Format, LoadOptions
from tbweights.checkpoints.nesting import OPTIMIZER_KEYS, weight_tensors
from tbweights.errors import CheckpointError, import_optional
from tbweights.tensors import NamedTensor, Role, guess_role

METADATA_FILE = ".metadata"


@dataclass(frozen=True)
class _Entry:
    """One tensor of the checkpoint: its flattened key in `.metadata` and its storage metadata."""

    key: str
    metadata: Any


def checkpoint_root(path: Path) -> Path:
    """The checkpoint directory, given the directory or its `.metadata` file."""
    return path.parent if path.name == METADATA_FILE else path


def _sniff(path: Path, head: bytes) -> bool:
    del head
    return (path.is_dir() and (path / METADATA_FILE).is_file()) or (path.is_file() and path.name == METADATA_FILE)


def _import_dcp() -> Any:
    return import_optional("torch.distributed.checkpoint", "torch", "torch", "reading a PyTorch distributed checkpoint")


def _read_metadata(root: Path) -> Any:
    dcp = _import_dcp()
    try:
        return dcp.FileSystemReader(str(root)).read_metadata()
    except Exception as error:  # noqa: BLE001 - unpickling a damaged file raises anything
        raise CheckpointError(
            root / METADATA_FILE, f"cannot read the checkpoint metadata ({type(error).__name__}: {error})"
        ) from None


def _tree(metadata: Any) -> dict[str, Any]:
    """Nest the flattened keys again (`model.fc.weight` -> model / fc.weight) using the planner's paths."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    paths = metadata.planner_data if isinstance(metadata.planner_data, dict) else {}
    tree: dict[str, Any] = {}
    for key, storage in metadata.state_dict_metadata.items():
        if not isinstance(storage, TensorStorageMetadata):
            continue
        path = [str(part) for part in paths.get(key, (key,))]
        node = tree
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):  # a tensor and a subtree under one name: keep the flat key
                node, path = tree, [key]
                break
            node = child
        node[path[-1]] = _Entry(key, storage)
    return tree


def _read(path: Path, options: LoadOptions) -> Iterator[NamedTensor]:
    root = checkpoint_root(path)
    metadata = _read_metadata(root)
    tree = _tree(metadata)
    pairs = weight_tensors(tree, lambda value: isinstance(value, _Entry), include_optimizer=options.include_optimizer)
    for name, entry in pairs:
        yield _record(root, name, entry)


def _record(root: Path, name: str, entry: _Entry) -> NamedTensor:
    from tbweights.frameworks.torch import dtype_name

    shape = tuple(int(d) for d in entry.metadata.size)
    dtype = entry.metadata.properties.dtype
    optimizer = entry.key.split(".", 1)[0] in OPTIMIZER_KEYS

    def load() -> Any:
        return _load_tensor(root, entry.key, shape, dtype)

    return NamedTensor(
        name=name,
        shape=shape,
        dtype=dtype_name(dtype),
        load=load,
        role=Role.OPTIMIZER if optimizer else guess_role(name, len(shape)),
    )


def _load_tensor(root: Path, key: str, shape: tuple[int, ...], dtype: Any) -> Any:
    import torch

    dcp = _import_dcp()
    target = torch.empty(shape, dtype=dtype)
    try:
        with warnings.catch_warnings():
            # no_dist=True is the intended single-process mode; torch warns about it anyway.
            warnings.simplefilter("ignore", UserWarning)
            dcp.load({key: target}, storage_reader=dcp.FileSystemReader(str(root)), no_dist=True)
    except (Exception, dcp.api.CheckpointException) as error:  # noqa: BLE001
        # dcp wraps every failure in CheckpointException, a BaseException; name the root cause.
        failures = getattr(error, "failures", None)
        cause: BaseException = error
        if isinstance(failures, dict) and failures:
            wrapped = next(iter(failures.values()))  # (exception, stack summary)
            cause = wrapped[0] if isinstance(wrapped, tuple) else cause
        raise CheckpointError(
            root, f"cannot load tensor {key!r} ({type(cause).__name__}: {cause}); a .distcp file is missing or damaged"
        ) from None
    return target


FORMAT = Format(name="torch-distributed-checkpoint", sniff=_sniff, read=_read, suffixes=())
