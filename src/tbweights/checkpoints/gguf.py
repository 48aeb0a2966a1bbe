"""GGUF files (llama.cpp's format), memory-mapped through the `gguf` package.

`gguf.GGUFReader` maps the file and parses its header. `gguf.quants.dequantize`
turns block-quantized tensors (Q4_0, Q8_0, the K-quants, IQ types, ...) into
float32, one tensor at a time and in chunks of blocks, so the only large
allocation is the float32 copy of the tensor being summarized. F32, F64 and the
integer types are read in place. F16 and BF16 go to the kernel as stored, and
the kernel upcasts them chunk by chunk.

GGUF lists dimensions fastest-varying first (`ne[0]` is the row length), the
reverse of PyTorch and NumPy. Shapes are reported in PyTorch order, so a
(3, 5, 7) array written with `GGUFWriter` reads back as (3, 5, 7) in C order.

Files converted from Hugging Face checkpoints often keep their name-sorted
order (`blk.0`, `blk.1`, `blk.10`, ..., `blk.2`). The tensors are yielded in
model order instead: the tensors outside numbered blocks (`token_embd`), then
each numbered block in numeric order with its tensors in file order, then the
output head (`output_norm`, `output`, `cls`).

The file's key/value metadata (architecture, tokenizer, quantization version)
is not reported: it contains no weights, and `gguf-dump` from the gguf package
prints it. Its arrays are not even parsed (see `gguf_header`).

NOTE: a model split with llama.cpp's gguf-split (`*-00001-of-00003.gguf`) is
read one file at a time, so each split yields only its own tensors.

The gguf package is an optional dependency (the `gguf` extra), imported only
when a GGUF file is read.
"""

from __future__ import annotations

import re
import struct
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ml_dtypes
import numpy as np

from tbweights.checkpoints import Format, LoadOptions
from tbweights.checkpoints.gguf_header import open_fast
from tbweights.checkpoints.pages import PageWindow
from tbweights.errors import CheckpointError, TensorError, import_optional
from tbweights.tensors import NamedTensor, guess_role

if TYPE_CHECKING:
    from gguf import GGUFReader, ReaderTensor

GGUF_MAGIC = b"GGUF"
# Values dequantized per call: 4 MiB of float32, plus the decoder's temporaries.
CHUNK_VALUES = 1024 * 1024
# Stored types read without dequantizing, by GGML type name, with the NumPy dtype of
# their values. Every other type is block-quantized.
PLAIN_TYPES: dict[str, np.dtype] = {
    "F32": np.dtype(np.float32),
    "F64": np.dtype(np.float64),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I8": np.dtype(np.int8),
    "I16": np.dtype(np.int16),
    "I32": np.dtype(np.int32),
    "I64": np.dtype(np.int64),
}
# Last name parts (before `.weight`/`.bias`) of the output head, placed after the blocks.
_HEAD_PARTS = ("output", "output_norm", "cls")


def import_gguf() -> Any:
    import_optional("gguf.quants", "gguf", "gguf", "reading a GGUF file")  # also imports gguf
    return sys.modules["gguf"]


def _sniff(path: Path, head: bytes) -> bool:
    del path
    return head.startswith(GGUF_MAGIC)


def open_reader(path: Path) -> GGUFReader:
    """Parse the header of the GGUF file at `path`; raise `CheckpointError` if it is unreadable."""
    gguf = import_gguf()
    try:
        reader: GGUFReader = open_fast(gguf, path)
    except ValueError as error:
        if "GGMLQuantizationType" in str(error):
            raise CheckpointError(
                path,
                f"a tensor has a type that gguf {_version(gguf)} does not know ({error}); "
                "upgrade the gguf package with `pip install -U gguf`",
            ) from None
        version = _unknown_version(error)
        if version is not None:
            raise CheckpointError(
                path,
                f"the file is GGUF version {version}, which gguf {_version(gguf)} cannot read; "
                "upgrade the gguf package with `pip install -U gguf`",
            ) from None
        raise CheckpointError(path, _corrupt(error)) from None
    except (IndexError, KeyError, OverflowError, UnicodeDecodeError, struct.error) as error:
        raise CheckpointError(path, _corrupt(error)) from None
    return reader


def _unknown_version(error: ValueError) -> int | None:
    """Return the version in GGUFReader's error for a file version it does not handle, else None."""
    # gguf 0.19 words it "Sorry, file appears to be version 4 which we cannot handle".
    found = re.search(r"appears to be version (\d+)", str(error))
    return int(found.group(1)) if found else None


def _corrupt(error: BaseException) -> str:
    # GGUFReader maps the file and slices it, so a short file shows up as an empty
    # slice (IndexError) or a tensor whose bytes do not fill its shape (ValueError).
    return (
        f"not a readable GGUF file ({type(error).__name__}: {error}); the file is truncated or "
        "corrupt, so fetch it again and compare its size or checksum with the source"
    )


def _version(gguf: Any) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gguf")
    except PackageNotFoundError:
        return str(getattr(gguf, "__version__", "(unknown version)"))


