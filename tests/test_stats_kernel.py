"""The statistics kernel against TensorBoard's own `histogram_pb` and float64 NumPy."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorboard.plugins.histogram.summary_v2 import histogram_pb
from tensorboard.util import tensor_util

from tbweights import stats
from tbweights.stats import BucketCounts, Moments, compute_stats, finish, scan_buckets, scan_moments
from tbweights.stats_chunks import Upcaster

DTYPES = [
    np.float32,
    np.float64,
    np.float16,
    ml_dtypes.bfloat16,
    ml_dtypes.float8_e4m3fn,
    ml_dtypes.float8_e5m2,
    np.int8,
    np.int32,
    np.int64,
    np.uint8,
    np.bool_,
]


def reference(values: np.ndarray, buckets: int) -> np.ndarray:
    proto = histogram_pb("t", values, buckets=buckets)
    return tensor_util.make_ndarray(proto.value[0].tensor)


def with_boundaries(base: np.ndarray, buckets: int, dtype: type) -> np.ndarray:
    """`base` plus values on (and one float32 step either side of) every bucket edge."""
    base = base[np.isfinite(base.astype(dtype).astype(np.float64))]
    if base.size == 0:
        return base.astype(dtype)
    low, high = float(base.min()), float(base.max())
    edges = np.linspace(low, high, buckets + 1)
    near = np.concatenate([edges, np.nextafter(edges.astype(np.float32), np.float32(np.inf)),
                           np.nextafter(edges.astype(np.float32), np.float32(-np.inf))])
    near = np.clip(near, low, high)
    return np.concatenate([base, near]).astype(dtype)


@settings(max_examples=150, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    buckets=st.integers(1, 70),
    data=st.lists(st.floats(-1e4, 1e4, width=32), min_size=1, max_size=300),
    boundaries=st.booleans(),
    chunk=st.sampled_from([1, 7, 64, 1 << 17]),
)
def test_histogram_matches_histogram_pb(
    dtype: type, buckets: int, data: list[float], boundaries: bool, chunk: int
) -> None:
    values = np.array(data, dtype=np.float64)
    values = with_boundaries(values, buckets, dtype) if boundaries else values.astype(dtype)
    values = values[np.isfinite(values.astype(np.float64))]  # parity is on finite input (float8 overflows)
    result = compute_stats(values, buckets=buckets, chunk=chunk)
    np.testing.assert_array_equal(result.histogram, reference(values, buckets))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("buckets", [1, 3, 30, 255])
def test_histogram_on_spread_and_boundary_data(dtype: type, buckets: int) -> None:
    rng = np.random.default_rng(buckets)
    base = rng.standard_normal(50_000) * 40
    values = with_boundaries(base, buckets, dtype)
    result = compute_stats(values, buckets=buckets, chunk=4096)
    np.testing.assert_array_equal(result.histogram, reference(values, buckets))


def test_threads_give_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.random.default_rng(0).standard_normal(300_001).astype(np.float32)
    values[1234] = np.nan
    values[99] = np.inf
    one = compute_stats(values)
    monkeypatch.setattr(stats, "THREAD_MIN_ELEMENTS", 1)
    monkeypatch.setenv("TBWEIGHTS_THREADS", "3")
    three = compute_stats(values, chunk=10_000)
    np.testing.assert_array_equal(one.histogram, three.histogram)
    assert (one.nan, one.posinf, one.min, one.max) == (three.nan, three.posinf, three.min, three.max)
    assert one.mean == pytest.approx(three.mean, rel=1e-6)
    assert one.std == pytest.approx(three.std, rel=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16, np.float64, np.int16])
def test_mean_and_std_match_float64(dtype: type) -> None:
    rng = np.random.default_rng(1)
    # An offset mean and a small spread: the hard case for float32 sums.
    values = (rng.standard_normal(400_000) * 0.02 + 3.0).astype(dtype)
    exact = values.astype(np.float64)
    result = compute_stats(values)
    assert result.mean == pytest.approx(exact.mean(), rel=1e-6)
    assert result.std == pytest.approx(exact.std(), rel=1e-5)


def test_non_finite_values_are_counted_not_bucketed() -> None:
    values = np.array([np.nan, np.inf, -np.inf, 0.0, 1.0, 2.0, 0.0], dtype=np.float32)
    result = compute_stats(values, buckets=4)
    assert (result.nan, result.posinf, result.neginf, result.zeros) == (1, 1, 1, 2)
    finite = values[np.isfinite(values)]
    np.testing.assert_array_equal(result.histogram, reference(finite, 4))
    assert result.mean == pytest.approx(0.75)


@pytest.mark.parametrize(
    "dtype",
    [np.float16, ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2,
     ml_dtypes.float8_e4m3fnuz, ml_dtypes.float8_e5m2fnuz],
)
def test_upcast_is_exact_for_every_bit_pattern(dtype: type) -> None:
    bits = np.uint8 if np.dtype(dtype).itemsize == 1 else np.uint16
    codes = np.arange(np.iinfo(bits).max + 1, dtype=bits).view(dtype)
    upcast = Upcaster(codes.dtype, codes.size)(codes)
    expected = codes.astype(np.float32)
    np.testing.assert_array_equal(upcast.view(np.uint32)[~np.isnan(expected)],
                                  expected.view(np.uint32)[~np.isnan(expected)])
    np.testing.assert_array_equal(np.isnan(upcast), np.isnan(expected))


def test_partials_merge_like_one_pass() -> None:
    values = np.random.default_rng(2).standard_normal(10_000).astype(np.float32)
    halves = values[:3000], values[3000:]
    moments = scan_moments(halves[0]).merge(scan_moments(halves[1]))
    counts: BucketCounts = scan_buckets(halves[0], moments).merge(scan_buckets(halves[1], moments))
    merged = finish(moments, counts, (), 30)
    whole = compute_stats(values, first=0)
    np.testing.assert_array_equal(merged.histogram, whole.histogram)
    assert merged.std == pytest.approx(whole.std, rel=1e-6)
    assert isinstance(moments, Moments)


@pytest.mark.parametrize(
    "values",
    [
        np.array([1e38, -3e38, 1.5, 0.0], dtype=np.float32),  # the range overflows float32
        np.array([0.0, 1e-44, 3e-45, 7e-45], dtype=np.float32),  # subnormal range
        np.array([1.0, np.nextafter(np.float32(1), np.float32(2))], dtype=np.float32),
    ],
    ids=["huge range", "subnormal range", "one ulp"],
)
def test_extreme_ranges_match_histogram_pb(values: np.ndarray) -> None:
    result = compute_stats(values, buckets=7)
    np.testing.assert_array_equal(result.histogram, reference(values, 7))
    exact = values.astype(np.float64)
    assert result.mean == pytest.approx(exact.mean(), rel=1e-6)
    if exact.std() > 1e-6 * np.abs(exact).max():
        # A spread below float32 resolution of the mean is lost by float32 sums.
        assert result.std == pytest.approx(exact.std(), rel=1e-6)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_threads_work_in_a_forked_child(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setattr(stats, "THREAD_MIN_ELEMENTS", 1)
    monkeypatch.setenv("TBWEIGHTS_THREADS", "2")
    values = np.random.default_rng(3).standard_normal(50_000).astype(np.float32)
    expected = compute_stats(values, chunk=1000).histogram  # starts the thread pool here
    pid = os.fork()
    if pid == 0:  # the child: the pool's threads were not copied, so a new pool must start
        ok = np.array_equal(compute_stats(values, chunk=1000).histogram, expected)
        os._exit(0 if ok else 1)
    import signal
    import time

    deadline = time.monotonic() + 60
    while (waited := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if waited[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("compute_stats hung in a forked child (the parent's thread pool was reused)")
    assert os.waitstatus_to_exitcode(waited[1]) == 0
