"""PyTorch modules, state dicts and tensors.

The module is left exactly as found: parameters are read through `detach()`,
one tensor at a time, and only a tensor that is not on the CPU is copied there.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import ml_dtypes
import numpy as np
import torch

from tbweights.frameworks import WalkOptions
from tbweights.tensors import NamedTensor, Role, guess_role

if TYPE_CHECKING:
    from torch import nn

# torch dtypes NumPy lacks, read through a same-width integer view.
# float8 types exist from torch 2.1; getattr keeps older versions working.
_VIEW_AS: dict[Any, tuple[Any, Any]] = {
    torch.bfloat16: (torch.int16, ml_dtypes.bfloat16),
}
for _torch_name, _numpy_type in (
    ("float8_e4m3fn", ml_dtypes.float8_e4m3fn),
    ("float8_e5m2", ml_dtypes.float8_e5m2),
    ("float8_e4m3fnuz", ml_dtypes.float8_e4m3fnuz),
    ("float8_e5m2fnuz", ml_dtypes.float8_e5m2fnuz),
):
    _torch_dtype = getattr(torch, _torch_name, None)
    if _torch_dtype is not None:
        _VIEW_AS[_torch_dtype] = (torch.uint8, _numpy_type)


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.float32` -> `float32`."""
    return str(dtype).removeprefix("torch.")


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A NumPy view of a CPU tensor (a copy only for other devices or layouts)."""
    tensor = tensor.detach()
    if is_dtensor(tensor):
        raise TypeError(
            "this is a DTensor sharded across processes; summarize the model with "
            "tbweights.distributed.log_weights_distributed on every rank"
        )
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    if not tensor.is_contiguous():
        tensor = tensor.contiguous()
    view = _VIEW_AS.get(tensor.dtype)
    if view is not None:
        integer_type, numpy_type = view
        array: np.ndarray = tensor.view(integer_type).numpy().view(numpy_type)
        return array
    return tensor.numpy()


def is_dtensor(tensor: torch.Tensor) -> bool:
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(tensor, module.DTensor)


def accepts_model(obj: Any) -> bool:
    return isinstance(obj, torch.nn.Module | torch.Tensor)


def is_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor)


def tensor_record(name: str, value: torch.Tensor, role: Role | None = None) -> NamedTensor:
    return NamedTensor(
        name=name,
        shape=tuple(value.shape),
        dtype=dtype_name(value.dtype),
        load=lambda: value,
        role=role or guess_role(name, value.dim()),
    )


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
    for key, members in groups.items():
        name, tensor = members[0]
        role = Role.BUFFER if key in buffer_ids else None
        record = tensor_record(name, tensor, role)
        aliases = tuple(alias for alias, _ in members[1:])
        if aliases:
            record = NamedTensor(
                name=record.name,
                shape=record.shape,
                dtype=record.dtype,
                load=record.load,
                role=record.role,
                aliases=aliases,
            )
        yield record
