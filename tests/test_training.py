"""A short real training loop logged at every step, read back with TensorBoard's reader."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tbweights import WeightWriter
from tbweights.tags import TagAllocator
from tbweights.tracking import TAG_SUFFIXES

torch = pytest.importorskip("torch", reason="the torch extra is not installed")

STEPS = 5


def train_and_log(logdir, **options):
    """Five SGD steps on a small MLP, logged at steps 0..5; returns the parameters at each step."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    inputs = torch.randn(32, 8)
    targets = inputs.sum(dim=1, keepdim=True)
    snapshots = []
    with WeightWriter(logdir, **options) as writer:
        for step in range(STEPS + 1):
            writer.log(model, step)
            snapshots.append({name: p.detach().clone().numpy() for name, p in model.named_parameters()})
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(inputs), targets).backward()
            optimizer.step()
        tracked_bytes = writer.change_tracking_bytes
    return model, snapshots, tracked_bytes


def test_every_step_is_visible(logdir, read_run) -> None:
    train_and_log(logdir)
    run = read_run(logdir)
    for tag in ("0/weight", "0/weight/stats", "2/bias", "tbweights/overview"):
        assert run.steps(tag) == list(range(STEPS + 1))


def test_histograms_follow_training(logdir, read_run) -> None:
    _, snapshots, _ = train_and_log(logdir)
    run = read_run(logdir)
    first = run.value("0/weight", 0)
    last = run.value("0/weight", STEPS)
    assert not np.array_equal(first, last)
    for step, snapshot in enumerate(snapshots):
        histogram = run.value("0/weight", step)
        assert histogram[0, 0] == pytest.approx(float(snapshot["0.weight"].min()))
        assert histogram[-1, 1] == pytest.approx(float(snapshot["0.weight"].max()))


def test_scalars_match_the_model(logdir, read_run) -> None:
    _, snapshots, _ = train_and_log(logdir, scalars=True)
    run = read_run(logdir)
    assert run.plugin("0/weight/mean") == "scalars"
    for step, snapshot in enumerate(snapshots):
        for name, values in snapshot.items():
            tag = name.replace(".", "/")
            weights = torch.from_numpy(values).double()
            expected = {
                "mean": weights.mean().item(),
                "std": weights.std(unbiased=False).item(),
                "l2_norm": torch.linalg.vector_norm(weights).item(),
                "max_abs": weights.abs().max().item(),
                "zero_fraction": (weights == 0).double().mean().item(),
                "nonfinite": 0.0,
            }
            for suffix, value in expected.items():
                logged = float(run.value(f"{tag}/{suffix}", step))
                assert logged == pytest.approx(value, rel=1e-5, abs=1e-7), (tag, suffix, step)


def test_change_since_start(logdir, read_run) -> None:
    model, snapshots, tracked_bytes = train_and_log(logdir, track_change=True)
    run = read_run(logdir)
    assert tracked_bytes == 4 * sum(p.numel() for p in model.parameters())
    assert run.plugin("0/weight/change") == "histograms"
    assert run.plugin("0/weight/relative_change") == "scalars"
    start = snapshots[0]["0.weight"].astype(np.float64)
    assert float(run.value("0/weight/relative_change", 0)) == 0.0
    assert run.value("0/weight/change", 0)[:, 2].sum() == start.size
    for step in range(1, STEPS + 1):
        current = snapshots[step]["0.weight"].astype(np.float64)
        expected = np.linalg.norm(current - start) / np.linalg.norm(start)
        assert float(run.value("0/weight/relative_change", step)) == pytest.approx(expected, rel=1e-4)
        change = run.value("0/weight/change", step)
        assert change[0, 0] == pytest.approx(float((current - start).min()), rel=1e-4, abs=1e-7)
        assert change[-1, 1] == pytest.approx(float((current - start).max()), rel=1e-4, abs=1e-7)
    changes = [float(run.value("0/weight/relative_change", s)) for s in range(STEPS + 1)]
    assert all(math.isfinite(c) for c in changes)
    assert changes[-1] > 0.0


def test_options_off_write_no_extra_tags(logdir, read_run) -> None:
    train_and_log(logdir)
    run = read_run(logdir)
    assert not [tag for tag in run.tags if tag.endswith(("/mean", "/change", "/relative_change"))]


def test_derived_tags_never_collide() -> None:
    allocator = TagAllocator(extra_suffixes=TAG_SUFFIXES)
    first, _ = allocator.tags("fc.weight")
    second, _ = allocator.tags("fc/weight/mean")  # would equal fc/weight + /mean
    third, _ = allocator.tags("fc/weight/change")
    assert first == "fc/weight"
    assert second == "fc/weight/mean_2"
    assert third == "fc/weight/change_2"


def test_tensor_logged_under_derived_tag_name(logdir, read_run) -> None:
    weights = {"fc.weight": np.ones((2, 2), np.float32), "fc/weight/mean": np.zeros(3, np.float32)}
    with WeightWriter(logdir, scalars=True) as writer:
        writer.log(weights, 0)
    run = read_run(logdir)
    assert run.plugin("fc/weight/mean") == "scalars"
    assert run.plugin("fc/weight/mean_2") == "histograms"
