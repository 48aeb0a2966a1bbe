"""Open checkpoint files of any supported format as a stream of `NamedTensor`s.

Formats are recognised by content first (magic bytes, zip members, header
shape), and by file suffix only when the content matches no format. Each format lives
in its own module and registers a `Format` here.
"""

from __future__ import annotations

import functools
import importlib
import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tbweights.errors import CheckpointError
from tbweights.tensors import NamedTensor

HEAD_BYTES = 64
ZIP_MAGIC = b"PK\x03\x04"
_LFS_POINTER = b"version https://git-lfs"


@dataclass(frozen=True)
class LoadOptions:
    """How to read a checkpoint.

    `trust` allows loaders that can run code stored in the file (full pickles,
    TorchScript, NumPy object arrays); only set it for files you trust.
    `include_optimizer` keeps optimizer and scheduler state, left out by default.
    `include_constants` keeps the small integer constants of model graphs (shapes,
    axes, indices; ONNX), left out by default.
    """

    trust: bool = False
    include_optimizer: bool = False
    include_constants: bool = False


@dataclass(frozen=True)
class Format:
    """One checkpoint format: how to recognise it and how to read it."""

    name: str
    sniff: Callable[[Path, bytes], bool]
    read: Callable[[Path, LoadOptions], Iterator[NamedTensor]]
    suffixes: tuple[str, ...] = ()
    # For formats named by a path that is not itself a file, such as the
    # TensorFlow checkpoint prefix `ckpt-3` beside `ckpt-3.index`.
    sniff_prefix: Callable[[Path], bool] | None = None


# Modules that define a module-level `FORMAT`; the order is the order of sniffing.
# Directory formats come first: the `.metadata` file of a distributed checkpoint is a pickle.
_FORMAT_MODULES: tuple[str, ...] = (
    "tbweights.checkpoints.sharded",
    "tbweights.checkpoints.dcp",
    "tbweights.checkpoints.orbax",
    "tbweights.checkpoints.safetensors",
    "tbweights.checkpoints.gguf",
    "tbweights.checkpoints.keras_archive",
    "tbweights.checkpoints.keras_weights",
    "tbweights.checkpoints.keras_legacy",
    "tbweights.checkpoints.tensorflow",
    "tbweights.checkpoints.flax_msgpack",
    "tbweights.checkpoints.numpy",
    "tbweights.checkpoints.torch",
    "tbweights.checkpoints.folder",
    "tbweights.checkpoints.onnx",
)


def zip_members(path: Path) -> list[str]:
    """List the member names of a zip file, or return [] when it is not a readable zip.

    Several formats are zips (torch, NumPy `.npz`, `.keras`), so detection asks for
    one file's members several times; the result is cached per file version.
    """
    try:
        status = path.stat()
    except OSError:
        return []
    return list(_zip_members(os.fspath(path), status.st_size, status.st_mtime_ns))


@functools.lru_cache(maxsize=32)
def _zip_members(path: str, size: int, mtime_ns: int) -> tuple[str, ...]:
    del size, mtime_ns  # part of the cache key only: a rewritten file is read again
    try:
        with zipfile.ZipFile(path) as archive:
            return tuple(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return ()


def formats() -> list[Format]:
    """Return every registered format, in sniffing order."""
    return [importlib.import_module(name).FORMAT for name in _FORMAT_MODULES]


def read_head(path: Path) -> bytes:
    """Read the first bytes of `path` (none for a directory); raise a clear error if unreadable."""
    if not path.exists():
        raise CheckpointError(path, "no such file or directory")
    if path.is_dir():
        return b""
    try:
        with path.open("rb") as file:
            return file.read(HEAD_BYTES)
    except PermissionError:
        raise CheckpointError(path, "permission denied; check the file's read permission") from None
    except OSError as error:
        raise CheckpointError(path, f"cannot read the file: {error.strerror or error}") from None


def detect(path: str | os.PathLike[str]) -> Format:
    """Find the format of the checkpoint at `path`; raise a `CheckpointError` if none fits.

    A folder of several checkpoints of a training run (see `checkpoints.runs`) is
    not one checkpoint, so the error names them. A TensorFlow folder whose `checkpoint`
    file names the latest checkpoint still reads as that one.
    """
    path = Path(path)
    if path.is_dir() and not (path / "checkpoint").is_file():
        from tbweights.checkpoints.runs import scan_run_folder

        run = scan_run_folder(path)
        # A folder with one weight file reads as that file (the "folder" format).
        if run is not None and (len(run.checkpoints) > 1 or run.checkpoints[0].is_dir()):
            raise CheckpointError(
                path,
                f"this folder contains {run.describe()}; pass one of them, or convert the whole folder "
                f"with `tbweights convert {path} --logdir DIR` to write each as one step",
            )
    try:
        return detect_format(path)
    except CheckpointError as error:
        if not path.is_dir():
            raise
        from tbweights.checkpoints.runs import run_subfolders

        runs = run_subfolders(path)
        if not runs:
            raise
        names = ", ".join(os.fspath(run) for run in runs[:3])
        raise CheckpointError(path, f"{error.reason}; training checkpoints are in {names}: pass that folder") from None


def detect_format(path: str | os.PathLike[str]) -> Format:
    """Find the format of the one checkpoint at `path`, without looking for a run folder."""
    path = Path(path)
    if not path.exists():
        for fmt in formats():
            if fmt.sniff_prefix is not None and fmt.sniff_prefix(path):
                return fmt
    head = read_head(path)
    if path.is_file() and not head:
        raise CheckpointError(path, "the file is empty")
    if path.is_dir() and not any(path.iterdir()):
        raise CheckpointError(path, "the folder is empty; pass a checkpoint file or a folder that contains one")
    if head.startswith(_LFS_POINTER):
        raise CheckpointError(
            path,
            "this is a Git LFS pointer, not the checkpoint itself; fetch the real file with `git lfs pull`",
        )
    known = formats()
    for fmt in known:
        if fmt.sniff(path, head):
            return fmt
    for fmt in known:
        if path.name.endswith(fmt.suffixes) and fmt.suffixes:
            return fmt
    what = "directory" if path.is_dir() else "file"
    names = ", ".join(fmt.name for fmt in known)
    from tbweights.checkpoints.onnx import suffix_hint

    raise CheckpointError(path, f"unknown checkpoint format for this {what}; supported: {names}{suffix_hint(path)}")


def read_checkpoint(
    path: str | os.PathLike[str], options: LoadOptions | None = None
) -> Iterator[NamedTensor]:
    """Yield the tensors of one checkpoint, lazily."""
    options = options or LoadOptions()
    fmt = detect(path)
    yield from fmt.read(Path(path), options)
