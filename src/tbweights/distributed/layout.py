"""Which part of each global tensor this rank holds, and where its elements sit.

A sharded model stores each parameter as pieces spread over ranks. For every
parameter this module builds a `LocalPart`: the global name, shape and dtype,
the local values this rank contributes (None when another rank already counts
them), and a map from global row-major flat indices to positions in the local
values, which is all the first-values step needs. Three layouts are understood:

- DTensor (FSDP2 `fully_shard`, tensor parallelism): `Shard(dim)`,
  `_StridedShard(dim)` and `Replicate()` placements on any device mesh.
- FSDP1 (`FullyShardedDataParallel`) flat parameters, with or without
  `use_orig_params`: each original parameter is a flat range of its elements.
- Plain tensors, assumed to be replicated: every rank of the group holds the
  same values, so only the group's rank 0 counts them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from tbweights.frameworks.torch import dtype_name, is_dtensor
from tbweights.tensors import NamedTensor, Role, guess_role

# Module names that FSDP1 and activation checkpointing insert between a parameter's
# name parts; removed so the names match the unwrapped model's.
_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")

# FSDP1 sharding strategies whose flat parameter is complete on every rank of the shard
# group, and those that are replicated across an inter-node group (hybrid sharding).
_UNSHARDED_STRATEGIES = frozenset({"NO_SHARD"})
_HYBRID_STRATEGIES = frozenset({"HYBRID_SHARD", "_HYBRID_SHARD_ZERO2"})

Locate = Callable[[int], "int | None"]


@dataclass(frozen=True)
class LocalPart:
    """This rank's share of one global tensor.

    `values` is None when this rank contributes nothing (another replica counts
    the elements, or the rank has none of them). `locate` maps a global
    row-major flat index to a flat position in `values`, or None when the element
    is not among them. `error` is set, identically on every rank, for layouts
    that cannot be summarized.
    """

    tensor: NamedTensor
    values: torch.Tensor | None
    locate: Locate
    error: str | None = None


def clean_name(name: str) -> str:
    """Drop FSDP1 and activation-checkpoint wrapper names from a parameter name."""
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def _sharded_record(
    name: str, shape: tuple[int, ...], dtype: torch.dtype, role: Role | None, aliases: tuple[str, ...]
) -> NamedTensor:
    def load() -> Any:
        raise TypeError(
            f"{name!r} is sharded across processes and has no full copy here; "
            "summarize it with tbweights.distributed.log_weights_distributed on every rank"
        )

    return NamedTensor(
        name=name,
        shape=shape,
        dtype=dtype_name(dtype),
        load=load,
        role=role or guess_role(name, len(shape)),
        aliases=aliases,
    )


# --- DTensor -----------------------------------------------------------------


def _dim_indices(
    global_shape: tuple[int, ...], mesh: Any, placements: tuple[Any, ...], coordinate: list[int]
) -> list[np.ndarray]:
    """For each tensor dim, the global indices this rank holds, in local order.

    Placements shard left to right over the mesh dims, each one splitting what
    the previous ones left, as `torch.chunk` would (`Shard`) or interleaved
    (`_StridedShard`, which FSDP2 uses on top of tensor parallelism).
    """
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor.placement_types import (
        _StridedShard,
        _StridedShardOffsetMode,
    )

    indices = [np.arange(size, dtype=np.int64) for size in global_shape]
    for mesh_dim, placement in enumerate(placements):
        if not isinstance(placement, Shard | _StridedShard):  # _StridedShard.is_shard() is False
            continue
        dim = placement.dim
        current = indices[dim]
        chunks, rank = mesh.size(mesh_dim), coordinate[mesh_dim]
        if isinstance(placement, _StridedShard):
            # ALL returns every local index, not just the first.
            _, offsets = placement.local_shard_size_and_offset(current.size, chunks, rank, _StridedShardOffsetMode.ALL)
            indices[dim] = current[np.asarray(offsets, dtype=np.int64)]
        else:
            size, start = Shard.local_shard_size_and_offset(current.size, chunks, rank)
            indices[dim] = current[int(start) : int(start) + int(size)]
    return indices


def _box_locator(global_shape: tuple[int, ...], indices: list[np.ndarray]) -> Locate:
    """Locate global flat indices in a local shard whose dims hold the given global indices."""
    positions = [{int(g): i for i, g in enumerate(dim)} for dim in indices]
    local_shape = tuple(len(dim) for dim in indices)

    def locate(flat_index: int) -> int | None:
        if not global_shape:
            return 0 if flat_index == 0 else None
        local = []
        for dim, g in enumerate(np.unravel_index(flat_index, global_shape)):
            position = positions[dim].get(int(g))
            if position is None:
                return None
            local.append(position)
        return int(np.ravel_multi_index(local, local_shape))

    return locate


def _nowhere(flat_index: int) -> int | None:
    return None


def dtensor_part(record: NamedTensor, param: Any, group_ranks: frozenset[int]) -> LocalPart:
    """Build the local part of a DTensor parameter (FSDP2, tensor parallelism)."""
    mesh, placements = param.device_mesh, tuple(param.placements)
    if any(p.is_partial() for p in placements):
        reason = f"placement {placements} holds partial sums; redistribute it to Shard or Replicate first"
        return LocalPart(record, None, _nowhere, error=reason)
    mesh_ranks = {int(r) for r in mesh.mesh.flatten().tolist()}
    if not mesh_ranks <= group_ranks:
        outside = sorted(mesh_ranks - group_ranks)
        reason = (
            f"its device mesh includes ranks {outside} outside the process group; "
            "pass a group that contains the whole mesh"
        )
        return LocalPart(record, None, _nowhere, error=reason)
    coordinate = mesh.get_coordinate()
    # A mesh smaller than the group is one of several sub-meshes that hold copies of the
    # same tensor (FSDP2 over tensor parallelism shards non-parallel parameters on the
    # data-parallel sub-mesh of each tensor-parallel rank): the one with the lowest rank counts.
    if coordinate is None or min(group_ranks) not in mesh_ranks:
        return LocalPart(record, None, _nowhere)
    # A replica on a Replicate mesh dim repeats what coordinate 0 holds: count that one only.
    if any(p.is_replicate() and coordinate[d] != 0 for d, p in enumerate(placements)):
        return LocalPart(record, None, _nowhere)
    local = param.to_local().detach()
    indices = _dim_indices(record.shape, mesh, placements, coordinate)
    expected = tuple(len(dim) for dim in indices)
    if tuple(local.shape) != expected:
        reason = (
            f"local shard of shape {tuple(local.shape)} does not match shape {expected} "
            f"derived from placements {placements}"
        )
        return LocalPart(record, None, _nowhere, error=reason)
    return LocalPart(record, local, _box_locator(record.shape, indices))


# --- FSDP1 -------------------------------------------------------------------


def _fsdp1_parts(model: torch.nn.Module, group: Any) -> tuple[dict[int, list[LocalPart]], dict[int, LocalPart]]:
    """FSDP1 parts keyed by id of the flat parameter and of each original parameter."""
    by_flat: dict[int, list[LocalPart]] = {}
    by_original: dict[int, LocalPart] = {}
    if "torch.distributed.fsdp" not in sys.modules:
        return by_flat, by_original
    from torch.distributed.fsdp import FullyShardedDataParallel

    for module_name, module in model.named_modules():
        if not isinstance(module, FullyShardedDataParallel):
            continue
        handle = getattr(module, "_handle", None)
        if handle is None:
            continue
        prefix = clean_name(f"{module_name}." if module_name else "")
        parts = list(_flat_param_parts(module, handle, prefix, group))
        by_flat[id(handle.flat_param)] = parts
        for original, part in zip(getattr(handle.flat_param, "_params", None) or (), parts, strict=False):
            by_original[id(original)] = part
    return by_flat, by_original


def _fsdp1_contributes(module: Any, handle: Any, group: Any) -> bool:
    strategy = handle._sharding_strategy.name
    if strategy in _UNSHARDED_STRATEGIES:
        return dist.get_rank(group) == 0
    if strategy in _HYBRID_STRATEGIES:
        # NOTE: hybrid sharding follows FSDP1's `_inter_node_pg`; no test covers it yet.
        return dist.get_rank(module._inter_node_pg) == 0
    return True


def _flat_param_parts(module: Any, handle: Any, prefix: str, group: Any) -> Iterator[LocalPart]:
    flat_param = handle.flat_param
    sharded_numel = flat_param._sharded_size.numel() if handle.uses_sharded_strategy else flat_param.numel()
    if flat_param.numel() != sharded_numel:
        raise RuntimeError(
            f"FSDP1 parameters under {prefix or 'the root'} are unsharded right now; "
            "log the model outside forward, backward and summon_full_params"
        )
    contributes = _fsdp1_contributes(module, handle, group)
    for fqn, shape, info in zip(flat_param._fqns, flat_param._shapes, flat_param._shard_param_infos, strict=True):
        record = _sharded_record(clean_name(prefix + fqn), tuple(shape), flat_param.dtype, None, ())
        if not (contributes and info.in_shard):
            yield LocalPart(record, None, _nowhere)
            continue
        begin, end = info.intra_param_start_idx, info.intra_param_end_idx  # end inclusive
        values = flat_param.detach()[info.offset_in_shard : info.offset_in_shard + info.numel_in_shard]
        yield LocalPart(record, values, _range_locator(begin, end))


def _range_locator(begin: int, end: int) -> Locate:
    def locate(flat_index: int) -> int | None:
        return flat_index - begin if begin <= flat_index <= end else None

    return locate


# --- walking a model ---------------------------------------------------------


def _identity(flat_index: int) -> int | None:
    return flat_index


def _tensor_part(
    name: str,
    tensor: torch.Tensor,
    role: Role | None,
    aliases: tuple[str, ...],
    group: Any,
    group_ranks: frozenset[int],
) -> LocalPart:
    record = _sharded_record(name, tuple(tensor.shape), tensor.dtype, role, aliases)
    if is_dtensor(tensor):
        return dtensor_part(record, tensor, group_ranks)
    if dist.get_rank(group) != 0:
        return LocalPart(record, None, _nowhere)
    return LocalPart(record, tensor.detach(), _identity)


def local_parts(model: Any, group: Any, include_buffers: bool = False) -> Iterator[LocalPart]:
    """The local part of every parameter (and buffer, if asked) of a sharded model.

    `model` is an `nn.Module` or a mapping of names to tensors, such as an FSDP2
    model's `state_dict()`. Every rank must pass the same structure: the parts
    come in the same order on every rank, which the collectives rely on.
    """
    group_ranks = frozenset(dist.get_process_group_ranks(group or dist.group.WORLD))
    if isinstance(model, Mapping):
        for name, value in model.items():
            if isinstance(value, torch.Tensor):
                yield _tensor_part(str(name), value, None, (), group, group_ranks)
        return
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"expected a torch nn.Module or a mapping of tensors, got {type(model).__qualname__}")
    by_flat, by_original = _fsdp1_parts(model, group)
    for key, members, role in _grouped_tensors(model, include_buffers):
        if key in by_flat:
            yield from by_flat[key]
        elif key in by_original:
            yield by_original[key]
        else:
            name, tensor = members[0]
            aliases = tuple(clean_name(alias) for alias, _ in members[1:])
            yield _tensor_part(clean_name(name), tensor, role, aliases, group, group_ranks)


def _grouped_tensors(
    module: torch.nn.Module, include_buffers: bool
) -> Iterator[tuple[int, list[tuple[str, torch.Tensor]], Role | None]]:
    """(id, [(name, tensor), ...], role) per distinct tensor, tied names grouped."""
    groups: dict[int, list[tuple[str, torch.Tensor]]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append((name, param))
    buffer_ids: set[int] = set()
    if include_buffers:
        for name, buffer in module.named_buffers(remove_duplicate=False):
            groups.setdefault(id(buffer), []).append((name, buffer))
            buffer_ids.add(id(buffer))
    for key, members in groups.items():
        yield key, members, Role.BUFFER if key in buffer_ids else None
