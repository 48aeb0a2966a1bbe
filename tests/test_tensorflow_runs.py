"""A folder of TensorFlow checkpoints `ckpt-N`, saved by a real CheckpointManager, as a training run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip(
    "tensorflow", reason="TensorFlow is needed to write checkpoints (pip install 'tbweights[tensorflow]')"
)

from tbweights.cli import main  # noqa: E402
from tbweights.convert import find_checkpoints  # noqa: E402

STEPS = [2, 10, 100]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tf_run")
    module = tf.Module(name="net")
    module.kernel = tf.Variable(tf.zeros((3, 4)), name="kernel")
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(net=module), str(folder), max_to_keep=None)
    for step in STEPS:
        module.kernel.assign(tf.fill((3, 4), float(step)))
        manager.save(checkpoint_number=step)
    return folder


def test_prefixes_found_in_step_order(run: Path) -> None:
    assert [Path(p).name for p in find_checkpoints(run)] == ["ckpt-2", "ckpt-10", "ckpt-100"]


def test_convert_writes_each_step(run: Path, tmp_path: Path, read_run) -> None:
    assert main(["convert", str(run), "--logdir", str(tmp_path / "logs"), "--quiet"]) == 0
    reader = read_run(tmp_path / "logs")
    assert reader.steps("tbweights/overview") == STEPS
    [tag] = [t for t in reader.tags if t.endswith("kernel")]
    for step in STEPS:
        histogram = reader.value(tag, step)
        assert histogram[:, 2].sum() == 12
        np.testing.assert_array_equal(histogram[-1, :2], [step, step])


def test_show_reads_the_latest(run: Path, capsys) -> None:
    """The folder's `checkpoint` file names the latest checkpoint, which `show` reads as before."""
    assert main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    assert "kernel" in out
    assert " 100, 100, 100" in out
