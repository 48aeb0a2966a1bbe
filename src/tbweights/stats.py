"""The numeric kernel: statistics, first values and histogram of one tensor.

Two streaming passes over bounded chunks: the first finds the count, the
non-finite counts, zeros, min, max and sum; the second buckets the finite values
between min and max and sums the squared deviations from the mean. Bucket edges
depend on the global min and max, which is why there are two passes; each chunk
is upcast into a reused buffer, so extra memory is O(chunk + buckets) whatever
the tensor's size. Bucketing repeats TensorBoard's `histogram_pb` arithmetic
in float64 (`floor((x - min) / width)`, clamped into the last bucket), so the
counts match it exactly on finite input.

Both passes return mergeable partial results (`Moments`, `BucketCounts`), so a
sharded tensor can be summarized by reducing the partials across processes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tbweights import dtypes

DEFAULT_BUCKETS = 30
DEFAULT_FIRST = 5
# 64 Ki elements: the float64 work buffers (512 KiB each) stay in the L2 cache.
CHUNK_ELEMENTS = 1 << 16

# Floating dtypes NumPy lacks; ml_dtypes defines them. Upcast to float32, never float16.
_SMALL_FLOATS = dtypes.SMALL_FLOATS


@dataclass
class Moments:
    """First-pass results for a set of values; `merge` combines two shards."""

    count: int = 0
    nan: int = 0
    posinf: int = 0
    neginf: int = 0
    zeros: int = 0
    min: float = math.inf
    max: float = -math.inf
    total: float = 0.0

    @property
    def finite(self) -> int:
        return self.count - self.nan - self.posinf - self.neginf

    def merge(self, other: Moments) -> Moments:
        return Moments(
            count=self.count + other.count,
            nan=self.nan + other.nan,
            posinf=self.posinf + other.posinf,
            neginf=self.neginf + other.neginf,
            zeros=self.zeros + other.zeros,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
            total=self.total + other.total,
        )


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


def check_dtype(array: np.ndarray) -> None:
    """Raise TypeError for dtypes the kernel cannot summarize (complex is made real first)."""
    if dtypes.is_summarizable(array.dtype):
        return
    raise TypeError(f"cannot summarize values of dtype {array.dtype}")


def _work_dtype(dtype: np.dtype) -> np.dtype:
    if dtype == np.float64:
        return np.dtype(np.float64)
    if dtype == np.float32 or dtype in _SMALL_FLOATS:
        return np.dtype(np.float32)
    return np.dtype(np.float64)  # integers and bool: exact up to 2**53


def iter_chunks(flat: np.ndarray, chunk: int = CHUNK_ELEMENTS) -> Iterator[np.ndarray]:
    """Yield float chunks of a 1-D array, upcasting into one reused buffer."""
    work = _work_dtype(flat.dtype)
    if flat.dtype == work:
        for start in range(0, flat.size, chunk):
            yield flat[start : start + chunk]
        return
    source = flat.view(np.uint8) if flat.dtype == np.bool_ else flat
    buffer = np.empty(min(chunk, flat.size), dtype=work)
    for start in range(0, flat.size, chunk):
        part = source[start : start + chunk]
        out = buffer[: part.size]
        np.copyto(out, part, casting="unsafe")
        yield out


def scan_moments(flat: np.ndarray, chunk: int = CHUNK_ELEMENTS) -> Moments:
    """First pass over a 1-D array."""
    moments = Moments(count=int(flat.size))
    for part in iter_chunks(flat, chunk):
        low, high = part.min(), part.max()
        if not (math.isfinite(low) and math.isfinite(high)):
            part = _count_nonfinite(part, moments)
            if part.size == 0:
                continue
            low, high = part.min(), part.max()
        moments.zeros += int(part.size - np.count_nonzero(part))
        moments.min = min(moments.min, float(low))
        moments.max = max(moments.max, float(high))
        moments.total += float(np.add.reduce(part, dtype=np.float64))
    return moments


def _count_nonfinite(part: np.ndarray, moments: Moments) -> np.ndarray:
    nan = np.isnan(part)
    posinf = np.isposinf(part)
    neginf = np.isneginf(part)
    moments.nan += int(np.count_nonzero(nan))
    moments.posinf += int(np.count_nonzero(posinf))
    moments.neginf += int(np.count_nonzero(neginf))
    finite: np.ndarray = part[~(nan | posinf | neginf)]
    return finite


def scan_buckets(
    flat: np.ndarray,
    moments: Moments,
    buckets: int = DEFAULT_BUCKETS,
    chunk: int = CHUNK_ELEMENTS,
) -> BucketCounts:
    """Second pass: bucket the finite values over the global [min, max] of `moments`."""
    result = BucketCounts(np.zeros(buckets, dtype=np.int64))
    if moments.finite == 0 or moments.min == moments.max:
        return result  # the histogram needs no counts; std is then 0
    low = np.float64(moments.min)
    width = np.float64(moments.max) - low
    width = width / buckets
    shift = np.float64(moments.total / moments.finite) - low
    offsets = np.empty(min(chunk, flat.size), dtype=np.float64)
    scratch = np.empty_like(offsets)
    indices = np.empty(offsets.size, dtype=np.intp)
    has_nonfinite = moments.finite != moments.count
    for part in iter_chunks(flat, chunk):
        if has_nonfinite:
            part = part[np.isfinite(part)]
        n = part.size
        off, dev, idx = offsets[:n], scratch[:n], indices[:n]
        np.subtract(part, low, out=off)
        np.subtract(off, shift, out=dev)
        np.multiply(dev, dev, out=dev)
        result.squared_deviations += float(np.add.reduce(dev))
        np.divide(off, width, out=off)
        np.floor(off, out=off)
        np.copyto(idx, off, casting="unsafe")
        np.minimum(idx, buckets - 1, out=idx)
        result.counts += np.bincount(idx, minlength=buckets)[:buckets]
    return result


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
    """The first `first` values in row-major order, as Python numbers."""
    head = flat[:first]
    if head.dtype in _SMALL_FLOATS:
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
    std = math.sqrt(counts.squared_deviations / moments.finite) if has_finite else None
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
