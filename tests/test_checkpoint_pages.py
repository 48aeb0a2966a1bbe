"""Memory-mapped checkpoints hand their pages back tensor by tensor, and stay correct."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from tbweights.checkpoints import read_checkpoint
from tbweights.checkpoints.pages import PageWindow, file_mappings
from tbweights.stats import compute_stats


def tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {f"layer{i}.weight": rng.standard_normal((300, 257)).astype(np.float32) for i in range(4)}


def test_safetensors_values_survive_release(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    expected = tensors()
    save_file(expected, str(path))
    loaded = []
    for record in read_checkpoint(path):
        loaded.append((record.name, record.load()))
    # Every page was dropped after its tensor; reading maps the file's data back.
    for name, array in loaded:
        np.testing.assert_array_equal(array, expected[name])


def test_torch_zip_values_survive_release(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.pt"
    expected = {name: torch.from_numpy(array) for name, array in tensors().items()}
    # Two views of one storage: the second must still read real data after the first is released.
    base = torch.arange(100_000, dtype=torch.float32)
    expected["view.a"], expected["view.b"] = base[:50_000], base[50_000:]
    torch.save(expected, path)
    seen = {}
    for record in read_checkpoint(path):
        seen[record.name] = compute_stats(record.load(), first=3)
    for name, tensor in expected.items():
        assert seen[name].first == tuple(tensor.reshape(-1)[:3].tolist())
        assert seen[name].max == float(tensor.max())


def test_window_ignores_memory_outside_the_file() -> None:
    values = np.arange(10_000, dtype=np.float64)  # ordinary memory: dropping it would zero it
    window = PageWindow(within=[])
    window.loaded(values.ctypes.data, values.nbytes)
    window.advance()
    assert values[5000] == 5000.0


def test_file_mappings_finds_a_mapped_file(tmp_path: Path) -> None:
    import mmap

    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * 10_000)
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        assert mapped[0] == ord("x")
        assert file_mappings(path)
