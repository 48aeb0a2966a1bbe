"""Open GGUF files with `gguf.GGUFReader`, but skip its parsing of metadata arrays.

GGUFReader turns every element of every metadata array into NumPy views, and a
tokenizer contains hundreds of thousands of tokens, scores and merges. With gguf
0.19 on a 2-core machine, opening Gemma 3 270M (Q4_K_M, 262,144 tokens) took 9
to 14 s and 650 MB before a tensor was read. This reader opens it in 0.04 s and
60 MB. tbweights reads only the tensors, so `FastGGUFReader` steps
over array values with `struct` and keeps only the scalar and string fields,
which include `general.alignment`.

The override uses GGUFReader's private helpers (`_get`, `_get_str`,
`_get_field_parts`, `_push_field`, checked with gguf 0.16 and 0.19). `open_fast` falls
back to the plain reader when one of them is missing.
"""

from __future__ import annotations

import struct
import sys
from typing import Any

import numpy as np

_HELPERS = ("_build_fields", "_get", "_get_str", "_get_field_parts", "_push_field")


def open_fast(gguf: Any, path: Any) -> Any:
    """Return a GGUFReader of `path` whose `fields` lack the metadata arrays, or a plain one."""
    if not all(hasattr(gguf.GGUFReader, name) for name in _HELPERS):
        return gguf.GGUFReader(path, "r")
    return _reader_class(gguf)(path, "r")


def _reader_class(gguf: Any) -> Any:
    value_type = gguf.GGUFValueType

    class FastGGUFReader(gguf.GGUFReader):  # type: ignore[misc]
        def _build_fields(self, offs: int, count: int) -> int:
            order = "<" if (self.byte_order == "I") == (sys.byteorder == "little") else ">"
            buffer = memoryview(self.data)
            for _ in range(int(count)):
                start = offs
                key_length, key = self._get_str(offs)
                offs += int(key_length.nbytes + key.nbytes)
                raw_type = self._get(offs, np.uint32)
                offs += int(raw_type.nbytes)
                if int(raw_type[0]) == value_type.ARRAY:
                    offs = self._skip_array(buffer, offs, order)
                    continue
                size, parts, indices, types = self._get_field_parts(offs, raw_type[0])
                field = gguf.ReaderField(
                    start,
                    str(bytes(key), encoding="utf-8"),
                    [key_length, key, raw_type, *parts],
                    [index + 3 for index in indices],
                    types,
                )
                self._push_field(field, skip_sum=True)
                offs += size
            return offs

        def _skip_array(self, buffer: memoryview, offs: int, order: str) -> int:
            """Return the offset just past the array value that starts at `offs`."""
            item_type, length = (int(x) for x in struct.unpack_from(order + "IQ", buffer, offs))
            offs += 12
            if item_type == value_type.STRING:
                string_length = struct.Struct(order + "Q")
                for _ in range(length):
                    offs += 8 + int(string_length.unpack_from(buffer, offs)[0])
                if offs > len(buffer):
                    raise IndexError("a metadata string array runs past the end of the file")
                return offs
            scalar = self.gguf_scalar_to_np.get(value_type(item_type))
            if scalar is not None:
                return offs + length * int(np.dtype(scalar).itemsize)
            # Arrays of arrays are rare, so GGUFReader's own parser measures them.
            size, _, _, _ = self._get_field_parts(offs - 12, value_type.ARRAY)
            end: int = offs - 12 + int(size)
            return end

    return FastGGUFReader
