"""The statistics kernel against TensorBoard's `histogram_pb` and NumPy."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tensorboard.plugins.histogram.summary_v2 import histogram_pb
from tensorboard.util import tensor_util

from tbweights.stats import compute_stats


def reference_histogram(values: np.ndarray, buckets: int = 30) -> np.ndarray:
    summary = histogram_pb("ref", values, buckets=buckets)
    return tensor_util.make_ndarray(summary.value[0].tensor)


RNG = np.random.default_rng(1234)
CASES = {
    "normal float32": RNG.standard_normal((64, 33)).astype(np.float32),
    "uniform float64": RNG.uniform(-3, 7, 5000),
    "float16": RNG.standard_normal(999).astype(np.float16),
    "integers": np.arange(-50, 151, dtype=np.int64),
    "int8": RNG.integers(-128, 127, 300, dtype=np.int8),
    "uint8": RNG.integers(0, 255, 300, dtype=np.uint8),
    "bool": RNG.integers(0, 2, 77).astype(bool),
    "constant": np.full((4, 5), 0.25, dtype=np.float32),
    "single": np.array([3.5], dtype=np.float32),
    "empty": np.zeros((0, 10), dtype=np.float32),
    "two values": np.array([1.0, 2.0]),
    "on bucket edges": np.linspace(0.0, 1.0, 31),
}


@pytest.mark.parametrize("name", CASES)
def test_histogram_matches_histogram_pb(name: str) -> None:
    values = CASES[name]
    stats = compute_stats(values)
    expected = reference_histogram(values.astype(np.float64) if values.dtype == bool else values)
    np.testing.assert_array_equal(stats.histogram, expected)


@pytest.mark.parametrize("buckets", [1, 2, 7, 30, 255])
def test_histogram_bucket_counts(buckets: int) -> None:
    values = RNG.standard_normal(10_000).astype(np.float32)
    stats = compute_stats(values, buckets=buckets)
    assert stats.histogram.shape == (buckets, 3)
    np.testing.assert_array_equal(stats.histogram, reference_histogram(values, buckets))


@pytest.mark.parametrize("chunk", [1, 3, 1000, 1 << 20])
def test_chunking_changes_nothing(chunk: int) -> None:
    values = RNG.standard_normal(4099).astype(np.float32)
    whole = compute_stats(values)
    chunked = compute_stats(values, chunk=chunk)
    np.testing.assert_array_equal(chunked.histogram, whole.histogram)
    assert chunked.mean == pytest.approx(whole.mean, rel=1e-12)
    # The squared deviations of float32 input are summed in float32 within a chunk.
    assert chunked.std == pytest.approx(whole.std, rel=1e-6)


@pytest.mark.parametrize("name", [n for n in CASES if CASES[n].size])
def test_statistics_match_numpy(name: str) -> None:
    values = CASES[name]
    as_float = values.astype(np.float64)
    stats = compute_stats(values)
    assert stats.count == values.size
    assert stats.min == as_float.min()
    assert stats.max == as_float.max()
    assert stats.mean == pytest.approx(as_float.mean(), rel=1e-9, abs=1e-12)
    # float32 and smaller floats: squared deviations are summed in float32 within a chunk.
    precise = values.dtype in (np.float64, np.int64, np.int8, np.uint8, np.bool_)
    assert stats.std == pytest.approx(as_float.std(), rel=1e-9 if precise else 1e-6, abs=1e-12)
    assert stats.zeros == int(np.count_nonzero(as_float == 0))


def test_empty_tensor_has_no_statistics() -> None:
    stats = compute_stats(np.zeros((0, 10), dtype=np.float32))
    assert stats.count == 0
    assert (stats.min, stats.max, stats.mean, stats.std) == (None, None, None, None)
    assert stats.first == ()


def test_first_values_are_row_major() -> None:
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert compute_stats(values, first=6).first == (0.0, 1.0, 2.0, 3.0, 4.0, 5.0)
    assert compute_stats(values.T.copy(), first=3).first == (0.0, 4.0, 8.0)


def test_first_values_more_than_size() -> None:
    assert compute_stats(np.array([1, 2], dtype=np.int64), first=5).first == (1, 2)


def test_bfloat16_upcasts_to_float32() -> None:
    values = np.array([1e38, -3e38, 1.5, 0.0], dtype=ml_dtypes.bfloat16)
    stats = compute_stats(values)
    exact = values.astype(np.float32).astype(np.float64)
    assert stats.max == exact.max()
    assert stats.min == exact.min()
    assert np.isfinite(stats.histogram).all()
    assert stats.first[0] == float(np.float32(values[0]))


def test_nonfinite_values_are_counted_not_bucketed() -> None:
    values = np.array([np.nan, np.inf, -np.inf, -np.inf, 1.0, 2.0, 3.0], dtype=np.float32)
    stats = compute_stats(values)
    assert (stats.nan, stats.posinf, stats.neginf) == (1, 1, 2)
    assert stats.histogram[:, 2].sum() == 3
    assert np.isfinite(stats.histogram).all()
    np.testing.assert_array_equal(stats.histogram, reference_histogram(values[4:]))


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64, np.int32]),
        shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=20),
        elements={"allow_nan": False, "allow_infinity": False, "min_value": -1e6, "max_value": 1e6},
    ),
    st.integers(min_value=1, max_value=50),
)
def test_histogram_matches_histogram_pb_property(values: np.ndarray, buckets: int) -> None:
    stats = compute_stats(values, buckets=buckets, chunk=17)
    np.testing.assert_array_equal(stats.histogram, reference_histogram(values, buckets))
    assert stats.histogram[:, 2].sum() == values.size
