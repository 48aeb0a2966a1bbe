"""Index a msgpack document by byte offsets, so that large binary payloads are never copied.

The `msgpack` package decodes whole objects and reports no offsets, so a
reader built on it keeps every array of a checkpoint in memory at once. This
module walks the document's structure by hand instead, following the type
bytes of the msgpack specification (github.com/msgpack/msgpack, spec.md). Maps
and arrays become dicts and lists, and each extension object becomes an `Ext`
that records where its payload lies in the buffer. Keys and small scalars are
decoded with `msgpack.unpackb` on their own bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

# Deeper nesting is rejected, which keeps the recursive walk far below Python's recursion limit.
MAX_DEPTH = 100
# str and bin objects longer than this are recorded as `Blob`s instead of decoded.
MAX_DECODED_BYTES = 1 << 16


class MsgpackIndexError(ValueError):
    """The bytes are not a well-formed msgpack document."""


@dataclass(frozen=True)
class Ext:
    """An extension object: its type code and the offset and length of its payload."""

    code: int
    offset: int
    length: int


@dataclass(frozen=True)
class Blob:
    """A str or bin object too long to decode here: the offset and length of its bytes."""

    offset: int
    length: int


# Type byte -> size of the value that follows it, for nil, bool and the number types.
_FIXED_SIZES = {
    0xC0: 0,  # nil
    0xC2: 0,  # false
    0xC3: 0,  # true
    0xCA: 4,  # float 32
    0xCB: 8,  # float 64
    0xCC: 1,  # uint 8
    0xCD: 2,
    0xCE: 4,
    0xCF: 8,
    0xD0: 1,  # int 8
    0xD1: 2,
    0xD2: 4,
    0xD3: 8,
}
_FIXEXT_SIZES = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}
_LENGTH_FORMATS = {1: ">B", 2: ">H", 4: ">I"}
_STR_OR_BIN = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}
_EXT = {0xC7: 1, 0xC8: 2, 0xC9: 4}
_ARRAY = {0xDC: 2, 0xDD: 4}
_MAP = {0xDE: 2, 0xDF: 4}


class _Walker:
    def __init__(self, buffer: Any, unpackb: Any) -> None:
        self.buffer = memoryview(buffer)
        self.size = len(self.buffer)
        self.unpackb = unpackb

    def _need(self, offset: int, count: int) -> None:
        if offset + count > self.size:
            raise MsgpackIndexError(f"the document ends at byte {self.size}, inside an object at byte {offset}")

    def _length(self, offset: int, width: int) -> int:
        self._need(offset, width)
        (length,) = struct.unpack_from(_LENGTH_FORMATS[width], self.buffer, offset)
        return int(length)

    def _decode(self, start: int, end: int) -> Any:
        self._need(start, end - start)
        return self.unpackb(self.buffer[start:end], raw=False, strict_map_key=False)

    def walk(self, offset: int, depth: int = 0) -> tuple[Any, int]:
        """Return the object at `offset` and the offset just past it."""
        if depth > MAX_DEPTH:
            raise MsgpackIndexError(f"objects are nested more than {MAX_DEPTH} deep")
        self._need(offset, 1)
        kind = self.buffer[offset]
        if kind <= 0x7F or kind >= 0xE0:  # positive and negative fixint
            return self._decode(offset, offset + 1), offset + 1
        if 0x80 <= kind <= 0x8F:
            return self._map(offset + 1, kind & 0x0F, depth)
        if 0x90 <= kind <= 0x9F:
            return self._array(offset + 1, kind & 0x0F, depth)
        if 0xA0 <= kind <= 0xBF:
            return self._string(offset, 1, kind & 0x1F)
        if kind in _FIXED_SIZES:
            end = offset + 1 + _FIXED_SIZES[kind]
            return self._decode(offset, end), end
        if kind in _STR_OR_BIN:
            width = _STR_OR_BIN[kind]
            return self._string(offset, 1 + width, self._length(offset + 1, width))
        if kind in _FIXEXT_SIZES:
            return self._ext(offset + 1, _FIXEXT_SIZES[kind])
        if kind in _EXT:
            width = _EXT[kind]
            return self._ext(offset + 1 + width, self._length(offset + 1, width))
        if kind in _ARRAY:
            width = _ARRAY[kind]
            return self._array(offset + 1 + width, self._length(offset + 1, width), depth)
        if kind in _MAP:
            width = _MAP[kind]
            return self._map(offset + 1 + width, self._length(offset + 1, width), depth)
        raise MsgpackIndexError(f"byte {offset} has the type byte 0x{kind:02x}, which msgpack never uses")

    def _string(self, offset: int, header: int, length: int) -> tuple[Any, int]:
        end = offset + header + length
        self._need(offset, header + length)
        if length > MAX_DECODED_BYTES:
            return Blob(offset + header, length), end
        return self._decode(offset, end), end

    def _ext(self, code_offset: int, length: int) -> tuple[Ext, int]:
        self._need(code_offset, 1 + length)
        code = struct.unpack_from(">b", self.buffer, code_offset)[0]
        return Ext(code, code_offset + 1, length), code_offset + 1 + length

    def _array(self, offset: int, count: int, depth: int) -> tuple[list[Any], int]:
        items = []
        for _ in range(count):
            item, offset = self.walk(offset, depth + 1)
            items.append(item)
        return items, offset

    def _map(self, offset: int, count: int, depth: int) -> tuple[dict[Any, Any], int]:
        mapping: dict[Any, Any] = {}
        for _ in range(count):
            key, offset = self.walk(offset, depth + 1)
            value, offset = self.walk(offset, depth + 1)
            try:
                mapping[key] = value
            except TypeError:  # a list or dict as key: legal msgpack, no weight name
                mapping[repr(key)] = value
        return mapping, offset


def index_document(buffer: Any, unpackb: Any, offset: int = 0, *, whole: bool = True) -> tuple[Any, int]:
    """Walk the msgpack object at `offset` of `buffer` and return it with the offset past it.

    `unpackb` is `msgpack.unpackb`. With `whole`, bytes after the object are an error.
    """
    walker = _Walker(buffer, unpackb)
    value, end = walker.walk(offset)
    if whole and end != walker.size:
        raise MsgpackIndexError(f"{walker.size - end} extra bytes follow the document, which ends at byte {end}")
    return value, end
