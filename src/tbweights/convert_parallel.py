"""`tbweights convert --jobs N`: summarize checkpoints in worker processes.

Each worker reads one checkpoint and computes the statistics of its selected
tensors. It returns the tensors' records (without their data) with their
statistics, or the reason a tensor or the checkpoint failed. The parent replays
these results, in the order the checkpoints were given, through the same
`WeightWriter.log_tensors` as a single process, so tags, steps, skipped tensors
and overview tables come out the same; only the wall times in the events differ.
Workers are started with `spawn`: forking a process that holds torch's or our
own threads can deadlock.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from tbweights.checkpoints import LoadOptions, read_checkpoint
from tbweights.errors import TbweightsError
from tbweights.stats import TensorStats, compute_stats
from tbweights.tensors import NamedTensor, Role
from tbweights.writer import _TENSOR_ERRORS, SummaryOptions


class ReplayedError(TbweightsError):
    """An error a worker met, raised again in the parent with the same message."""


@dataclass(frozen=True)
class TensorOutcome:
    """One tensor as a worker saw it: its record's fields and statistics or a reason."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    role: Role
    aliases: tuple[str, ...]
    note: str
    stats: TensorStats | None
    reason: str | None

    def record(self) -> NamedTensor:
        def load() -> None:
            raise ReplayedError(f"tensor {self.name!r} was summarized in a worker process")

        return NamedTensor(self.name, self.shape, self.dtype, load, self.role, self.aliases, self.note)


@dataclass(frozen=True)
class CheckpointOutcome:
    tensors: list[TensorOutcome]
    error: str | None  # the checkpoint could not be read (after `tensors`, if any)
    _index: dict[str, TensorOutcome] | None = field(default=None, repr=False, compare=False)

    def replay(self) -> Iterator[NamedTensor]:
        """Yield the records in file order, then raise the checkpoint's error as reading did."""
        for outcome in self.tensors:
            yield outcome.record()
        if self.error is not None:
            raise ReplayedError(self.error)

    def stats(self, tensor: NamedTensor) -> TensorStats:
        outcome = self._by_name().get(tensor.name)
        if outcome is None:
            raise ReplayedError(f"tensor {tensor.name!r} was not summarized")
        if outcome.stats is None:
            raise ReplayedError(outcome.reason or "unknown error")
        return outcome.stats

    def _by_name(self) -> dict[str, TensorOutcome]:
        if self._index is None:
            object.__setattr__(self, "_index", {outcome.name: outcome for outcome in self.tensors})
        assert self._index is not None
        return self._index


def summarize_checkpoint(path: str, load_options: LoadOptions | None, options: SummaryOptions) -> CheckpointOutcome:
    """Worker: read one checkpoint and summarize its selected tensors."""
    outcomes: list[TensorOutcome] = []
    try:
        for tensor in read_checkpoint(path, load_options):
            stats, reason = None, None
            if options.selects(tensor.name):
                try:
                    stats = compute_stats(tensor.load(), buckets=options.buckets, first=options.first)
                except _TENSOR_ERRORS as error:
                    reason = str(error) or type(error).__name__
            outcomes.append(TensorOutcome(tensor.name, tensor.shape, tensor.dtype, tensor.role,
                                          tensor.aliases, tensor.note, stats, reason))
    except TbweightsError as error:
        return CheckpointOutcome(outcomes, str(error))
    return CheckpointOutcome(outcomes, None)


def summarize_checkpoints(
    paths: Sequence[str | os.PathLike[str]],
    load_options: LoadOptions | None,
    options: SummaryOptions,
    jobs: int,
) -> Iterator[CheckpointOutcome]:
    """Outcomes in the order of `paths`, computed by up to `jobs` processes."""
    workers = max(1, min(jobs, len(paths)))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(summarize_checkpoint, os.fspath(p), load_options, options) for p in paths]
        for future in futures:
            yield future.result()
