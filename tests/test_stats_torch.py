"""The torch (GPU) statistics path, run on CPU tensors against the NumPy kernel."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tbweights.stats import compute_stats  # noqa: E402
from tbweights.stats_torch import compute_stats_torch  # noqa: E402

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32, torch.uint8, torch.bool]
DTYPES += [d for d in (getattr(torch, "float8_e4m3fn", None), getattr(torch, "float8_e5m2", None)) if d]


def sample(dtype: torch.dtype, size: int = 50_001) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(size, generator=generator) * 20
    # Values on the bucket edges of the finite range, where rounding decides the bucket.
    edges = torch.linspace(float(values.min()), float(values.max()), 31)
    values = torch.cat([values, edges])
    return values > 0 if dtype == torch.bool else values.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("buckets", [1, 30, 97])
def test_torch_path_matches_numpy_path(dtype: torch.dtype, buckets: int) -> None:
    values = sample(dtype)
    expected = compute_stats(values, buckets=buckets)
    result = compute_stats_torch(values, buckets=buckets, first=5, chunk=7_000)
    np.testing.assert_array_equal(result.histogram, expected.histogram)
    assert result.first == expected.first
    assert (result.count, result.zeros, result.min, result.max) == (
        expected.count, expected.zeros, expected.min, expected.max)
    assert result.mean == pytest.approx(expected.mean, rel=1e-6, abs=1e-9)
    assert result.std == pytest.approx(expected.std, rel=1e-6, abs=1e-12)


def test_non_finite_and_empty() -> None:
    values = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, 1.0, 3.0])
    result = compute_stats_torch(values, buckets=4, first=2)
    expected = compute_stats(values, buckets=4, first=2)
    assert (result.nan, result.posinf, result.neginf, result.zeros) == (1, 1, 1, 1)
    np.testing.assert_array_equal(result.histogram, expected.histogram)
    assert str(result.first) == str(expected.first)
    empty = compute_stats_torch(torch.zeros(0), buckets=3, first=2)
    assert empty.count == 0 and empty.mean is None
    np.testing.assert_array_equal(empty.histogram, np.zeros((3, 3)))


def test_compute_stats_sends_cpu_tensors_to_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    import tbweights.stats_torch as stats_torch

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the torch path is for tensors on other devices")

    monkeypatch.setattr(stats_torch, "compute_stats_torch", fail)
    compute_stats(torch.ones(4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_tensor_is_summarized_on_the_device() -> None:
    values = sample(torch.float32).cuda()
    result = compute_stats(values)
    np.testing.assert_array_equal(result.histogram, compute_stats(values.cpu()).histogram)
