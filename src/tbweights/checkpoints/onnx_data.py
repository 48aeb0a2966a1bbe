"""Decode the values of ONNX `TensorProto`s, inline or in external data files.

`onnx.numpy_helper.to_array` decodes every storage form (`raw_data`, the typed
fields `float_data`, `int32_data`, ..., packed 4- and 2-bit types) but loads
external data whole through `onnx.load`. So bytes from external files and
`raw_data` of byte-aligned types are viewed here with `np.frombuffer`, from a
memory map for external files, and `to_array` handles the rest.

External `location`s are resolved against the model's folder. An absolute
location, or one whose `..` parts leave that folder, is rejected unless the user
trusts the file, because it would let a model file read any file on the machine.
Symbolic links inside the folder are followed: the Hugging Face cache links each
file of a snapshot to a blob outside the snapshot folder.
"""

from __future__ import annotations

import mmap
import os
import posixpath
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from tbweights.errors import CheckpointError, TensorError

# ONNX `TensorProto.DataType` codes (onnx.proto, onnx 1.23) and their NumPy or
# `ml_dtypes` types by name. The table is ours because onnx before 1.19 maps
# bfloat16 and float8 to plain integer types.
STRING = 8
_TYPE_NAMES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 14: "complex64", 15: "complex128",
    16: "bfloat16", 17: "float8_e4m3fn", 18: "float8_e4m3fnuz", 19: "float8_e5m2", 20: "float8_e5m2fnuz",
    21: "uint4", 22: "int4", 23: "float4_e2m1fn", 24: "float8_e8m0fnu", 25: "uint2", 26: "int2",
    27: "float6_e2m3fn", 28: "float6_e3m2fn",
}
# 4- and 2-bit integers, which the statistics kernel does not read, are widened to 8 bits.
_WIDENED = {21: np.dtype(np.uint8), 22: np.dtype(np.int8), 25: np.dtype(np.uint8), 26: np.dtype(np.int8)}
# Types stored two or more to a byte (4-, 2- and 6-bit). `to_array` unpacks them.
_PACKED = frozenset({21, 22, 23, 25, 26, 27, 28})


def element_type(data_type: int) -> np.dtype:
    """Return the NumPy (or `ml_dtypes`) element type of an ONNX data type code."""
    name = _TYPE_NAMES.get(data_type)
    if name is None:
        raise ValueError(f"unknown ONNX data type code {data_type}")
    small = getattr(ml_dtypes, name, None)  # bfloat16, float8, int4, ...
    if small is not None:
        small_type: np.dtype = np.dtype(small)
        return small_type
    try:
        return np.dtype(name)
    except TypeError:
        raise ValueError(f"ONNX type {name} needs a newer ml_dtypes release") from None


def dtype_name(data_type: int) -> str:
    """Return the dtype shown for a tensor: the NumPy or `ml_dtypes` name, or `string`."""
    if data_type == STRING:
        return "string"
    return _TYPE_NAMES.get(data_type, f"ONNX data type {data_type}")


def summarizable(array: np.ndarray, data_type: int) -> np.ndarray:
    """Widen `ml_dtypes` 4- and 2-bit integers, which the statistics kernel does not read, to 8 bits."""
    widened = _WIDENED.get(data_type)
    return array.astype(widened) if widened is not None else array


class ExternalFiles:
    """The external data files of one model, each memory-mapped once on first use."""

    def __init__(self, model_path: Path, trust: bool) -> None:
        self.model_path = model_path
        self.folder = model_path.parent
        self.trust = trust
        self._maps: dict[str, mmap.mmap | None] = {}
        self._spans: list[tuple[int, int]] = []  # address ranges of the maps

    def resolve(self, tensor_name: str, location: str) -> Path:
        """Find the file behind `location`; raise `CheckpointError` if it is outside the folder or missing."""
        if not location:
            raise CheckpointError(self.model_path, f"tensor {tensor_name!r} has external data without a location")
        normalized = posixpath.normpath(location.replace("\\", "/"))
        escapes = normalized == ".." or normalized.startswith("../")
        if (escapes or posixpath.isabs(normalized) or os.path.isabs(location)) and not self.trust:
            raise CheckpointError(
                self.model_path,
                f"tensor {tensor_name!r} stores its data at {location!r}, outside the model's folder; "
                "pass --trust-checkpoint (LoadOptions(trust=True)) to read it if you trust this model",
            )
        path = self.folder / location
        if not path.is_file():
            raise CheckpointError(
                self.model_path,
                f"tensor {tensor_name!r}: external data file {location!r} not found in {self.folder}; "
                "copy it next to the model file",
            )
        return path

    def buffer(self, path: Path) -> mmap.mmap | None:
        """Map `path` read-only, once; return None for an empty file."""
        key = os.fspath(path)
        if key not in self._maps:
            mapped = None
            if path.stat().st_size:
                with path.open("rb") as file:
                    mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
                self._spans.append((np.frombuffer(mapped, np.uint8).ctypes.data, len(mapped)))
            self._maps[key] = mapped
        return self._maps[key]

    def mapped_span(self, array: np.ndarray) -> tuple[int, int]:
        """Return (address, bytes) of `array` when it views one of the maps, else (0, 0).

        `pages.PageWindow` drops the pages of a returned span later, which only
        file mappings survive (anonymous memory would read back as zeros).
        """
        address, nbytes = array.ctypes.data, array.nbytes
        for start, length in self._spans:
            if start <= address and address + nbytes <= start + length:
                return address, nbytes
        return 0, 0


