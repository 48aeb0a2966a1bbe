"""Training-run folders: one folder that contains the checkpoints of a run, each named with its step.

A run folder's checkpoints are its entries with a step number in their own name:

- checkpoint folders, such as Hugging Face Trainer's `checkpoint-500/`: any
  subfolder that reads as one checkpoint;
- weight files: `ckpt-1000.pt`, Lightning's `epoch=3-step=1200.ckpt`,
  `model_00010.safetensors`, `model-step100.gguf`, `checkpoint_100.msgpack`;
- TensorFlow checkpoint prefixes: `ckpt-3`, from `ckpt-3.index` and its data files.

A folder that is itself one checkpoint stays one checkpoint: a sharded
checkpoint's index folder, a distributed checkpoint, a SavedModel. So does a
folder with its own model file (`model.safetensors`, `pytorch_model.bin`, ...),
unless it also contains at least two step-numbered checkpoints, as a Trainer's
output folder does after training. Weight files without a step number, such as
Lightning's `last.ckpt` (a copy of or link to the newest checkpoint), are left
out and reported. So are checkpoints that repeat a step (Lightning's `-v1` copies):
the one saved last is kept. Orbax's unfinished saves (`100.orbax-checkpoint-tmp`)
are left out and reported too. Optimizer and scheduler files, logs, JSON and YAML
files are ignored.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from tbweights.checkpoints.folder import MODEL_FILES, NOT_MODEL_FILES, WEIGHT_SUFFIXES

# `step-500`, `global_step=500`, `iter_500`, `checkpoint-500`, `ckpt-3`, `epoch=4`.
_STEP_WORD = re.compile(r"(?:global_step|step|steps|iter|iteration|checkpoint|ckpt|epoch)[-_=]?(\d+)", re.I)
_TRAILING_NUMBER = re.compile(r"[-_.](\d+)$")
MAX_STEP = 2**63 - 1
SHARD_SUFFIX = re.compile(r"-\d+-of-\d+$")
# Files that make a folder one checkpoint of its own (sharded index, distributed checkpoint, SavedModel).
_OWN_CHECKPOINT_FILES = (".metadata", "saved_model.pb", "saved_model.pbtxt")
_SHARD_INDEX_SUFFIX = ".index.json"
_TF_INDEX_SUFFIX = ".index"
_ORBAX_TMP = ".orbax-checkpoint-tmp"
# Entries listed by name in the error of `tbweights show RUN_DIR`.
_NAMES_SHOWN = 6


def step_from_name(name: str) -> int | None:
    """Read the step in one file or folder name without its suffix, or return None.

    The number after `step`, `iter`, `checkpoint`, `ckpt` or `epoch` counts, and
    the one after `step` wins, so `epoch=3-step=1200` gives 1200. Otherwise a
    number that ends the name after `-`, `_` or `.` counts, or the whole name when
    it is a number (Orbax's step folders). Numbers beyond TensorBoard's int64
    steps are ignored.
    """
    if name.isdigit() and int(name) <= MAX_STEP:
        return int(name)  # an Orbax CheckpointManager names each step's folder by the step alone
    name = SHARD_SUFFIX.sub("", name)  # model-00001-of-00002 is a shard, not step 2
    number = _number_after_step_word(name)
    if number is None:
        trailing = _TRAILING_NUMBER.search(name)
        number = trailing.group(1) if trailing else None
    if number is not None and int(number) <= MAX_STEP:
        return int(number)
    return None


def step_from_file_name(name: str) -> int | None:
    """Read the step in a checkpoint file's name, such as `ckpt-1000.pt`, or return None.

    The part before the first `.` is read with `step_from_name`, so that
    `model-v1.2.pt` has no step. When that part has none, a number after `step`,
    `iter`, `checkpoint`, `ckpt` or `epoch` anywhere in the name counts, as in
    Lightning's `val_loss=0.50-step=100.ckpt`.
    """
    step = step_from_name(name.split(".", 1)[0])
    if step is not None:
        return step
    number = _number_after_step_word(SHARD_SUFFIX.sub("", name))
    return int(number) if number is not None and int(number) <= MAX_STEP else None


def _number_after_step_word(name: str) -> str | None:
    matches = list(_STEP_WORD.finditer(name))
    preferred = [m for m in matches if "step" in m.group(0).lower()] or matches
    return preferred[-1].group(1) if preferred else None


@dataclass
class RunFolder:
    """The checkpoints of a run folder in step order, and the weight files left out with the reason."""

    path: Path
    checkpoints: list[Path] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    def describe(self, limit: int = _NAMES_SHOWN) -> str:
        """Name the checkpoints, the first and last few when there are many."""
        names = [p.name for p in self.checkpoints]
        if len(names) > limit:
            names = [*names[: limit // 2], "...", *names[-(limit // 2) :]]
        return f"{len(self.checkpoints)} checkpoint(s) of a training run ({', '.join(names)})"


def scan_run_folder(folder: str | os.PathLike[str]) -> RunFolder | None:
    """Find the checkpoints of a run folder, or return None when `folder` is not one."""
    folder = Path(folder)
    if not folder.is_dir() or _is_own_checkpoint(folder):
        return None
    run = RunFolder(folder)
    found: list[tuple[int, str, Path]] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return None
    for entry in entries:
        if entry.name.startswith(NOT_MODEL_FILES):
            continue
        if _ORBAX_TMP in entry.name:
            # Orbax writes a step into `100.orbax-checkpoint-tmp[-<time>]` and renames it when done.
            run.left_out.append(f"{entry}: an unfinished Orbax save (still being written, or interrupted); left out")
            continue
        if entry.is_symlink() and not entry.exists():
            if entry.name.endswith(WEIGHT_SUFFIXES):
                run.left_out.append(f"{entry}: broken symbolic link to {os.readlink(entry)}; left out of the run")
            continue
        checkpoint = _checkpoint_of(entry)
        if checkpoint is None:
            if entry.is_dir() and _STEP_WORD.search(entry.name):
                # A Trainer `checkpoint-300/` that is still being saved, or whose save failed.
                run.left_out.append(f"{entry}: no model file in this checkpoint folder; left out of the run")
            continue
        stem = checkpoint.name if entry.is_dir() else checkpoint.name.split(".", 1)[0]
        step = step_from_name(stem) if entry.is_dir() else step_from_file_name(checkpoint.name)
        if step is not None:
            found.append((step, checkpoint.name, checkpoint))
        else:
            run.left_out.append(f"{entry}: {_why_stepless(entry, stem)}")
    has_model_file = any((folder / name).is_file() for name in MODEL_FILES)
    if len(found) < (2 if has_model_file else 1):
        return None
    found = _one_per_step(found, run.left_out)
    run.checkpoints = [path for _, _, path in found]
    run.steps = [step for step, _, _ in found]
    return run


def run_subfolders(folder: Path, depth: int = 3, limit: int = 200) -> list[Path]:
    """Find run folders below `folder`, such as Lightning's `lightning_logs/version_0/checkpoints/`.

    The search goes `depth` levels down and looks at no more than `limit` folders,
    so a hint costs little even for a large tree.
    """
    found: list[Path] = []
    level = [folder]
    visited = 0
    for _ in range(depth):
        below: list[Path] = []
        for parent in level:
            try:
                below.extend(sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")))
            except OSError:
                continue
        for candidate in below:
            visited += 1
            if visited > limit:
                return found
            if scan_run_folder(candidate) is not None:
                found.append(candidate)
        level = [p for p in below if p not in found]
    return found


def _one_per_step(found: list[tuple[int, str, Path]], left_out: list[str]) -> list[tuple[int, str, Path]]:
    """Keep the most recently saved checkpoint of each step, in step order, and report the others.

    Lightning saves `epoch=0-step=100-v1.ckpt` beside `epoch=0-step=100.ckpt` when a
    run is restarted into the same folder. Numbering the checkpoints by position
    instead would change every step each time the folder is converted again.
    """
    by_step: dict[int, list[tuple[float, str, Path]]] = {}
    for step, name, path in found:
        by_step.setdefault(step, []).append((_saved_at(path), name, path))
    kept: list[tuple[int, str, Path]] = []
    for step in sorted(by_step):
        newest_first = sorted(by_step[step], key=lambda item: (item[0], item[1]), reverse=True)
        _, name, path = newest_first[0]
        kept.append((step, name, path))
        for _, _, other in newest_first[1:]:
            left_out.append(f"{other}: step {step} again; {name}, saved later, is used for it; left out of the run")
    return kept


def _saved_at(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _why_stepless(entry: Path, stem: str) -> str:
    too_large = [n for n in re.findall(r"\d+", stem) if int(n) > MAX_STEP]
    if too_large:
        return f"step number {too_large[-1]} is beyond TensorBoard's largest step, 2**63 - 1; left out of the run"
    if entry.suffix == ".ckpt" and entry.name.startswith("last"):
        return "no step number in its name; left out of the run (Lightning's last.ckpt repeats the newest checkpoint)"
    return "no step number in its name; left out of the run"


def _is_own_checkpoint(folder: Path) -> bool:
    """Tell whether the folder's own files make it one checkpoint, whatever else it contains."""
    if any((folder / name).is_file() for name in _OWN_CHECKPOINT_FILES):
        return True
    try:
        return any(path.name.endswith(_SHARD_INDEX_SUFFIX) for path in folder.iterdir())
    except OSError:
        return False


def _checkpoint_of(entry: Path) -> Path | None:
    """Return the checkpoint that a folder entry is, or None for entries that contain no weights."""
    from tbweights.checkpoints import detect_format
    from tbweights.checkpoints.tensorflow import _is_index_file as is_index_file
    from tbweights.errors import CheckpointError

    if entry.is_dir():
        try:
            detect_format(entry)  # logs/, lightning_logs/ and the like fail here
        except CheckpointError:
            return None
        return entry
    if not entry.is_file():
        return None
    if entry.name.endswith(_TF_INDEX_SUFFIX) and is_index_file(entry):
        return entry.with_name(entry.name.removesuffix(_TF_INDEX_SUFFIX))  # the prefix `ckpt-3`
    if entry.name.endswith(WEIGHT_SUFFIXES):
        return entry
    return None
