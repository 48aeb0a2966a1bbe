"""Flax msgpack checkpoints: files written by `flax.serialization.to_bytes` or `msgpack_serialize`.

The file is one msgpack map, the state dict of a pytree, whose array leaves are
msgpack extension objects. Flax (`flax/serialization.py`, 0.8 to 0.12) uses
three extension codes: 1 for an ndarray and 3 for a NumPy scalar, both holding
a nested msgpack array (shape, dtype name, C-order bytes), and 2 for a Python
complex (real, imag). Arrays above 1 GiB are split into a map
`{"__msgpack_chunked_array__": True, "shape": {...}, "chunks": {...}}` of
flat pieces. Lists and tuples became maps with keys "0", "1", ...

This module decodes the format with the `msgpack` package instead of
`flax.serialization.msgpack_restore`, for two reasons. Reading needs neither
Flax nor JAX, whose import takes about a second. An array with a bad dtype or
size fails alone, as a skipped tensor, where Flax's reader fails the whole
file. Dtype names are resolved against NumPy's numeric dtypes and the
`ml_dtypes` floats. Decoding runs no code from the file: msgpack builds only
maps, lists, strings, numbers and bytes, and unknown extension codes stay
opaque. Flax's own reader is just as safe: it also resolves dtypes by name,
and `np.frombuffer` rejects an object dtype.

NOTE: msgpack decodes the whole file at once, so the bytes of every array are
held in memory (about the file's size) until the reader is done, not one
tensor at a time as with safetensors.
"""

from __future__ import annotations

import math
import mmap
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from tbweights import dtypes
from tbweights.checkpoints import Format, LoadOptions
from tbweights.checkpoints.flax_names import flax_role, join_path, linen_layer_type
from tbweights.errors import CheckpointError, MissingDependencyError, TensorError
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
    """One decoded ndarray extension object: its header and the bytes of its values."""

    shape: tuple[int, ...]
    dtype_name: str
    data: bytes


def _import_msgpack() -> Any:
    try:
        import msgpack
    except ImportError:
        raise MissingDependencyError("msgpack", "jax", "reading Flax msgpack checkpoints") from None
    return msgpack


def _sniff(path: Path, head: bytes) -> bool:
    if not path.is_file() or _MAP_WITH_STR_KEY.match(head) is None:
        return False
    with path.open("rb") as file:
        start = file.read(SNIFF_BYTES)
    return _NDARRAY_EXT.search(start) is not None


def _ext_hook(code: int, data: bytes) -> Any:
    msgpack = _import_msgpack()
    if code not in (_NDARRAY, _NPSCALAR):
        return msgpack.ExtType(code, data)  # complex scalars and unknown codes: no tensors
    header = msgpack.unpackb(data, raw=True)
    if not isinstance(header, list | tuple) or len(header) != 3:
        raise ValueError(
            f"an ndarray extension object contains a {type(header).__name__}, expected (shape, dtype, bytes)"
        )
    shape, dtype_name, values = header
    if not isinstance(shape, list | tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ValueError(f"an ndarray extension object has an invalid shape {shape!r}")
    if not isinstance(dtype_name, bytes) or not isinstance(values, bytes):
        raise ValueError("an ndarray extension object has a malformed dtype name or data")
    return _Array(tuple(shape), dtype_name.decode("ascii", "replace"), values)


def load_state_dict(path: Path) -> Any:
    """Decode the whole file into nested maps whose array leaves are `_Array`s."""
    msgpack = _import_msgpack()
    try:
        with path.open("rb") as file:
            size = path.stat().st_size
            mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        return msgpack.unpackb(mapped, ext_hook=_ext_hook, raw=False, strict_map_key=False)
    except (
        ValueError,
        msgpack.exceptions.ExtraData,
        msgpack.exceptions.FormatError,
        msgpack.exceptions.StackError,
    ) as error:
        raise CheckpointError(
            path, f"not a valid Flax msgpack checkpoint ({error}); the file is truncated or corrupt"
        ) from None


def resolve_dtype(dtype_name: str) -> np.dtype | None:
    """Resolve a Flax dtype name (`float32`, `bfloat16`, `float8_e4m3fn`) to a numeric NumPy dtype, else None."""
    small_float = getattr(ml_dtypes, dtype_name, None)
    try:
        dtype = np.dtype(small_float) if small_float is not None else np.dtype(dtype_name)
    except (TypeError, ValueError):
        return None
    return dtype if dtype.kind in _NUMERIC_KINDS or dtype in dtypes.SMALL_FLOATS else None


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
    if not isinstance(tree, Mapping):
        raise CheckpointError(
            path, f"the file contains a msgpack {type(tree).__name__}, expected a Flax state dict (a map)"
        )
    for parts, leaf in _leaves(tree, ()):
        record = _record(path, parts, leaf)
        if record.role is Role.OPTIMIZER and not options.include_optimizer:
            continue
        yield record


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
