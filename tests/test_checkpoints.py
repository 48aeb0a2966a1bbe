"""Checkpoint readers on real files written by safetensors, torch and NumPy."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from tbweights.checkpoints import LoadOptions, detect, read_checkpoint

torch = pytest.importorskip("torch", reason="the torch extra is not installed")


def loaded(path, **options) -> dict[str, np.ndarray]:
    from tbweights.stats import as_numpy

    return {t.name: np.array(as_numpy(t.load())) for t in read_checkpoint(path, LoadOptions(**options))}


def test_safetensors_in_file_order(tmp_path) -> None:
    tensors = {
        "z.weight": np.ones((2, 2), np.float32),
        "a.bias": np.zeros(3, np.float32),
        "m.w": np.arange(4.0),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    records = list(read_checkpoint(path))
    header_order = sorted(tensors, key=lambda n: _offset(path, n))
    assert [r.name for r in records] == header_order
    for record in records:
        np.testing.assert_array_equal(record.load(), tensors[record.name])


def _offset(path, name: str) -> int:
    from tbweights.checkpoints.safetensors import read_header

    header, _ = read_header(path)
    return int(header[name]["data_offsets"][0])


def test_safetensors_bfloat16_and_float8(tmp_path) -> None:
    path = tmp_path / "low.safetensors"
    from safetensors.torch import save_file as save_torch

    values = torch.randn(16, 8)
    save_torch({"bf": values.bfloat16(), "f8": values.to(torch.float8_e4m3fn)}, str(path))
    records = {r.name: r for r in read_checkpoint(path)}
    assert records["bf"].dtype == "bfloat16"
    assert records["f8"].dtype == "float8_e4m3fn"
    bf = records["bf"].load()
    assert bf.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(bf.astype(np.float32), values.bfloat16().float().numpy())


def test_safetensors_is_memory_mapped(tmp_path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"w": np.ones(1000, np.float32)}, str(path))
    array = next(iter(read_checkpoint(path))).load()
    assert not array.flags.owndata
    assert not array.flags.writeable


def test_detect_by_content_not_suffix(tmp_path) -> None:
    path = tmp_path / "weights.bin"
    save_file({"w": np.ones(3, np.float32)}, str(path))
    assert detect(path).name == "safetensors"
    torch_path = tmp_path / "weights.safetensors"
    torch.save({"w": torch.ones(3)}, torch_path)
    assert detect(torch_path).name == "pytorch"


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_state_dict(tmp_path, zip_format: bool) -> None:
    model = torch.nn.Linear(5, 3)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=zip_format)
    tensors = loaded(path)
    assert list(tensors) == ["weight", "bias"]
    np.testing.assert_array_equal(tensors["weight"], model.weight.detach().numpy())


def training_checkpoint(path, model, wrap: str) -> None:
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 5)).sum().backward()
    optimizer.step()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    layouts = {
        "state_dict": {"epoch": 3, "state_dict": state, "optimizer": optimizer.state_dict()},
        "model": {"model": state, "optimizer": optimizer.state_dict(), "step": 10},
        "model.state_dict": {"model": {"state_dict": state}, "optimizer_states": [optimizer.state_dict()]},
    }
    torch.save(layouts[wrap], path)


@pytest.mark.parametrize("wrap", ["state_dict", "model", "model.state_dict"])
def test_training_checkpoint_yields_weights(tmp_path, wrap: str) -> None:
    model = torch.nn.Linear(5, 3)
    path = tmp_path / "last.ckpt"
    training_checkpoint(path, model, wrap)
    tensors = loaded(path)
    assert sorted(tensors) == ["bias", "weight"]
    np.testing.assert_array_equal(tensors["bias"], model.bias.detach().numpy())


def test_optimizer_state_by_option(tmp_path) -> None:
    model = torch.nn.Linear(5, 3)
    path = tmp_path / "last.ckpt"
    training_checkpoint(path, model, "state_dict")
    names = list(loaded(path, include_optimizer=True))
    assert "weight" in names
    assert "optimizer.state.0.exp_avg" in names
    assert "optimizer.state.0.exp_avg_sq" in names


def test_tied_weights_in_checkpoint_once(tmp_path) -> None:
    embed = torch.nn.Embedding(10, 4)
    path = tmp_path / "tied.pt"
    torch.save({"embed.weight": embed.weight, "head.weight": embed.weight}, path)
    records = list(read_checkpoint(path))
    assert [r.name for r in records] == ["embed.weight"]
    assert records[0].aliases == ("head.weight",)


def test_numpy_npy_and_npz(tmp_path) -> None:
    np.save(tmp_path / "w.npy", np.arange(6.0).reshape(2, 3))
    np.savez_compressed(tmp_path / "all.npz", a=np.ones(4), b=np.arange(3, dtype=np.int8))
    assert list(loaded(tmp_path / "w.npy")) == ["w"]
    records = {r.name: r for r in read_checkpoint(tmp_path / "all.npz")}
    assert records["b"].shape == (3,)
    assert records["b"].dtype == "int8"


def test_folder_with_one_model_file(tmp_path) -> None:
    folder = tmp_path / "checkpoint-500"
    folder.mkdir()
    save_file({"w": np.ones(3, np.float32)}, str(folder / "model.safetensors"))
    torch.save({"state": {}}, folder / "optimizer.pt")
    (folder / "trainer_state.json").write_text("{}")
    assert detect(folder).name == "folder with one model file"
    assert list(loaded(folder)) == ["w"]


def test_folder_with_several_weight_files(tmp_path) -> None:
    from tbweights.errors import CheckpointError

    for name in ("a.safetensors", "b.safetensors"):
        save_file({"w": np.ones(3, np.float32)}, str(tmp_path / name))
    with pytest.raises(CheckpointError, match=r"several weight files \(a.safetensors, b.safetensors\)"):
        detect(tmp_path)
