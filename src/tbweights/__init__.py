"""tbweights: see your weights in TensorBoard.

Histograms of every weight and bias tensor, their first values and statistics as
text, and an overview table per step, from live models or checkpoint files.
Importing this package imports no framework: torch, Keras or TensorFlow are only
touched when you pass one of their objects.
"""

from __future__ import annotations

from tbweights.errors import (
    CheckpointError,
    MissingDependencyError,
    TbweightsError,
    TensorError,
    UnsafeCheckpointError,
    UnsupportedModelError,
)
from tbweights.initcheck import InitFinding, InitReport, Verdict, check_checkpoint, check_init
from tbweights.stats import TensorStats, compute_stats
from tbweights.tensors import NamedTensor, Role
from tbweights.writer import StepReport, WeightWriter, log_weights

__version__ = "0.1.0"

# Submodules that import a framework load on first access, so `import tbweights`
# stays framework-free while `tbweights.keras.WeightsCallback` still works.
_LAZY_SUBMODULES = ("keras", "distributed")


def __getattr__(name: str) -> object:
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"tbweights.{name}")
    raise AttributeError(f"module 'tbweights' has no attribute {name!r}")

__all__ = [
    "CheckpointError",
    "InitFinding",
    "InitReport",
    "MissingDependencyError",
    "NamedTensor",
    "Role",
    "StepReport",
    "TbweightsError",
    "TensorError",
    "TensorStats",
    "UnsafeCheckpointError",
    "UnsupportedModelError",
    "Verdict",
    "WeightWriter",
    "__version__",
    "check_checkpoint",
    "check_init",
    "compute_stats",
    "log_weights",
]
