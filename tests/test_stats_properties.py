"""Property tests of the statistics kernel against NumPy on arbitrary arrays.

Inputs include NaN, +-Inf, subnormals and values at float64's limits. The
references are NumPy on the finite values; where NumPy itself overflows
(float64 sums near 1.7e308), the reference is NumPy on values scaled by a
power of two, which is exact.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tbweights.stats import compute_stats

FLOAT_DTYPES = st.sampled_from([np.float16, np.float32, np.float64])
INT_DTYPES = st.sampled_from([np.int8, np.uint8, np.int32, np.int64, np.bool_])


def float_arrays(dtype: type) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(
        dtype,
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=12),
        elements=st.floats(
            allow_nan=True, allow_infinity=True, allow_subnormal=True, width=np.dtype(dtype).itemsize * 8
        ),
    )


arrays = FLOAT_DTYPES.flatmap(float_arrays) | INT_DTYPES.flatmap(
    lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=12))
)
buckets = st.integers(min_value=1, max_value=40)


def reference_mean_std(finite: np.ndarray) -> tuple[float, float]:
    """Mean and population std, computed by NumPy on power-of-two scaled values."""
    exponent = math.frexp(float(np.max(np.abs(finite))))[1]
    scaled = np.ldexp(finite, -exponent)
    return math.ldexp(float(np.mean(scaled)), exponent), math.ldexp(float(np.std(scaled)), exponent)


@settings(max_examples=300, deadline=None)
@given(arrays, buckets)
def test_kernel_matches_numpy(array: np.ndarray, k: int) -> None:
    stats = compute_stats(array, buckets=k)
    values = array.astype(np.float64).reshape(-1)
    finite = values[np.isfinite(values)]

    assert stats.count == values.size
    assert stats.nan == int(np.isnan(values).sum())
    assert stats.posinf == int(np.isposinf(values).sum())
    assert stats.neginf == int(np.isneginf(values).sum())
    assert stats.zeros == int((finite == 0).sum())

    rows = stats.histogram
    assert rows.shape == (k, 3)
    assert np.isfinite(rows).all()
    assert rows[:, 2].sum() == finite.size
    assert (rows[:, 0] <= rows[:, 1]).all()
    assert (rows[1:, 0] == rows[:-1, 1]).all()

    if finite.size == 0:
        assert stats.min is None
        assert stats.max is None
        assert stats.mean is None
        assert stats.std is None
        assert (rows == 0).all()
        return
    assert stats.min == finite.min()
    assert stats.max == finite.max()
    assert rows[0, 0] == finite.min()
    assert rows[-1, 1] == finite.max()

    mean, std = reference_mean_std(finite)
    spread = float(np.max(np.abs(finite)))
    assert stats.mean is not None
    assert stats.std is not None
    assert math.isfinite(stats.mean)
    assert math.isfinite(stats.std)
    assert stats.min <= stats.mean <= stats.max
    assert math.isclose(stats.mean, mean, rel_tol=1e-9, abs_tol=1e-12 * spread)
    assert math.isclose(stats.std, std, rel_tol=1e-6, abs_tol=1e-9 * spread)


@settings(max_examples=100, deadline=None)
@given(float_arrays(np.float64), buckets)
def test_counts_match_numpy_histogram(array: np.ndarray, k: int) -> None:
    """Bucket counts match NumPy's histogram over the same edges, away from the edges.

    NumPy and TensorBoard round a value that sits within an ulp of an edge
    differently, so only values clear of every edge are compared.
    """
    stats = compute_stats(array, buckets=k)
    finite = array.reshape(-1)[np.isfinite(array.reshape(-1))]
    if finite.size == 0 or finite.min() == finite.max():
        return
    edges = np.append(stats.histogram[:, 0], stats.histogram[-1, 1])
    index = np.clip(np.searchsorted(edges, finite, side="right") - 1, 0, k - 1)
    near = np.zeros(finite.size, dtype=bool)
    with np.errstate(over="ignore"):
        for edge in edges:
            near |= np.abs(finite - edge) <= 4 * np.spacing(np.abs(edge)) + 4 * np.spacing(np.abs(finite))
    clear = np.bincount(index[~near], minlength=k)
    ours = stats.histogram[:, 2]
    assert (ours >= clear).all()
    assert ours.sum() == finite.size


@given(st.sampled_from([1.7e308, -1.7e308, 1e300, 5e-324, 3e38]), st.integers(1, 20))
def test_constant_extreme_value(value: float, size: int) -> None:
    stats = compute_stats(np.full(size, value), buckets=5)
    assert stats.min == stats.max == value
    assert stats.mean == value
    assert stats.std == 0.0
    assert (stats.histogram[:, :2] == value).all()
    assert stats.histogram[-1, 2] == size
