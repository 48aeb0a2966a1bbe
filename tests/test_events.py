"""Event-file records: our native CRC framing against TensorBoard's own writer and reader."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from tbweights.events import EventFile, frame_record


@pytest.mark.parametrize("size", [0, 1, 31, 1000, 70_000])
def test_framing_equals_tensorboard_record_writer(size: int) -> None:
    payload = os.urandom(size)
    expected = io.BytesIO()
    RecordWriter(expected).write(payload)
    assert frame_record(payload) == expected.getvalue()


def test_event_file_reads_back_with_checked_crcs(tmp_path: Path) -> None:
    events = EventFile(tmp_path)
    for step in range(3):
        events.write(event_pb2.Event(step=step, file_version=f"x{step}"))
    events.close()
    records = list(RawEventFileLoader(events.path, detect_file_replacement=False).Load())
    assert len(records) == 4  # the file-version event first
    assert [event_pb2.Event.FromString(r).step for r in records[1:]] == [0, 1, 2]
