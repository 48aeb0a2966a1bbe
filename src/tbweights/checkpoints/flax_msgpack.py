"""Flax msgpack checkpoints: files written by `flax.serialization.to_bytes` or `msgpack_serialize`.

The file is one msgpack map, the state dict of a pytree, whose array leaves are
msgpack extension objects. Flax's `flax/serialization.py` (read in 0.12.8) uses
three extension codes: 1 for an ndarray and 3 for a NumPy scalar, both holding
a nested msgpack array (shape, dtype name, C-order bytes), and 2 for a Python
complex (real, imag). Arrays above 1 GiB are split into a map
`{"__msgpack_chunked_array__": True, "shape": {...}, "chunks": {...}}` of
flat pieces. Lists and tuples became maps with keys "0", "1", ... A file of
`to_bytes(array)` is that one extension object alone, read as the tensor `tensor`.

This module does not call `flax.serialization.msgpack_restore`, for three
reasons. Reading needs neither Flax nor JAX, whose import takes about a second.
Flax's reader decodes the whole file into memory, while here the file is
memory-mapped and indexed by byte offsets (`msgpack_index`), so memory stays
near one tensor. An array with a bad dtype or size fails alone, as a skipped
tensor, where Flax's reader fails the whole file. Dtype names are resolved
against NumPy's numeric dtypes and the `ml_dtypes` floats.

Reading runs no code from the file: the index holds only maps, lists, strings,
numbers and byte offsets, and unknown extension codes stay opaque. Flax's own
reader is just as safe: it also resolves dtypes by name, and `np.frombuffer`
rejects an object dtype.
"""

from __future__ import annotations

import math
import mmap
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from tbweights import dtypes
from tbweights.checkpoints import Format, LoadOptions
from tbweights.checkpoints.flax_names import flax_role, join_path, linen_layer_type
from tbweights.checkpoints.msgpack_index import Blob, Ext, index_document
from tbweights.checkpoints.pages import PageWindow, file_mappings, watch
from tbweights.errors import CheckpointError, TensorError, import_optional
from tbweights.tensors import NamedTensor, Role

_NDARRAY = 1
_NPSCALAR = 3
_CHUNKED = "__msgpack_chunked_array__"
# How far into the file the sniffer looks for the first ndarray extension object.
SNIFF_BYTES = 64 * 1024
# A map header (fixmap, map16, map32) followed by a string key (fixstr, str8/16/32).
_MAP_WITH_STR_KEY = re.compile(rb"^(?:[\x80-\x8f]|\xde..|\xdf....)[\xa0-\xbf\xd9\xda\xdb]", re.S)
# An extension object of code 1 (fixext, ext8/16/32) whose payload starts a 3-element array.
_NDARRAY_EXT = re.compile(rb"(?:[\xd4-\xd8]|\xc7.|\xc8..|\xc9....)\x01\x93", re.S)
_NUMERIC_KINDS = "biufc"


@dataclass(frozen=True)
class _Array:
    """One ndarray extension object: its header and the bytes of its values (a view into the file)."""

    shape: tuple[int, ...]
    dtype_name: str
    data: bytes | memoryview


def _import_msgpack() -> Any:
    return import_optional("msgpack", "msgpack", "jax", "reading Flax msgpack checkpoints")


def _sniff(path: Path, head: bytes) -> bool:
    if not path.is_file() or _MAP_WITH_STR_KEY.match(head) is None:
        return False
    with path.open("rb") as file:
        start = file.read(SNIFF_BYTES)
    return _NDARRAY_EXT.search(start) is not None


def load_state_dict(path: Path) -> Any:
    """Index the file into nested dicts and lists whose array leaves are `_Array`s.

    The file is memory-mapped and each array's values stay in the map, so an
    array's pages are read from disk only when its tensor is loaded.
    """
    msgpack = _import_msgpack()
    size = path.stat().st_size
    with path.open("rb") as file:
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    try:
        tree, _ = index_document(mapped, msgpack.unpackb)
        return _arrays(mapped, tree, msgpack.unpackb)
    except (ValueError, msgpack.exceptions.ExtraData, msgpack.exceptions.FormatError) as error:
        raise CheckpointError(
            path, f"not a valid Flax msgpack checkpoint ({error}); the file is truncated or corrupt"
        ) from None


def _arrays(buffer: Any, tree: Any, unpackb: Any) -> Any:
    """Replace each ndarray and NumPy scalar extension object of `tree` by an `_Array`."""
    if isinstance(tree, Ext):
        return _array(buffer, tree, unpackb) if tree.code in (_NDARRAY, _NPSCALAR) else tree
    if isinstance(tree, dict):
        return {key: _arrays(buffer, value, unpackb) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_arrays(buffer, value, unpackb) for value in tree]
    return tree  # complex scalars (code 2), unknown codes and plain values are no tensors


