"""Cost of one `DistributedWeightWriter.log` step on an FSDP2 model, split into scanning and collectives.

    torchrun --nproc_per_node 2 benchmarks/distributed_cost.py --layers 18 --width 4096

builds `layers` Linear(width, width) layers on the meta device, shards them with
`fully_shard` over the CPU gloo group (so no rank ever allocates the full model),
then logs the weights `--repeat` times. Rank 0 prints, per step, the wall time
of the whole `log` call, the time spent inside the collectives (measured around
tbweights' all-reduce calls, waits for the slower rank included), their count
and payload, the time of the same all-reduces replayed after a barrier (the
communication alone), and the peak resident memory of each rank. `--gather` also times the usual workaround
for comparison: `full_tensor()` of every parameter and `compute_stats` on rank 0.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from tbweights import compute_stats
from tbweights.distributed import DistributedWeightWriter, collective


class _CollectiveTimer:
    """Wraps tbweights' all-reduce helper to time and count what goes over the wire."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.bytes = 0
        self._original = collective._all_reduce
        self.last_rounds: list[Any] = []

    def __call__(self, arrays: Any, group: Any) -> None:
        self.last_rounds.append([(array.copy(), op) for array, op in arrays])
        start = time.perf_counter()
        self._original(arrays, group)
        self.seconds += time.perf_counter() - start
        self.calls += len(arrays)
        self.bytes += sum(array.nbytes for array, _ in arrays)

    def reset(self) -> None:
        self.seconds, self.calls, self.bytes = 0.0, 0, 0
        self.last_rounds = []

    def replay(self, group: Any = None) -> float:
        """Seconds to run the last step's all-reduces again with every rank already waiting."""
        dist.barrier(group)
        start = time.perf_counter()
        for arrays in self.last_rounds:
            self._original(arrays, group)
        return time.perf_counter() - start


def build_model(layers: int, width: int, mesh: Any) -> nn.Module:
    with torch.device("meta"):
        model = nn.Sequential(*(nn.Linear(width, width) for _ in range(layers)))
    for layer in model:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    model.to_empty(device="cpu")
    torch.manual_seed(dist.get_rank())
    with torch.no_grad():
        for param in model.parameters():
            param.to_local().normal_(0.0, 0.02)
    return model


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def time_gather(model: nn.Module) -> float:
    """Time the workaround this module replaces: gather each full parameter, summarize it on rank 0."""
    start = time.perf_counter()
    for param in model.parameters():
        full = param.full_tensor()
        if dist.get_rank() == 0:
            compute_stats(full)
        del full
    dist.barrier()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=18, help="number of Linear(width, width) layers")
    parser.add_argument("--width", type=int, default=4096, help="features per layer")
    parser.add_argument("--repeat", type=int, default=3, help="logging steps to time")
    parser.add_argument("--gather", action="store_true", help="also time gathering full parameters on rank 0")
    args = parser.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    model = build_model(args.layers, args.width, mesh)
    parameters = sum(p.numel() for p in model.parameters())
    timer = _CollectiveTimer()
    collective._all_reduce = timer  # type: ignore[assignment]

    walls, in_collectives = [], []
    with tempfile.TemporaryDirectory() as logdir, DistributedWeightWriter(logdir) as writer:
        for step in range(args.repeat):
            timer.reset()
            dist.barrier()
            start = time.perf_counter()
            writer.log(model, step=step)
            walls.append(time.perf_counter() - start)
            in_collectives.append(timer.seconds)
    replays = sorted(timer.replay() for _ in range(5))
    peaks = [0.0] * world
    dist.all_gather_object(peaks, peak_rss_mib())

    gather_seconds = time_gather(model) if args.gather else None
    gather_peaks = [0.0] * world
    if args.gather:
        dist.all_gather_object(gather_peaks, peak_rss_mib())
    if rank == 0:
        print(f"model: {args.layers} x Linear({args.width}, {args.width}) = {parameters / 1e6:.1f} M parameters, "
              f"FSDP2 over {world} gloo CPU processes, {torch.get_num_threads()} threads each")
        print(f"log step wall time: median {statistics.median(walls):.3f} s over {args.repeat} steps "
              f"({', '.join(f'{w:.3f}' for w in walls)})")
        print(f"inside collectives: median {statistics.median(in_collectives) * 1e3:.1f} ms per step, "
              f"{timer.calls} all-reduces, {timer.bytes / 1024:.1f} KiB payload per step; "
              "this includes waiting for the slower rank's scan")
        print(f"the same all-reduces with both ranks ready: median {replays[2] * 1e3:.2f} ms")
        print(f"peak RSS per rank after logging: {', '.join(f'{p:.0f}' for p in peaks)} MiB")
        if gather_seconds is not None:
            print(f"gather workaround (full_tensor + compute_stats on rank 0): {gather_seconds:.3f} s, "
                  f"peak RSS per rank afterwards: {', '.join(f'{p:.0f}' for p in gather_peaks)} MiB")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
