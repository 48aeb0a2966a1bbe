"""Benchmark inputs: random float32 tensors, a GPT-2-shaped torch model, checkpoint files.

Every input is generated from a fixed seed, so each fresh case process rebuilds
the same data. Values are generated in float32 directly (no float64 copy), so
setting up a 128M-element case costs 512 MiB, not 1.5 GiB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SEED = 0


def tensor(elements: int, seed: int = SEED) -> np.ndarray:
    """float32 N(0, 0.02) values, the scale of freshly initialized transformer weights."""
    values = np.random.default_rng(seed).standard_normal(elements, dtype=np.float32)
    values *= np.float32(0.02)
    return values


def gpt2_shapes(
    layers: int = 12, width: int = 768, vocab: int = 50257, context: int = 1024
) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of a GPT-2 (Hugging Face `transformers` naming, Conv1D layout).

    The defaults are GPT-2 small: 124,439,808 parameters, 148 tensors (the output
    layer shares the token embedding).
    """
    shapes: dict[str, tuple[int, ...]] = {"wte.weight": (vocab, width), "wpe.weight": (context, width)}
    for index in range(layers):
        block = f"h.{index}."
        shapes[block + "ln_1.weight"] = (width,)
        shapes[block + "ln_1.bias"] = (width,)
        shapes[block + "attn.c_attn.weight"] = (width, 3 * width)
        shapes[block + "attn.c_attn.bias"] = (3 * width,)
        shapes[block + "attn.c_proj.weight"] = (width, width)
        shapes[block + "attn.c_proj.bias"] = (width,)
        shapes[block + "ln_2.weight"] = (width,)
        shapes[block + "ln_2.bias"] = (width,)
        shapes[block + "mlp.c_fc.weight"] = (width, 4 * width)
        shapes[block + "mlp.c_fc.bias"] = (4 * width,)
        shapes[block + "mlp.c_proj.weight"] = (4 * width, width)
        shapes[block + "mlp.c_proj.bias"] = (width,)
    shapes["ln_f.weight"] = (width,)
    shapes["ln_f.bias"] = (width,)
    return shapes


def model_shape(scale: str) -> dict[str, int]:
    """GPT-2 small for `full`; a two-layer miniature for `smoke`."""
    if scale == "full":
        return {"layers": 12, "width": 768, "vocab": 50257, "context": 1024}
    return {"layers": 2, "width": 64, "vocab": 500, "context": 64}


def arrays(shapes: dict[str, tuple[int, ...]], seed: int = SEED) -> dict[str, np.ndarray]:
    """One float32 N(0, 0.02) array per shape; LayerNorm weights 1 and biases 0, as initialized."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        if name.endswith("bias") or ".ln_" in name or name.startswith("ln_"):
            fill = 1.0 if name.endswith("weight") else 0.0
            out[name] = np.full(shape, fill, dtype=np.float32)
        else:
            values = rng.standard_normal(shape, dtype=np.float32)
            values *= np.float32(0.02)
            out[name] = values
    return out


def torch_model(scale: str) -> Any:
    """A torch module with the GPT-2-shaped parameters under their dotted names."""
    import torch

    root = torch.nn.Module()
    for name, array in arrays(gpt2_shapes(**model_shape(scale))).items():
        *path, leaf = name.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, torch.nn.Module())
            module = getattr(module, part)
        module.register_parameter(leaf, torch.nn.Parameter(torch.from_numpy(array)))
    return root


def many_tensors(count: int) -> dict[str, np.ndarray]:
    """`count` small tensors (64 to 4096 elements), for the event-writing case."""
    rng = np.random.default_rng(SEED)
    return {
        f"layer{i // 4}.part{i % 4}.weight": rng.standard_normal(64 << (i % 7), dtype=np.float32) for i in range(count)
    }


def checkpoint_shapes(scale: str, dtype: str) -> dict[str, tuple[int, ...]]:
    """About 2 GB checkpoints for `full`: GPT-2-large width (1280) with 24 layers in float32
    (0.54 G parameters) or 48 layers in bfloat16 (1.01 G parameters)."""
    if scale == "full":
        return gpt2_shapes(layers=24 if dtype == "float32" else 48, width=1280)
    return gpt2_shapes(**model_shape("smoke"))


def write_checkpoint(path: Path, scale: str, dtype: str, kind: str) -> Path:
    """Write a safetensors or torch zip checkpoint with the real libraries, tensor by tensor."""
    import torch

    shapes = checkpoint_shapes(scale, dtype)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    tensors = {}
    for index, (name, shape) in enumerate(shapes.items()):
        values = torch.from_numpy(np.random.default_rng(index).standard_normal(shape, dtype=np.float32))
        tensors[name] = (values * 0.02).to(torch_dtype)
    if kind == "safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(path))
    else:
        torch.save(tensors, path)
    return path
