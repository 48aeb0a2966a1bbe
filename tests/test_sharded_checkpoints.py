"""Offline conversion of sharded checkpoints: PyTorch distributed checkpoints and Hugging Face indexes.

Distributed checkpoints are written by `torch.distributed.checkpoint.save`, in
one process and from two spawned ranks. Hugging Face checkpoints are written
the way `transformers`' `save_pretrained` writes them (transformers is not a
test dependency): shards by `safetensors.torch.save_file` with
`{"format": "pt"}` metadata or by `torch.save`, named `model-00001-of-00002.*`,
and an index dumped with `json.dumps(index, indent=2, sort_keys=True)`.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dcp = pytest.importorskip("torch.distributed.checkpoint")
safetensors_torch = pytest.importorskip("safetensors.torch")

from tbweights import CheckpointError, compute_stats
from tbweights.checkpoints import LoadOptions, detect, read_checkpoint
from tbweights.cli import main as cli_main
from tbweights.convert import convert, describe
from tbweights.tags import clean_tag
from tbweights.tensors import Role

sys.path.insert(0, str(Path(__file__).parent))
import distributed_cases


def _weights() -> dict[str, Any]:
    torch.manual_seed(7)
    return {
        "embed.weight": torch.randn(20, 8),
        "layers.0.weight": torch.randn(16, 8),
        "layers.0.bias": torch.randn(16).to(torch.bfloat16),
        "layers.1.weight": torch.randn(4, 16),
        "layers.1.bias": torch.zeros(4),
        "positions": torch.arange(10),
    }


def _assert_matches(logdir: Path, weights: dict[str, Any], read_run: Any, step: int = 0) -> None:
    run = read_run(logdir)
    histogram_tags = sorted(tag for tag in run.tags if run.plugin(tag) == "histograms")
    assert histogram_tags == sorted(clean_tag(name) for name in weights)
    for name, tensor in weights.items():
        np.testing.assert_array_equal(run.value(clean_tag(name), step), compute_stats(tensor).histogram, err_msg=name)


# --- torch.distributed.checkpoint --------------------------------------------


@pytest.fixture
def dcp_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "checkpoint-300"
    state = {
        "model": _weights(),
        "optim": {"state": {"layers.0.weight": {"exp_avg": torch.ones(16, 8)}}},
        "step": 300,
    }
    dcp.save(state, checkpoint_id=str(directory))
    return directory


def test_dcp_directory_detected(dcp_dir: Path) -> None:
    assert detect(dcp_dir).name == "torch-distributed-checkpoint"
    assert detect(dcp_dir / ".metadata").name == "torch-distributed-checkpoint"


def test_dcp_convert_matches_tensors(dcp_dir: Path, logdir: Path, read_run: Any) -> None:
    report = convert([dcp_dir], logdir)

    assert report.failed == []
    (_, step_report), = report.steps
    assert step_report.step == 300
    assert step_report.skipped == []
    _assert_matches(logdir, _weights(), read_run, step=300)


def test_dcp_metadata_file_path(dcp_dir: Path) -> None:
    names = [tensor.name for tensor in read_checkpoint(dcp_dir / ".metadata")]
    assert sorted(names) == sorted(_weights())


def test_dcp_optimizer_only_when_asked(dcp_dir: Path) -> None:
    tensors = list(read_checkpoint(dcp_dir, LoadOptions(include_optimizer=True)))
    optimizer = [t for t in tensors if t.role is Role.OPTIMIZER]

    assert [t.name for t in optimizer] == ["optim.state.layers.0.weight.exp_avg"]
    assert optimizer[0].load().sum().item() == 128


def test_dcp_first_values_and_dtype(dcp_dir: Path) -> None:
    described = {tensor.name: (tensor, stats) for tensor, stats in describe(dcp_dir)}
    tensor, stats = described["layers.0.bias"]

    assert tensor.dtype == "bfloat16"
    assert tensor.shape == (16,)
    expected = _weights()["layers.0.bias"]
    assert stats.first == tuple(expected[:5].float().tolist())


def test_dcp_missing_data_file_skips_tensors(dcp_dir: Path) -> None:
    for data_file in dcp_dir.glob("*.distcp"):
        data_file.unlink()

    described = list(describe(dcp_dir))

    assert len(described) == len(_weights())
    for tensor, outcome in described:
        assert isinstance(outcome, str), tensor.name
        assert "missing or damaged" in outcome


def test_dcp_saved_by_two_ranks(tmp_path: Path, logdir: Path, read_run: Any) -> None:
    directory = tmp_path / "fsdp2"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torch.multiprocessing.spawn(distributed_cases.save_sharded_checkpoint, args=(2, port, str(directory)), nprocs=2)
    assert len(list(directory.glob("*.distcp"))) == 2

    report = convert([directory], logdir, start_step=0)

    assert report.failed == []
    assert report.steps[0][1].skipped == []
    unsharded = distributed_cases.build_model().state_dict()  # parameters and the positions buffer
    _assert_matches(logdir, unsharded, read_run)


# --- Hugging Face index + shards ---------------------------------------------


def _save_pretrained_like(directory: Path, weights: dict[str, Any], kind: str) -> Path:
    """Two shards and an index, named and formatted as transformers' save_pretrained writes them."""
    directory.mkdir(parents=True, exist_ok=True)
    names = list(weights)
    halves = [names[: len(names) // 2], names[len(names) // 2 :]]
    suffix, index_name = (
        ("safetensors", "model.safetensors.index.json")
        if kind == "safetensors"
        else ("bin", "pytorch_model.bin.index.json")
    )
    prefix = "model" if kind == "safetensors" else "pytorch_model"
    weight_map = {}
    total_size = 0
    for number, half in enumerate(halves, start=1):
        shard_name = f"{prefix}-{number:05d}-of-{len(halves):05d}.{suffix}"
        shard = {name: weights[name].contiguous() for name in half}
        if kind == "safetensors":
            safetensors_torch.save_file(shard, str(directory / shard_name), metadata={"format": "pt"})
        else:
            torch.save(shard, directory / shard_name)
        weight_map.update(dict.fromkeys(half, shard_name))
        total_size += sum(t.numel() * t.element_size() for t in shard.values())
    index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    (directory / index_name).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return directory / index_name


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_hf_index_convert_matches(kind: str, tmp_path: Path, logdir: Path, read_run: Any) -> None:
    index = _save_pretrained_like(tmp_path / "model", _weights(), kind)
    assert detect(index.parent).name.startswith("sharded")
    assert detect(index).name.startswith("sharded")

    report = convert([index.parent], logdir, start_step=0)

    assert report.failed == []
    assert report.steps[0][1].skipped == []
    _assert_matches(logdir, _weights(), read_run)


def test_hf_index_file_path(tmp_path: Path) -> None:
    index = _save_pretrained_like(tmp_path / "model", _weights(), "safetensors")
    assert sorted(t.name for t in read_checkpoint(index)) == sorted(_weights())


def test_hf_missing_shard_skips_its_tensors(tmp_path: Path) -> None:
    index = _save_pretrained_like(tmp_path / "model", _weights(), "safetensors")
    (index.parent / "model-00002-of-00002.safetensors").unlink()

    outcomes = {tensor.name: outcome for tensor, outcome in describe(index.parent)}

    names = list(_weights())
    for name in names[: len(names) // 2]:
        assert not isinstance(outcomes[name], str), name
    for name in names[len(names) // 2 :]:
        assert isinstance(outcomes[name], str), name
        assert "model-00002-of-00002.safetensors" in outcomes[name]
        assert "missing" in outcomes[name]


def test_hf_tensor_absent_from_shard(tmp_path: Path) -> None:
    index = _save_pretrained_like(tmp_path / "model", _weights(), "safetensors")
    content = json.loads(index.read_text())
    content["weight_map"]["ghost.weight"] = "model-00001-of-00002.safetensors"
    index.write_text(json.dumps(content))

    outcomes = dict(describe(index))

    reasons = [o for t, o in outcomes.items() if t.name == "ghost.weight"]
    assert reasons == [reasons[0]] and isinstance(reasons[0], str)
    assert "not in this shard" in reasons[0]


def test_hf_index_without_weight_map(tmp_path: Path) -> None:
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}}))
    with pytest.raises(CheckpointError, match="weight_map"):
        list(read_checkpoint(index))


