"""Walk live models of any supported framework into `NamedTensor`s.

An adapter is considered only when its framework's module is already in
`sys.modules`: a user with a torch model has already imported torch, so the check
costs nothing and `import tbweights` never imports a framework.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from tbweights.errors import UnsupportedModelError
from tbweights.tensors import NamedTensor

# (module that must already be imported, our adapter module), most specific first:
# Keras 3 models also hold backend tensors, so Keras is asked before torch and TF.
_ADAPTERS: tuple[tuple[str, str], ...] = (
    ("keras", "tbweights.frameworks.keras"),
    ("torch", "tbweights.frameworks.torch"),
    ("tensorflow", "tbweights.frameworks.tensorflow"),
    ("jax", "tbweights.frameworks.jax"),
)
_NUMPY_ADAPTER = "tbweights.frameworks.numpy"


@dataclass(frozen=True)
class WalkOptions:
    """Options for walking a live model."""

    include_buffers: bool = False


def _loaded_adapters() -> Iterator[ModuleType]:
    for framework, adapter in _ADAPTERS:
        if framework in sys.modules:
            yield importlib.import_module(adapter)
    yield importlib.import_module(_NUMPY_ADAPTER)


def named_tensors(obj: Any, options: WalkOptions | None = None) -> Iterator[NamedTensor]:
    """Yield every tensor of `obj` (a model, a state dict, a mapping or one array)."""
    options = options or WalkOptions()
    for adapter in _loaded_adapters():
        if adapter.accepts_model(obj):
            yield from adapter.named_tensors(obj, options)
            return
    if isinstance(obj, Mapping):
        yield from _mapping_tensors(obj, prefix="")
        return
    raise UnsupportedModelError(obj)


def tensor_record(name: str, value: Any) -> NamedTensor | None:
    """Describe one tensor-like value of any loaded framework, or None if it is not one."""
    for adapter in _loaded_adapters():
        if adapter.is_tensor(value):
            record: NamedTensor = adapter.tensor_record(name, value)
            return record
    return None


def _mapping_tensors(mapping: Mapping[Any, Any], prefix: str) -> Iterator[NamedTensor]:
    """Flatten nested mappings of tensors, joining keys with dots; skip non-tensors."""
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _mapping_tensors(value, prefix=f"{name}.")
            continue
        record = tensor_record(name, value)
        if record is not None:
            yield record
