"""The exceptions tbweights raises.

Every error derives from `TbweightsError`, so callers can catch one type. The
subclasses carry the offending path, tensor name, dtype or shape as attributes,
which lets the CLI print them and tests check them without parsing messages.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


class TbweightsError(Exception):
    """Root of every error raised on purpose by tbweights."""


class CheckpointError(TbweightsError):
    """A checkpoint file could not be read: missing, truncated, corrupt or unknown."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnsafeCheckpointError(CheckpointError):
    """Reading the file would run code from it, and the user did not allow that."""


class TensorError(TbweightsError):
    """One tensor could not be summarized; the others are unaffected."""

    def __init__(
        self,
        name: str,
        reason: str,
        *,
        dtype: str | None = None,
        shape: tuple[int, ...] | None = None,
    ) -> None:
        self.name = name
        self.reason = reason
        self.dtype = dtype
        self.shape = shape
        details = []
        if dtype is not None:
            details.append(f"dtype {dtype}")
        if shape is not None:
            details.append(f"shape {tuple(shape)}")
        where = f" ({', '.join(details)})" if details else ""
        super().__init__(f"tensor {name!r}{where}: {reason}")


class UnsupportedModelError(TbweightsError):
    """The object passed as a model is of a type tbweights cannot walk."""

    def __init__(self, obj: object, hint: str = "") -> None:
        self.type_name = f"{type(obj).__module__}.{type(obj).__qualname__}"
        message = (
            f"cannot read weights from an object of type {self.type_name}; pass a "
            "torch nn.Module or state dict, a Keras model, a tf.Module, a JAX "
            "pytree or Flax model, a NumPy array or a dict of arrays"
        )
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class MissingDependencyError(TbweightsError):
    """An optional package is needed for this input and is not installed."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{purpose} needs the {package} package; install it with `pip install 'tbweights[{extra}]'`"
        )


def import_optional(module: str, package: str, extra: str, purpose: str) -> ModuleType:
    """Import `module`, or raise `MissingDependencyError` that names its `package` and tbweights `extra`."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(package, extra, purpose) from None