def _read(path: Path, options: LoadOptions) -> Iterator[NamedTensor]:
    del options  # a GGUF file contains no code to run and no optimizer state
    reader = open_reader(path)
    swapped = reader.byte_order == "S"
    window = PageWindow()
    tensors = [reader.tensors[i] for i in model_order([t.name for t in reader.tensors])]
    yield from window.stream(_record(t, window, swapped) for t in tensors)


def model_order(names: Sequence[str]) -> list[int]:
    """Return the positions of `names` in model order: other tensors, numbered blocks, output head.

    A numbered block is the run of names that share a prefix followed by a
    number part, such as `blk.10.` or `enc.blk.2.`. Blocks of one prefix are sorted
    by number (2 before 10), prefixes keep the order of their first tensor, and
    tensors within a block keep their file order.
    """
    prefixes: dict[str, int] = {}
    keys: list[tuple[int, int, int, int]] = []
    for position, name in enumerate(names):
        parts = name.split(".")
        number = next((i for i in range(1, len(parts) - 1) if parts[i].isdigit()), None)
        if number is not None:
            rank = prefixes.setdefault(".".join(parts[:number]), len(prefixes))
            keys.append((1, rank, int(parts[number]), position))
        elif _is_head(parts):
            keys.append((2, 0, 0, position))
        else:
            keys.append((0, 0, 0, position))
    return [key[3] for key in sorted(keys)]


def _is_head(parts: list[str]) -> bool:
    stem = parts[:-1] if len(parts) > 1 else parts
    return stem[-1] in _HEAD_PARTS or stem[0] == "cls"


def _record(tensor: ReaderTensor, window: PageWindow, swapped: bool) -> NamedTensor:
    stored = tensor.tensor_type.name
    # GGUF lists dimensions fastest-varying first; PyTorch and NumPy list them last.
    shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
    plain = PLAIN_TYPES.get(stored)

    def load() -> np.ndarray:
        raw = tensor.data.view(np.ndarray)  # drop the np.memmap subclass, still zero-copy
        window.loaded(raw.ctypes.data, raw.nbytes)
        if plain is not None:
            return _plain_values(raw, plain, shape, swapped)
        if swapped:
            raise TensorError(
                tensor.name,
                f"stored as {stored} in a big-endian GGUF file, and gguf dequantizes little-endian "
                "blocks only; convert the file to little-endian with llama.cpp's tools",
                dtype=stored,
                shape=shape,
            )
        return dequantize(tensor.name, raw, tensor.tensor_type, shape)

    note = "" if plain is not None else f"stored as {stored}, dequantized to float32"
    return NamedTensor(
        name=tensor.name,
        shape=shape,
        dtype=str(plain) if plain is not None else stored,
        load=load,
        role=guess_role(tensor.name, len(shape)),
        note=note,
    )


def _plain_values(raw: np.ndarray, dtype: np.dtype, shape: tuple[int, ...], swapped: bool) -> np.ndarray:
    if dtype == PLAIN_TYPES["BF16"]:
        # GGUFReader hands BF16 out as raw bytes; two bytes make one bfloat16.
        bits = raw.reshape(-1).view(np.dtype(">u2" if swapped else "<u2"))
        raw = bits.astype(np.uint16, copy=False).view(dtype)
    elif raw.dtype.byteorder not in ("=", "|"):
        raw = raw.astype(raw.dtype.newbyteorder("="))  # a byte-swapped file: one native copy
    return raw.reshape(shape)


def dequantize(name: str, raw: np.ndarray, qtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Dequantize one tensor's blocks (`raw`, its bytes) to float32 of `shape`, in chunks of blocks.

    Blocks are independent, so any run of whole blocks can be decoded alone.
    `gguf.quants.dequantize` keeps every partial result of a call until it joins
    them, so one call on the whole tensor would need twice its float32 size. It
    also decodes 16 rows per NumPy pass, which costs Python overhead on short
    rows, while a chunk passed as a single row is decoded in one pass.
    """
    gguf = import_gguf()
    if 0 in shape:
        return np.zeros(shape, np.float32)
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = raw.reshape(-1, type_size)
    out = np.empty((blocks.shape[0], block_size), np.float32)
    step = max(1, CHUNK_VALUES // block_size)
    try:
        for start in range(0, blocks.shape[0], step):
            # As one row, the chunk is decoded in one vectorized call (see the docstring).
            chunk = gguf.quants.dequantize(blocks[start : start + step].reshape(1, -1), qtype)
            out[start : start + step] = chunk.reshape(-1, block_size)
    except NotImplementedError:
        raise TensorError(
            name,
            f"stored as {qtype.name}, which gguf {_version(gguf)} cannot dequantize; upgrade the "
            "gguf package (`pip install -U gguf`), or re-quantize the model with llama.cpp to a type "
            "it reads (F16, BF16, Q8_0, Q4_K, ...)",
            dtype=qtype.name,
            shape=shape,
        ) from None
    return out.reshape(shape)


FORMAT = Format(name="gguf", sniff=_sniff, read=_read, suffixes=(".gguf",))
