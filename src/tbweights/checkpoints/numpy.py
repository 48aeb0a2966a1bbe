"""NumPy `.npy` and `.npz` files, never unpickled unless the user trusts the file."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tbweights.checkpoints import ZIP_MAGIC, Format, LoadOptions, zip_members
from tbweights.errors import CheckpointError, UnsafeCheckpointError
from tbweights.frameworks.numpy import tensor_record
from tbweights.tensors import NamedTensor, guess_role

NPY_MAGIC = b"\x93NUMPY"
TRUST_HINT = "pass --trust-checkpoint (Python: trust=True) only if you trust this file"


def _sniff(path: Path, head: bytes) -> bool:
    if head.startswith(NPY_MAGIC):
        return True
    if not head.startswith(ZIP_MAGIC):
        return False
    names = zip_members(path)
    return bool(names) and all(name.endswith(".npy") for name in names)


def _load_npy(path: Path, name: str, options: LoadOptions) -> np.ndarray:
    """Memory-map a plain .npy; an object array is unpickled only when trusted."""
    try:
        with path.open("rb") as stream:
            dtype = _npy_header(stream)[2]
    except ValueError as error:
        raise CheckpointError(path, f"invalid .npy header: {error}") from None
    if dtype.hasobject and not options.trust:
        raise UnsafeCheckpointError(
            path, f"array {name!r} holds Python objects, and loading them runs code from the file; {TRUST_HINT}"
        )
    try:
        return np.load(path, mmap_mode=None if dtype.hasobject else "r", allow_pickle=options.trust)  # type: ignore[no-any-return]
    except (ValueError, OSError, EOFError) as error:
        raise CheckpointError(
            path, f"array {name!r} cannot be read ({error}); the file is corrupt or truncated"
        ) from None


def _npy_header(stream: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    major, _ = np.lib.format.read_magic(stream)
    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read_header(stream)
    return tuple(shape), fortran_order, dtype


def _read(path: Path, options: LoadOptions) -> Iterator[NamedTensor]:
    if _head(path).startswith(NPY_MAGIC):
        array = _load_npy(path, path.stem, options)
        yield tensor_record(path.stem, array)
        return
    try:
        archive = np.load(path, allow_pickle=options.trust)
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise CheckpointError(path, f"cannot open the .npz archive: {error}") from None
    with archive:
        for member in archive.files:
            yield _lazy_member(path, archive, member)


def _head(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read(6)


def _lazy_member(path: Path, archive: np.lib.npyio.NpzFile, member: str) -> NamedTensor:
    # Shape and dtype come from the member's .npy header without reading its data.
    if archive.zip is None:
        raise CheckpointError(path, "the .npz archive was closed while reading it")
    try:
        with archive.zip.open(member + ".npy") as stream:
            shape, _, dtype = _npy_header(stream)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise CheckpointError(path, f"array {member!r} has an invalid .npy header ({error})") from None

    def load() -> np.ndarray:
        try:
            return archive[member]
        except ValueError as error:
            if "allow_pickle" in str(error):
                raise UnsafeCheckpointError(
                    path,
                    f"array {member!r} holds Python objects, and loading them runs code from the file; {TRUST_HINT}",
                ) from None
            raise CheckpointError(path, f"array {member!r} cannot be read ({error})") from None
        except (OSError, EOFError, zipfile.BadZipFile) as error:
            raise CheckpointError(
                path, f"array {member!r} cannot be read ({error}); the archive is corrupt or truncated"
            ) from None

    return NamedTensor(
        name=member, shape=tuple(shape), dtype=str(dtype), load=load, role=guess_role(member, len(shape))
    )



FORMAT = Format(name="numpy", sniff=_sniff, read=_read, suffixes=(".npy", ".npz"))
