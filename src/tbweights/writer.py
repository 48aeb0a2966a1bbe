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
from tbweights.errors import TbweightsError, TensorError
from tbweights.frameworks import WalkOptions, named_tensors
from tbweights.initcheck import InitReport, check_tensor, init_check_markdown
from tbweights.sinks import sink_for
from tbweights.stats import DEFAULT_BUCKETS, DEFAULT_FIRST, TensorStats, compute_stats
from tbweights.tags import INIT_CHECK_TAG, OVERVIEW_TAG, TagAllocator
from tbweights.tensors import NamedTensor
from tbweights.tracking import TAG_SUFFIXES, ChangeTracker, scalar_values

logger = logging.getLogger(__name__)

# Each bucket costs 24 bytes per tensor and step on disk, and TensorBoard's UI
# re-bins every histogram to 30 buckets, so more than this only bloats the file.
MAX_BUCKETS = 10_000

# Errors that stop one tensor but not the step: the tensor is reported as skipped.
_TENSOR_ERRORS = (TbweightsError, TypeError, ValueError, RuntimeError, OSError, MemoryError)


def failure_reason(error: BaseException) -> str:
    """Why a tensor was skipped, without repeating the tensor's name."""
    if isinstance(error, TensorError):
        return error.reason
    return str(error) or type(error).__name__


class SummarySink(Protocol):
    """Destination of summaries: an event file of ours, or a writer the user already has."""

    def write_summary(self, step: int, values: list[summary_pb2.Summary.Value]) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class SummaryOptions:
    """Selection and format options of a writer, validated on construction."""

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
    """Record of one call to `WeightWriter.log`: the tensors written and the tensors skipped."""

    step: int
    results: list[TensorResult] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    init_check: InitReport | None = None


def _patterns(patterns: str | Sequence[str]) -> tuple[str, ...]:
    """Take one pattern string as one pattern, not as a sequence of characters."""
    return (patterns,) if isinstance(patterns, str) else tuple(patterns)


