"""Reading a checkpoint with quantized tensors prints no torch deprecation warnings, only our own lines."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from tbweights.checkpoints import LoadOptions, read_checkpoint

torch = pytest.importorskip("torch")


def test_quantized_checkpoint_reads_without_torch_warnings(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns when creating the quantized tensor, too
        quantized = torch.quantize_per_tensor(torch.tensor([-1.0, 0.5, 1.0]), 0.5, 0, torch.qint8)
    torch.save({"q.weight": quantized, "fc.weight": torch.ones(2, 2)}, tmp_path / "q.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = {t.name: t.load() for t in read_checkpoint(tmp_path / "q.pt", LoadOptions())}
    assert sorted(values) == ["fc.weight", "q.weight"]
    assert [str(w.message) for w in caught] == []
