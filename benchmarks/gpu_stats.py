"""Statistics of tensors on a CUDA GPU: tbweights on the device against copying to the host.

    PYTHONPATH=src python benchmarks/gpu_stats.py [--elements 1048576,16777216,134217728] [--repeat 5]

For each size and dtype it checks that the device path (`stats_torch`) gives the
same histogram, count, min, max and first values as the NumPy path on a host
copy, then prints one JSON line per case: the median time of `compute_stats` on
the GPU tensor, of a host copy plus the NumPy path, and of
`torch.utils.tensorboard.SummaryWriter.add_histogram` (which copies to the host),
with the peak GPU memory above the input. Needs a CUDA build of torch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from tbweights.stats import compute_stats


def timed(call: Callable[[], Any], repeat: int) -> float:
    call()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check_same(values: torch.Tensor) -> None:
    on_device = compute_stats(values)
    on_host = compute_stats(values.cpu())
    np.testing.assert_array_equal(on_device.histogram, on_host.histogram)
    assert (on_device.count, on_device.min, on_device.max) == (on_host.count, on_host.min, on_host.max)
    assert on_device.first == on_host.first
    assert abs(on_device.std - on_host.std) <= 1e-5 * on_host.std


def case(elements: int, dtype: torch.dtype, repeat: int) -> dict[str, Any]:
    generator = torch.Generator(device="cuda").manual_seed(0)
    values = (torch.randn(elements, device="cuda", generator=generator) * 0.02).to(dtype)
    check_same(values)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    device_s = timed(lambda: compute_stats(values), repeat)
    peak_above = (torch.cuda.max_memory_allocated() - base) / 2**20
    host_s = timed(lambda: compute_stats(values.cpu()), repeat)
    row = {"elements": elements, "dtype": str(dtype).removeprefix("torch."), "device_s": device_s,
           "device_m_elements_per_s": elements / device_s / 1e6, "host_copy_and_numpy_s": host_s,
           "gpu_peak_above_input_mib": peak_above}
    if dtype == torch.float32:
        from torch.utils.tensorboard import SummaryWriter

        with tempfile.TemporaryDirectory() as logdir:
            writer = SummaryWriter(logdir)
            row["torch_add_histogram_s"] = timed(lambda: (writer.add_histogram("w", values, 0), writer.flush()), repeat)
            writer.close()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--elements", default="1048576,16777216,134217728")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU", file=sys.stderr)
        return 1
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__}))
    for elements in (int(x) for x in args.elements.split(",")):
        for dtype in (torch.float32, torch.bfloat16):
            print(json.dumps(case(elements, dtype, args.repeat)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
