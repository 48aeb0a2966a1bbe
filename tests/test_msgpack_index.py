"""The msgpack offset index against the `msgpack` package's own decoder."""

from __future__ import annotations

import pytest

from tbweights.checkpoints.msgpack_index import MAX_DECODED_BYTES, Blob, Ext, MsgpackIndexError, index_document

msgpack = pytest.importorskip("msgpack", reason="the jax extra is not installed")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
documents = st.recursive(
    scalars | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=40)),
    lambda children: st.lists(children, max_size=20) | st.dictionaries(st.text(max_size=10), children, max_size=20),
    max_leaves=60,
)


def assert_matches(indexed: object, decoded: object, packed: bytes) -> None:
    """The index equals the decoded value, with each ExtType as an Ext pointing at its payload."""
    if isinstance(decoded, msgpack.ExtType):
        assert isinstance(indexed, Ext)
        assert indexed.code == decoded.code
        assert packed[indexed.offset : indexed.offset + indexed.length] == decoded.data
    elif isinstance(decoded, dict):
        assert isinstance(indexed, dict)
        assert list(indexed) == list(decoded)
        for key, item in decoded.items():
            assert_matches(indexed[key], item, packed)
    elif isinstance(decoded, list):
        assert isinstance(indexed, list)
        assert len(indexed) == len(decoded)
        for index_item, item in zip(indexed, decoded, strict=True):
            assert_matches(index_item, item, packed)
    else:
        assert indexed == decoded


@settings(max_examples=200, deadline=None)
@given(documents)
def test_index_equals_unpackb(document) -> None:
    packed = msgpack.packb(document, use_bin_type=True)
    indexed, end = index_document(packed, msgpack.unpackb)
    assert end == len(packed)
    assert_matches(indexed, msgpack.unpackb(packed, raw=False, strict_map_key=False), packed)


def test_ext_payload_offset_points_at_data() -> None:
    payload = bytes(range(200))
    packed = msgpack.packb({"a": [1, msgpack.ExtType(5, payload)]}, use_bin_type=True)
    indexed, _ = index_document(packed, msgpack.unpackb)
    ext = indexed["a"][1]
    assert ext.code == 5
    assert packed[ext.offset : ext.offset + ext.length] == payload


def test_long_binary_becomes_blob() -> None:
    data = b"x" * (MAX_DECODED_BYTES + 1)
    packed = msgpack.packb([data], use_bin_type=True)
    (blob,), _ = index_document(packed, msgpack.unpackb)
    assert isinstance(blob, Blob)
    assert packed[blob.offset : blob.offset + blob.length] == data


def test_every_truncation_is_an_index_error() -> None:
    packed = msgpack.packb({"k": [1.5, "text", b"bin", msgpack.ExtType(1, b"abc"), {"n": None}]}, use_bin_type=True)
    for cut in range(len(packed)):
        with pytest.raises(MsgpackIndexError):
            index_document(packed[:cut], msgpack.unpackb)


def test_unused_type_byte_is_rejected() -> None:
    with pytest.raises(MsgpackIndexError, match="0xc1"):
        index_document(b"\x91\xc1", msgpack.unpackb)


def test_deep_nesting_is_rejected() -> None:
    with pytest.raises(MsgpackIndexError, match="nested more than"):
        index_document(b"\x91" * 200 + b"\x90", msgpack.unpackb)
