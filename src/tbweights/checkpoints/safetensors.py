"""safetensors files, memory-mapped, tensors in the file's own order.

The header is parsed here rather than through `safetensors.safe_open`: its
`get_tensor` copies a whole tensor into memory and its `keys()` come back sorted,
while a memory map over `data_offsets` gives zero-copy, chunk-by-chunk reading in
file order. The format is 8 bytes of little-endian header length, a JSON header,
then the raw little-endian data.
"""

from __future__ import annotations

import json
import mmap
import struct
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from tbweights.checkpoints import Format, LoadOptions
from tbweights.checkpoints.pages import PageWindow, watch
from tbweights.errors import CheckpointError
from tbweights.tensors import NamedTensor, guess_role

# Header sizes above this are not real headers (safetensors itself caps at 100 MB).
MAX_HEADER_BYTES = 100 * 1024 * 1024

DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}


def _sniff(path: Path, head: bytes) -> bool:
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 2 <= length <= MAX_HEADER_BYTES


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """Read the JSON header and the offset where the data starts, with clear errors."""
    size = path.stat().st_size
    with path.open("rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise CheckpointError(path, "file too short for a safetensors header (truncated?)")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES or 8 + length > size:
            raise CheckpointError(
                path,
                f"safetensors header length {length} does not fit in a file of {size} bytes; "
                "the file is truncated or not a safetensors file",
            )
        raw = file.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(path, f"safetensors header is not valid JSON: {error}") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, "safetensors header is not a JSON object")
    return header, 8 + length


def _entries(path: Path, header: dict[str, Any], data_start: int) -> list[tuple[str, dict[str, Any]]]:
    size = path.stat().st_size
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = (int(x) for x in info["data_offsets"])
            dtype_code, shape = info["dtype"], tuple(int(d) for d in info["shape"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(path, f"tensor {name!r} has a malformed header entry: {info!r}") from None
        if data_start + end > size or begin > end:
            raise CheckpointError(
                path,
                f"tensor {name!r} ends at byte {data_start + end} past the file's {size} bytes; the file is truncated",
            )
        entries.append((name, {"begin": begin, "end": end, "dtype": dtype_code, "shape": shape}))
    entries.sort(key=lambda item: item[1]["begin"])
    return entries


def _read(path: Path, options: LoadOptions) -> Iterator[NamedTensor]:
    del options  # a safetensors file contains no code and no optimizer state
    header, data_start = read_header(path)
    entries = _entries(path, header, data_start)
    with path.open("rb") as file:
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) if path.stat().st_size else None
    # Resident memory stays near one tensor: see `pages`.
    window = PageWindow()
    records = (_record(path, mapped, data_start, name, entry) for name, entry in entries)
    for record in window.stream(records):
        yield replace(record, load=watch(record.load, window, _span))


def _span(array: np.ndarray) -> tuple[int, int]:
    return array.ctypes.data, array.nbytes


def _record(
    path: Path, mapped: mmap.mmap | None, data_start: int, name: str, entry: dict[str, Any]
) -> NamedTensor:
    code, shape = entry["dtype"], entry["shape"]

    def load() -> np.ndarray:
        dtype = DTYPES.get(code)
        if dtype is None:
            raise CheckpointError(path, f"tensor {name!r} has dtype {code}, which tbweights cannot read")
        count = int(np.prod(shape, dtype=np.int64))
        if count * dtype.itemsize != entry["end"] - entry["begin"]:
            raise CheckpointError(
                path, f"tensor {name!r}: shape {shape} and dtype {code} do not match its byte size"
            )
        if count == 0 or mapped is None:
            return np.zeros(shape, dtype=dtype)
        array = np.frombuffer(mapped, dtype=dtype, count=count, offset=data_start + entry["begin"])
        return array.reshape(shape)

    return NamedTensor(
        name=name, shape=shape, dtype=_dtype_name(code), load=load, role=guess_role(name, len(shape))
    )


def _dtype_name(code: str) -> str:
    dtype = DTYPES.get(code)
    return str(dtype) if dtype is not None else code


FORMAT = Format(name="safetensors", sniff=_sniff, read=_read, suffixes=(".safetensors",))