def _array(buffer: Any, ext: Ext, unpackb: Any) -> _Array:
    """Read the (shape, dtype name, bytes) header of one ndarray extension object."""
    header, end = index_document(buffer, unpackb, ext.offset, whole=False)
    if end != ext.offset + ext.length:
        raise ValueError(
            f"the ndarray extension object at byte {ext.offset} has a length that does not match its content"
        )
    if not isinstance(header, list) or len(header) != 3:
        raise ValueError(f"the ndarray extension object at byte {ext.offset} is not (shape, dtype, bytes)")
    shape, dtype_name, values = header
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ValueError(f"the ndarray extension object at byte {ext.offset} has an invalid shape {shape!r}")
    if isinstance(values, Blob):
        values = memoryview(buffer)[values.offset : values.offset + values.length]
    if not isinstance(dtype_name, str) or not isinstance(values, bytes | memoryview):
        raise ValueError(f"the ndarray extension object at byte {ext.offset} has a malformed dtype name or data")
    return _Array(tuple(shape), dtype_name, values)


def resolve_dtype(dtype_name: str) -> np.dtype | None:
    """Resolve a Flax dtype name (`float32`, `bfloat16`, `int4`) to a numeric NumPy dtype, else None."""
    small_float = getattr(ml_dtypes, dtype_name, None)
    try:
        dtype = np.dtype(small_float) if small_float is not None else np.dtype(dtype_name)
    except (TypeError, ValueError):
        return None
    readable = dtype.kind in _NUMERIC_KINDS or dtype in dtypes.SMALL_FLOATS or dtype in dtypes.SMALL_INTS
    return dtype if readable else None


def _leaves(tree: Any, parts: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(tree, _Array):
        yield parts, tree
    elif isinstance(tree, Mapping):
        if tree.get(_CHUNKED) is True:
            yield parts, tree
            return
        for key, value in tree.items():
            yield from _leaves(value, (*parts, str(key)))
    elif isinstance(tree, list | tuple):
        for index, value in enumerate(tree):
            yield from _leaves(value, (*parts, str(index)))


def _read(path: Path, options: LoadOptions) -> Iterator[NamedTensor]:
    # LoadOptions.trust changes nothing here: the file contains data only, never code.
    tree = load_state_dict(path)
    if not isinstance(tree, Mapping | _Array):  # `to_bytes(array)` stores the array alone
        raise CheckpointError(
            path, f"the file contains a msgpack {type(tree).__name__}, expected a Flax state dict (a map)"
        )
    records = (_record(path, parts, leaf) for parts, leaf in _leaves(tree, ()))
    selected = (r for r in records if r.role is not Role.OPTIMIZER or options.include_optimizer)
    # Resident memory stays near one tensor: see `pages`. Only arrays that lie in the
    # file's mapping are released; small arrays were decoded into copies.
    window = PageWindow(within=file_mappings(path))
    for record in window.stream(selected):
        yield replace(record, load=watch(record.load, window, _span))


def _span(array: np.ndarray) -> tuple[int, int]:
    return array.ctypes.data, array.nbytes


def _record(path: Path, parts: tuple[str, ...], leaf: Any) -> NamedTensor:
    name = join_path(parts) or "tensor"
    pieces, shape = _pieces(path, name, leaf)
    dtype_name = pieces[0].dtype_name if pieces else "float32"

    def load() -> np.ndarray:
        dtype = resolve_dtype(dtype_name)
        if dtype is None:
            raise TensorError(name, f"dtype {dtype_name!r} is not a numeric dtype tbweights can read", shape=shape)
        arrays = [_piece_values(path, name, piece, dtype) for piece in pieces]
        if not arrays:
            flat = np.zeros(0, dtype)
        elif len(arrays) == 1:
            flat = arrays[0]
        else:
            flat = np.concatenate(arrays)  # a split array: one copy of the whole tensor
        if flat.size != math.prod(shape):
            raise CheckpointError(path, f"tensor {name!r}: {flat.size} values do not fill shape {shape}")
        return flat.reshape(shape)

    return NamedTensor(
        name=name,
        shape=shape,
        dtype=dtype_name,
        load=load,
        role=flax_role(parts, len(shape)),
        layer_type=linen_layer_type(parts),
    )


def _pieces(path: Path, name: str, leaf: Any) -> tuple[list[_Array], tuple[int, ...]]:
    """Collect the ndarray objects of one tensor (one, or the chunks of a split array) and its shape."""
    if isinstance(leaf, _Array):
        return [leaf], leaf.shape
    try:
        shape = tuple(int(leaf["shape"][str(i)]) for i in range(len(leaf["shape"])))
        pieces = [leaf["chunks"][str(i)] for i in range(len(leaf["chunks"]))]
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(path, f"tensor {name!r}: malformed chunked array (keys {sorted(leaf)})") from None
    if not all(isinstance(piece, _Array) for piece in pieces):
        raise CheckpointError(path, f"tensor {name!r}: a chunk of the split array is not an ndarray")
    return pieces, shape


def _piece_values(path: Path, name: str, piece: _Array, dtype: np.dtype) -> np.ndarray:
    count = math.prod(piece.shape)
    if count * dtype.itemsize != len(piece.data):
        raise CheckpointError(
            path,
            f"tensor {name!r}: shape {piece.shape} and dtype {piece.dtype_name} need "
            f"{count * dtype.itemsize} bytes, the file holds {len(piece.data)}",
        )
    return np.frombuffer(piece.data, dtype=dtype, count=count).reshape(-1)


FORMAT = Format(name="Flax msgpack", sniff=_sniff, read=_read, suffixes=(".msgpack",))
