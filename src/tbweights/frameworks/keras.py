"""Keras 3 models, layers and variables, on any backend.

Names are each variable's `path` (`dense_1/kernel`, `inner/dense/bias`),
which Keras keeps unique within a model. Values are copied to NumPy one
variable at a time with `keras.ops.convert_to_numpy`, which works on the
TensorFlow, torch and JAX backends alike, so this module never imports
TensorFlow itself. The model is only read: no build, no call, no change of
`trainable` or dtype.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

from tbweights.checkpoints.keras_names import keras_role
from tbweights.errors import TbweightsError
from tbweights.frameworks import WalkOptions
from tbweights.tensors import NamedTensor, Role


def accepts_model(obj: Any) -> bool:
    return isinstance(obj, keras.Layer | keras.Variable)


def is_tensor(value: Any) -> bool:
    return isinstance(value, keras.Variable)


def _to_numpy(variable: keras.Variable) -> np.ndarray:
    array: np.ndarray = keras.ops.convert_to_numpy(variable)
    return array


def tensor_record(name: str, value: keras.Variable, role: Role | None = None) -> NamedTensor:
    shape = tuple(int(d) for d in value.shape)
    return NamedTensor(
        name=name,
        shape=shape,
        dtype=keras.backend.standardize_dtype(value.dtype),
        load=lambda: _to_numpy(value),
        role=role or keras_role(name, len(shape)),
    )


def named_tensors(obj: Any, options: WalkOptions) -> Iterator[NamedTensor]:
    if isinstance(obj, keras.Variable):
        yield tensor_record(obj.path, obj)
        return
    variables = obj.weights
    if not variables and not obj.built:
        raise TbweightsError(
            f"the Keras {type(obj).__name__} {obj.name!r} has no weights yet because it is not built; "
            "call model.build(input_shape) or run it on one batch first"
        )
    seen: set[int] = set()
    for variable in variables:
        if id(variable) in seen:
            continue
        seen.add(id(variable))
        record = tensor_record(variable.path, variable)
        if record.role is Role.BUFFER and not options.include_buffers:
            continue
        yield record
