"""`WeightWriter` and `log_weights`: summarize every tensor of a model at a step."""

from __future__ import annotations

import fnmatch
import itertools
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from tensorboard.compat.proto import summary_pb2

from tbweights import summaries
from tbweights.errors import TbweightsError
from tbweights.events import EventFile
from tbweights.frameworks import WalkOptions, named_tensors
from tbweights.stats import DEFAULT_BUCKETS, DEFAULT_FIRST, TensorStats, compute_stats
from tbweights.tags import OVERVIEW_TAG, TagAllocator
from tbweights.tensors import NamedTensor

logger = logging.getLogger(__name__)

# Each bucket costs 24 bytes per tensor and step on disk, and TensorBoard's UI
# re-bins every histogram to 30 buckets, so more than this only bloats the file.
MAX_BUCKETS = 10_000

# Errors that stop one tensor but not the step: the tensor is reported as skipped.
_TENSOR_ERRORS = (TbweightsError, TypeError, ValueError, RuntimeError, OSError, MemoryError)


class SummarySink(Protocol):
    """Where summaries go: an event file of ours, or a writer the user already has."""

    def write_summary(self, step: int, values: list[summary_pb2.Summary.Value]) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class SummaryOptions:
    """What to summarize and how; validated on construction."""

    first: int = DEFAULT_FIRST
    buckets: int = DEFAULT_BUCKETS
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    include_buffers: bool = False

    def __post_init__(self) -> None:
        for option in ("first", "buckets"):
            value = getattr(self, option)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{option} must be an int, got {value!r}")
        if self.first < 0:
            raise ValueError(f"first must be 0 or more, got {self.first}")
        if not 1 <= self.buckets <= MAX_BUCKETS:
            raise ValueError(f"buckets must be between 1 and {MAX_BUCKETS}, got {self.buckets}")

    def selects(self, name: str) -> bool:
        """Glob patterns (`fnmatch`) on the original name; exclude wins over include."""
        if self.include and not any(fnmatch.fnmatchcase(name, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(name, p) for p in self.exclude)


@dataclass(frozen=True)
class TensorResult:
    tensor: NamedTensor
    stats: TensorStats
    histogram_tag: str
    text_tag: str


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


@dataclass
class StepReport:
    """What one call to `WeightWriter.log` wrote and what it skipped."""

    step: int
    results: list[TensorResult] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def _patterns(patterns: str | Sequence[str]) -> tuple[str, ...]:
    """Take one pattern string as one pattern, not as a sequence of characters."""
    return (patterns,) if isinstance(patterns, str) else tuple(patterns)


class WeightWriter:
    """Writes weight summaries to one TensorBoard run, at as many steps as you like.

    >>> with WeightWriter("runs/mlp") as writer:
    ...     writer.log(model, step=0)
    """

    def __init__(
        self,
        logdir: str | os.PathLike[str] | None = None,
        *,
        first: int = DEFAULT_FIRST,
        buckets: int = DEFAULT_BUCKETS,
        include: str | Sequence[str] = (),
        exclude: str | Sequence[str] = (),
        include_buffers: bool = False,
        sink: SummarySink | None = None,
        filename_suffix: str = "",
    ) -> None:
        self.options = SummaryOptions(
            first=first,
            buckets=buckets,
            include=_patterns(include),
            exclude=_patterns(exclude),
            include_buffers=include_buffers,
        )
        if (logdir is None) == (sink is None):
            raise ValueError("pass exactly one of logdir and sink")
        self._sink: SummarySink = sink if sink is not None else EventFile(logdir, filename_suffix)  # type: ignore[arg-type]
        self._tags = TagAllocator()

    @property
    def path(self) -> str | None:
        """The event file's path, when this writer made one."""
        return getattr(self._sink, "path", None)

    def log(self, model: Any, step: int = 0) -> StepReport:
        """Summarize every tensor of a model, state dict, mapping or array at `step`."""
        walk = WalkOptions(include_buffers=self.options.include_buffers)
        return self.log_tensors(named_tensors(model, walk), step)

    def log_tensors(
        self,
        tensors: Iterable[NamedTensor],
        step: int = 0,
        on_tensor: Callable[[NamedTensor], None] | None = None,
        stats_of: Callable[[NamedTensor], TensorStats] | None = None,
    ) -> StepReport:
        """Summarize a stream of tensors at `step`, then write the step's overview table.

        `stats_of` supplies statistics computed elsewhere (by `convert --jobs` workers).
        """
        report = StepReport(step=step)
        for tensor in tensors:
            if not self.options.selects(tensor.name):
                continue
            if on_tensor is not None:
                on_tensor(tensor)
            result = self._summarize(tensor, report, stats_of)
            if result is not None:
                self._write_tensor(step, result)
                report.results.append(result)
        self._write_overview(report)
        self._sink.flush()
        return report

    def log_stats(
        self,
        computed: Iterable[tuple[NamedTensor, TensorStats]],
        step: int = 0,
        skipped: Iterable[Skipped] = (),
    ) -> StepReport:
        """Write statistics computed elsewhere (for example across processes) at `step`.

        Include and exclude patterns are not applied here: the caller selected the tensors.
        """
        report = StepReport(step=step, skipped=list(skipped))
        for tensor, stats in computed:
            histogram_tag, text_tag = self._tags.tags(tensor.name)
            result = TensorResult(tensor, stats, histogram_tag, text_tag)
            self._write_tensor(step, result)
            report.results.append(result)
        self._write_overview(report)
        self._sink.flush()
        return report

    def _summarize(
        self,
        tensor: NamedTensor,
        report: StepReport,
        stats_of: Callable[[NamedTensor], TensorStats] | None = None,
    ) -> TensorResult | None:
        try:
            if stats_of is not None:
                stats = stats_of(tensor)
            else:
                stats = compute_stats(tensor.load(), buckets=self.options.buckets, first=self.options.first)
        except _TENSOR_ERRORS as error:
            reason = str(error) or type(error).__name__
            logger.warning("skipped tensor %r (%s, %s): %s", tensor.name, tensor.dtype, tensor.shape, reason)
            report.skipped.append(Skipped(tensor.name, reason))
            return None
        histogram_tag, text_tag = self._tags.tags(tensor.name)
        return TensorResult(tensor, stats, histogram_tag, text_tag)

    def _write_tensor(self, step: int, result: TensorResult) -> None:
        values = [
            summaries.histogram_value(result.histogram_tag, result.stats.histogram),
            summaries.text_value(result.text_tag, summaries.tensor_markdown(result.tensor, result.stats)),
        ]
        self._sink.write_summary(step, values)

    def _write_overview(self, report: StepReport) -> None:
        rows = [summaries.overview_row(r.tensor, r.stats) for r in report.results]
        rows += [[s.name, "", "", "", "", "", "", "", f"skipped: {s.reason}"] for s in report.skipped]
        table = summaries.overview_table(rows)
        self._sink.write_summary(report.step, [summaries.text_value(OVERVIEW_TAG, table)])

    def flush(self) -> None:
        self._sink.flush()

    def close(self) -> None:
        self._sink.close()

    def __enter__(self) -> WeightWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def log_weights(model: Any, logdir: str | os.PathLike[str], step: int = 0, **options: Any) -> StepReport:
    """Write one step of weight summaries for `model` to a new event file in `logdir`.

    Options are those of `WeightWriter`: `first`, `buckets`, `include`, `exclude`,
    `include_buffers`.
    """
    walk = WalkOptions(include_buffers=bool(options.get("include_buffers", False)))
    tensors = named_tensors(model, walk)
    first = next(tensors, None)  # an unsupported model raises here, before a file exists
    with WeightWriter(logdir, **options) as writer:
        head = [] if first is None else [first]
        return writer.log_tensors(itertools.chain(head, tensors), step)
