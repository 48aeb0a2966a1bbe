"""Convert checkpoint files into steps of one TensorBoard run, and describe them."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tbweights.checkpoints import LoadOptions, read_checkpoint
from tbweights.checkpoints.runs import (
    MAX_STEP,
    SHARD_SUFFIX,
    RunFolder,
    scan_run_folder,
    step_from_file_name,
    step_from_name,
)
from tbweights.errors import CheckpointError, TbweightsError
from tbweights.event_steps import logged_steps, wait_for_later_file_name
from tbweights.events import EventFileError
from tbweights.stats import TensorStats, compute_stats
from tbweights.tensors import NamedTensor
from tbweights.writer import _TENSOR_ERRORS, StepReport, WeightWriter, failure_reason

if TYPE_CHECKING:
    from tbweights.convert_parallel import CheckpointOutcome

# TensorFlow writes checkpoint `ckpt-1` as `ckpt-1.index` and `ckpt-1.data-00000-of-00001`.
_TF_CHECKPOINT_FILE = re.compile(r"^(?P<prefix>.+)\.(?:index|data-\d+-of-\d+)$")


def step_from_path(path: str | os.PathLike[str]) -> int | None:
    """Read the step that a checkpoint's file or folder name implies, or return None.

    The file name is read first, then its folder's: a number after `step`,
    `iter`, `checkpoint`, `ckpt` or `epoch` (the one after `step` wins when
    there are several), else a number that ends the name after `-`, `_` or `.`.
    Numbers beyond TensorBoard's int64 steps are ignored.
    """
    path = Path(path)
    latest = _latest_tensorflow_checkpoint(path) if path.is_dir() else None
    if latest is not None:
        path = path / latest  # a TensorFlow folder: the step of the checkpoint it reads
    step = step_from_name(path.name) if path.is_dir() else step_from_file_name(path.name)
    return step if step is not None else step_from_name(path.parent.name)


def merge_tensorflow_files(paths: list[str]) -> list[str]:
    """Replace the `.index` and `.data-*` files of one TensorFlow checkpoint by its prefix, once.

    A shell glob such as `ckpt-*` lists both files of every checkpoint.
    """
    merged: list[str] = []
    for path in paths:
        match = _TF_CHECKPOINT_FILE.match(path)
        if match and os.path.exists(match["prefix"] + ".index"):
            path = match["prefix"]
        if path not in merged:
            merged.append(path)
    return merged


def _latest_tensorflow_checkpoint(folder: Path) -> str | None:
    """Read the prefix named by a TensorFlow `checkpoint` file, such as `ckpt-2`."""
    try:
        text = (folder / "checkpoint").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    match = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', text, re.M)
    return Path(match.group(1)).name if match else None


@dataclass(frozen=True)
class StepPlan:
    """Checkpoints paired with steps, in the order they are written, and why."""

    paths: list[str]
    steps: list[int]
    warning: str | None = None


def plan_steps(paths: Sequence[str | os.PathLike[str]], start_step: int | None = None) -> StepPlan:
    """Pair each checkpoint with a step and order them by step.

    With `start_step` the checkpoints get `start_step`, `start_step + 1`, ... in
    the order given. Otherwise the steps come from the names, sorted ascending
    (TensorBoard drops data written at a step lower than an earlier one). When a
    name has no number or two names give the same step, every checkpoint gets its
    position in the list instead, and the plan gives the reason.
    """
    names = merge_tensorflow_files([os.fspath(p) for p in paths])
    if start_step is not None:
        if start_step + len(names) - 1 > MAX_STEP:
            raise ValueError(f"step {start_step} is too large; steps are 64-bit signed integers")
        return StepPlan(names, [start_step + i for i in range(len(names))])
    found = [step_from_path(p) for p in names]
    missing = [p for p, step in zip(names, found, strict=True) if step is None]
    duplicates = sorted({s for s in found if s is not None and found.count(s) > 1})
    if len(names) > 1 and (missing or duplicates):
        reason = (
            f"no step number in the name of {missing[0]}"
            if missing
            else f"several checkpoints named with step {duplicates[0]}"
        )
        warning = f"{reason}; using positions 0..{len(names) - 1} in the order given (set them with --step)"
        return StepPlan(names, list(range(len(names))), warning)
    pairs = sorted(zip([s or 0 for s in found], names, strict=True), key=lambda pair: pair[0])
    return StepPlan([p for _, p in pairs], [s for s, _ in pairs])


@dataclass(frozen=True)
class FailedCheckpoint:
    path: str
    reason: str
    error: TbweightsError | None = field(default=None, compare=False, repr=False)


@dataclass
class ConvertReport:
    """What `convert` wrote, skipped and failed to read.

    `already_logged` lists (checkpoint, step) pairs not written because the
    logdir already contains that step. `left_out` gives the reason other checkpoints
    were not written: weight files of a run folder without a step number, and steps
    below the last one already in the logdir.
    """

    logdir: str
    event_file: str | None = None
    step_warning: str | None = None
    shard_warnings: list[str] = field(default_factory=list)
    steps: list[tuple[str, StepReport]] = field(default_factory=list)
    failed: list[FailedCheckpoint] = field(default_factory=list)
    already_logged: list[tuple[str, int]] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)


def find_checkpoints(run_dir: str | os.PathLike[str]) -> list[str]:
    """List the checkpoints of a training-run folder in step order (2 before 10).

    See `tbweights.checkpoints.runs` for what counts as a run folder. Raises a
    `CheckpointError` when `run_dir` is not one.
    """
    run = scan_run_folder(run_dir)
    if run is None:
        raise CheckpointError(
            run_dir,
            "not a folder of training checkpoints: no checkpoint file or folder in it has a step number "
            "in its name (checkpoint-500/, ckpt-1000.pt, epoch=3-step=1200.ckpt)",
        )
    return [os.fspath(path) for path in run.checkpoints]


def expand_run_folders(paths: Sequence[str | os.PathLike[str]]) -> tuple[list[str], list[str]]:
    """Replace each run folder among `paths` by its checkpoints, in step order.

    Returns the paths and the reasons for the weight files that were left out.
    Other paths, folders that are one checkpoint included, stay as given.
    """
    expanded: list[str] = []
    left_out: list[str] = []
    for path in paths:
        run: RunFolder | None = scan_run_folder(path)
        if run is None:
            expanded.append(os.fspath(path))
            continue
        expanded.extend(os.fspath(checkpoint) for checkpoint in run.checkpoints)
        left_out.extend(run.left_out)
    return expanded, left_out


def _shard_warning(path: str) -> str:
    if path.endswith(".gguf"):
        # NOTE: the parts of a gguf-split model are not joined; each is read as a model of its own.
        return (
            f"{path} is one part of a model split with llama.cpp's gguf-split; its step holds only this part's tensors"
        )
    return f"{path} is one shard of a sharded checkpoint; pass its folder or index file to read the whole model"


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

    A training-run folder among `paths` stands for its checkpoints (see
    `find_checkpoints`). Steps that `logdir` already contains are not written
    again (`already_logged`), so converting a run folder again after training
    saved more checkpoints adds only the new steps, in a new event file.
    A checkpoint that cannot be read is recorded in `failed`; the others go on.
    With `jobs` > 1, worker processes compute the statistics of several checkpoints
    at once and this process writes them, in order: the run is the same as with one.
    An `EventFileError` (disk full, unwritable logdir) stops the conversion; the
    event file then contains every record written before it.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    if jobs > 1 and (writer_options.get("track_change") or writer_options.get("check_init")):
        raise ValueError("track_change and check_init need the tensors' values in this process; use jobs=1")
    expanded, left_out = expand_run_folders(paths)
    plan = plan_steps(expanded, start_step)
    report = ConvertReport(logdir=os.fspath(logdir), step_warning=plan.warning, left_out=left_out)
    report.shard_warnings = [
        _shard_warning(path) for path in plan.paths if SHARD_SUFFIX.search(Path(path).name.split(".", 1)[0])
    ]
    todo = _new_steps(plan, report)
    if todo.paths:
        wait_for_later_file_name(logdir)
    with WeightWriter(logdir, **writer_options) as writer:  # type: ignore[arg-type]
        report.event_file = writer.path
        outcomes = _outcomes(todo.paths, load_options, writer, jobs)
        for path, step, outcome in zip(todo.paths, todo.steps, outcomes, strict=True):
            if on_checkpoint is not None:
                on_checkpoint(path, step)
            try:
                if outcome is None:
                    step_report = writer.log_tensors(read_checkpoint(path, load_options), step, on_tensor)
                else:
                    step_report = writer.log_tensors(outcome.replay(), step, on_tensor, outcome.stats)
            except EventFileError:
                raise  # the output is broken: no later checkpoint can be written either
            except TbweightsError as error:
                report.failed.append(FailedCheckpoint(path, str(error), error))
                continue
            report.steps.append((path, step_report))
    return report


def _new_steps(plan: StepPlan, report: ConvertReport) -> StepPlan:
    """Leave out the steps that the logdir already contains, so converting into it again appends.

    TensorBoard's default data server (`reservoir.rs`) drops a time series'
    records from step s on when a record of step s arrives after them, so steps
    below the last one already written are left out too.
    """
    logged = logged_steps(report.logdir)
    if not logged:
        return plan
    last = max(logged)
    paths: list[str] = []
    steps: list[int] = []
    for path, step in zip(plan.paths, plan.steps, strict=True):
        if step in logged:
            report.already_logged.append((path, step))
        elif step < last:
            report.left_out.append(
                f"{path}: step {step} is below step {last}, the last one already in {report.logdir}, and "
                "TensorBoard would drop the later steps if it were written after them; left out "
                "(convert into a new logdir to include it)"
            )
        else:
            paths.append(path)
            steps.append(step)
    return StepPlan(paths, steps, plan.warning)


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
    select: Callable[[str], bool] | None = None,
) -> Iterator[tuple[NamedTensor, TensorStats | str]]:
    """(tensor, statistics) for each tensor of a checkpoint; a reason string in place
    of the statistics when that tensor could not be summarized.

    Tensors whose name `select` rejects are skipped before they are loaded.
    """
    for tensor in read_checkpoint(path, load_options):
        if select is not None and not select(tensor.name):
            continue
        try:
            yield tensor, compute_stats(tensor.load(), buckets=buckets, first=first)
        except _TENSOR_ERRORS as error:
            yield tensor, failure_reason(error)
