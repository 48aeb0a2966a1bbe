"""Read the steps that a log directory already contains, so a conversion can append to its run.

Records are read here rather than through TensorBoard's `RawEventFileLoader`,
because without TensorFlow installed that loader checks CRC-32C in pure Python.
It took 3.6 s for a 25 MB event file of 20,000 records (2,000 small tensors at
10 steps, on a 2-CPU machine). The `crc32c` package checks them in milliseconds.
Only records that contain the tag's bytes are parsed as `Event` protos.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import time
from collections.abc import Iterator
from pathlib import Path

from tensorboard.compat.proto import event_pb2

from tbweights.events import masked_crc32c
from tbweights.tags import OVERVIEW_TAG

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("<QI")  # payload length, masked CRC-32C of the length
_FOOTER = struct.Struct("<I")  # masked CRC-32C of the payload
_FILE_SECONDS = re.compile(r"tfevents\.(\d+)\.")


def logged_steps(logdir: str | os.PathLike[str], tag: str = OVERVIEW_TAG) -> set[int]:
    """Return the steps at which the event files directly in `logdir` hold `tag`.

    tbweights writes its overview table once per step, so with the default tag
    these are the steps that earlier conversions and writers wrote. Event files
    of other tools in the folder are read too, but only their records that
    contain the tag count. A missing folder has no steps.
    """
    folder = Path(logdir)
    if not folder.is_dir():
        return set()
    needle = tag.encode("utf-8")
    steps: set[int] = set()
    for path in sorted(folder.iterdir()):
        if "tfevents" not in path.name or not path.is_file():
            continue
        for payload in read_records(path):
            if needle not in payload:
                continue
            event = event_pb2.Event.FromString(payload)
            if any(value.tag == tag for value in event.summary.value):
                steps.add(event.step)
    return steps


def read_records(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """Yield the payload of each TFRecord in an event file, in file order.

    Reading stops, with a logged warning, at a truncated or corrupt record, as
    TensorBoard's own reader stops there.
    """
    with open(path, "rb") as file:
        while True:
            header = file.read(_HEADER.size)
            if not header:
                return
            if len(header) < _HEADER.size:
                break
            length, length_crc = _HEADER.unpack(header)
            if masked_crc32c(header[:8]) != length_crc:
                break
            payload = file.read(length)
            footer = file.read(_FOOTER.size)
            if len(payload) < length or len(footer) < _FOOTER.size:
                break
            if masked_crc32c(payload) != _FOOTER.unpack(footer)[0]:
                break
            yield payload
    logger.warning("%s: stopped reading at a truncated or corrupt record; later steps in it are not counted", path)


def wait_for_later_file_name(logdir: str | os.PathLike[str]) -> None:
    """Sleep until a new event file's name would sort after every event file in `logdir`.

    Event file names start with the time in whole seconds, then host and process
    id. TensorBoard's Python loader (`directory_watcher`) reads a run's files in
    name order, so a file made in the same second as an earlier one could sort
    before it. Its later steps would then be read first, and the earlier file's
    steps would look out of order. This waits at most about one second.
    """
    folder = Path(logdir)
    if not folder.is_dir():
        return
    seconds = [int(m.group(1)) for p in folder.iterdir() if (m := _FILE_SECONDS.search(p.name))]
    latest = max(seconds, default=-1)
    while int(time.time()) <= latest <= time.time() + 1:
        time.sleep(0.05)
