"""TensorFlow checkpoints and SavedModel directories, read without TensorFlow.

Accepted paths:

- a checkpoint prefix (`ckpt-3`), its `ckpt-3.index` file or one of its
  `ckpt-3.data-*` files;
- a directory holding a `checkpoint` state file (the latest checkpoint it names
  is read), or exactly one `.index` file;
- a SavedModel directory: its `variables/variables` checkpoint is read. The
  SavedModel itself is never loaded, so no code or graph from it runs.

Tensors come in key order, named as `tf_object_graph` explains. Optimizer
slots, optimizer variables and bookkeeping entries (`save_counter`,
`global_step`) are left out unless `LoadOptions.include_optimizer` is set.
String entries (the object graph, Keras config JSON) are not weights and are
always left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from google.protobuf.message import DecodeError

from tbweights.checkpoints import Format, LoadOptions
from tbweights.checkpoints.tf_bundle import TensorBundle, unpack_string_scalar
from tbweights.checkpoints.tf_object_graph import (
    GRAPH_KEY,
    EntryName,
    name_without_graph,
    names_from_graph,
)
from tbweights.checkpoints.tf_table import has_table_magic
from tbweights.errors import CheckpointError
from tbweights.tensors import NamedTensor

INDEX_SUFFIX = ".index"
STATE_FILE = "checkpoint"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")
_STATE_LINE = re.compile(r'^model_checkpoint_path:\s*"(.*)"\s*$', re.M)


def _index_of(prefix: Path) -> Path:
    return prefix.with_name(prefix.name + INDEX_SUFFIX)


def _is_index_file(path: Path) -> bool:
    if not path.name.endswith(INDEX_SUFFIX) or not path.is_file():
        return False
    try:
        with path.open("rb") as file:
            file.seek(0, 2)
            if file.tell() < 8:
                return False
            file.seek(-8, 2)
            return has_table_magic(file.read(8))
    except OSError:
        return False


def _saved_model_prefix(directory: Path) -> Path | None:
    if any((directory / name).is_file() for name in SAVED_MODEL_FILES):
        return directory / "variables" / "variables"
    return None


def _prefix_from_state_file(directory: Path) -> Path:
    state = directory / STATE_FILE
    try:
        text = state.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(state, f"cannot read the checkpoint state file: {error}") from None
    match = _STATE_LINE.search(text)
    if match is None:
        raise CheckpointError(
            state,
            "the state file names no model_checkpoint_path; pass the checkpoint prefix "
            "(such as ckpt-3) or its .index file instead",
        )
    named = Path(match.group(1).encode("latin-1").decode("unicode_escape"))
    return named if named.is_absolute() else directory / named


def resolve_prefix(path: Path) -> Path:
    """Return the checkpoint prefix that `path` names, or raise `CheckpointError` if there is none."""
    if path.is_dir():
        saved_model = _saved_model_prefix(path)
        if saved_model is not None:
            prefix = saved_model
        elif (path / STATE_FILE).is_file():
            prefix = _prefix_from_state_file(path)
        else:
            indexes = sorted(p for p in path.iterdir() if _is_index_file(p))
            if len(indexes) != 1:
                found = ", ".join(p.name for p in indexes) or "none"
                raise CheckpointError(
                    path,
                    f"expected one TensorFlow checkpoint .index file in the directory, found {found}; "
                    "pass the checkpoint prefix or its .index file",
                )
            prefix = indexes[0].with_name(indexes[0].name.removesuffix(INDEX_SUFFIX))
    elif path.name.endswith(INDEX_SUFFIX):
        prefix = path.with_name(path.name.removesuffix(INDEX_SUFFIX))
    elif _DATA_SUFFIX.search(path.name):
        prefix = path.with_name(_DATA_SUFFIX.sub("", path.name))
    else:
        prefix = path
    if not _index_of(prefix).is_file():
        raise CheckpointError(
            path,
            f"the TensorFlow checkpoint index {_index_of(prefix)} is missing; "
            "pass the prefix of a checkpoint whose .index and .data-* files are present",
        )
    return prefix


def _sniff(path: Path, head: bytes) -> bool:
    del head  # an index file starts with a data block; its magic number is at the end
    if path.is_dir():
        if _saved_model_prefix(path) is not None:
            return _index_of(path / "variables" / "variables").is_file()
        return (path / STATE_FILE).is_file() or any(_is_index_file(p) for p in path.iterdir())
    if _is_index_file(path):
        return True
    if _DATA_SUFFIX.search(path.name):
        return _is_index_file(_index_of(path.with_name(_DATA_SUFFIX.sub("", path.name))))
    return False


def _sniff_prefix(path: Path) -> bool:
    return _is_index_file(_index_of(path))


def _entry_names(bundle: TensorBundle) -> dict[str, EntryName]:
    shapes = {key: entry.shape for key, entry in bundle.entries.items()}
    graph_entry = bundle.entries.get(GRAPH_KEY)
    if graph_entry is None:
        return {key: name_without_graph(key, len(shape)) for key, shape in shapes.items()}
    try:
        return names_from_graph(unpack_string_scalar(bundle.read_bytes(graph_entry)), shapes)
    except (DecodeError, ValueError, IndexError):
        raise CheckpointError(
            bundle.prefix,
            f"the {GRAPH_KEY} entry is not a valid object graph; the checkpoint is corrupt",
        ) from None


def _read(path: Path, options: LoadOptions) -> Iterator[NamedTensor]:
    prefix = resolve_prefix(path)
    bundle = TensorBundle(prefix)
    missing = bundle.missing_data_files()
    if missing:
        missing_names = ", ".join(p.name for p in missing)
        raise CheckpointError(
            prefix, f"data file(s) missing: {missing_names}; copy every .data-* file of the checkpoint"
        )
    names = _entry_names(bundle)
    for key, entry in bundle.entries.items():
        if entry.dtype_name == "DT_STRING" or key == GRAPH_KEY:
            continue
        described = names.get(key)
        if described is None:
            # An entry the object graph does not mention: keep it under its key.
            described = name_without_graph(key, len(entry.shape))
        if described.bookkeeping and not options.include_optimizer:
            continue
        yield NamedTensor(
            name=described.name,
            shape=entry.shape,
            dtype=entry.dtype,
            load=bundle.loader(entry),
            role=described.role,
            aliases=described.aliases,
        )


FORMAT = Format(
    name="TensorFlow checkpoint",
    sniff=_sniff,
    read=_read,
    suffixes=(INDEX_SUFFIX,),
    sniff_prefix=_sniff_prefix,
)
