"""Write TensorBoard event files.

Files are named like TensorBoard's own (`events.out.tfevents.<time>.<host>.<pid>.<n>`)
and records are framed as TensorBoard's `RecordWriter` frames them: little-endian
64-bit length, masked CRC-32C of the length, payload, masked CRC-32C of the payload.
The framing is written here rather than through `RecordWriter`, because TensorBoard
computes CRC-32C in pure Python. That cost 175 µs per tensor when logging 5,000
small tensors (docs/benchmarks.md). The `crc32c` package computes it natively. The file is
unbuffered and each record goes to it with `os.write` calls at once. When a write
fails (disk full, file size limit) or is interrupted (KeyboardInterrupt), the file
is truncated back to the end of the last whole record. The file so always ends on
a record boundary, and TensorBoard reads every record in it.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
import time

import crc32c
from tensorboard.compat.proto import event_pb2, summary_pb2

from tbweights.errors import TbweightsError

_file_counter = itertools.count()


class EventFileError(TbweightsError):
    """The event file could not be created or written."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C: the CRC rotated right by 15 bits plus a constant."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(payload: bytes) -> bytes:
    """Frame a payload as one TFRecord: length, its masked CRC, payload, its masked CRC."""
    header = struct.pack("<Q", len(payload))
    return b"".join(
        (header, struct.pack("<I", masked_crc32c(header)), payload, struct.pack("<I", masked_crc32c(payload)))
    )


def event_file_name(suffix: str = "") -> str:
    return "events.out.tfevents.%010d.%s.%d.%d%s" % (
        time.time(),
        socket.gethostname(),
        os.getpid(),
        next(_file_counter),
        suffix,
    )


class RecordFile:
    """An unbuffered binary file that takes whole records or none of them.

    `EventFile` passes each framed record to `write` in one call.
    """

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        self._end = 0  # byte offset just past the last whole record
        self.closed = False

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except BaseException:
            # A partial record would end the file mid-record: cut it off.
            os.ftruncate(self._fd, self._end)
            os.lseek(self._fd, self._end, os.SEEK_SET)
            raise
        self._end += len(data)
        return len(data)

    def flush(self) -> None:
        """Do nothing: records go straight to the kernel, which keeps them for the file."""

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._fd)


class EventFile:
    """One event file in `logdir`, created at the first write.

    The log directory is made and checked on construction, so a bad one fails
    fast. The file itself waits for the first summary. A call that fails before
    writing anything (an unsupported model, unreadable checkpoints) then leaves no
    empty event file behind.
    """

    def __init__(self, logdir: str | os.PathLike[str], filename_suffix: str = "") -> None:
        self.logdir = os.fspath(logdir)
        if os.path.exists(self.logdir) and not os.path.isdir(self.logdir):
            raise EventFileError(self.logdir, "the log directory exists as a file; choose another log directory")
        try:
            os.makedirs(self.logdir, exist_ok=True)
        except OSError as error:
            raise EventFileError(
                self.logdir, f"cannot create the log directory ({error.strerror}); choose another log directory"
            ) from None
        if not os.access(self.logdir, os.W_OK | os.X_OK):
            raise EventFileError(
                self.logdir, "the log directory is not writable; check its permissions or choose another one"
            )
        self.path = os.path.join(self.logdir, event_file_name(filename_suffix))
        self._file: RecordFile | None = None
        self._closed = False

    def _open(self) -> RecordFile:
        try:
            record_file = RecordFile(self.path)
        except OSError as error:
            raise EventFileError(
                self.path, f"cannot create the event file ({error.strerror}); check that the log directory is writable"
            ) from None
        self._file = record_file
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        return record_file

    def write(self, event: event_pb2.Event) -> None:
        if self._closed:
            raise EventFileError(self.path, "the event file is closed")
        if self._file is None:
            self._open()
        self._write(event)

    def _write(self, event: event_pb2.Event) -> None:
        assert self._file is not None  # set by _open before any write
        try:
            self._file.write(frame_record(event.SerializeToString()))
        except OSError as error:
            raise EventFileError(self.path, _write_failure(error)) from None

    def write_summary(self, step: int, values: list[summary_pb2.Summary.Value]) -> None:
        summary = summary_pb2.Summary(value=values)
        self.write(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        self._closed = True
        if self._file is not None and not self._file.closed:
            try:
                self._file.close()
            except OSError as error:
                raise EventFileError(self.path, _write_failure(error)) from None


def _write_failure(error: OSError) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        what = "the disk is full" if error.errno != errno.EFBIG else "the file size limit was reached"
        return (
            f"cannot write ({error.strerror}): {what}; the file holds every record "
            "written before this one; free space, then write the remaining steps"
        )
    return f"cannot write: {error.strerror or error}"
