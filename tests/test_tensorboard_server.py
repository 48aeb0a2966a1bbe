"""End to end: a real `tensorboard` server on 127.0.0.1 serves what tbweights wrote."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from loopback import free_port, get_json
from tbweights import log_weights

STARTUP_SECONDS = 90


@pytest.fixture
def server(tmp_path: Path):
    logdir = tmp_path / "logs"
    weights = {
        "fc1.weight": np.linspace(-1.0, 1.0, 60, dtype=np.float32).reshape(6, 10),
        "fc1.bias": np.array([0.5, -0.5, 0.25], dtype=np.float32),
    }
    log_weights(weights, logdir / "mlp", step=0)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        str(logdir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--reload_interval",
        "1",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_run(port, process, "mlp")
        yield port, weights
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_for_run(port: int, process: subprocess.Popen[bytes], run: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tensorboard exited: {process.stderr.read().decode()[-2000:]}")
        try:
            tags = get_json(port, "/data/plugin/histograms/tags")
            if run in tags and "fc1/weight" in tags[run]:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"tensorboard on port {port} did not serve run {run!r} within {STARTUP_SECONDS} s")


def test_server_serves_histogram_and_text(server) -> None:
    port, weights = server
    histogram = get_json(port, "/data/plugin/histograms/histograms", run="mlp", tag="fc1/weight")
    assert len(histogram) == 1
    _wall_time, step, buckets = histogram[0]
    assert step == 0
    assert len(buckets) == 30
    assert sum(count for _left, _right, count in buckets) == weights["fc1.weight"].size
    assert buckets[0][0] == pytest.approx(-1.0)
    assert buckets[-1][1] == pytest.approx(1.0)

    text = get_json(port, "/data/plugin/text/text", run="mlp", tag="fc1/bias/stats")
    assert text[0]["step"] == 0
    assert "fc1.bias" in text[0]["text"]
    assert "0.5, -0.5, 0.25" in text[0]["text"]

    overview = get_json(port, "/data/plugin/text/text", run="mlp", tag="tbweights/overview")
    assert "<table>" in overview[0]["text"]
    assert "<thead>" in overview[0]["text"]  # a Markdown table, not a 2-D string tensor
    assert "fc1.weight" in overview[0]["text"]