def external_info(tensor: Any) -> dict[str, str]:
    """Return the `external_data` key-value pairs of a tensor (`location`, `offset`, `length`, ...)."""
    return {entry.key: entry.value for entry in tensor.external_data}


def is_external(tensor: Any) -> bool:
    from onnx import TensorProto

    return bool(tensor.data_location == TensorProto.EXTERNAL)


def decode(tensor: Any, name: str, files: ExternalFiles) -> np.ndarray:
    """Decode the values of one `TensorProto`, shaped by its `dims`."""
    data_type = int(tensor.data_type)
    shape = tuple(int(d) for d in tensor.dims)
    if data_type == STRING:
        raise TensorError(name, "is a string tensor; tbweights summarizes numbers only", dtype="string", shape=shape)
    try:
        dtype = element_type(data_type)
    except ValueError as error:
        raise TensorError(name, f"cannot be read: {error}", dtype=dtype_name(data_type), shape=shape) from None
    if is_external(tensor):
        raw: Any = _external_bytes(tensor, name, shape, dtype, data_type, files)
    elif tensor.HasField("raw_data"):
        raw = tensor.raw_data
    else:
        return _to_array(tensor, name, files)
    if data_type in _PACKED:
        return _unpack(tensor, raw, name, files)
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) != count * dtype.itemsize:
        raise CheckpointError(
            files.model_path,
            f"tensor {name!r}: {len(raw)} bytes of data do not match shape {shape} of {dtype_name(data_type)} "
            f"({count * dtype.itemsize} bytes); the file is truncated or corrupt",
        )
    array = np.frombuffer(raw, dtype=dtype.newbyteorder("<"), count=count)
    return array.reshape(shape)


def _external_bytes(
    tensor: Any, name: str, shape: tuple[int, ...], dtype: np.dtype, data_type: int, files: ExternalFiles
) -> Any:
    info = external_info(tensor)
    path = files.resolve(name, info.get("location", ""))
    size = path.stat().st_size
    try:
        offset = int(info.get("offset", "0"))
        if "length" in info:
            length = int(info["length"])
        elif data_type in _PACKED:
            length = size - offset
        else:
            length = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    except ValueError:
        raise CheckpointError(files.model_path, f"tensor {name!r} has a malformed external data entry {info}") from None
    if offset < 0 or length < 0 or offset + length > size:
        raise CheckpointError(
            files.model_path,
            f"tensor {name!r}: bytes {offset} to {offset + length} of {info['location']!r} lie past its "
            f"{size} bytes; the data file is truncated",
        )
    mapped = files.buffer(path)
    if mapped is None or length == 0:
        return b""
    return memoryview(mapped)[offset : offset + length]


def _unpack(tensor: Any, raw: Any, name: str, files: ExternalFiles) -> np.ndarray:
    """Unpack sub-byte types through a copy of the tensor with the bytes inline.

    The copy costs one tensor's bytes, which is acceptable for these rare types.
    """
    from onnx import TensorProto

    inline = TensorProto()
    inline.data_type = tensor.data_type
    inline.dims.extend(tensor.dims)
    inline.raw_data = bytes(raw)
    return _to_array(inline, name, files)


def _to_array(tensor: Any, name: str, files: ExternalFiles) -> np.ndarray:
    from onnx import numpy_helper

    try:
        array: np.ndarray = numpy_helper.to_array(tensor)
    except (ValueError, TypeError) as error:
        raise CheckpointError(files.model_path, f"tensor {name!r} cannot be decoded: {error}") from None
    return _as_element_type(array, int(tensor.data_type))


def _as_element_type(array: np.ndarray, data_type: int) -> np.ndarray:
    """Bring `to_array`'s result for bfloat16, float8 and 4-bit types to `element_type`.

    onnx 1.16 returns their values as float32, which converts exactly. onnx 1.18
    returns structured dtypes such as `(uint16, [('bfloat16', '<u2')])` whose
    integers are the raw bits, to be viewed rather than converted.
    """
    expected = element_type(data_type)
    if array.dtype == expected:
        return array
    if array.dtype.fields is not None:
        bits = array.view(np.dtype(f"{array.dtype.base.kind}{array.dtype.itemsize}"))
        return bits if data_type in _WIDENED else bits.view(expected)
    return array.astype(_WIDENED.get(data_type, expected))


def densify(values: np.ndarray, indices: np.ndarray, shape: tuple[int, ...], name: str, path: Path) -> np.ndarray:
    """Build the dense form of a `SparseTensorProto`: zeros, with `values` at `indices`.

    `indices` is [NNZ] (positions in the flattened tensor) or [NNZ, rank] (coordinates).
    """
    dense = np.zeros(shape, dtype=values.dtype)
    count = dense.size
    indices = indices.astype(np.int64, copy=False)
    flat = values.reshape(-1)
    try:
        if indices.ndim == 1 and len(indices) == len(flat):
            if len(indices) and (indices.min() < 0 or indices.max() >= count):
                raise IndexError("index out of range")
            dense.reshape(-1)[indices] = flat
        elif indices.ndim == 2 and indices.shape == (len(flat), len(shape)):
            if len(indices) and ((indices < 0).any() or (indices >= np.array(shape, dtype=np.int64)).any()):
                raise IndexError("index out of range")
            dense[tuple(indices.T)] = flat
        else:
            raise IndexError(f"indices of shape {indices.shape} do not fit {len(flat)} values of rank {len(shape)}")
    except IndexError as error:
        raise CheckpointError(path, f"sparse tensor {name!r} of shape {shape} has invalid indices: {error}") from None
    return dense
