"""Checkpoint files in other formats, written by each format's own library, for `readers.py`.

Every tensor is float32 N(0, 0.02) from a fixed seed (`data.tensor`), so the files
are the same from run to run. The shapes follow the usual models of each format.
GGUF gets a llama-style model with Q8_0, Q4_0, F16 and F32 tensors. ONNX gets an
MLP with its initializers in one external data file. Flax msgpack and Orbax get
`Dense` layers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import data
import numpy as np

# Shape parameters per format and scale; the comments give the sizes they make.
SIZES: dict[str, dict[str, dict[str, int]]] = {
    # full: 210 MB, 200 M elements (Q8_0 embedding and up/gate, Q4_0 attention and down, F16 output)
    "gguf": {"smoke": {"vocab": 256, "width": 64, "layers": 2}, "full": {"vocab": 32000, "width": 1024, "layers": 8}},
    # full: 4 initializers of 4096 x 8192 float32 plus biases, 537 MB, 134 M elements
    "onnx": {"smoke": {"width": 64, "layers": 4}, "full": {"width": 4096, "layers": 4}},
    # full: 6 Dense layers of 4096 x 4096 float32, 403 MB, 101 M elements
    "flax-msgpack": {"smoke": {"width": 64, "layers": 3}, "full": {"width": 4096, "layers": 6}},
    # full: 3 Dense layers of 4096 x 4096 float32, 201 MB (186 MB once Orbax has compressed it), 50 M elements
    "orbax": {"smoke": {"width": 64, "layers": 2}, "full": {"width": 4096, "layers": 3}},
}
FORMATS = list(SIZES)


def values(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return data.tensor(int(np.prod(shape)), seed).reshape(shape)


def write(kind: str, folder: Path, scale: str) -> Path:
    """Write the `kind` checkpoint for `scale` under `folder`; the path to give `tbweights convert`."""
    size = SIZES[kind][scale]
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "gguf":
        return write_gguf(folder / "model.gguf", **size)
    if kind == "onnx":
        return write_onnx(folder / "model.onnx", **size)
    if kind == "flax-msgpack":
        return write_flax_msgpack(folder / "params.msgpack", **size)
    if kind == "orbax":
        return write_orbax(folder / "checkpoint", **size)
    raise ValueError(f"unknown format {kind!r}")


def gguf_tensors(vocab: int, width: int, layers: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """Names, NumPy shapes and GGML types of a llama-style model."""
    tensors: dict[str, tuple[tuple[int, ...], str]] = {"token_embd.weight": ((vocab, width), "Q8_0")}
    for index in range(layers):
        block = f"blk.{index}."
        tensors[block + "attn_norm.weight"] = ((width,), "F32")
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensors[block + part + ".weight"] = ((width, width), "Q4_0")
        tensors[block + "ffn_norm.weight"] = ((width,), "F32")
        tensors[block + "ffn_up.weight"] = ((4 * width, width), "Q8_0")
        tensors[block + "ffn_gate.weight"] = ((4 * width, width), "Q8_0")
        tensors[block + "ffn_down.weight"] = ((width, 4 * width), "Q4_0")
    tensors["output_norm.weight"] = ((width,), "F32")
    tensors["output.weight"] = ((vocab, width), "F16")
    return tensors


def write_gguf(path: Path, vocab: int, width: int, layers: int) -> Path:
    import gguf
    from gguf.quants import quantize

    writer = gguf.GGUFWriter(str(path), "llama")
    for seed, (name, (shape, kind)) in enumerate(gguf_tensors(vocab, width, layers).items()):
        array = values(shape, seed)
        if kind == "F16":
            writer.add_tensor(name, array.astype(np.float16))
        elif kind == "F32":
            writer.add_tensor(name, array)
        else:
            qtype = gguf.GGMLQuantizationType[kind]
            blocks = quantize(array, qtype)
            writer.add_tensor(name, blocks, raw_shape=blocks.shape, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_onnx(path: Path, width: int, layers: int) -> Path:
    """Write an MLP `x -> MatMul -> Add -> Relu -> ...`, widths alternating `width` and `2 * width`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, initializers = [], []
    current = "x"
    for index in range(layers):
        rows, cols = (width, 2 * width) if index % 2 == 0 else (2 * width, width)
        weight, bias = f"layer{index}.weight", f"layer{index}.bias"
        initializers.append(numpy_helper.from_array(values((rows, cols), 2 * index), weight))
        initializers.append(numpy_helper.from_array(values((cols,), 2 * index + 1), bias))
        nodes.append(helper.make_node("MatMul", [current, weight], [f"h{index}"]))
        nodes.append(helper.make_node("Add", [f"h{index}", bias], [f"a{index}"]))
        current = f"a{index}"
        if index < layers - 1:
            nodes.append(helper.make_node("Relu", [current], [f"r{index}"]))
            current = f"r{index}"
    out_width = width if layers % 2 == 0 else 2 * width
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, ["batch", out_width])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
        location=path.name + ".data", size_threshold=0,
    )
    return path


def flax_tree(width: int, layers: int) -> dict[str, Any]:
    return {
        "params": {
            f"Dense_{index}": {"kernel": values((width, width), 2 * index), "bias": values((width,), 2 * index + 1)}
            for index in range(layers)
        }
    }


def write_flax_msgpack(path: Path, width: int, layers: int) -> Path:
    from flax import serialization

    path.write_bytes(serialization.msgpack_serialize(flax_tree(width, layers)))
    return path


def write_orbax(path: Path, width: int, layers: int) -> Path:
    import orbax.checkpoint as ocp

    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path.resolve(), flax_tree(width, layers))
    checkpointer.wait_until_finished()
    checkpointer.close()
    return path


def files(path: Path) -> list[Path]:
    """List every file that makes up the checkpoint at `path` (the ONNX data file, Orbax's folder)."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return sorted(p for p in path.parent.iterdir() if p.is_file() and p.name.startswith(path.name))
