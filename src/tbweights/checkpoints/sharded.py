"""Hugging Face sharded checkpoints: a `*.index.json` whose `weight_map` names the shard files.

`save_pretrained` splits large models into `model-00001-of-00004.safetensors`
(or `pytorch_model-00001-of-00004.bin`) files and writes an index such as
`model.safetensors.index.json`: `{"metadata": {...}, "weight_map": {tensor
name: shard file name relative to the index}}`. Each shard is read by its own
format's reader, one shard at a time: when the next shard opens, the previous
one's memory map and loaders are released, so loading a tensor of an earlier
shard afterwards raises a `CheckpointError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tbweights.checkpoints import Format, LoadOptions, detect
from tbweights.errors import CheckpointError
from tbweights.tensors import NamedTensor, guess_role

INDEX_SUFFIX = ".index.json"


def _index_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob(f"*{INDEX_SUFFIX}") if p.is_file())


def find_index(path: Path) -> Path:
    """The index file, given the file itself or the directory that contains it.

    A directory with several indexes (safetensors and `.bin` copies of one
    model) resolves to the safetensors one; other ambiguities raise.
    """
    if path.is_file():
        return path
    candidates = _index_files(path)
    if len(candidates) > 1:
        safetensors = [p for p in candidates if p.name.endswith(f".safetensors{INDEX_SUFFIX}")]
        candidates = safetensors if len(safetensors) == 1 else candidates
    if len(candidates) != 1:
        names = ", ".join(p.name for p in candidates) or "none"
        raise CheckpointError(
            path, f"expected one *{INDEX_SUFFIX} file in the directory, found {names}; pass the index file itself"
        )
    return candidates[0]


def _sniff(path: Path, head: bytes) -> bool:
    del head
    if path.is_dir():
        return bool(_index_files(path))
    return path.name.endswith(INDEX_SUFFIX)


def read_weight_map(index: Path) -> dict[str, str]:
    """Read the index's `weight_map` (tensor name -> shard file name), with clear errors."""
    try:
        content = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(index, f"cannot read the index as JSON: {error}") from None
    weight_map = content.get("weight_map") if isinstance(content, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(index, 'the index has no "weight_map" object mapping tensor names to shard files')
    return {str(name): shard for name, shard in weight_map.items()}


def _shards(index: Path, weight_map: dict[str, str]) -> dict[str, list[str]]:
    """Shard file name -> the tensor names the index puts in it; shards in file-name order."""
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        shards.setdefault(shard, []).append(name)
    for shard in shards:
        if Path(shard).is_absolute() or ".." in Path(shard).parts:
            raise CheckpointError(index, f"shard file {shard!r} is not a path inside the checkpoint directory")
    return dict(sorted(shards.items()))


def _read(path: Path, options: LoadOptions) -> Iterator[NamedTensor]:
    index = find_index(path)
    for shard, names in _shards(index, read_weight_map(index)).items():
        yield from _shard_tensors(index, index.parent / shard, names, options)


def _failing(name: str, error: CheckpointError) -> NamedTensor:
    def load() -> Any:
        raise error

    return NamedTensor(name=name, shape=(), dtype="unknown", load=load, role=guess_role(name))


def _shard_tensors(index: Path, shard: Path, names: list[str], options: LoadOptions) -> Iterator[NamedTensor]:
    """Yield the tensors the index assigns to one shard, in the shard's own order."""
    if not shard.is_file():
        missing = CheckpointError(
            shard, f"shard file listed in {index.name} is missing; download or copy it next to the index"
        )
        for name in names:
            yield _failing(name, missing)
        return
    records = {record.name: record for record in detect(shard).read(shard, options)}
    loaders: dict[str, Callable[[], Any]] = {name: record.load for name, record in records.items()}
    # Tied tensors come back from the torch reader once, with the other names as aliases.
    present = set(records) | {alias for record in records.values() for alias in record.aliases}
    for name in [n for n in records if n in names] + [n for n in names if n not in present]:
        record = records.get(name)
        if record is None:
            yield _failing(
                name, CheckpointError(shard, f"tensor {name!r} is listed in {index.name} but not in this shard")
            )
            continue
        yield NamedTensor(
            record.name,
            record.shape,
            record.dtype,
            _released_when_done(shard, name, loaders),
            record.role,
            record.aliases,
            record.note,
        )
    # The shard is done: drop its loaders and records so its memory map is released.
    loaders.clear()
    records.clear()


def _released_when_done(shard: Path, name: str, loaders: dict[str, Callable[[], Any]]) -> Callable[[], Any]:
    def load() -> Any:
        loader = loaders.get(name)
        if loader is None:
            raise CheckpointError(shard, f"tensor {name!r} was read after its shard was closed; read tensors in order")
        return loader()

    return load


FORMAT = Format(name="sharded (Hugging Face index)", sniff=_sniff, read=_read, suffixes=(INDEX_SUFFIX,))
