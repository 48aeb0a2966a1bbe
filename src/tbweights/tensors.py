"""The record that flows from a source (live model or checkpoint) to the writer.

A source yields `NamedTensor`s lazily: shape and dtype are known up front, and
the data is only materialized when `load()` is called, one tensor at a time. That
keeps peak memory near the largest tensor (or a memory-mapped view of it).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class Role(str, enum.Enum):
    """What a tensor is in its model; it decides defaults, not how it is summarized."""

    WEIGHT = "weight"
    BIAS = "bias"
    BUFFER = "buffer"
    OPTIMIZER = "optimizer"
    OTHER = "other"


def guess_role(name: str, ndim: int | None = None) -> Role:
    """Guess a role from a parameter name such as `fc1.bias` or `dense/kernel:0`."""
    leaf = name.replace("/", ".").rsplit(".", 1)[-1].split(":", 1)[0].lower()
    if leaf in {"bias", "b", "beta"} or leaf.endswith("_bias"):
        return Role.BIAS
    if leaf in {"weight", "kernel", "w", "embeddings", "gamma"} or leaf.endswith("_weight"):
        return Role.WEIGHT
    if leaf.startswith("running_") or leaf == "num_batches_tracked":
        return Role.BUFFER
    if ndim is not None and ndim >= 2:
        return Role.WEIGHT
    return Role.OTHER


@dataclass(frozen=True)
class NamedTensor:
    """One tensor of a model or checkpoint, not yet loaded.

    `load` returns a NumPy array (dtypes NumPy lacks come as `ml_dtypes` types)
    or, for live torch tensors, the tensor itself; `tbweights.stats` accepts both.

    `layer_type` names the class of the layer that owns the tensor, prefixed by
    its framework: `torch.nn.Linear`, `torch.nn.Conv2d`, `torch.nn.LayerNorm`
    (the nearest `torch.nn` class of the owning module), `keras.layers.Dense`,
    `keras.layers.Conv2D`. It is None where only a name and a shape are known,
    as in checkpoints; the initialization check then infers the layer.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    load: Callable[[], Any] = field(repr=False, compare=False)
    role: Role = Role.WEIGHT
    aliases: tuple[str, ...] = ()
    note: str = ""
    layer_type: str | None = None

    @property
    def size(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count
