"""Non-finite, empty, scalar and extreme values, through the writer and back via TensorBoard."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from markdown_tables import code_text
from tbweights import log_weights

NAN, INF = math.nan, math.inf

# name: (values, count, nan, +inf, -inf, min, max, mean, finite counts in the histogram)
CASES = {
    "mixed": (np.array([1.0, NAN, INF, -INF, 3.0, NAN], np.float32), 6, 2, 1, 1, 1.0, 3.0, 2.0, 2),
    "all_nan": (np.full((2, 3), NAN, np.float32), 6, 6, 0, 0, None, None, None, 0),
    "all_inf": (np.array([INF, -INF, INF], np.float64), 3, 0, 2, 1, None, None, None, 0),
    "single": (np.array([0.25], np.float32), 1, 0, 0, 0, 0.25, 0.25, 0.25, 1),
    "constant": (np.full((4, 4), -7.5, np.float32), 16, 0, 0, 0, -7.5, -7.5, -7.5, 16),
    "empty": (np.zeros((0, 10), np.float32), 0, 0, 0, 0, None, None, None, 0),
    "scalar": (np.array(3.0, np.float64), 1, 0, 0, 0, 3.0, 3.0, 3.0, 1),
    "float32_limits": (
        np.array([3e38, -3e38, 0], np.float32),
        3,
        0,
        0,
        0,
        float(np.float32(-3e38)),
        float(np.float32(3e38)),
        0.0,
        3,
    ),
    "float64_limits": (np.array([1.7e308, -1.7e308, 1.7e308, NAN]), 4, 1, 0, 0, -1.7e308, 1.7e308, 1.7e308 / 3, 3),
    "beyond_1e20": (
        np.array([1e20, 3e25, -2e30], np.float32),
        3,
        0,
        0,
        0,
        float(np.float32(-2e30)),
        float(np.float32(3e25)),
        None,
        3,
    ),
    "subnormal32": (np.array([1e-45, 0, 3e-45], np.float32), 3, 0, 0, 0, 0.0, float(np.float32(3e-45)), None, 3),
    "subnormal64": (np.array([5e-324, 0.0, 1e-323]), 3, 0, 0, 0, 0.0, 1e-323, 5e-324, 3),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    from conftest import RunReader

    logdir = tmp_path_factory.mktemp("bad_values")
    report = log_weights({name: case[0] for name, case in CASES.items()}, logdir, buckets=10)
    return report, RunReader(logdir)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_values_written(run, name: str) -> None:
    report, reader = run
    values, count, nan, posinf, neginf, low, high, mean, finite = CASES[name]
    stats = next(r.stats for r in report.results if r.tensor.name == name)

    assert report.skipped == []
    assert (stats.count, stats.nan, stats.posinf, stats.neginf) == (count, nan, posinf, neginf)
    assert stats.min == low
    assert stats.max == high
    if mean is not None:
        assert stats.mean == pytest.approx(mean, rel=1e-12)
    assert (stats.mean is None) == (low is None)
    assert stats.std is None or math.isfinite(stats.std)

    rows = reader.value(name)
    assert rows.shape == (10, 3)
    assert np.isfinite(rows).all()
    assert rows[:, 2].sum() == finite
    assert (np.diff(rows[:, 0]) >= 0).all()
    if low is not None and low != high:
        assert rows[0, 0] == low
        assert rows[-1, 1] == high

    text = reader.text(f"{name}/stats")
    assert f"| NaN | {nan} |" in text
    assert f"| +Inf | {posinf} |" in text
    assert f"| -Inf | {neginf} |" in text
    assert f"| count | {count} |" in text


def test_empty_and_all_nan_histograms_are_zero(run) -> None:
    _, reader = run
    for name in ("empty", "all_nan", "all_inf"):
        assert (reader.value(name) == 0).all(), name


def test_constant_histogram_layout(run) -> None:
    """TensorBoard's own layout: every edge equals the value, the count in the last row."""
    _, reader = run
    rows = reader.value("constant")
    assert (rows[:, :2] == -7.5).all()
    assert rows[:-1, 2].sum() == 0
    assert rows[-1, 2] == 16


def test_float64_limits_std(run) -> None:
    """The squared deviations overflow float64; the std itself does not."""
    report, _ = run
    stats = next(r.stats for r in report.results if r.tensor.name == "float64_limits")
    values = [Fraction(v) for v in (1.7e308, -1.7e308, 1.7e308)]
    mean = sum(values) / 3
    variance = sum((v - mean) ** 2 for v in values) / 3
    exact_std = math.ldexp(math.sqrt(float(variance / 4**1000)), 1000)
    assert stats.std == pytest.approx(exact_std, rel=1e-12)


def test_overview_lists_every_tensor(run) -> None:
    _, reader = run
    names = {code_text(row["name"]) for row in reader.table("tbweights/overview")}
    assert names == set(CASES)
