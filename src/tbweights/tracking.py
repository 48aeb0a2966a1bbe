"""Optional summaries for training runs: per-tensor scalars and the change since the first step.

Scalars (`WeightWriter(scalars=True)`) come from the statistics the writer
computes anyway, so they cost a few proto values per tensor. They cover the
finite values only, like the rest of the statistics:

    <tag>/mean, <tag>/std, <tag>/l2_norm, <tag>/max_abs, <tag>/zero_fraction, <tag>/nonfinite

Change tracking (`WeightWriter(track_change=True)`) keeps a float32 copy of
every tensor as first logged, `w0`, and at each step writes a histogram of
`w - w0` (`<tag>/change`) and the scalar `||w - w0|| / ||w0||`
(`<tag>/relative_change`; +inf once a tensor that started all zeros has
moved). Its memory cost is 4 bytes per logged value for
the whole run (about 500 MB for a 124M-parameter model), plus one float32
temporary of the largest tensor while it is summarized.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from tensorboard.compat.proto import summary_pb2

from tbweights import summaries
from tbweights.stats import TensorStats, as_numpy, compute_stats

logger = logging.getLogger(__name__)

SCALAR_SUFFIXES = ("/mean", "/std", "/l2_norm", "/max_abs", "/zero_fraction", "/nonfinite")
CHANGE_SUFFIX = "/change"
RELATIVE_CHANGE_SUFFIX = "/relative_change"
TAG_SUFFIXES = (*SCALAR_SUFFIXES, CHANGE_SUFFIX, RELATIVE_CHANGE_SUFFIX)


def l2_norm(stats: TensorStats) -> float:
    """sqrt(sum of squares) of the finite values, as count * (std^2 + mean^2)."""
    if stats.mean is None or stats.std is None:
        return 0.0
    return math.sqrt(stats.finite * (stats.std * stats.std + stats.mean * stats.mean))


def scalar_values(tag: str, stats: TensorStats) -> list[summary_pb2.Summary.Value]:
    """Build the six per-tensor scalars, in the order of `SCALAR_SUFFIXES`."""
    max_abs = max(abs(stats.min), abs(stats.max)) if stats.min is not None and stats.max is not None else 0.0
    numbers = (
        stats.mean if stats.mean is not None else math.nan,
        stats.std if stats.std is not None else math.nan,
        l2_norm(stats),
        max_abs,
        stats.zeros / stats.count if stats.count else 0.0,
        float(stats.nonfinite),
    )
    return [summaries.scalar_value(tag + suffix, value) for suffix, value in zip(SCALAR_SUFFIXES, numbers, strict=True)]


class ChangeTracker:
    """Keeps each tensor as first seen and summarizes how far it has moved since."""

    def __init__(self, buckets: int) -> None:
        self._buckets = buckets
        self._initial: dict[str, tuple[np.ndarray, float]] = {}

    @property
    def nbytes(self) -> int:
        """Memory held by the copies of the first step's tensors."""
        return sum(array.nbytes for array, _ in self._initial.values())

    def values(self, name: str, tag: str, values: Any) -> list[summary_pb2.Summary.Value]:
        """Build the change histogram and relative-change scalar of one tensor; [] for non-float tensors."""
        current = as_numpy(values)
        if current.dtype.kind in "iub":
            return []
        current = np.asarray(current, dtype=np.float32).reshape(-1)
        initial = self._initial.get(name)
        if initial is None or initial[0].shape != current.shape:
            if initial is not None:
                logger.warning("tensor %r changed size; its change is measured from this step on", name)
            initial = self._remember(name, current)
        start, start_norm = initial
        difference = compute_stats(current - start, buckets=self._buckets, first=0)
        change = l2_norm(difference)
        if start_norm > 0:
            relative = change / start_norm
        else:
            relative = 0.0 if change == 0 else math.inf
        return [
            summaries.histogram_value(tag + CHANGE_SUFFIX, difference.histogram),
            summaries.scalar_value(tag + RELATIVE_CHANGE_SUFFIX, relative),
        ]

    def _remember(self, name: str, current: np.ndarray) -> tuple[np.ndarray, float]:
        copy = np.array(current, dtype=np.float32, copy=True)
        norm = l2_norm(compute_stats(copy, buckets=1, first=0))
        self._initial[name] = (copy, norm)
        return copy, norm
