"""Read the tensors of a TensorFlow checkpoint ("tensor bundle") without TensorFlow.

A bundle named by a prefix such as `ckpt-3` is one `ckpt-3.index` table plus
data files `ckpt-3.data-00000-of-00001` and so on. Each index value is a
serialized `BundleEntryProto` (dtype, shape, shard, offset, size, CRC-32C) that
points at raw little-endian bytes in one data file; the entry under the empty
key is a `BundleHeaderProto` (shard count, endianness).

TensorBoard ships the `DataType` and `TensorShapeProto` protos but not the two
bundle messages, so those are declared here from their definition in
TensorFlow's `tensorflow/core/protobuf/tensor_bundle.proto`. Fields this reader
never looks into (`version`, `slices`) are declared as plain bytes: the wire
format is the same, so parsing them needs no further message types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from tensorboard.compat.proto import tensor_shape_pb2, types_pb2

from tbweights.checkpoints.tf_table import IndexTable, crc32c_function, unmask_crc
from tbweights.errors import CheckpointError, TensorError

HEADER_KEY = b""

# TensorFlow DataType name -> NumPy dtype of the raw little-endian bytes.
_NUMPY_DTYPES: dict[str, Any] = {
    "DT_FLOAT": np.dtype("<f4"),
    "DT_DOUBLE": np.dtype("<f8"),
    "DT_HALF": np.dtype("<f2"),
    "DT_BFLOAT16": np.dtype(ml_dtypes.bfloat16),
    "DT_FLOAT8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "DT_FLOAT8_E4M3FN": np.dtype(ml_dtypes.float8_e4m3fn),
    "DT_FLOAT8_E4M3FNUZ": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "DT_FLOAT8_E5M2FNUZ": np.dtype(ml_dtypes.float8_e5m2fnuz),
    "DT_FLOAT8_E4M3B11FNUZ": np.dtype(ml_dtypes.float8_e4m3b11fnuz),
    "DT_INT8": np.dtype("<i1"),
    "DT_INT16": np.dtype("<i2"),
    "DT_INT32": np.dtype("<i4"),
    "DT_INT64": np.dtype("<i8"),
    "DT_UINT8": np.dtype("<u1"),
    "DT_UINT16": np.dtype("<u2"),
    "DT_UINT32": np.dtype("<u4"),
    "DT_UINT64": np.dtype("<u8"),
    "DT_BOOL": np.dtype("?"),
    "DT_COMPLEX64": np.dtype("<c8"),
    "DT_COMPLEX128": np.dtype("<c16"),
}


def _bundle_message_classes() -> tuple[type[Any], type[Any]]:
    """Build `BundleHeaderProto` and `BundleEntryProto` in a private descriptor pool."""
    pool = descriptor_pool.DescriptorPool()
    for module in (types_pb2, tensor_shape_pb2):
        file_proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(file_proto)
        pool.Add(file_proto)

    field = descriptor_pb2.FieldDescriptorProto
    bundle = descriptor_pb2.FileDescriptorProto(
        name="tbweights/tensor_bundle.proto",
        package="tbweights.bundle",
        syntax="proto3",
        dependency=[types_pb2.DESCRIPTOR.name, tensor_shape_pb2.DESCRIPTOR.name],
    )
    header = bundle.message_type.add(name="BundleHeaderProto")
    header.field.add(name="num_shards", number=1, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL)
    header.field.add(name="endianness", number=2, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL)
    header.field.add(name="version", number=3, type=field.TYPE_BYTES, label=field.LABEL_OPTIONAL)

    entry = bundle.message_type.add(name="BundleEntryProto")
    entry.field.add(
        name="dtype",
        number=1,
        type=field.TYPE_ENUM,
        type_name=".tensorboard.DataType",
        label=field.LABEL_OPTIONAL,
    )
    entry.field.add(
        name="shape",
        number=2,
        type=field.TYPE_MESSAGE,
        type_name=".tensorboard.TensorShapeProto",
        label=field.LABEL_OPTIONAL,
    )
    entry.field.add(name="shard_id", number=3, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL)
    entry.field.add(name="offset", number=4, type=field.TYPE_INT64, label=field.LABEL_OPTIONAL)
    entry.field.add(name="size", number=5, type=field.TYPE_INT64, label=field.LABEL_OPTIONAL)
    entry.field.add(name="crc32c", number=6, type=field.TYPE_FIXED32, label=field.LABEL_OPTIONAL)
    entry.field.add(name="slices", number=7, type=field.TYPE_BYTES, label=field.LABEL_REPEATED)
    pool.Add(bundle)

    header_class = message_factory.GetMessageClass(pool.FindMessageTypeByName("tbweights.bundle.BundleHeaderProto"))
    entry_class = message_factory.GetMessageClass(pool.FindMessageTypeByName("tbweights.bundle.BundleEntryProto"))
    return header_class, entry_class


BundleHeaderProto, BundleEntryProto = _bundle_message_classes()
_BIG_ENDIAN = 1


@dataclass(frozen=True)
class BundleEntry:
    """Location, dtype and shape of one tensor's bytes, as the index describes them."""

    key: str
    dtype_name: str
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int
    sliced: bool

    @property
    def numpy_dtype(self) -> np.dtype | None:
        return _NUMPY_DTYPES.get(self.dtype_name)

    @property
    def dtype(self) -> str:
        """The dtype in NumPy's spelling (`float32`), or TensorFlow's lower-cased name."""
        numpy_dtype = self.numpy_dtype
        if numpy_dtype is not None:
            return str(numpy_dtype)
        return self.dtype_name.removeprefix("DT_").lower()