def test_hf_prefers_safetensors_index(tmp_path: Path) -> None:
    _save_pretrained_like(tmp_path / "model", _weights(), "safetensors")
    _save_pretrained_like(tmp_path / "model", {k: v * 2 for k, v in _weights().items()}, "bin")

    tensors = {t.name: t.load() for t in read_checkpoint(tmp_path / "model")}

    assert sorted(tensors) == sorted(_weights())
    np.testing.assert_array_equal(tensors["layers.1.weight"], _weights()["layers.1.weight"].numpy())


def test_hf_rejects_shard_outside_directory(tmp_path: Path) -> None:
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"w": "../elsewhere.safetensors"}}))
    with pytest.raises(CheckpointError, match="not a path inside"):
        list(read_checkpoint(index))


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc/self/maps")
def test_hf_one_shard_mapped_at_a_time(tmp_path: Path) -> None:
    index = _save_pretrained_like(tmp_path / "model", _weights(), "safetensors")
    shard_names = sorted(p.name for p in index.parent.glob("*.safetensors"))

    mapped_while_loading = []
    for tensor in read_checkpoint(index.parent):
        tensor.load()
        maps = Path("/proc/self/maps").read_text()
        mapped_while_loading.append({name for name in shard_names if name in maps})

    assert all(len(mapped) == 1 for mapped in mapped_while_loading), mapped_while_loading
    assert mapped_while_loading[0] != mapped_while_loading[-1]


def test_cli_convert_sharded(tmp_path: Path, logdir: Path, read_run: Any) -> None:
    index = _save_pretrained_like(tmp_path / "model", _weights(), "safetensors")
    assert cli_main(["convert", str(index.parent), "--logdir", str(logdir), "--quiet"]) == 0
    _assert_matches(logdir, _weights(), read_run)

