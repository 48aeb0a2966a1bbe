"""The numeric kernel: statistics, first values and histogram of one tensor.

Two streaming passes run over bounded chunks. The first finds the count, the
non-finite counts, zeros, min, max and sum. The second buckets the finite values
between min and max and sums the squared deviations from the mean. Two passes are
needed because the bucket edges depend on the global min and max. Each chunk is
upcast into a reused buffer, so extra memory is O(chunk + buckets) per thread
whatever the tensor's size. The bucket counts match TensorBoard's `histogram_pb`
exactly on finite input (`stats_chunks` explains how the float32 fast path keeps that).

A large tensor is split into one contiguous range per CPU, summarized by threads
(NumPy releases the GIL inside its loops) and merged. A torch tensor on a GPU is
summarized on the GPU by `stats_torch`.

Both passes return mergeable partial results (`Moments`, `BucketCounts`), so a
sharded tensor can be summarized by reducing the partials across processes.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from tbweights import dtypes
from tbweights.stats_chunks import (
    SMALL_FLOATS,
    ExactBucketer,
    FloatBucketer,
    PackedCounter,
    Upcaster,
    add_moments,
    squared_deviations,
    work_dtype,
)
from tbweights.stats_chunks import Moments as Moments  # part of this module's API, defined beside its kernel

_T = TypeVar("_T")

DEFAULT_BUCKETS = 30
DEFAULT_FIRST = 5
# 128 Ki elements: the scratch buffers of one thread take about 2 MiB. In CPU time
# per element this measured faster than 32 Ki and 64 Ki chunks on a 2-CPU AMD EPYC.
CHUNK_ELEMENTS = 1 << 17
# Tensors of at least this many elements are split across threads (NumPy releases
# the GIL inside its loops); smaller ones are not worth the hand-off.
THREAD_MIN_ELEMENTS = 1 << 20


def thread_count() -> int:
    """Threads for one tensor: TBWEIGHTS_THREADS if set, else the CPUs this process may use."""
    configured = os.environ.get("TBWEIGHTS_THREADS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def _executor(size: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size != size:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="tbweights-stats")
            _pool_size = size
        return _pool


def _forget_pool() -> None:
    """Drop the pool in a forked child: the parent's threads do not exist there."""
    global _pool, _pool_size, _pool_lock
    _pool, _pool_size, _pool_lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _ranges(size: int, chunk: int, threads: int | None = None) -> list[tuple[int, int]]:
    """Contiguous, chunk-aligned element ranges, one per thread."""
    workers = thread_count() if threads is None else threads
    if workers <= 1 or size < THREAD_MIN_ELEMENTS:
        return [(0, size)]
    chunks = -(-size // chunk)
    per = -(-chunks // workers) * chunk
    return [(start, min(start + per, size)) for start in range(0, size, per)]


def _map(function: Callable[[np.ndarray], _T], flat: np.ndarray, chunk: int) -> list[_T]:
    ranges = _ranges(flat.size, chunk)
    if len(ranges) == 1:
        return [function(flat)]
    pool = _executor(len(ranges))
    return list(pool.map(lambda r: function(flat[r[0] : r[1]]), ranges))


@dataclass
class BucketCounts:
    """Second-pass results: bucket counts over [min, max] and the squared deviations."""

    counts: np.ndarray
    squared_deviations: float = 0.0

    def merge(self, other: BucketCounts) -> BucketCounts:
        return BucketCounts(self.counts + other.counts, self.squared_deviations + other.squared_deviations)


@dataclass(frozen=True)
class TensorStats:
    """Everything tbweights reports about one tensor.

    `min`, `max`, `mean` and `std` cover the finite values only and are None when
    there are none; `std` is the population standard deviation (ddof=0).
    `histogram` is TensorBoard's v2 layout: float64 rows (left, right, count).
    """

    count: int
    nan: int
    posinf: int
    neginf: int
    zeros: int
    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    first: tuple[float | int | bool | complex, ...]
    histogram: np.ndarray = field(repr=False)

    @property
    def finite(self) -> int:
        return self.count - self.nan - self.posinf - self.neginf

    @property
    def nonfinite(self) -> int:
        return self.nan + self.posinf + self.neginf


def as_numpy(values: Any) -> np.ndarray:
    """A NumPy view (or, where unavoidable, a copy) of a NumPy or torch tensor.

    `tbweights.dtypes` handles dtypes and layouts NumPy lacks and raises
    `TensorError` for values with nothing to summarize.
    """
    return dtypes.to_numpy(values)


def _on_accelerator(values: Any) -> bool:
    """True for a plain torch tensor of real numbers on a GPU or other non-CPU device.

    Such a tensor is summarized where it lives (`stats_torch`). Subclasses such as
    `DTensor`, and quantized, sparse or complex tensors, go through `dtypes` instead.
    """
    torch = sys.modules.get("torch")
    if torch is None or type(values) not in (torch.Tensor, torch.nn.Parameter):
        return False
    if values.device.type in ("cpu", "meta") or values.layout != torch.strided or values.is_quantized:
        return False
    return not values.is_complex()


def check_dtype(array: np.ndarray) -> None:
    """Raise TypeError for dtypes the kernel cannot summarize (complex is made real first)."""
    if dtypes.is_summarizable(array.dtype):
        return
    raise TypeError(f"cannot summarize values of dtype {array.dtype}")


def iter_chunks(flat: np.ndarray, chunk: int = CHUNK_ELEMENTS) -> Iterator[np.ndarray]:
    """Yield work-dtype chunks of a 1-D array, upcasting into one reused buffer."""
    upcast = Upcaster(flat.dtype, min(chunk, max(flat.size, 1)))
    for start in range(0, flat.size, chunk):
        yield upcast(flat[start : start + chunk])


def scan_moments(flat: np.ndarray, chunk: int = CHUNK_ELEMENTS) -> Moments:
    """First pass over a 1-D array (split across threads when it is large)."""
    moments = Moments()
    for part in _map(lambda piece: _moments_of(piece, chunk), flat, chunk):
        moments = moments.merge(part)
    return moments


def _moments_of(flat: np.ndarray, chunk: int) -> Moments:
    moments = Moments(count=int(flat.size))
    flags = np.empty(min(chunk, max(flat.size, 1)), dtype=np.bool_)
    for part in iter_chunks(flat, chunk):
        add_moments(part, moments, flags)
    return moments


def scan_buckets(
    flat: np.ndarray,
    moments: Moments,
    buckets: int = DEFAULT_BUCKETS,
    chunk: int = CHUNK_ELEMENTS,
) -> BucketCounts:
    """Second pass: bucket the finite values over the global [min, max] of `moments`."""
    if moments.finite == 0 or moments.min == moments.max:
        # The histogram needs no counts; std is then 0.
        return BucketCounts(np.zeros(buckets, dtype=np.int64))
    result = BucketCounts(np.zeros(buckets, dtype=np.int64))
    for part in _map(lambda piece: _buckets_of(piece, moments, buckets, chunk), flat, chunk):
        result = result.merge(part)
    return result


def _buckets_of(flat: np.ndarray, moments: Moments, buckets: int, chunk: int) -> BucketCounts:
    size = min(chunk, max(flat.size, 1))
    work = work_dtype(flat.dtype)
    fast = work == np.float32 and FloatBucketer.handles(moments.min, moments.max)
    bucketer = (FloatBucketer if fast else ExactBucketer)(moments.min, moments.max, buckets, size)
    counter = PackedCounter(buckets + 1, size, np.dtype(np.float32 if fast else np.float64))
    # Squares of float32 deviations overflow or underflow outside this range of spreads.
    float32_squares = work == np.float32 and 2.0**-50 <= moments.max - moments.min <= 2.0**50
    scratch = np.empty(size, dtype=np.float32 if float32_squares else np.float64)
    mean = moments.total / moments.finite
    squares = 0.0
    has_nonfinite = moments.finite != moments.count
    for part in iter_chunks(flat, chunk):
        if has_nonfinite:
            part = part[np.isfinite(part)]
            if part.size == 0:
                continue
        squares += squared_deviations(part, mean, scratch)
        counter.add(bucketer.indices(part))
    counts = counter.counts()
    counts[buckets - 1] += counts[buckets]  # the maximum: histogram_pb's clamp
    return BucketCounts(counts[:buckets], squares)


def histogram_rows(moments: Moments, counts: BucketCounts, buckets: int) -> np.ndarray:
    """TensorBoard's [k, 3] histogram, with `histogram_pb`'s edge cases."""
    if moments.finite == 0:
        return np.zeros((buckets, 3), dtype=np.float64)
    if moments.min == moments.max:
        rows = np.full((buckets, 3), moments.min, dtype=np.float64)
        rows[:, 2] = 0.0
        rows[-1, 2] = moments.finite
        return rows
    edges = np.linspace(moments.min, moments.max, buckets + 1)
    return np.stack([edges[:-1], edges[1:], counts.counts.astype(np.float64)], axis=1)


def first_values(flat: np.ndarray, first: int) -> tuple[float | int | bool | complex, ...]:
    """Return the first `first` values in row-major order, as Python numbers."""
    head = flat[:first]
    if head.dtype in SMALL_FLOATS:
        head = head.astype(np.float32)
    return tuple(head.tolist())


def finish(
    moments: Moments,
    counts: BucketCounts,
    first: tuple[float | int | bool | complex, ...],
    buckets: int,
) -> TensorStats:
    """Assemble the final statistics from (possibly merged) partial results."""
    has_finite = moments.finite > 0
    mean = None
    if has_finite:
        # Rounding in the sum can put the mean a hair outside [min, max] (constant data).
        mean = min(max(moments.total / moments.finite, moments.min), moments.max)
    # max(): the rounding correction in `squared_deviations` can leave a tiny negative sum.
    std = math.sqrt(max(counts.squared_deviations, 0.0) / moments.finite) if has_finite else None
    return TensorStats(
        count=moments.count,
        nan=moments.nan,
        posinf=moments.posinf,
        neginf=moments.neginf,
        zeros=moments.zeros,
        min=moments.min if has_finite else None,
        max=moments.max if has_finite else None,
        mean=mean,
        std=std,
        first=first,
        histogram=histogram_rows(moments, counts, buckets),
    )


def compute_stats(
    values: Any,
    *,
    buckets: int = DEFAULT_BUCKETS,
    first: int = DEFAULT_FIRST,
    chunk: int = CHUNK_ELEMENTS,
) -> TensorStats:
    """Statistics, first values and histogram of a NumPy array or torch tensor."""
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    if _on_accelerator(values):
        from tbweights.stats_torch import compute_stats_torch

        return compute_stats_torch(values, buckets=buckets, first=first)
    array = as_numpy(values)
    flat = array.reshape(-1)
    head = first_values(flat, first)
    flat = dtypes.complex_magnitude(flat)
    check_dtype(flat)
    # Overflow and underflow are detected below and redone on scaled values.
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        moments = scan_moments(flat, chunk)
        if not stats_scaled.out_of_range(moments):
            counts = scan_buckets(flat, moments, buckets, chunk)
            if math.isfinite(counts.squared_deviations):
                return finish(moments, counts, head, buckets)
        return stats_scaled.scaled_stats(flat, moments, head, buckets, chunk)


from tbweights import stats_scaled  # noqa: E402 - stats_scaled builds on this module