class WeightWriter:
    """Writes weight summaries to one TensorBoard run, at as many steps as you like.

    >>> with WeightWriter("runs/mlp", scalars=True) as writer:
    ...     for step in range(steps):
    ...         if step % 100 == 0:
    ...             writer.log(model, step)
    ...         train_one_step()

    `logdir` is a log directory, or a writer you already have: a
    `torch.utils.tensorboard.SummaryWriter`, a `tensorboardX.SummaryWriter` or a
    `tf.summary` writer. With a writer, the summaries join its event file, and
    `close()` flushes it but leaves it open for you.

    `scalars` adds per-tensor scalars (mean, std, L2 norm, max |w|, zero
    fraction, non-finite count) for the Scalars dashboard. `track_change` adds a
    histogram of `w - w0` and the scalar `||w - w0|| / ||w0||`, where `w0` is the
    tensor at the first logged step. It keeps a float32 copy of every tensor
    (4 bytes per value) for the life of the writer. `check_init` checks the
    first logged step against common initialization schemes and writes the
    report as a table (tag `tbweights/init_check`); it is also in the
    returned `StepReport.init_check`.
    """

    def __init__(
        self,
        logdir: str | os.PathLike[str] | Any = None,
        *,
        first: int = DEFAULT_FIRST,
        buckets: int = DEFAULT_BUCKETS,
        include: str | Sequence[str] = (),
        exclude: str | Sequence[str] = (),
        include_buffers: bool = False,
        scalars: bool = False,
        track_change: bool = False,
        check_init: bool = False,
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
        self._sink: SummarySink = sink if sink is not None else sink_for(logdir, filename_suffix)
        self._tags = TagAllocator(reserved=(OVERVIEW_TAG, INIT_CHECK_TAG), extra_suffixes=TAG_SUFFIXES)
        self.scalars = scalars
        self._changes = ChangeTracker(buckets) if track_change else None
        self._check_init_pending = check_init

    @property
    def path(self) -> str | None:
        """The event file's path, when this writer made one."""
        return getattr(self._sink, "path", None)

    @property
    def change_tracking_bytes(self) -> int:
        """Memory held for `track_change`: the float32 copies of the first logged tensors."""
        return self._changes.nbytes if self._changes is not None else 0

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
        shapes: dict[str, tuple[int, ...]] = {}
        if self._check_init_pending:
            tensors = list(tensors)  # a bias's fan-in comes from its weight, wherever that is in the stream
            shapes = {tensor.name: tensor.shape for tensor in tensors}
            report.init_check = InitReport()
        for tensor in tensors:
            if not self.options.selects(tensor.name):
                continue
            if on_tensor is not None:
                on_tensor(tensor)
            loaded = self._summarize(tensor, report, stats_of)
            if loaded is None:
                continue
            result, values = loaded
            self._write_tensor(step, result, values)
            report.results.append(result)
            if report.init_check is not None:
                report.init_check.findings.append(check_tensor(tensor, result.stats, shapes, values))
        self._write_overview(report)
        if report.init_check is not None:
            self._write_init_check(report.step, report.init_check)
            self._check_init_pending = False
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
    ) -> tuple[TensorResult, Any] | None:
        try:
            values = None
            if stats_of is not None:
                stats = stats_of(tensor)
            else:
                values = tensor.load()
                stats = compute_stats(values, buckets=self.options.buckets, first=self.options.first)
        except _TENSOR_ERRORS as error:
            reason = failure_reason(error)
            logger.warning("skipped tensor %r (%s, %s): %s", tensor.name, tensor.dtype, tensor.shape, reason)
            report.skipped.append(Skipped(tensor.name, reason))
            return None
        histogram_tag, text_tag = self._tags.tags(tensor.name)
        return TensorResult(tensor, stats, histogram_tag, text_tag), values

    def _write_tensor(self, step: int, result: TensorResult, values: Any = None) -> None:
        summary_values = [
            summaries.histogram_value(result.histogram_tag, result.stats.histogram),
            summaries.text_value(result.text_tag, summaries.tensor_markdown(result.tensor, result.stats)),
        ]
        if self.scalars:
            summary_values += scalar_values(result.histogram_tag, result.stats)
        if self._changes is not None and values is not None:
            try:
                summary_values += self._changes.values(result.tensor.name, result.histogram_tag, values)
            except _TENSOR_ERRORS as error:
                logger.warning("no change summary for tensor %r: %s", result.tensor.name, error)
        self._sink.write_summary(step, summary_values)

    def _write_overview(self, report: StepReport) -> None:
        rows = [summaries.overview_row(r.tensor, r.stats) for r in report.results]
        skipped = [(s.name, s.reason) for s in report.skipped]
        table = summaries.overview_markdown(rows, skipped)
        self._sink.write_summary(report.step, [summaries.text_value(OVERVIEW_TAG, table)])

    def _write_init_check(self, step: int, init_check: InitReport) -> None:
        table = init_check_markdown(init_check)
        self._sink.write_summary(step, [summaries.text_value(INIT_CHECK_TAG, table)])

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


def log_weights(model: Any, logdir: str | os.PathLike[str] | Any, step: int = 0, **options: Any) -> StepReport:
    """Write one step of weight summaries for `model` to a new event file in `logdir`.

    `logdir` may also be a writer you already have (see `WeightWriter`). Options
    are those of `WeightWriter`: `first`, `buckets`, `include`, `exclude`,
    `include_buffers`, `scalars`, `track_change`, `check_init`.
    """
    walk = WalkOptions(include_buffers=bool(options.get("include_buffers", False)))
    tensors = named_tensors(model, walk)
    first = next(tensors, None)  # an unsupported model raises here, before a file exists
    with WeightWriter(logdir, **options) as writer:
        head = [] if first is None else [first]
        return writer.log_tensors(itertools.chain(head, tensors), step)
