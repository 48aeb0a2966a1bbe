"""Shared HDF5 access for the Keras readers: lazy opening, attributes, dtypes.

h5py is an optional dependency (the `keras` extra); it is imported only when
a Keras file is read.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import ml_dtypes
import numpy as np

from tbweights.errors import CheckpointError, import_optional

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def import_h5py() -> Any:
    return import_optional("h5py", "h5py", "keras", "reading a Keras weights file")


def h5py_available() -> bool:
    try:
        import h5py  # noqa: F401
    except ImportError:
        return False
    return True


class H5Source:
    """An HDF5 file on disk or inside a zip archive, opened on first use.

    Tensor loaders call `dataset_array`, which reopens the file if the reader
    that yielded them has finished and closed it, so a `NamedTensor` stays
    loadable after the iteration that produced it.
    """

    def __init__(self, path: Path, member: str | None = None) -> None:
        self.path = path
        self.member = member
        self._archive: zipfile.ZipFile | None = None
        self._stream: IO[bytes] | None = None
        self._file: Any = None

    @property
    def file(self) -> Any:
        if self._file is None:
            self._open()
        return self._file

    def _open(self) -> None:
        h5py = import_h5py()
        try:
            if self.member is None:
                self._file = h5py.File(self.path, "r")
                return
            # A member stored uncompressed (as Keras writes it) seeks in place,
            # so h5py reads only the blocks it needs and nothing is extracted.
            self._archive = zipfile.ZipFile(self.path)
            self._stream = self._archive.open(self.member)
            self._file = h5py.File(self._stream, "r")
        except (OSError, zipfile.BadZipFile, KeyError) as error:
            self.close()
            where = f"member {self.member} " if self.member else ""
            raise CheckpointError(
                self.path, f"cannot open the HDF5 {where}({error}); the file is corrupt or truncated"
            ) from None

    def dataset_array(self, h5_path: str) -> np.ndarray:
        dataset = self.file[h5_path]
        return as_numpy(dataset[()], dataset.attrs)

    def close(self) -> None:
        for resource in (self._file, self._stream, self._archive):
            if resource is not None:
                resource.close()
        self._file = self._stream = self._archive = None

    def __enter__(self) -> H5Source:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def as_numpy(value: Any, attrs: Any) -> np.ndarray:
    """Convert a dataset's value to the dtype Keras meant.

    Keras 3 stores bfloat16 as 2-byte opaque data and names the type in the
    dataset's `dtype` attribute.
    """
    array = np.asarray(value)
    declared = attrs.get("dtype") if hasattr(attrs, "get") else None
    if isinstance(declared, bytes):
        declared = declared.decode("utf-8")
    if isinstance(declared, str) and hasattr(ml_dtypes, declared):
        target = np.dtype(getattr(ml_dtypes, declared))
        if array.dtype.itemsize == target.itemsize and array.dtype != target:
            return array.view(target)
    return array


def dataset_dtype(dataset: Any) -> str:
    """The dtype a dataset will load as, without reading it."""
    declared = dataset.attrs.get("dtype")
    if isinstance(declared, bytes):
        declared = declared.decode("utf-8")
    if isinstance(declared, str) and hasattr(ml_dtypes, declared):
        return declared
    return str(dataset.dtype)


def string_list_attribute(group: Any, name: str) -> list[str] | None:
    """Decode a list-of-strings attribute as Keras 2 writes them; return None if it is absent.

    Keras 2 splits an attribute larger than HDF5's 64 KiB attribute limit into
    `name0`, `name1`, ...; those chunks are joined here.
    """
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks = []
        while f"{name}{len(chunks)}" in group.attrs:
            chunks.append(group.attrs[f"{name}{len(chunks)}"])
        if not chunks:
            return None
    values: list[str] = []
    for chunk in chunks:
        for item in np.atleast_1d(np.asarray(chunk)).tolist():
            values.append(item.decode("utf-8") if isinstance(item, bytes) else str(item))
    return values
