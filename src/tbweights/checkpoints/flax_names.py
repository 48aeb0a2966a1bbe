"""Names, roles and layer types of Flax parameters, shared by live pytrees and Flax checkpoints.

A Flax parameter is named by its path in the pytree, joined with `/`:
`params/Dense_0/kernel` in a Linen `variables` dict, `layers/0/kernel` in an
`nnx` State. Linen names unnamed submodules after their class and a counter
(`Dense_0`, `Conv_1`), so those names give the layer type. Names the user gave give none.
Nothing here imports JAX or Flax.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tbweights.checkpoints.nesting import OPTIMIZER_KEYS
from tbweights.tensors import Role, guess_role

# Top-level keys of Flax training states that hold optimizer state or counters:
# `flax.training.train_state.TrainState` has `step`, `params` and `opt_state`.
FLAX_OPTIMIZER_KEYS = OPTIMIZER_KEYS | {"opt_state", "tx", "step"}
# Linen collections of statistics and caches rather than trained parameters.
BUFFER_COLLECTIONS = frozenset({"batch_stats", "cache", "intermediates"})
# nnx BatchNorm keeps its running statistics beside its parameters, named `mean` and `var`.
_STATISTIC_LEAVES = frozenset({"mean", "var"})
_WEIGHT_LEAVES = frozenset({"scale", "embedding"})

# Linen auto-names and nnx class names -> the Flax class, for the initialization check.
_LAYER_CLASSES = frozenset(
    {
        "Dense",
        "DenseGeneral",
        "Linear",
        "LinearGeneral",
        "Einsum",
        "Conv",
        "ConvTranspose",
        "ConvLocal",
        "Embed",
        "LayerNorm",
        "BatchNorm",
        "GroupNorm",
        "RMSNorm",
    }
)
_AUTO_NAME = re.compile(r"^([A-Z][A-Za-z]*)_\d+$")


def join_path(parts: Sequence[str]) -> str:
    return "/".join(parts)


def flax_role(parts: Sequence[str], ndim: int | None) -> Role:
    """Role of the tensor at `parts`: `guess_role`, plus Flax's leaf names and collections."""
    if not parts:
        return guess_role("tensor", ndim)
    if parts[0] in FLAX_OPTIMIZER_KEYS:
        return Role.OPTIMIZER
    if any(part in BUFFER_COLLECTIONS for part in parts[:-1]):
        return Role.BUFFER
    if "rngs" in parts[:-1]:
        return Role.BUFFER
    leaf = parts[-1]
    if leaf in _STATISTIC_LEAVES:
        return Role.BUFFER
    if leaf in _WEIGHT_LEAVES:
        return Role.WEIGHT
    return guess_role(join_path(parts), ndim)


def linen_layer_type(parts: Sequence[str]) -> str | None:
    """`flax.linen.Dense` for `params/Dense_0/kernel`; None when the owner's name is not a Linen auto-name."""
    if len(parts) < 2:
        return None
    match = _AUTO_NAME.match(parts[-2])
    if match is None or match.group(1) not in _LAYER_CLASSES:
        return None
    return f"flax.linen.{match.group(1)}"


def flax_layer_type(class_name: str, module: str) -> str | None:
    """`flax.nnx.Linear` for a known Flax layer class, else None."""
    if class_name not in _LAYER_CLASSES:
        return None
    kind = "nnx" if ".nnx" in module else "linen"
    return f"flax.{kind}.{class_name}"
