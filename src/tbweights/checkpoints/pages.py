"""Map in, and hand back, the pages of a memory-mapped checkpoint tensor by tensor.

A file mapping's pages count toward the process's resident memory once touched
and stay there until unmapped, so summarizing a 2 GB checkpoint through one
mapping would end with 2 GB resident. Readers call `release` on a tensor's bytes
once the next tensor is requested. `MADV_DONTNEED` then drops the pages from this
process, while the file's data stays in the page cache and a later read maps it
back. Resident memory so stays near the largest tensor. `populate` maps a tensor's pages
in one call (`MADV_POPULATE_READ`, Linux 5.14) instead of one fault per 4 KiB page.

Only call these on read-only file mappings: on anonymous memory, `MADV_DONTNEED`
replaces the data with zeros. Both are hints; where the platform lacks them they
do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import sys
from collections.abc import Callable, Iterator
from typing import TypeVar

_T = TypeVar("_T")

PAGE = mmap.PAGESIZE
_MADV_POPULATE_READ = 22  # linux/mman.h; Python's mmap module does not name it (3.11)

_libc: ctypes.CDLL | None = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        _libc.madvise.restype = ctypes.c_int
    except (OSError, AttributeError):
        _libc = None


def _advise(address: int, nbytes: int, advice: int, *, outward: bool) -> None:
    if _libc is None or nbytes <= 0:
        return
    start = address - address % PAGE if outward else -(-address // PAGE) * PAGE
    end = address + nbytes
    end = -(-end // PAGE) * PAGE if outward else end - end % PAGE
    if end > start:
        _libc.madvise(start, end - start, advice)  # a failed hint changes nothing


def release(address: int, nbytes: int) -> None:
    """Drop the whole pages of [address, address + nbytes) from this process.

    Pages shared with a neighboring tensor are dropped too; reading them again
    maps them back from the file.
    """
    _advise(address, nbytes, mmap.MADV_DONTNEED, outward=True)


def populate(address: int, nbytes: int) -> None:
    """Map the pages of [address, address + nbytes) in one call, ahead of reading them."""
    _advise(address, nbytes, _MADV_POPULATE_READ, outward=True)


def file_mappings(path: str | os.PathLike[str]) -> list[tuple[int, int]]:
    """Address ranges where this process maps the file at `path` (from /proc/self/maps)."""
    target = os.path.realpath(path)
    ranges = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].rstrip("\n") == target:
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    ranges.append((start, end))
    except OSError:
        return []
    return ranges


class PageWindow:
    """Maps each loaded tensor's pages in when it is loaded and drops them at `advance`.

    With `within` given, only tensors that lie inside those address ranges (the
    file's own mappings) are touched; any other memory is left alone.
    """

    def __init__(self, within: list[tuple[int, int]] | None = None) -> None:
        self._loaded: list[tuple[int, int]] = []
        self._within = within

    def loaded(self, address: int, nbytes: int) -> None:
        if self._within is not None and not any(
            start <= address and address + nbytes <= end for start, end in self._within
        ):
            return
        populate(address, nbytes)
        self._loaded.append((address, nbytes))

    def advance(self) -> None:
        for address, nbytes in self._loaded:
            release(address, nbytes)
        self._loaded.clear()

    def stream(self, items: Iterator[_T]) -> Iterator[_T]:
        """Yield `items`, dropping the pages loaded for one item when the next is requested."""
        try:
            for item in items:
                yield item
                self.advance()
        finally:
            self.advance()


def watch(load: Callable[[], _T], window: PageWindow, span: Callable[[_T], tuple[int, int]]) -> Callable[[], _T]:
    """Wrap a tensor's `load` so that its pages are populated and later released."""

    def wrapped() -> _T:
        value = load()
        window.loaded(*span(value))
        return value

    return wrapped
