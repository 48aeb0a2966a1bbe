"""Sharded models logged across processes equal the unsharded model logged in one process.

Processes run on the CPU with the gloo backend on 127.0.0.1, started with
`torch.multiprocessing.spawn` (workers in tests/distributed_cases.py) or with
torchrun. Each test takes about 10 to 25 seconds on 2 cores.
"""

from __future__ import annotations

import importlib.util
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch was built without torch.distributed", allow_module_level=True)

from tbweights import compute_stats, log_weights
from tbweights.distributed import DistributedWeightWriter, log_weights_distributed
from tbweights.tags import OVERVIEW_TAG, clean_tag

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
import distributed_cases
from loopback import free_port


def _load(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = pickle.loads(path.read_bytes())
    return result


def _assert_same_stats(name: str, expected: Any, actual: Any) -> None:
    assert not isinstance(actual, str), f"{name} was skipped: {actual}"
    (want, want_shape, want_dtype), (got, got_shape, got_dtype) = expected, actual
    assert got_shape == want_shape, name
    assert got_dtype == want_dtype, name
    np.testing.assert_array_equal(got.histogram, want.histogram, err_msg=name)
    np.testing.assert_array_equal(
        np.array(got.first, dtype=np.float64), np.array(want.first, dtype=np.float64), err_msg=name
    )
    assert [type(v) for v in got.first] == [type(v) for v in want.first], name
    for field in ("count", "nan", "posinf", "neginf", "zeros", "min", "max"):
        assert getattr(got, field) == getattr(want, field), f"{name}.{field}"
    for field in ("mean", "std"):
        want_value, got_value = getattr(want, field), getattr(got, field)
        assert (got_value is None) == (want_value is None), f"{name}.{field}"
        if want_value is not None:
            # The squared deviations of float32 values are summed in float32 within a
            # chunk, so another split into shards changes std by float32 rounding.
            rel_tol = 1e-6 if field == "std" else 1e-9
            assert math.isclose(got_value, want_value, rel_tol=rel_tol, abs_tol=1e-12), f"{name}.{field}"


def _without_mean_std(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith(("| mean |", "| std |")))


CASES = [
    ("fsdp2", 2),
    ("fsdp2", 4),
    ("tensor_parallel", 2),
    ("fsdp2_tp", 4),
    ("fsdp1_orig", 2),
    ("fsdp1_flat", 2),
]


@pytest.mark.slow
@pytest.mark.parametrize(("case", "world"), CASES, ids=[f"{c}-{w}" for c, w in CASES])
def test_sharded_matches_single_process(case: str, world: int, tmp_path: Path, read_run: Any) -> None:
    torch.multiprocessing.spawn(
        distributed_cases.run_case, args=(world, free_port(), case, str(tmp_path)), nprocs=world
    )

    single = _load(tmp_path / "single.pkl")
    assert len(single) == 12  # 11 parameters and the positions buffer
    for rank in range(world):
        sharded = _load(tmp_path / f"rank{rank}.pkl")
        assert sorted(sharded) == sorted(single), f"rank {rank}"
        for name, expected in single.items():
            _assert_same_stats(f"rank {rank}: {name}", expected, sharded[name])

    event_files = list((tmp_path / "dist").iterdir())
    assert len(event_files) == 1, "only rank 0 writes an event file"
    reference, written = read_run(tmp_path / "single"), read_run(tmp_path / "dist")
    assert sorted(written.tags) == sorted(reference.tags)
    for tag in reference.tags:
        if reference.plugin(tag) == "histograms":
            np.testing.assert_array_equal(written.value(tag), reference.value(tag), err_msg=tag)
        elif tag != OVERVIEW_TAG:  # its mean and std cells may differ in the last digit
            assert _without_mean_std(written.text(tag)) == _without_mean_std(reference.text(tag)), tag


@pytest.mark.slow
def test_torchrun_example_logs_each_step(tmp_path: Path, read_run: Any) -> None:
    logdir = tmp_path / "runs"
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        str(REPO / "examples" / "distributed_fsdp.py"),
        "--logdir", str(logdir), "--steps", "2", "--log-every", "1",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    assert len(list(logdir.iterdir())) == 1
    run = read_run(logdir)
    histogram_tags = [tag for tag in run.tags if run.plugin(tag) == "histograms"]
    assert len(histogram_tags) == 6
    spec = importlib.util.spec_from_file_location("distributed_fsdp", REPO / "examples" / "distributed_fsdp.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    initial = dict(example.build_model().named_parameters())
    for tag in histogram_tags:
        assert run.steps(tag) == [0, 1, 2], tag
    for name, param in initial.items():
        expected = compute_stats(param.detach()).histogram
        np.testing.assert_array_equal(run.value(clean_tag(name), 0), expected, err_msg=name)


def test_writer_requires_process_group() -> None:
    if dist.is_initialized():
        pytest.skip("a process group is already initialized in this process")
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistributedWeightWriter("unused")


@pytest.fixture
def single_rank_group() -> Any:
    """A one-process gloo group in the test process itself."""
    if dist.is_initialized():
        pytest.skip("a process group is already initialized in this process")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()


def test_partial_placement_is_skipped(single_rank_group: Any, logdir: Path) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Partial, Replicate

    mesh = init_device_mesh("cpu", (1,))
    tensors = {
        "partial": DTensor.from_local(torch.ones(3), mesh, [Partial()]),
        "replicated": DTensor.from_local(torch.arange(4.0), mesh, [Replicate()]),
    }
    report = log_weights_distributed(tensors, logdir)

    assert [r.tensor.name for r in report.results] == ["replicated"]
    assert report.results[0].stats.first == (0.0, 1.0, 2.0, 3.0)
    assert [s.name for s in report.skipped] == ["partial"]
    assert "Partial" in report.skipped[0].reason
    assert "redistribute" in report.skipped[0].reason


def test_plain_log_weights_one_rank_dtensor(single_rank_group: Any, logdir: Path) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard

    mesh = init_device_mesh("cpu", (1,))
    report = log_weights({"sharded": DTensor.from_local(torch.ones(2, 2), mesh, [Shard(0)])}, logdir)

    # On a one-rank mesh the local shard is the whole tensor, so plain logging reads it.
    assert report.skipped == []
    assert [r.tensor.name for r in report.results] == ["sharded"]
    assert report.results[0].stats.count == 4


def test_include_exclude_and_first(single_rank_group: Any, logdir: Path, read_run: Any) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    report = log_weights_distributed(model, logdir, exclude=["*.bias"], first=2)

    assert [r.tensor.name for r in report.results] == ["0.weight", "1.weight"]
    expected = compute_stats(model[0].weight.detach(), first=2)
    assert report.results[0].stats.first == expected.first
    np.testing.assert_array_equal(read_run(logdir).value("0/weight"), expected.histogram)
