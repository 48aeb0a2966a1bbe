"""TensorFlow `tf.Module`s (tf_keras models included), `tf.Variable`s and tensors.

A variable is named by its own name without the `:0` suffix (`dense_1/kernel`
in tf_keras) when those names are unique within the module, and otherwise by
its attribute path in the module (`encoder/w`), because unnamed variables
all share the name `Variable`. Non-trainable variables (batch-norm statistics)
are buffers, taken only with `include_buffers`. Values are read with
`.numpy()`, one variable at a time, which needs eager execution.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tbweights.checkpoints.keras_names import keras_role
from tbweights.frameworks import WalkOptions
from tbweights.tensors import NamedTensor, Role


def accepts_model(obj: Any) -> bool:
    if isinstance(obj, tf.Module | tf.Variable):
        return True
    return isinstance(obj, Sequence) and not isinstance(obj, str) and len(obj) > 0 and all(
        isinstance(item, tf.Variable) for item in obj
    )


def is_tensor(value: Any) -> bool:
    return isinstance(value, tf.Variable | tf.Tensor)


def _variable_name(variable: tf.Variable) -> str:
    name: str = variable.name
    return name.rsplit(":", 1)[0] if name.rsplit(":", 1)[-1].isdigit() else name


def _to_numpy(value: tf.Variable | tf.Tensor) -> np.ndarray:
    array: np.ndarray = value.numpy()
    return np.asarray(array)


def tensor_record(name: str, value: tf.Variable | tf.Tensor, role: Role | None = None) -> NamedTensor:
    shape = tuple(int(d) if d is not None else -1 for d in value.shape)
    return NamedTensor(
        name=name,
        shape=shape,
        dtype=value.dtype.name,
        load=lambda: _to_numpy(value),
        role=role or keras_role(name, len(shape)),
    )


def _module_variables(module: tf.Module) -> list[tuple[str, tf.Variable]]:
    """List each variable once, with its attribute path in the module."""
    found: dict[Any, tuple[str, tf.Variable]] = {}
    for path, variable in module._flatten(predicate=lambda v: isinstance(v, tf.Variable), with_path=True):
        key = variable.ref()
        if key not in found:
            found[key] = ("/".join(str(part) for part in path), variable)
    # tf_keras models list `weights` in layer order; the attribute walk is alphabetical.
    weights = getattr(module, "weights", None)
    if isinstance(weights, list) and all(isinstance(w, tf.Variable) for w in weights):
        ordered = [found.pop(w.ref()) for w in weights if w.ref() in found]
        return ordered + list(found.values())
    return list(found.values())


def named_tensors(obj: Any, options: WalkOptions) -> Iterator[NamedTensor]:
    if isinstance(obj, tf.Variable):
        yield tensor_record(_variable_name(obj), obj)
        return
    if isinstance(obj, tf.Module):
        pairs = _module_variables(obj)
    else:
        pairs = [(str(index), variable) for index, variable in enumerate(obj)]
    own_names = [_variable_name(variable) for _, variable in pairs]
    use_own_names = len(set(own_names)) == len(own_names)
    for (path, variable), own_name in zip(pairs, own_names, strict=True):
        name = own_name if use_own_names else path
        role = None if variable.trainable else Role.BUFFER
        if role is Role.BUFFER and not options.include_buffers:
            continue
        record = tensor_record(name, variable, role)
        alias = path if name == own_name else own_name
        yield NamedTensor(record.name, record.shape, record.dtype, record.load, record.role, (alias,))