class TensorBundle:
    """The index of one checkpoint prefix, with lazy access to each tensor's data."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.index_path = prefix.with_name(prefix.name + ".index")
        self.num_shards = 1
        self.entries: dict[str, BundleEntry] = {}
        for key, value in IndexTable(self.index_path).items():
            if key == HEADER_KEY:
                self._read_header(value)
            else:
                self._add_entry(key, value)

    def _read_header(self, value: bytes) -> None:
        header = BundleHeaderProto()
        try:
            header.ParseFromString(value)
        except DecodeError:
            raise CheckpointError(self.index_path, "the checkpoint header is not a valid BundleHeaderProto") from None
        if header.endianness == _BIG_ENDIAN:
            raise CheckpointError(
                self.index_path,
                "the checkpoint was written on a big-endian machine, which tbweights does not read; "
                "load and save it again with TensorFlow on a little-endian machine",
            )
        self.num_shards = max(header.num_shards, 1)

    def _add_entry(self, key_bytes: bytes, value: bytes) -> None:
        key = key_bytes.decode("utf-8", errors="replace")
        proto = BundleEntryProto()
        try:
            proto.ParseFromString(value)
        except DecodeError:
            raise CheckpointError(
                self.index_path, f"the index entry for {key!r} is not a valid BundleEntryProto"
            ) from None
        self.entries[key] = BundleEntry(
            key=key,
            dtype_name=types_pb2.DataType.Name(proto.dtype)
            if proto.dtype in types_pb2.DataType.values()
            else str(proto.dtype),
            shape=tuple(dim.size for dim in proto.shape.dim),
            shard_id=proto.shard_id,
            offset=proto.offset,
            size=proto.size,
            crc32c=proto.crc32c,
            sliced=len(proto.slices) > 0,
        )

    def data_path(self, shard_id: int) -> Path:
        return self.prefix.with_name(f"{self.prefix.name}.data-{shard_id:05d}-of-{self.num_shards:05d}")

    def missing_data_files(self) -> list[Path]:
        return [path for path in map(self.data_path, range(self.num_shards)) if not path.is_file()]

    def read_bytes(self, entry: BundleEntry) -> bytes:
        """Read the raw bytes of one entry and check them against the index's CRC-32C when possible."""
        path = self.data_path(entry.shard_id)
        try:
            with path.open("rb") as file:
                file.seek(entry.offset)
                raw = file.read(entry.size)
        except OSError as error:
            raise CheckpointError(path, f"cannot read the data file: {error.strerror or error}") from None
        if len(raw) != entry.size:
            raise CheckpointError(
                path,
                f"the data file is truncated: tensor {entry.key!r} needs bytes "
                f"{entry.offset}..{entry.offset + entry.size}; copy the checkpoint again",
            )
        # NOTE: string entries (the object graph) are not checked: TensorFlow
        # computes their checksum over an encoding of the lengths that this
        # reader does not reproduce.
        checksum = crc32c_function() if entry.dtype_name != "DT_STRING" else None
        if checksum is not None and checksum(raw) != unmask_crc(entry.crc32c):
            raise CheckpointError(path, f"checksum mismatch for tensor {entry.key!r}; the data file is corrupt")
        return raw

    def loader(self, entry: BundleEntry) -> Callable[[], np.ndarray]:
        """A function that reads one tensor as a NumPy array when called."""

        def load() -> np.ndarray:
            numpy_dtype = entry.numpy_dtype
            if numpy_dtype is None:
                raise TensorError(
                    entry.key,
                    f"TensorFlow dtype {entry.dtype_name} has no numeric statistics in tbweights",
                    dtype=entry.dtype,
                    shape=entry.shape,
                )
            if entry.sliced:
                raise TensorError(
                    entry.key,
                    "the variable is stored in partitioned slices, which tbweights does not join",
                    dtype=entry.dtype,
                    shape=entry.shape,
                )
            count = 1
            for dim in entry.shape:
                count *= dim
            if count * numpy_dtype.itemsize != entry.size:
                raise TensorError(
                    entry.key,
                    f"the index gives {entry.size} bytes for {count} elements of {numpy_dtype}",
                    dtype=entry.dtype,
                    shape=entry.shape,
                )
            return np.frombuffer(self.read_bytes(entry), dtype=numpy_dtype).reshape(entry.shape)

        return load


def unpack_string_scalar(raw: bytes) -> bytes:
    """Decode the value of a scalar DT_STRING entry (the object graph).

    A string tensor is stored as the varint64 length of each element, then a
    4-byte checksum of those lengths, then the bytes of the elements.
    """
    length = 0
    shift = 0
    pos = 0
    while True:
        byte = raw[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    start = pos + 4
    if start + length > len(raw):
        raise ValueError("string tensor shorter than its stated length")
    return raw[start : start + length]
