"""WeightWriter writing into a summary writer the user already has: one run, one event file."""

from __future__ import annotations

import numpy as np
import pytest

from tbweights import WeightWriter, log_weights
from tbweights.sinks import UnsupportedWriterError

WEIGHTS = {
    "fc1.weight": np.linspace(-1.0, 1.0, 24, dtype=np.float32).reshape(4, 6),
    "fc1.bias": np.array([0.5, -0.5, 0.25, 0.0], dtype=np.float32),
}


def torch_writer(logdir):
    pytest.importorskip("torch", reason="the torch extra is not installed")
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(logdir))
    return writer, lambda tag, value, step: writer.add_scalar(tag, value, step)


def tensorboardx_writer(logdir):
    tensorboardx = pytest.importorskip("tensorboardX", reason="tensorboardX is not installed")
    writer = tensorboardx.SummaryWriter(str(logdir))
    return writer, lambda tag, value, step: writer.add_scalar(tag, value, step)


def tf_writer(logdir):
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed")
    writer = tf.summary.create_file_writer(str(logdir))

    def add_scalar(tag, value, step):
        with writer.as_default():
            tf.summary.scalar(tag, value, step=step)

    return writer, add_scalar


WRITERS = {"torch": torch_writer, "tensorboardX": tensorboardx_writer, "tf.summary": tf_writer}


def all_tags(run) -> set[str]:
    tags = run.accumulator.Tags()
    return set(tags["tensors"]) | set(tags["scalars"])


def user_scalar_steps(run, tag: str) -> list[int]:
    if tag in run.accumulator.Tags()["scalars"]:
        return [event.step for event in run.accumulator.Scalars(tag)]
    return run.steps(tag)


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_summaries_join_the_users_run(kind, logdir, read_run) -> None:
    writer, add_scalar = WRITERS[kind](logdir)
    add_scalar("loss", 1.0, 0)
    with WeightWriter(writer, scalars=True, check_init=True) as weights:
        weights.log(WEIGHTS, step=0)
        weights.log({k: v * 2 for k, v in WEIGHTS.items()}, step=1)
    add_scalar("loss", 0.5, 1)  # closing the WeightWriter left the user's writer open
    writer.flush()
    writer.close()

    event_files = [p for p in logdir.iterdir() if p.name.startswith("events.out.tfevents")]
    assert len(event_files) == 1
    run = read_run(logdir)
    assert {"fc1/weight", "fc1/weight/stats", "fc1/weight/mean", "tbweights/overview"} <= all_tags(run)
    assert run.plugin("fc1/weight") == "histograms"
    assert run.steps("fc1/weight") == [0, 1]
    assert run.steps("tbweights/init_check") == [0]
    assert run.value("fc1/weight", 1)[-1, 1] == pytest.approx(2.0)
    assert float(run.value("fc1/bias/mean", 0)) == pytest.approx(0.0625)
    assert "fc1.weight" in run.text("fc1/weight/stats", 0)
    assert user_scalar_steps(run, "loss") == [0, 1]


def test_log_weights_accepts_a_writer(logdir, read_run) -> None:
    writer, _ = torch_writer(logdir)
    log_weights(WEIGHTS, writer, step=3)
    writer.close()
    run = read_run(logdir)
    assert run.steps("fc1/bias") == [3]


def test_unknown_writer_is_rejected() -> None:
    with pytest.raises(UnsupportedWriterError, match=r"cannot write to a builtins\.dict: pass a log directory"):
        WeightWriter({"not": "a writer"})
