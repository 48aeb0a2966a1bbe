"""Statistics of a torch tensor computed where it lives, with torch kernels.

For a tensor on a GPU (or any non-CPU device), copying it to the host would cost
more than summarizing it. Here both passes run on the device, chunk by chunk, and
only a few scalars, the bucket counts and the first values travel to the host.
The results are the same `Moments` / `BucketCounts` as the NumPy kernel's, so
`stats.finish` assembles them, and shards merge the same way.

Bucket indices repeat `histogram_pb`'s float64 arithmetic exactly:
`floor((float64(x) - min) / width)`. The divisor is a 0-dim tensor on the device,
not a Python number: for a host scalar divisor, torch's CUDA division kernel
(`div_true_kernel_cuda` in aten/src/ATen/native/cuda/BinaryDivTrueKernel.cu)
multiplies by the reciprocal instead, which can round differently.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tbweights.stats import BucketCounts, Moments, TensorStats, finish

# 16 Mi elements: the float64 temporaries of one chunk take 128 MiB of device memory.
DEVICE_CHUNK_ELEMENTS = 1 << 24

_FLOAT64_INPUTS = frozenset({torch.float64, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool})


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64, integers and bool; float32 for every other float."""
    if dtype in _FLOAT64_INPUTS or not dtype.is_floating_point:
        return torch.float64
    return torch.float32


def check_dtype(tensor: torch.Tensor) -> None:
    if tensor.is_complex() or tensor.is_quantized or tensor.layout != torch.strided:
        raise TypeError(f"cannot summarize a {tensor.layout} tensor of dtype {tensor.dtype} on {tensor.device}")


def scan_moments_torch(flat: torch.Tensor, chunk: int = DEVICE_CHUNK_ELEMENTS) -> Moments:
    """First pass on the tensor's device: counts, min, max and sum of the finite values."""
    work = work_dtype(flat.dtype)
    device = flat.device
    sums = torch.zeros(5, dtype=torch.int64, device=device)  # nan, +inf, -inf, zeros, finite
    low = torch.tensor(math.inf, dtype=torch.float64, device=device)
    high = torch.tensor(-math.inf, dtype=torch.float64, device=device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, flat.numel(), chunk):
        part = flat[start : start + chunk].to(work)
        finite = torch.isfinite(part)
        sums += torch.stack(
            (
                torch.isnan(part).sum(),
                torch.isposinf(part).sum(),
                torch.isneginf(part).sum(),
                (part == 0).sum(),
                finite.sum(),
            )
        )
        inf = torch.tensor(math.inf, dtype=work, device=device)
        low = torch.minimum(low, torch.where(finite, part, inf).amin().double())
        high = torch.maximum(high, torch.where(finite, part, -inf).amax().double())
        total += torch.where(finite, part, 0).sum(dtype=torch.float64)
    nan, posinf, neginf, zeros, _ = sums.tolist()  # the one synchronization of the pass
    return Moments(
        count=flat.numel(), nan=nan, posinf=posinf, neginf=neginf, zeros=zeros,
        min=float(low), max=float(high), total=float(total),
    )


def scan_buckets_torch(
    flat: torch.Tensor, moments: Moments, buckets: int, chunk: int = DEVICE_CHUNK_ELEMENTS
) -> BucketCounts:
    """Second pass on the device: bucket counts and squared deviations from the mean."""
    if moments.finite == 0 or moments.min == moments.max:
        return BucketCounts(torch.zeros(buckets, dtype=torch.int64).numpy())
    device = flat.device
    low = torch.tensor(moments.min, dtype=torch.float64, device=device)
    # The width is computed on the host, as `histogram_pb` computes it: on CUDA,
    # dividing a tensor by the Python number `buckets` would multiply by 1 / buckets.
    width = torch.tensor((moments.max - moments.min) / buckets, dtype=torch.float64, device=device)
    mean = torch.tensor(moments.total / moments.finite, dtype=torch.float64, device=device)
    counts = torch.zeros(buckets + 1, dtype=torch.int64, device=device)
    squares = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, flat.numel(), chunk):
        part = flat[start : start + chunk].to(torch.float64)
        finite = torch.isfinite(part)
        index = torch.floor((part - low) / width).clamp_(max=buckets - 1)
        # Non-finite values go to bin `buckets`, which is dropped.
        index = torch.where(finite, index, buckets).to(torch.int64)
        counts += torch.bincount(index, minlength=buckets + 1)
        deviation = torch.where(finite, part - mean, 0)
        squares += torch.dot(deviation, deviation)
    return BucketCounts(counts[:buckets].cpu().numpy(), float(squares))


def first_values_torch(flat: torch.Tensor, first: int) -> tuple[float | int | bool, ...]:
    head = flat[:first].detach().cpu()
    if head.dtype.is_floating_point and head.dtype != torch.float64:
        head = head.to(torch.float32)
    return tuple(head.tolist())


def compute_stats_torch(values: Any, *, buckets: int, first: int, chunk: int = DEVICE_CHUNK_ELEMENTS) -> TensorStats:
    """Statistics of a torch tensor, computed on its own device."""
    tensor = values.detach()
    check_dtype(tensor)
    with torch.no_grad():
        flat = tensor.reshape(-1)
        moments = scan_moments_torch(flat, chunk)
        counts = scan_buckets_torch(flat, moments, buckets, chunk)
        return finish(moments, counts, first_values_torch(flat, first), buckets)
