"""NumPy arrays and array-likes (the fallback adapter, always available)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from tbweights.frameworks import WalkOptions
from tbweights.tensors import NamedTensor, guess_role

DEFAULT_NAME = "tensor"


def accepts_model(obj: Any) -> bool:
    return isinstance(obj, np.ndarray | np.generic)


def named_tensors(obj: Any, options: WalkOptions) -> Iterator[NamedTensor]:
    del options  # a bare array has no buffers
    yield tensor_record(DEFAULT_NAME, obj)


def is_tensor(value: Any) -> bool:
    return isinstance(value, np.ndarray | np.generic)


def tensor_record(name: str, value: Any) -> NamedTensor:
    array = np.asarray(value)
    return NamedTensor(
        name=name,
        shape=tuple(array.shape),
        dtype=str(array.dtype),
        load=lambda: array,
        role=guess_role(name, array.ndim),
    )
