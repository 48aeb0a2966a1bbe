"""Statistics of values whose range, sum or squared deviations leave float64's range.

Float64 data near its limits overflows the kernel's arithmetic: `max - min`
(1.7e308 - -1.7e308), the sum behind the mean and the squared deviations
behind the standard deviation all become inf. Subnormal data underflows the
other way: squared deviations become subnormal or zero, and a bucket width of
`(max - min) / k` can round to zero. In both cases
the kernel is run again on the values multiplied by a power of two that brings
the largest magnitude near 1. Multiplying by a power of two is exact (apart
from values that become subnormal, which are negligible against the largest),
so the bucket counts are those of exact arithmetic. Min, max and the counts of
zeros, NaN and Inf come from the unscaled first pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from tbweights.stats import (
    CHUNK_ELEMENTS,
    BucketCounts,
    Moments,
    TensorStats,
    finish,
    iter_chunks,
    scan_buckets,
    scan_moments,
)

# Below this range the squared deviations (about span**2) lose precision to
# subnormals and the bucket width can round to zero.
TINY_SPAN = 2.0**-500


def out_of_range(moments: Moments) -> bool:
    """Whether the first pass's sum or range over- or underflowed, or the second
    pass's squared deviations would underflow."""
    if moments.finite == 0:
        return False
    if not math.isfinite(moments.total):
        return True
    span = moments.max - moments.min
    if span == 0:
        return False
    return not math.isfinite(span) or span < TINY_SPAN


def _scaled_chunks(flat: np.ndarray, exponent: int, chunk: int) -> Iterator[np.ndarray]:
    for part in iter_chunks(flat, chunk):
        yield np.ldexp(part.astype(np.float64, copy=False), -exponent)


def scaled_stats(
    flat: np.ndarray,
    moments: Moments,
    first: tuple[float | int | bool | complex, ...],
    buckets: int,
    chunk: int = CHUNK_ELEMENTS,
) -> TensorStats:
    """The statistics of `flat` computed on `flat * 2**-e`, then scaled back.

    Both passes scale chunk by chunk, so extra memory stays O(chunk + buckets).
    """
    largest = max(abs(moments.min), abs(moments.max))
    exponent = math.frexp(largest)[1]

    scaled_moments = Moments()
    for part in _scaled_chunks(flat, exponent, chunk):
        scaled_moments = scaled_moments.merge(scan_moments(part, chunk))
    counts = BucketCounts(np.zeros(buckets, dtype=np.int64))
    for part in _scaled_chunks(flat, exponent, chunk):
        counts = counts.merge(scan_buckets(part, scaled_moments, buckets, chunk))
    scaled = finish(scaled_moments, counts, first, buckets)

    return TensorStats(
        count=moments.count,
        nan=moments.nan,
        posinf=moments.posinf,
        neginf=moments.neginf,
        zeros=moments.zeros,
        min=moments.min,
        max=moments.max,
        mean=_unscale_mean(scaled.mean, exponent, moments),
        std=None if scaled.std is None else math.ldexp(scaled.std, exponent),
        first=first,
        histogram=_unscale_histogram(scaled.histogram, exponent, moments),
    )


def _unscale_mean(mean: float | None, exponent: int, moments: Moments) -> float | None:
    if mean is None:
        return None
    # Rounding in the scaled sum can put the mean a hair outside [min, max].
    return min(max(math.ldexp(mean, exponent), moments.min), moments.max)


def _unscale_histogram(rows: np.ndarray, exponent: int, moments: Moments) -> np.ndarray:
    rows = rows.copy()
    if moments.finite == 0:
        return rows
    rows[:, :2] = np.ldexp(rows[:, :2], exponent)
    if moments.min == moments.max:
        rows[:, :2] = moments.min
    else:
        # The outer edges are exactly min and max even where scaling made min subnormal.
        rows[0, 0] = moments.min
        rows[-1, 1] = moments.max
    return rows
