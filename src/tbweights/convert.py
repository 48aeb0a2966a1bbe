"""Convert checkpoint files into steps of one TensorBoard run, and describe them."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tbweights.checkpoints import LoadOptions, read_checkpoint
from tbweights.errors import TbweightsError
from tbweights.stats import TensorStats, compute_stats
from tbweights.tensors import NamedTensor
from tbweights.writer import StepReport, WeightWriter, _TENSOR_ERRORS

if TYPE_CHECKING:
    from tbweights.convert_parallel import CheckpointOutcome

# `step-500`, `global_step=500`, `iter_500`, `checkpoint-500`, `ckpt-3`, `epoch=4`.
_STEP_WORD = re.compile(r"(?:global_step|step|steps|iter|iteration|checkpoint|ckpt|epoch)[-_=]?(\d+)", re.I)
_TRAILING_NUMBER = re.compile(r"[-_.](\d+)$")


def step_from_path(path: str | os.PathLike[str]) -> int | None:
    """The step a checkpoint's name implies, or None.

    The file name is read first, then its folder's: a number after `step`,
    `iter`, `checkpoint`, `ckpt` or `epoch` (the one after `step` wins when
    there are several), else a number that ends the name after `-`, `_` or `.`.
    """
    path = Path(path)
    name = path.name if path.is_dir() else path.name.split(".", 1)[0]
    for part in (name, path.parent.name):
        matches = list(_STEP_WORD.finditer(part))
        preferred = [m for m in matches if "step" in m.group(0).lower()] or matches
        if preferred:
            return int(preferred[-1].group(1))
        trailing = _TRAILING_NUMBER.search(part)
        if trailing:
            return int(trailing.group(1))
    return None


def plan_steps(paths: Sequence[str | os.PathLike[str]], start_step: int | None = None) -> list[int]:
    """One step per checkpoint: `start_step`, `start_step + 1`, ... if given, else from the names.

    A checkpoint whose name has no number gets its position in the list.
    """
    if start_step is not None:
        return [start_step + index for index in range(len(paths))]
    steps = []
    for index, path in enumerate(paths):
        step = step_from_path(path)
        steps.append(index if step is None else step)
    return steps


@dataclass(frozen=True)
class FailedCheckpoint:
    path: str
    reason: str


@dataclass
class ConvertReport:
    logdir: str
    event_file: str | None = None
    steps: list[tuple[str, StepReport]] = field(default_factory=list)
    failed: list[FailedCheckpoint] = field(default_factory=list)


def convert(
    paths: Sequence[str | os.PathLike[str]],
    logdir: str | os.PathLike[str],
    *,
    start_step: int | None = None,
    load_options: LoadOptions | None = None,
    on_tensor: Callable[[NamedTensor], None] | None = None,
    on_checkpoint: Callable[[str, int], None] | None = None,
    jobs: int = 1,
    **writer_options: object,
) -> ConvertReport:
    """Write each checkpoint as one step of a single run in `logdir`.

    A checkpoint that cannot be read is recorded in `failed`; the others go on.
    With `jobs` > 1, worker processes compute the statistics of several checkpoints
    at once and this process writes them, in order: the run is the same as with one.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    report = ConvertReport(logdir=os.fspath(logdir))
    steps = plan_steps(paths, start_step)
    with WeightWriter(logdir, **writer_options) as writer:  # type: ignore[arg-type]
        report.event_file = writer.path
        for path, step, outcome in zip(paths, steps, _outcomes(paths, load_options, writer, jobs), strict=True):
            if on_checkpoint is not None:
                on_checkpoint(os.fspath(path), step)
            try:
                if outcome is None:
                    step_report = writer.log_tensors(read_checkpoint(path, load_options), step, on_tensor)
                else:
                    step_report = writer.log_tensors(outcome.replay(), step, on_tensor, outcome.stats)
            except TbweightsError as error:
                report.failed.append(FailedCheckpoint(os.fspath(path), str(error)))
                continue
            report.steps.append((os.fspath(path), step_report))
    return report


def _outcomes(
    paths: Sequence[str | os.PathLike[str]], load_options: LoadOptions | None, writer: WeightWriter, jobs: int
) -> Iterator[CheckpointOutcome | None]:
    """Worker results per checkpoint, or None where this process reads the checkpoint itself."""
    if jobs == 1 or len(paths) < 2:
        return iter([None] * len(paths))
    from tbweights.convert_parallel import summarize_checkpoints

    return summarize_checkpoints(paths, load_options, writer.options, jobs)


def describe(
    path: str | os.PathLike[str],
    *,
    first: int = 5,
    buckets: int = 30,
    load_options: LoadOptions | None = None,
) -> Iterator[tuple[NamedTensor, TensorStats | str]]:
    """(tensor, statistics) for each tensor of a checkpoint; a reason string in place
    of the statistics when that tensor could not be summarized."""
    for tensor in read_checkpoint(path, load_options):
        try:
            yield tensor, compute_stats(tensor.load(), buckets=buckets, first=first)
        except _TENSOR_ERRORS as error:
            yield tensor, str(error) or type(error).__name__
