"""Statistics of sharded tensors from per-shard partial results and a few collectives.

Each rank scans only its own shards, in the same two passes as `compute_stats`:

1. `scan_moments` on every local part, then four concurrent all-reduces: SUM of
   counts, sums and failure flags, MIN of (min, -max), SUM of the first values'
   bit patterns and SUM of flags that mark which rank contains each first value.
2. `scan_buckets` on every local part over the global [min, max] and around the
   global mean, then one SUM all-reduce of bucket counts and squared deviations.

The squared deviations are summed around the global mean, which pass 1 already
fixed, so their sum is exact without a parallel-variance formula. Bucket indices
depend only on each value and the global min and max, so the counts match a
single-process `compute_stats` on the full tensor exactly; the sum and the
squared deviations match it up to float rounding. A step costs five
all-reduces in two rounds whatever the number of tensors, plus one object
gather when some tensor failed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from tbweights.distributed.layout import LocalPart
from tbweights.stats import (
    BucketCounts,
    Moments,
    TensorStats,
    as_numpy,
    check_dtype,
    finish,
    scan_buckets,
    scan_moments,
)
from tbweights.writer import _TENSOR_ERRORS

logger = logging.getLogger(__name__)

# Columns of the SUM buffer of pass 1. Counts travel as float64, exact below 2**53.
_COUNT, _NAN, _POSINF, _NEGINF, _ZEROS, _TOTAL, _FAILED = range(7)
_SUM_WIDTH = 7


def _buffer_device(group: Any) -> torch.device:
    """NCCL reduces CUDA tensors only; every other backend here takes CPU tensors."""
    # NOTE: only gloo on the CPU is tested; the NCCL branch has not run on a GPU yet.
    backend = str(dist.get_backend(group))
    if "nccl" in backend and "gloo" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _local_flat(values: torch.Tensor) -> np.ndarray:
    """Local values as a flat NumPy array (a copy only off the CPU)."""
    flat = as_numpy(values).reshape(-1)
    check_dtype(flat)
    return flat


def _encode_first(values: np.ndarray) -> np.ndarray:
    """Values as int64 bit patterns: floats through float64, integers and bools as they are."""
    kind = values.dtype.kind
    if kind == "u":
        return values.astype(np.uint64).view(np.int64)
    if kind in "ib":
        return values.astype(np.int64)
    return values.astype(np.float64).view(np.int64)


def _decode_first(bits: np.ndarray, dtype: np.dtype) -> tuple[float | int | bool, ...]:
    kind = dtype.kind
    if kind == "u":
        return tuple(bits.view(np.uint64).tolist())
    if kind == "i":
        return tuple(bits.tolist())
    if kind == "b":
        return tuple(bits.astype(np.bool_).tolist())
    return tuple(bits.view(np.float64).tolist())


class _Pass1:
    """Pass-1 buffers: one row per tensor."""

    def __init__(self, count: int, first: int) -> None:
        self.sums = np.zeros((count, _SUM_WIDTH), dtype=np.float64)
        self.bounds = np.full((count, 2), np.inf, dtype=np.float64)  # (min, -max)
        self.first_bits = np.zeros((count, first), dtype=np.int64)
        self.first_held = np.zeros((count, first), dtype=np.int64)

    def add(self, row: int, part: LocalPart, values: torch.Tensor, first: int) -> None:
        flat = _local_flat(values)
        moments = scan_moments(flat)
        self.sums[row, :_TOTAL] = (moments.count, moments.nan, moments.posinf, moments.neginf, moments.zeros)
        self.sums[row, _TOTAL] = moments.total
        self.bounds[row] = (moments.min, -moments.max)
        for index in range(min(first, part.tensor.size)):
            position = part.locate(index)
            if position is not None:
                self.first_bits[row, index] = _encode_first(flat[position : position + 1])[0]
                self.first_held[row, index] = 1

    def global_moments(self, row: int) -> Moments:
        count, nan, posinf, neginf, zeros = (int(v) for v in self.sums[row, :_TOTAL])
        low, negative_high = self.bounds[row]
        return Moments(
            count=count,
            nan=nan,
            posinf=posinf,
            neginf=neginf,
            zeros=zeros,
            min=float(low),
            max=float(-negative_high),
            total=float(self.sums[row, _TOTAL]),
        )


def _all_reduce(arrays: Sequence[tuple[np.ndarray, Any]], group: Any) -> None:
    """All-reduce NumPy arrays in place, the collectives in flight together."""
    device = _buffer_device(group)
    tensors = [torch.from_numpy(array).to(device) for array, _ in arrays]
    works = [dist.all_reduce(t, op=op, group=group, async_op=True) for t, (_, op) in zip(tensors, arrays, strict=True)]
    for work in works:
        work.wait()
    for tensor, (array, _) in zip(tensors, arrays, strict=True):
        array[...] = tensor.cpu().numpy()


def sharded_stats(
    parts: Sequence[LocalPart], group: Any, *, buckets: int, first: int
) -> list[TensorStats | str]:
    """Statistics of each global tensor, or the reason it failed; the same on every rank.

    Collective: every rank of `group` must call it with parts of the same tensors
    in the same order.
    """
    if not parts:
        return []
    first_pass = _Pass1(len(parts), first)
    local_errors: dict[int, str] = {}
    for row, part in enumerate(parts):
        if part.error is not None:
            local_errors[row] = part.error
        elif part.values is not None:
            try:
                first_pass.add(row, part, part.values, first)
            except _TENSOR_ERRORS as error:
                local_errors[row] = str(error) or type(error).__name__
        if row in local_errors:
            first_pass.sums[row, _FAILED] = 1
            logger.warning("tensor %r failed on rank %d: %s", part.tensor.name, dist.get_rank(), local_errors[row])
    _all_reduce(
        [
            (first_pass.sums, dist.ReduceOp.SUM),
            (first_pass.bounds, dist.ReduceOp.MIN),
            (first_pass.first_bits, dist.ReduceOp.SUM),
            (first_pass.first_held, dist.ReduceOp.SUM),
        ],
        group,
    )
    failures = _failures(parts, first_pass, local_errors, group, first)
    moments = [first_pass.global_moments(row) for row in range(len(parts))]

    second = np.zeros((len(parts), buckets + 1), dtype=np.float64)
    for row, part in enumerate(parts):
        if row in failures or part.values is None:
            continue
        counts = scan_buckets(_local_flat(part.values), moments[row], buckets)
        second[row, :buckets] = counts.counts
        second[row, buckets] = counts.squared_deviations
    _all_reduce([(second, dist.ReduceOp.SUM)], group)

    results: list[TensorStats | str] = []
    for row, part in enumerate(parts):
        if row in failures:
            results.append(failures[row])
            continue
        counts = BucketCounts(second[row, :buckets].astype(np.int64), float(second[row, buckets]))
        first_count = min(first, part.tensor.size)
        values = _decode_first(first_pass.first_bits[row, :first_count], _first_dtype(part.tensor.dtype))
        results.append(finish(moments[row], counts, values, buckets))
    return results


def _first_dtype(name: str) -> np.dtype:
    """Return the NumPy dtype that decodes first values of a torch dtype, the same on every rank."""
    if name == "bool":
        return np.dtype(np.bool_)
    if name.startswith("uint"):
        return np.dtype(np.uint64)
    if name.startswith("int"):
        return np.dtype(np.int64)
    return np.dtype(np.float64)


def _failures(
    parts: Sequence[LocalPart], first_pass: _Pass1, local_errors: dict[int, str], group: Any, first: int
) -> dict[int, str]:
    """Rows that failed on any rank or whose shards do not add up, with a reason; the same on every rank."""
    failures: dict[int, str] = {}
    for row, part in enumerate(parts):
        if first_pass.sums[row, _FAILED] > 0:
            failures[row] = ""
            continue
        counted = int(first_pass.sums[row, _COUNT])
        if counted != part.tensor.size:
            failures[row] = (
                f"the shards add up to {counted} elements, not {part.tensor.size}; "
                "the ranks disagree on the layout or a replica was counted twice"
            )
            continue
        holders = first_pass.first_held[row, : min(first, part.tensor.size)]
        if np.any(holders != 1):
            failures[row] = "the first values are not held by exactly one rank each; the ranks disagree on the layout"
    if any(reason == "" for reason in failures.values()):
        gathered: list[dict[int, str] | None] = [None] * dist.get_world_size(group)
        dist.all_gather_object(gathered, local_errors, group=group)
        for row, reason in failures.items():
            if reason == "":
                reasons = sorted({errors[row] for errors in gathered if errors and row in errors})
                failures[row] = "; ".join(reasons)
    return failures
