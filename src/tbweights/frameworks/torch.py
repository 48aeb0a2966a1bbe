"""PyTorch modules, state dicts and tensors.

The module is left exactly as found: parameters are read through `detach()`,
one tensor at a time, and only a tensor that is not on the CPU is copied there.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tbweights import dtypes
from tbweights.frameworks import WalkOptions
from tbweights.tensors import NamedTensor, Role, guess_role

if TYPE_CHECKING:
    from torch import nn


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.float32` -> `float32`."""
    return str(dtype).removeprefix("torch.")


def to_numpy(tensor: torch.Tensor, name: str = "tensor") -> np.ndarray:
    """A NumPy view of a CPU tensor; a copy only where device, layout or dtype need one.

    Raises `TensorError` for tensors with no values to read (meta, lazy, sharded).
    """
    return dtypes.torch_to_numpy(tensor, name)


def is_dtensor(tensor: torch.Tensor) -> bool:
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(tensor, module.DTensor)


def accepts_model(obj: Any) -> bool:
    return isinstance(obj, torch.nn.Module | torch.Tensor)


def is_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor)


def tensor_record(
    name: str, value: torch.Tensor, role: Role | None = None, layer_type: str | None = None
) -> NamedTensor:
    """A lazy record of one tensor; its `load` returns a dense CPU tensor or raises
    `TensorError` naming the tensor (meta device, lazy, sharded)."""
    if torch.nn.parameter.is_lazy(value):
        # An uninitialized lazy parameter has no shape yet; load() reports it.
        return NamedTensor(
            name=name,
            shape=(),
            dtype=dtype_name(value.dtype),
            load=lambda: dtypes.plain_torch_tensor(value, name),
            role=role or guess_role(name),
            note="uninitialized lazy parameter",
            layer_type=layer_type,
        )
    # A nested tensor's components differ in shape, so it has none; load() reports it.
    shape = () if getattr(value, "is_nested", False) else tuple(value.shape)
    return NamedTensor(
        name=name,
        shape=shape,
        dtype=dtype_name(value.dtype),
        load=lambda: dtypes.plain_torch_tensor(value, name),
        role=role or guess_role(name, value.dim()),
        layer_type=layer_type,
    )


def layer_type_name(module: nn.Module) -> str:
    """`torch.nn.Linear` for a Linear or any subclass of it; `pkg.Class` for other modules."""
    for cls in type(module).__mro__:
        if cls is not torch.nn.Module and getattr(torch.nn, cls.__name__, None) is cls:
            return f"torch.nn.{cls.__name__}"
    return f"{type(module).__module__}.{type(module).__qualname__}"


def named_tensors(obj: Any, options: WalkOptions) -> Iterator[NamedTensor]:
    if isinstance(obj, torch.Tensor):
        yield tensor_record("tensor", obj)
        return
    yield from _module_tensors(obj, options)


def _module_tensors(module: nn.Module, options: WalkOptions) -> Iterator[NamedTensor]:
    """Parameters (and buffers if asked), each shared tensor once with its other names."""
    groups: dict[int, list[tuple[str, torch.Tensor]]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append((name, param))
    if options.include_buffers:
        for name, buffer in module.named_buffers(remove_duplicate=False):
            groups.setdefault(id(buffer), []).append((name, buffer))
    buffer_ids = {id(b) for b in module.buffers()} if options.include_buffers else set()
    owners = {name: layer_type_name(owner) for name, owner in module.named_modules(remove_duplicate=False)}
    for key, members in groups.items():
        name, tensor = members[0]
        role = Role.BUFFER if key in buffer_ids else None
        record = tensor_record(name, tensor, role, owners.get(name.rpartition(".")[0]))
        aliases = tuple(alias for alias, _ in members[1:])
        if aliases:
            record = dataclasses.replace(record, aliases=aliases)
        yield record
