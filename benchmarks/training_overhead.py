"""Per-call cost of `WeightWriter.log` inside a training loop, on a small and a 124M-parameter model.

Run:  PYTHONPATH=src python benchmarks/training_overhead.py [--repeats N] [--skip-large]

For each model it times, in one process:

- one SGD training step (forward, backward, update) for scale, small model only;
- `WeightWriter.log(model, step)` with the default options, with `scalars=True`,
  and with `track_change=True` (after its first call, which takes the copy);
- the first call with `check_init=True`, which runs only once per writer;
- the loop people write today: `SummaryWriter.add_histogram` for every parameter
  (torch.utils.tensorboard), as a reference.

Each figure is the median of `--repeats` calls after one warm-up call, as wall
time and as CPU time of this process; CPU time is the steadier figure on a
machine shared with other work. Results print as a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from tbweights import WeightWriter


def small_model() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


class Block(nn.Module):
    """One GPT-2 block's parameters (LayerNorm, attention and MLP projections)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.c_attn = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width)
        self.c_fc = nn.Linear(width, 4 * width)
        self.mlp_proj = nn.Linear(4 * width, width)


class Gpt2Small(nn.Module):
    """GPT-2 small's parameter shapes (124.4M parameters, LM head tied to the token embedding)."""

    def __init__(self, vocab: int = 50257, context: int = 1024, width: int = 768, layers: int = 12) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(context, width)
        self.h = nn.ModuleList(Block(width) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)


Timing = tuple[float, float]  # median wall seconds, median CPU seconds of this process (all threads)


def median_seconds(call: Callable[[], object], repeats: int) -> Timing:
    call()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def training_step(model: nn.Module) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    inputs, targets = torch.randn(64, 784), torch.randint(0, 10, (64,))

    def step() -> None:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()

    return step


def measure(name: str, model: nn.Module, repeats: int, logdir: str) -> list[tuple[str, str, Timing, str]]:
    parameters = sum(p.numel() for p in model.parameters())
    label = f"{name} ({parameters / 1e6:.1f}M parameters)"
    rows: list[tuple[str, str, Timing, str]] = []
    if name == "small MLP":
        rows.append((label, "one SGD step, batch 64 (for scale)", median_seconds(training_step(model), repeats), ""))

    counter = iter(range(10**9))
    for option, kwargs in (
        ("log(), default options", {}),
        ("log(), scalars=True", {"scalars": True}),
        ("log(), track_change=True", {"track_change": True}),
    ):
        with WeightWriter(f"{logdir}/{name}-{option}", **kwargs) as writer:  # type: ignore[arg-type]
            seconds = median_seconds(lambda w=writer: w.log(model, next(counter)), repeats)
            extra = ""
            if writer.change_tracking_bytes:
                extra = f"holds {writer.change_tracking_bytes / 2**20:.1f} MiB of w0 copies"
        rows.append((label, option, seconds, extra))

    def first_call_with_check() -> None:
        with WeightWriter(f"{logdir}/{name}-check-{next(counter)}", check_init=True) as writer:
            writer.log(model, 0)

    rows.append((label, "first log() with check_init=True", median_seconds(first_call_with_check, repeats), ""))

    with SummaryWriter(f"{logdir}/{name}-torch") as reference:

        def add_histograms() -> None:
            step = next(counter)
            for param_name, param in model.named_parameters():
                reference.add_histogram(param_name, param, step)
            reference.flush()

        rows.append(
            (label, "reference: add_histogram per parameter", median_seconds(add_histograms, max(1, repeats // 2)), "")
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per figure (default 5)")
    parser.add_argument("--skip-large", action="store_true", help="skip the 124M-parameter model")
    args = parser.parse_args()
    torch.manual_seed(0)
    models = [("small MLP", small_model())]
    if not args.skip_large:
        models.append(("GPT-2 small shapes", Gpt2Small()))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print()
    print("| model | what | wall s per call | CPU s per call | note |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as logdir:
        for name, model in models:
            for label, what, (wall, cpu), note in measure(name, model, args.repeats, logdir):
                print(f"| {label} | {what} | {wall:.3g} | {cpu:.3g} | {note} |", flush=True)


if __name__ == "__main__":
    main()
