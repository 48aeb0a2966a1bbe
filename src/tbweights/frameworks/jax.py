"""JAX pytrees and Flax models: Linen `variables`, `nnx` Modules and States, any pytree of arrays.

Names are each leaf's key path joined with `/` (`params/Dense_0/kernel`,
`layers/0/kernel`), and list and tuple indexes become numbers. Each array is
copied to the host with `np.asarray` when its tensor is loaded, one at a time.
bfloat16 and the float8 types arrive as `ml_dtypes` arrays. A `jax.Array`
sharded over several local devices is gathered whole by that copy. The pytree
is only read.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np

from tbweights.checkpoints.flax_names import flax_layer_type, flax_role, join_path, linen_layer_type
from tbweights.errors import TensorError
from tbweights.frameworks import WalkOptions
from tbweights.tensors import NamedTensor, Role


def _nnx() -> Any:
    """Return `flax.nnx` when the caller has imported it, else None."""
    return sys.modules.get("flax.nnx")


def _is_variable(value: Any) -> bool:
    nnx = _nnx()
    return nnx is not None and isinstance(value, _variable_types(nnx))


@functools.cache
def _variable_types(nnx: Any) -> tuple[type, ...]:
    """List the nnx leaf types: `Variable`, and `VariableState`, which older Flax releases put in a State."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 0.12 keeps `VariableState` as a deprecated alias
        state_type = getattr(nnx, "VariableState", None)
    return tuple(kind for kind in (nnx.Variable, state_type) if isinstance(kind, type))


def _is_nnx_node(obj: Any) -> bool:
    nnx = _nnx()
    return nnx is not None and isinstance(obj, nnx.Module | nnx.State)


def _is_nnx_module(obj: Any) -> bool:
    nnx = _nnx()
    return nnx is not None and isinstance(obj, nnx.Module)


def is_tensor(value: Any) -> bool:
    return isinstance(value, jax.Array)


def accepts_model(obj: Any) -> bool:
    """Accept a JAX array, an nnx Module or State, or a pytree with a JAX array among its leaves."""
    if isinstance(obj, jax.Array) or _is_nnx_node(obj) or _is_variable(obj):
        return True
    if not isinstance(obj, Mapping | list | tuple) and not dataclasses.is_dataclass(obj):
        return False
    try:
        leaves = jax.tree_util.tree_leaves(obj, is_leaf=_is_variable)
    except (TypeError, ValueError):
        # JAX sorts dict keys and fails on keys that do not compare ({1: ..., "a": ...}).
        # Such a mapping is left to the generic walk, which joins its keys with dots.
        return False
    return any(isinstance(leaf, jax.Array) or _is_variable(leaf) for leaf in leaves)


def key_name(key: Any) -> str:
    """Format one key of a pytree path: a dict key, a list index or an attribute name."""
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return str(key.name)
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def _dtype_name(value: Any) -> str:
    return str(value.dtype) if _is_key_array(value) else str(np.dtype(value.dtype))


def _is_key_array(value: Any) -> bool:
    return isinstance(value, jax.Array) and jax.numpy.issubdtype(value.dtype, jax.dtypes.prng_key)


def _to_numpy(value: Any, name: str) -> np.ndarray:
    if isinstance(value, jax.Array):
        if not value.is_fully_addressable:
            raise TensorError(
                name,
                "the array is sharded over devices of other processes; log it from each process's "
                "addressable shards or gather it first (jax.experimental.multihost_utils)",
                dtype=str(value.dtype),
                shape=tuple(value.shape),
            )
        if value.is_deleted():
            raise TensorError(
                name,
                "the array was deleted, for example donated to a jitted function; log it before the call",
                shape=tuple(value.shape),
            )
    return np.asarray(value)


def tensor_record(name: str, value: Any, role: Role | None = None, layer_type: str | None = None) -> NamedTensor:
    shape = tuple(int(d) for d in value.shape)
    parts = tuple(name.split("/"))
    return NamedTensor(
        name=name,
        shape=shape,
        dtype=_dtype_name(value),
        load=lambda: _to_numpy(value, name),
        role=role or flax_role(parts, len(shape)),
        layer_type=layer_type if layer_type is not None else linen_layer_type(parts),
    )


def named_tensors(obj: Any, options: WalkOptions) -> Iterator[NamedTensor]:
    if isinstance(obj, jax.Array):
        yield tensor_record("tensor", obj)
        return
    owners = _nnx_owner_types(obj)
    tree = _nnx().state(obj) if owners or _is_nnx_module(obj) else obj
    seen: dict[int, int] = {}
    records: list[NamedTensor] = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_variable)[0]:
        record = _leaf_record(path, leaf, owners)
        if record is None or (record.role is Role.BUFFER and not options.include_buffers):
            continue
        # NOTE: optimizer state of a live training state (`opt_state`) is always left out.
        if record.role is Role.OPTIMIZER:
            continue
        array = _variable_value(leaf) if _is_variable(leaf) else leaf
        if id(array) in seen:  # one array under two paths: log it once, with an alias
            first = records[seen[id(array)]]
            records[seen[id(array)]] = dataclasses.replace(first, aliases=(*first.aliases, record.name))
            continue
        seen[id(array)] = len(records)
        records.append(record)
    yield from records


def _leaf_record(path: tuple[Any, ...], leaf: Any, owners: dict[str, str]) -> NamedTensor | None:
    parts = [key_name(key) for key in path]
    role = None
    if _is_variable(leaf):
        role = _variable_role(leaf)
        leaf = _variable_value(leaf)
    if not isinstance(leaf, jax.Array | np.ndarray) or _is_key_array(leaf):
        return None  # Python numbers, strings and PRNG keys are no weights
    name = join_path(parts)
    return tensor_record(name, leaf, role, owners.get(join_path(parts[:-1])))


def _variable_value(variable: Any) -> Any:
    """Read an nnx Variable's array with `get_value()` where it exists, because Flax 0.12 deprecates `.value`."""
    get_value = getattr(variable, "get_value", None)
    return get_value() if get_value is not None else variable.value


def _variable_role(variable: Any) -> Role | None:
    """nnx Variables carry their kind: `Param` is read by name, `BatchStat` and the rest are buffers."""
    nnx = _nnx()
    kind = getattr(variable, "type", type(variable))  # a VariableState names its Variable type
    if isinstance(kind, type) and issubclass(kind, nnx.Param):
        return None
    return Role.BUFFER


def _nnx_owner_types(obj: Any) -> dict[str, str]:
    """Map the path of each nnx submodule to its Flax layer type, for the initialization check."""
    nnx = _nnx()
    if not _is_nnx_module(obj):
        return {}
    owners = {}
    for path, node in nnx.iter_graph(obj):
        if isinstance(node, nnx.Module):
            cls = type(node)
            for base in cls.__mro__:
                layer_type = flax_layer_type(base.__name__, base.__module__)
                if layer_type is not None and base.__module__.startswith("flax."):
                    owners[join_path([str(part) for part in path])] = layer_type
                    break
    return owners
