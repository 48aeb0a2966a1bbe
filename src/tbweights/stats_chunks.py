"""Per-chunk kernels behind `tbweights.stats`: upcasting, first-pass moments, bucketing.

Everything here works on one bounded chunk at a time with preallocated scratch
buffers, so a pass over a tensor allocates O(chunk) memory however big the tensor.

Bucket indices repeat TensorBoard's `histogram_pb` exactly:
`floor((float64(x) - min) / ((max - min) / k))`, clamped into the last bucket.
For float32 work data the index is first computed in float32, which is about four
times cheaper than float64. An element whose float32 position lies within a proven
error bound of a bucket boundary is recomputed with the float64 formula, so the
counts are exactly `histogram_pb`'s (see `FloatBucketer`).

Counting uses `np.bincount`, which costs about 3 ns per element whatever the number
of bins. Indices are packed in groups of up to three (`a * B**2 + b * B + c` with
B = k + 1), so bincount reads a third of the elements; the packed counts are split
back into k + 1 bins at the end, and bin k (the maximum itself) joins bin k - 1,
which is `histogram_pb`'s clamp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from tbweights import dtypes

# Floating dtypes NumPy lacks, and float16: upcast to float32, never float16.
SMALL_FLOATS = dtypes.SMALL_FLOATS
BFLOAT16 = np.dtype(ml_dtypes.bfloat16)

# Lookup tables from a float8 or float16 bit pattern to its float32 value. They are
# exact, and 2 to 10 times faster than NumPy's or ml_dtypes' casts (docs/benchmarks.md).
_TABLES: dict[np.dtype, np.ndarray] = {}

# Packed bincount: at most this many bins (the counts stay in the L2 cache).
_MAX_PACKED_BINS = 1 << 15


def work_dtype(dtype: np.dtype) -> np.dtype:
    """float32 for float32 and smaller floats, float64 for float64, integers and bool."""
    if dtype == np.float32 or dtype in SMALL_FLOATS:
        return np.dtype(np.float32)
    return np.dtype(np.float64)  # float64 itself; integers and bool are exact up to 2**53


def _table(dtype: np.dtype) -> np.ndarray:
    table = _TABLES.get(dtype)
    if table is None:
        bits = np.uint8 if dtype.itemsize == 1 else np.uint16
        table = np.arange(1 << (8 * dtype.itemsize), dtype=bits).view(dtype).astype(np.float32)
        _TABLES[dtype] = table
    return table


class Upcaster:
    """Converts chunks of one source dtype into a reused buffer of the work dtype."""

    def __init__(self, dtype: np.dtype, chunk: int) -> None:
        self.source = dtype
        self.work = work_dtype(dtype)
        self.copy_free = dtype == self.work
        self.buffer = np.empty(0 if self.copy_free else chunk, dtype=self.work)
        self._index = np.empty(chunk, dtype=np.intp) if dtype.itemsize == 1 and dtype in SMALL_FLOATS else None
        self._bits = np.empty(chunk, dtype=np.uint32) if dtype == BFLOAT16 else None

    def __call__(self, part: np.ndarray) -> np.ndarray:
        if self.copy_free:
            return part
        n = part.size
        out = self.buffer[:n]
        if self._bits is not None:
            # bfloat16 is the upper half of a float32: widen the bits and shift.
            bits = self._bits[:n]
            np.copyto(bits, part.view(np.uint16))
            np.left_shift(bits, 16, out=bits)
            return bits.view(np.float32)
        if self.source in SMALL_FLOATS:
            codes = part.view(np.uint8 if self.source.itemsize == 1 else np.uint16)
            if self._index is not None:
                index = self._index[:n]
                np.copyto(index, codes)
                codes = index
            np.take(_table(self.source), codes, out=out, mode="clip")  # type: ignore[call-overload]
            return out
        source = part.view(np.uint8) if part.dtype == np.bool_ else part
        np.copyto(out, source, casting="unsafe")
        return out


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


def add_moments(part: np.ndarray, acc: Moments, flags: np.ndarray) -> None:
    """Accumulate one work-dtype chunk into `acc`; `flags` is a bool scratch buffer."""
    low, high = np.minimum.reduce(part), np.maximum.reduce(part)
    if not (math.isfinite(low) and math.isfinite(high)):
        part = _drop_nonfinite(part, acc)
        if part.size == 0:
            return
        low, high = np.minimum.reduce(part), np.maximum.reduce(part)
        flags = np.empty(part.size, dtype=np.bool_)
    acc.zeros += int(np.count_nonzero(np.equal(part, 0, out=flags[: part.size])))
    acc.min = min(acc.min, float(low))
    acc.max = max(acc.max, float(high))
    # A float64 pairwise sum: 0.15 ns more per element than a float32 one, and the
    # mean keeps float64 accuracy (float32 sums lose 1 + 2**24 to rounding).
    acc.total += float(np.add.reduce(part, dtype=np.float64))


def _drop_nonfinite(part: np.ndarray, acc: Moments) -> np.ndarray:
    nan = np.isnan(part)
    posinf = np.isposinf(part)
    neginf = np.isneginf(part)
    acc.nan += int(np.count_nonzero(nan))
    acc.posinf += int(np.count_nonzero(posinf))
    acc.neginf += int(np.count_nonzero(neginf))
    finite: np.ndarray = part[~(nan | posinf | neginf)]
    return finite


class PackedCounter:
    """Counts whole-number float indices in [0, base), bincounting packed groups."""

    def __init__(self, base: int, chunk: int, work: np.dtype) -> None:
        self.base = base
        self.digits = 1
        while self.digits < 3 and base ** (self.digits + 1) <= _MAX_PACKED_BINS:
            self.digits += 1
        self.packed_counts = np.zeros(base**self.digits, dtype=np.int64)
        self.plain_counts = np.zeros(base, dtype=np.int64)
        width = chunk // self.digits + 1
        self._packed = np.empty(width, dtype=work)
        # bincount takes int32 about as fast as intp, and the cast to int32 is cheaper.
        self._codes = np.empty(width, dtype=np.int32 if base**self.digits < 2**31 else np.intp)

    def add(self, indices: np.ndarray) -> None:
        """Count one chunk of indices (a float array of whole numbers)."""
        d = self.digits
        m = indices.size // d * d
        if m:
            rows = indices[:m].reshape(d, -1)
            width = rows.shape[1]
            packed, codes = self._packed[:width], self._codes[:width]
            if d == 1:
                np.copyto(codes, rows[0], casting="unsafe")
            else:
                scale = packed.dtype.type(self.base)
                np.multiply(rows[0], scale, out=packed)
                for row in rows[1:-1]:
                    np.add(packed, row, out=packed)
                    np.multiply(packed, scale, out=packed)
                np.add(packed, rows[-1], out=packed)
                np.copyto(codes, packed, casting="unsafe")
            self.packed_counts += np.bincount(codes, minlength=self.packed_counts.size)
        if m < indices.size:
            self.plain_counts += np.bincount(indices[m:].astype(np.intp), minlength=self.base)

    def counts(self) -> np.ndarray:
        """Counts per index, unpacked."""
        total = self.plain_counts.copy()
        cube = self.packed_counts.reshape((self.base,) * self.digits)
        for axis in range(self.digits):
            others = tuple(a for a in range(self.digits) if a != axis)
            total += cube.sum(axis=others) if others else cube
        return total


class FloatBucketer:
    """Bucket indices of float32 chunks, exact to `histogram_pb`.

    Fast estimate: u = fl32(fl32(fl32(x - lo) * s) + delta), with lo = min in float32
    (exact: min is a float32 value) and s = fl32(k / (max - min)). Each of the three
    roundings and the rounding of s is at most 2**-24 relative, and the float64
    reference differs from the real (x - min) * k / (max - min) by far less, so with
    t64 the reference index value, |fl32(fl32(x - lo) * s) - t64| <= 2**-22 * k and
    the delta addition adds at most 2**-24 * k. With delta = 2**-21 * k this gives
    t64 in [u - 1.625 delta, u - 0.375 delta]; when frac(u) >= 2 delta, floor(u) is
    floor(t64). Elements with frac(u) < 2 delta (about k * 2**-20 of them for spread
    data, plus exact boundary hits) are recomputed with the float64 formula.
    """

    # The error bound needs x - min and (x - min) * s to stay finite and normal in
    # float32: a range of at most 2**126 (x - min <= range cannot overflow) and at
    # least 2**-100 (a subnormal x - min then errs by at most k * 2**-50 buckets).
    _MAX_RANGE = 2.0**126
    _MIN_RANGE = 2.0**-100

    @classmethod
    def handles(cls, minimum: float, maximum: float) -> bool:
        """Tell whether the float32 estimate is safe for this range; if not, use `ExactBucketer`."""
        return cls._MIN_RANGE <= maximum - minimum <= cls._MAX_RANGE

    def __init__(self, minimum: float, maximum: float, buckets: int, chunk: int) -> None:
        self.min64 = np.float64(minimum)
        self.width64 = (np.float64(maximum) - self.min64) / buckets
        self.low = np.float32(minimum)
        self.scale = np.float32(buckets / (np.float64(maximum) - self.min64))
        self.delta = np.float32(buckets * 2.0**-21)
        self.limit = np.float32(2 * self.delta)
        self.values = np.empty(chunk, dtype=np.float32)
        self.floors = np.empty(chunk, dtype=np.float32)
        self.flags = np.empty(chunk, dtype=np.bool_)

    def indices(self, part: np.ndarray) -> np.ndarray:
        """Float32 bucket indices in [0, k] (k: the maximum) for a finite chunk."""
        n = part.size
        u, f, flags = self.values[:n], self.floors[:n], self.flags[:n]
        np.subtract(part, self.low, out=u)
        np.multiply(u, self.scale, out=u)
        np.add(u, self.delta, out=u)
        np.floor(u, out=f)
        np.subtract(u, f, out=u)
        np.less(u, self.limit, out=flags)
        if flags.any():
            where = np.flatnonzero(flags)
            exact = np.floor((part[where].astype(np.float64) - self.min64) / self.width64)
            f[where] = exact
        return f


class ExactBucketer:
    """Bucket indices of float64 chunks with `histogram_pb`'s float64 arithmetic."""

    def __init__(self, minimum: float, maximum: float, buckets: int, chunk: int) -> None:
        self.min64 = np.float64(minimum)
        self.width64 = (np.float64(maximum) - self.min64) / buckets
        self.values = np.empty(chunk, dtype=np.float64)

    def indices(self, part: np.ndarray) -> np.ndarray:
        u = self.values[: part.size]
        np.subtract(part, self.min64, out=u)
        np.divide(u, self.width64, out=u)
        np.floor(u, out=u)
        return u


def squared_deviations(part: np.ndarray, mean: float, scratch: np.ndarray) -> float:
    """Sum of (x - r)**2 - e**2 over a chunk, with r = `mean` rounded to the dtype of
    `scratch` (where the deviations are computed) and e = mean - r.

    Summed over all chunks this is exactly sum((x - mean)**2), as
    sum((x - mean)**2) = sum((x - r)**2) - 2 e sum(x - r) + n e**2 and
    sum(x - r) = n e. Per chunk it saves a reduction.
    """
    # NOTE: float32 deviations and a float32 dot keep std to about 1e-7 relative;
    # float64 deviations measured 1.45 against 0.25 ns per element.
    dev = scratch[: part.size]
    rounded = scratch.dtype.type(mean)
    np.subtract(part, rounded, out=dev)
    error = mean - float(rounded)
    return float(np.dot(dev, dev)) - part.size * error * error
