"""Read the `.index` file of a TensorFlow checkpoint without TensorFlow.

The index is a LevelDB-format sorted table ("SSTable"). TensorBoard ships no
reader for it, so this module parses it by hand. It is kept small: only what
TensorFlow's `BundleWriter` produces is supported.

Layout (LevelDB `table_format.md`, as written by TensorFlow 2.x):

- The file ends with a 48-byte footer: two block handles (metaindex, index),
  zero padding up to 40 bytes, then the magic number 0xdb4775248b80fb57 as
  a little-endian uint64. A block handle is two varint64s: offset and size.
- Each block is followed by a 5-byte trailer: one compression-type byte (0 for
  uncompressed, 1 for snappy) and the masked CRC-32C of the block and that type byte.
- A block holds entries, then an array of uint32 restart offsets, then their
  count. An entry is three varint32s (shared key bytes, unshared key bytes,
  value length), the unshared key suffix and the value. Keys are
  prefix-compressed against the previous entry in the block.
- The index block maps the last key of each data block to that block's handle.

TensorFlow writes checkpoint index tables uncompressed, so snappy blocks are
rejected with an error rather than decoded.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path

from tbweights.errors import CheckpointError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
_NO_COMPRESSION = 0
_SNAPPY = 1
_CRC_MASK_DELTA = 0xA282EAD8


def has_table_magic(tail: bytes) -> bool:
    """True when `tail` (the last 8 or more bytes of a file) ends with the table magic."""
    return len(tail) >= 8 and struct.unpack("<Q", tail[-8:])[0] == TABLE_MAGIC


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode one unsigned LEB128 varint (as in protobuf and LevelDB) at `pos`; return (value, next position).

    Raise `ValueError` when the data ends inside the varint or it is longer than 64 bits.
    """
    result = 0
    shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _block_handle(data: bytes, pos: int) -> tuple[tuple[int, int], int]:
    offset, pos = read_varint(data, pos)
    size, pos = read_varint(data, pos)
    return (offset, size), pos


def unmask_crc(masked: int) -> int:
    """Undo LevelDB's CRC mask (rotate right by 15 bits after subtracting a constant)."""
    rotated = (masked - _CRC_MASK_DELTA) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF


def crc32c_function() -> Callable[[bytes], int] | None:
    """The `crc32c` package's checksum function, or None when it is not installed."""
    try:
        import crc32c
    except ImportError:
        return None
    function: Callable[[bytes], int] = crc32c.crc32c
    return function


class IndexTable:
    """All (key, value) pairs of one `.index` file, read eagerly.

    An index contains one small entry per tensor (well under 100 bytes each), so
    reading it whole costs little even for checkpoints with many thousands of
    tensors. The tensor data itself lives in the separate `.data-*` files.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._data = path.read_bytes()
        except OSError as error:
            raise CheckpointError(path, f"cannot read the index file: {error.strerror or error}") from None
        # NOTE: block checksums are verified only when the optional `crc32c` package is installed.
        self._crc32c = crc32c_function()

    def _error(self, reason: str) -> CheckpointError:
        return CheckpointError(
            self.path,
            f"{reason}; the TensorFlow checkpoint index is corrupt or truncated, "
            "save the checkpoint again or copy the .index file again",
        )

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Yield every (key, value) pair in key order."""
        data = self._data
        if len(data) < FOOTER_SIZE or not has_table_magic(data):
            raise self._error("the file does not end with the table magic number")
        footer = data[-FOOTER_SIZE:]
        try:
            _metaindex, pos = _block_handle(footer, 0)
            index_handle, _ = _block_handle(footer, pos)
            for _key, handle_bytes in self._block_entries(index_handle):
                data_handle, _ = _block_handle(handle_bytes, 0)
                yield from self._block_entries(data_handle)
        except (ValueError, IndexError, struct.error) as error:
            raise self._error(f"cannot parse the table ({error})") from None

    def _read_block(self, handle: tuple[int, int]) -> bytes:
        offset, size = handle
        end = offset + size + BLOCK_TRAILER_SIZE
        if end > len(self._data) - FOOTER_SIZE:
            raise self._error(f"block at offset {offset} runs past the end of the file")
        block = self._data[offset : offset + size]
        compression = self._data[offset + size]
        if self._crc32c is not None:
            (masked,) = struct.unpack("<I", self._data[offset + size + 1 : end])
            actual = self._crc32c(self._data[offset : offset + size + 1])
            if actual != unmask_crc(masked):
                raise self._error(f"checksum mismatch in the block at offset {offset}")
        if compression == _SNAPPY:
            raise CheckpointError(
                self.path,
                "the index uses snappy-compressed blocks, which tbweights does not read; "
                "TensorFlow writes checkpoint indexes uncompressed, so this file was "
                "written by another tool",
            )
        if compression != _NO_COMPRESSION:
            raise self._error(f"unknown block compression type {compression}")
        return block

    def _block_entries(self, handle: tuple[int, int]) -> Iterator[tuple[bytes, bytes]]:
        block = self._read_block(handle)
        if len(block) < 4:
            raise self._error("a block is shorter than its restart count")
        (restarts,) = struct.unpack("<I", block[-4:])
        limit = len(block) - 4 - 4 * restarts
        if limit < 0:
            raise self._error("a block's restart array is larger than the block")
        pos = 0
        key = b""
        while pos < limit:
            shared, pos = read_varint(block, pos)
            unshared, pos = read_varint(block, pos)
            value_length, pos = read_varint(block, pos)
            if shared > len(key) or pos + unshared + value_length > limit:
                raise self._error("a block entry points outside its block")
            key = key[:shared] + block[pos : pos + unshared]
            pos += unshared
            yield key, block[pos : pos + value_length]
            pos += value_length
