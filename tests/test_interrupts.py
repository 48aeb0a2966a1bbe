"""Output failures and signals mid-conversion: the event file stays whole and readable.

Each test reads the event file back record by record, checking both CRCs and
that the file ends on a record boundary, then parses every event with
TensorBoard's own loader.
"""

from __future__ import annotations

import errno
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer.record_writer import masked_crc32c

from tbweights import events
from tbweights.cli import main
from tbweights.events import EventFile, EventFileError

SRC = str(Path(__file__).resolve().parents[1] / "src")
TENSORS_PER_CHECKPOINT = 6


def read_records(path: Path) -> list[event_pb2.Event]:
    """Every record of an event file, with both CRCs checked; fails on a partial record."""
    data = path.read_bytes()
    offset, records = 0, []
    while offset < len(data):
        assert len(data) - offset >= 12, f"partial record header at byte {offset}"
        header = data[offset : offset + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[offset + 8 : offset + 12])
        assert header_crc == masked_crc32c(header), f"bad length CRC at byte {offset}"
        end = offset + 12 + length + 4
        assert end <= len(data), f"partial record at byte {offset}"
        payload = data[offset + 12 : offset + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[end - 4 : end])
        assert payload_crc == masked_crc32c(payload), f"bad payload CRC at byte {offset}"
        records.append(event_pb2.Event.FromString(payload))
        offset = end
    loaded = list(RawEventFileLoader(str(path)).Load())
    assert len(loaded) == len(records)
    return records


def only_event_file(logdir: Path) -> Path:
    files = list(logdir.glob("events.out.tfevents.*"))
    assert len(files) == 1
    return files[0]


def write_checkpoints(folder: Path, count: int) -> list[str]:
    paths = []
    for index in range(count):
        path = folder / f"step-{index}.npz"
        np.savez(
            path,
            **{f"layer{k}.weight": np.full((64, 64), index + k, np.float32) for k in range(TENSORS_PER_CHECKPOINT)},
        )
        paths.append(str(path))
    return paths


# Runs the CLI after setting up what the test needs, passed as argv[1]:
# "fsize:N" limits files to N bytes (as a full disk would), "SIGINT:N" or
# "SIGTERM:N" sends that signal to this process when the N-th tensor starts.
CLI_DRIVER = """
import os, resource, signal, sys
from tbweights import cli, cli_output
mode, _, number = sys.argv[1].partition(":")
if mode == "fsize":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(number), int(number)))
else:
    seen = [0]
    advance = cli_output.Progress.advance
    def advance_then_signal(self, tensor):
        seen[0] += 1
        if seen[0] == int(number):
            os.kill(os.getpid(), getattr(signal, mode))
        advance(self, tensor)
    cli_output.Progress.advance = advance_then_signal
sys.exit(cli.main(sys.argv[2:]))
"""


def run_cli(setup: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI_DRIVER, setup, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
        timeout=120,
    )


@pytest.mark.parametrize(("signal_name", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_signal_mid_conversion(tmp_path: Path, signal_name: str, code: int) -> None:
    paths = write_checkpoints(tmp_path, 4)
    logdir = tmp_path / "run"
    stop_at = 2 * TENSORS_PER_CHECKPOINT + 3  # inside the third checkpoint
    result = run_cli(f"{signal_name}:{stop_at}", "convert", *paths, "--logdir", str(logdir), "--step", "0")

    assert result.returncode == code
    assert "Traceback" not in result.stderr
    assert f"error: {'interrupted' if signal_name == 'SIGINT' else 'terminated'} ({signal_name})" in result.stderr
    records = read_records(only_event_file(logdir))
    steps = [r.step for r in records if r.HasField("summary")]
    # Two whole steps with their overview tables, then the tensors of step 2 before the signal.
    assert steps == [0] * (TENSORS_PER_CHECKPOINT + 1) + [1] * (TENSORS_PER_CHECKPOINT + 1) + [2] * 2


def test_file_size_limit_mid_conversion(tmp_path: Path) -> None:
    paths = write_checkpoints(tmp_path, 10)
    logdir = tmp_path / "run"
    result = run_cli("fsize:20000", "convert", *paths, "--logdir", str(logdir), "--step", "0")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    event_file = only_event_file(logdir)
    assert f"error: {event_file}: cannot write (File too large): the file size limit was reached" in result.stderr
    records = read_records(event_file)
    assert 0 < event_file.stat().st_size <= 20000
    assert len(records) > 2


def test_disk_full_truncates_partial_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC after part of a record was written: the part is cut off again."""
    event_file = EventFile(tmp_path)
    event_file.write_summary(0, [])
    real_write = os.write

    def write_half_then_fail(fd: int, data: bytes) -> int:
        if len(data) > 20:
            real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(events.os, "write", write_half_then_fail)
    with pytest.raises(EventFileError, match="No space left on device.*the disk is full"):
        event_file.write_summary(1, [])
    monkeypatch.undo()
    assert [r.step for r in read_records(Path(event_file.path))] == [0, 0]
    event_file.write_summary(2, [])
    event_file.close()
    assert [r.step for r in read_records(Path(event_file.path))] == [0, 0, 2]


def test_interrupt_between_writes_truncates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    event_file = EventFile(tmp_path)
    event_file.write_summary(0, [])  # creates the file: file_version, then this event
    real_write = os.write
    calls = [0]

    def short_write_then_interrupt(fd: int, data: bytes) -> int:
        calls[0] += 1
        if calls[0] == 1:
            return real_write(fd, bytes(data[:5]))
        raise KeyboardInterrupt

    monkeypatch.setattr(events.os, "write", short_write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        event_file.write_summary(1, [])
    monkeypatch.undo()
    event_file.close()
    assert len(read_records(Path(event_file.path))) == 2  # file_version and step 0, not the cut record


def test_logdir_under_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    assert main(["demo", "--logdir", str(blocker / "run")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"error: {blocker / 'run'}: cannot create the log directory (Not a directory)" in err


def test_logdir_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "events"
    blocker.write_text("")
    with pytest.raises(EventFileError, match="the log directory exists as a file"):
        EventFile(blocker)


def test_missing_logdir_created(tmp_path: Path) -> None:
    logdir = tmp_path / "a" / "b" / "c"
    event_file = EventFile(logdir)
    assert logdir.is_dir()
    event_file.write_summary(0, [])
    event_file.close()
    assert len(read_records(only_event_file(logdir))) == 2


READ_ONLY_DRIVER = """
import os, sys
from tbweights import checkpoints, cli
checkpoints.formats()
if os.geteuid() == 0:
    os.setgid(65534)
    os.setuid(65534)
sys.exit(cli.main(["convert", sys.argv[1], "--logdir", sys.argv[2]]))
"""


def test_logdir_without_write_permission() -> None:
    """Checked as an unprivileged user: root may write anywhere."""
    readable = Path(tempfile.mkdtemp(prefix="tbweights-input-"))
    folder = Path(tempfile.mkdtemp(prefix="tbweights-readonly-"))
    try:
        os.chmod(readable, 0o755)
        checkpoint = readable / "weights.npy"
        np.save(checkpoint, np.ones(4, np.float32))
        os.chmod(folder, 0o555)
        result = subprocess.run(
            [sys.executable, "-c", READ_ONLY_DRIVER, str(checkpoint), str(folder)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": SRC},
            timeout=120,
        )
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert "the log directory is not writable; check its permissions" in result.stderr
        assert list(folder.iterdir()) == []
    finally:
        os.chmod(folder, 0o755)
        folder.rmdir()
        checkpoint.unlink()
        readable.rmdir()
