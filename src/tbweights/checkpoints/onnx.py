"""ONNX models: graph initializers, sparse initializers and `Constant` node values.

The model is parsed with `onnx.load(..., load_external_data=False)`, so tensors in
external data files are read one at a time on `load()`, from a memory map (see
`onnx_data`). Tensors stored inside the model file are held in memory by the
parsed protobuf; ONNX caps such files at 2 GB.

Besides the main graph, the reader walks every subgraph (`If` branches, `Loop` and
`Scan` bodies, at any depth) and the model's local functions. A tensor of a
subgraph is named after the path to it: `If_0/then_branch/` plus its name, and
one of a function gets `function:NAME/` in front. Where two names would be equal,
`#2`, `#3`, ... is appended. A `Constant` node's tensor
takes the name of the node's output, which is how other nodes refer to it.

Integer constants are left out unless `LoadOptions.include_constants` is set
(`--include-constants`). A tensor counts as one when all of these hold:

- its type is int32 or int64, the types ONNX uses for shapes, axes, indices and counts;
- it has at most one dimension and at most `MAX_CONSTANT_ELEMENTS` elements;
- no node reads it as quantized data: input 0 of `DequantizeLinear`, or the int32
  bias of `QLinearConv` (input 8) or `QGemm` (input 6).

ONNX files have no magic bytes, so a file is taken for ONNX when its name ends in
`.onnx` and its first bytes parse as the start of a `ModelProto`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tbweights.checkpoints import HEAD_BYTES, Format, LoadOptions
from tbweights.checkpoints.onnx_data import ExternalFiles, decode, densify, dtype_name, summarizable
from tbweights.checkpoints.pages import PageWindow, watch
from tbweights.checkpoints.tf_table import read_varint
from tbweights.errors import CheckpointError, import_optional
from tbweights.tensors import NamedTensor, guess_role

logger = logging.getLogger(__name__)

MAX_CONSTANT_ELEMENTS = 64
_INTEGER_TYPES = frozenset({6, 7})  # INT32, INT64
# (op_type, input index) pairs that read integer tensors as quantized values, not as shapes.
_QUANTIZED_INPUTS = frozenset({("DequantizeLinear", 0), ("QLinearConv", 8), ("QGemm", 6)})

# ModelProto field numbers and their protobuf wire types (0 varint, 2 length-delimited), from onnx.proto.
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}


@dataclass(frozen=True)
class _Entry:
    """One tensor found in the model: a `TensorProto`, or a `SparseTensorProto` when `sparse`."""

    name: str
    reference: str  # the name other nodes use as input
    proto: Any
    sparse: bool
    source: str  # "initializer", "Constant node", ...


def _sniff(path: Path, head: bytes) -> bool:
    return path.name.endswith(".onnx") and path.is_file() and _looks_like_model(head)


def suffix_hint(path: Path) -> str:
    """Return a hint to rename `path` to `.onnx` when its first bytes look like an ONNX model, else ""."""
    if path.name.endswith(".onnx") or not path.is_file():
        return ""
    try:
        with path.open("rb") as file:
            head = file.read(HEAD_BYTES)
    except OSError:
        return ""
    if not _looks_like_model(head):
        return ""
    return "; if it is an ONNX model, give it the .onnx suffix, which ONNX detection needs"


def _looks_like_model(head: bytes) -> bool:
    """Check that `head` starts with `ModelProto` fields of the right wire types.

    Only the tags are checked, by hand, so that detection needs no `onnx` import.
    """
    position, fields = 0, 0
    try:
        while position < len(head):
            tag, position = read_varint(head, position)
            number, wire_type = tag >> 3, tag & 7
            if _MODEL_FIELDS.get(number) != wire_type:
                return False
            fields += 1
            value, position = read_varint(head, position)
            if wire_type == 2:
                position += value
    except ValueError:
        pass  # `head` ends inside a field; the fields before it decided
    return fields > 0


def _load_model(path: Path) -> Any:
    from google.protobuf.message import DecodeError  # protobuf comes with tensorboard

    onnx = import_optional("onnx", "onnx", "onnx", "reading an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            path, f"not a valid ONNX model: the protobuf does not parse ({error}), so the file is truncated or corrupt"
        ) from None
    except OSError as error:
        raise CheckpointError(path, f"cannot read the file: {error.strerror or error}") from None
    # Protobuf skips unknown fields, so some damaged files parse into a model without a graph.
    if not model.HasField("graph"):
        raise CheckpointError(path, "not a valid ONNX model: it contains no graph, so the file is truncated or corrupt")
    return model


def _read(path: Path, options: LoadOptions) -> Iterator[NamedTensor]:
    model = _load_model(path)
    entries: list[_Entry] = []
    consumers: dict[str, set[tuple[str, int]]] = {}
    _walk_graph(model.graph, "", entries, consumers)
    for function in model.functions:
        _walk_nodes(function.node, f"function:{function.name}/", entries, consumers)
    files = ExternalFiles(path, trust=options.trust)
    included = [e for e in _unique(entries) if options.include_constants or not _is_integer_constant(e, consumers)]
    left_out = len(entries) - len(included)
    # Resident memory stays near one tensor: the pages of external data are dropped
    # once the next tensor is requested (see `pages`).
    window = PageWindow()
    for record in window.stream(_record(path, entry, files) for entry in included):
        yield replace(record, load=watch(record.load, window, files.mapped_span))
    if left_out:
        logger.info("left out %d small integer constants of %s (--include-constants keeps them)", left_out, path)


def _walk_graph(graph: Any, prefix: str, entries: list[_Entry], consumers: dict[str, set[tuple[str, int]]]) -> None:
    for tensor in graph.initializer:
        entries.append(_Entry(prefix + tensor.name, tensor.name, tensor, False, "initializer"))
    for sparse in graph.sparse_initializer:
        name = sparse.values.name
        entries.append(_Entry(prefix + name, name, sparse, True, "sparse initializer, densified"))
    _walk_nodes(graph.node, prefix, entries, consumers)


def _walk_nodes(nodes: Any, prefix: str, entries: list[_Entry], consumers: dict[str, set[tuple[str, int]]]) -> None:
    from onnx import AttributeProto

    for index, node in enumerate(nodes):
        for position, name in enumerate(node.input):
            consumers.setdefault(name, set()).add((node.op_type, position))
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            entries.extend(_constant_entries(node, prefix))
        label = f"{prefix}{node.name or f'{node.op_type}_{index}'}/"
        for attribute in node.attribute:
            if attribute.type == AttributeProto.GRAPH:
                _walk_graph(attribute.g, f"{label}{attribute.name}/", entries, consumers)
            elif attribute.type == AttributeProto.GRAPHS:
                for number, graph in enumerate(attribute.graphs):
                    _walk_graph(graph, f"{label}{attribute.name}/{number}/", entries, consumers)


def _constant_entries(node: Any, prefix: str) -> list[_Entry]:
    """List the value of a `Constant` node as `TensorProto`s; scalar and list attributes become tensors."""
    from onnx import TensorProto, helper

    reference = node.output[0] if node.output else node.name
    name = prefix + reference
    source = "Constant node"
    lists = {
        "value_float": (TensorProto.FLOAT, None),
        "value_int": (TensorProto.INT64, None),
        "value_floats": (TensorProto.FLOAT, "floats"),
        "value_ints": (TensorProto.INT64, "ints"),
    }
    entries = []
    for attribute in node.attribute:
        if attribute.name == "value":
            entries.append(_Entry(name, reference, attribute.t, False, source))
        elif attribute.name == "sparse_value":
            entries.append(_Entry(name, reference, attribute.sparse_tensor, True, f"{source}, sparse, densified"))
        elif attribute.name in lists:
            data_type, field = lists[attribute.name]
            if field is None:
                dims, values = [], [attribute.f if data_type == TensorProto.FLOAT else attribute.i]
            else:
                values = list(getattr(attribute, field))
                dims = [len(values)]
            tensor = helper.make_tensor(name, data_type, dims, values)
            entries.append(_Entry(name, reference, tensor, False, source))
        # value_string and value_strings hold text, not numbers: nothing to summarize.
    return entries


def _unique(entries: list[_Entry]) -> Iterator[_Entry]:
    seen: set[str] = set()
    for entry in entries:
        name, number = entry.name, 1
        while name in seen:
            number += 1
            name = f"{entry.name}#{number}"
        seen.add(name)
        yield entry if name == entry.name else _Entry(name, entry.reference, entry.proto, entry.sparse, entry.source)


def _is_integer_constant(entry: _Entry, consumers: dict[str, set[tuple[str, int]]]) -> bool:
    tensor = entry.proto.values if entry.sparse else entry.proto
    dims = entry.proto.dims
    if tensor.data_type not in _INTEGER_TYPES or len(dims) > 1:
        return False
    if int(np.prod(dims, dtype=np.int64)) > MAX_CONSTANT_ELEMENTS:
        return False
    return not (consumers.get(entry.reference, set()) & _QUANTIZED_INPUTS)


def _record(path: Path, entry: _Entry, files: ExternalFiles) -> NamedTensor:
    tensor = entry.proto.values if entry.sparse else entry.proto
    shape = tuple(int(d) for d in entry.proto.dims)

    def load() -> np.ndarray:
        if not entry.sparse:
            return summarizable(decode(tensor, entry.name, files), tensor.data_type)
        values = decode(tensor, entry.name, files)
        indices = decode(entry.proto.indices, f"{entry.name} indices", files)
        dense = densify(values, indices, shape, entry.name, path)
        return summarizable(dense, tensor.data_type)

    return NamedTensor(
        name=entry.name,
        shape=shape,
        dtype=dtype_name(tensor.data_type),
        load=load,
        role=guess_role(entry.name, len(shape)),
        note="" if entry.source == "initializer" else entry.source,
    )


FORMAT = Format(name="onnx", sniff=_sniff, read=_read, suffixes=(".onnx",))
