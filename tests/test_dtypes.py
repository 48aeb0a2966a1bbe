"""Every dtype and tensor kind gets the right statistics or a clear skip reason."""

from __future__ import annotations

import math
import os

import ml_dtypes
import numpy as np
import pytest

from loopback import free_port
from tbweights import log_weights
from tbweights.errors import TensorError
from tbweights.stats import compute_stats
from tbweights.summaries import COMPLEX_NOTE

torch = pytest.importorskip("torch")

# name: (tensor, min, max, zeros, nan, +inf)
TORCH_CASES = {
    "f16": (torch.tensor([-65504.0, 1.0, 0.0], dtype=torch.float16), -65504.0, 1.0, 1, 0, 0),
    # bfloat16 keeps float32's range: 3e38 must not become inf (float16 would overflow).
    "bf16": (
        torch.tensor([3e38, -1.5, 0.0], dtype=torch.bfloat16),
        -1.5,
        float(torch.tensor(3e38, dtype=torch.bfloat16)),
        1,
        0,
        0,
    ),
    "f8_e4m3fn": (torch.tensor([448.0, -448.0, float("nan")]).to(torch.float8_e4m3fn), -448.0, 448.0, 0, 1, 0),
    "f8_e5m2": (torch.tensor([57344.0, 0.0, float("inf")]).to(torch.float8_e5m2), 0.0, 57344.0, 1, 0, 1),
    "f64": (torch.tensor([1e300, -1e-300], dtype=torch.float64), -1e-300, 1e300, 0, 0, 0),
    "i8": (torch.tensor([-128, 0, 127], dtype=torch.int8), -128.0, 127.0, 1, 0, 0),
    "u8": (torch.tensor([0, 255], dtype=torch.uint8), 0.0, 255.0, 1, 0, 0),
    "i64": (torch.tensor([2**40, -(2**40), 0], dtype=torch.int64), -(2.0**40), 2.0**40, 1, 0, 0),
    "bool": (torch.tensor([True, False, True]), 0.0, 1.0, 1, 0, 0),
    "u16": (torch.tensor([0, 65535], dtype=torch.uint16), 0.0, 65535.0, 1, 0, 0),
    "quantized": (torch.quantize_per_tensor(torch.tensor([-1.0, 0.0, 0.5]), 0.5, 0, torch.qint8), -1.0, 0.5, 1, 0, 0),
    "sparse_coo": (torch.tensor([[0.0, 2.0], [0.0, -3.0]]).to_sparse(), -3.0, 2.0, 2, 0, 0),
    "sparse_csr": (torch.tensor([[0.0, 2.0], [0.0, 0.0]]).to_sparse_csr(), 0.0, 2.0, 3, 0, 0),
    "transposed": (torch.arange(6.0).reshape(2, 3).t(), 0.0, 5.0, 1, 0, 0),
    "complex64": (torch.tensor([3 + 4j, 0j], dtype=torch.complex64), 0.0, 5.0, 1, 0, 0),
    "complex32": (torch.tensor([3 + 4j, 1j], dtype=torch.complex64).to(torch.complex32), 1.0, 5.0, 0, 0, 0),
}


@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_torch_dtype_stats(name: str) -> None:
    tensor, low, high, zeros, nan, posinf = TORCH_CASES[name]
    stats = compute_stats(tensor)
    assert stats.min == low
    assert stats.max == high
    assert stats.zeros == zeros
    assert stats.nan == nan
    assert stats.posinf == posinf
    assert stats.count == math.prod(tensor.shape)
    assert np.isfinite(stats.histogram).all()


def test_bfloat16_first_values_not_overflowed() -> None:
    stats = compute_stats(torch.tensor([3e38], dtype=torch.bfloat16))
    assert math.isfinite(stats.first[0])
    assert stats.posinf == 0


def test_sparse_counts_implicit_zeros() -> None:
    sparse = torch.sparse_coo_tensor(torch.tensor([[0, 3]]), torch.tensor([1.0, 2.0]), (1000,))
    stats = compute_stats(sparse)
    assert stats.count == 1000
    assert stats.zeros == 998
    assert stats.mean == pytest.approx(3.0 / 1000)


def test_complex_first_values_and_note(tmp_path) -> None:
    from conftest import RunReader

    report = log_weights({"z": torch.tensor([3 - 4j, 1j])}, tmp_path)
    stats = report.results[0].stats
    assert stats.first == (3 - 4j, 1j)
    assert stats.max == 5.0
    text = RunReader(tmp_path).text("z/stats")
    assert "3-4j, 0+1j" in text
    assert COMPLEX_NOTE in text


def test_numpy_complex_and_object_dtypes() -> None:
    assert compute_stats(np.array([1 + 1j, -2j], np.complex128)).min == pytest.approx(math.sqrt(2))
    with pytest.raises(TensorError, match=r"dtype object.*not numbers"):
        compute_stats(np.array([object()], dtype=object))
    with pytest.raises(TensorError, match=r"dtype <U3.*not numbers"):
        compute_stats(np.array(["abc"]))


def test_ml_dtypes_arrays() -> None:
    values = np.array([1.0, -2.0, 3e38], dtype=ml_dtypes.bfloat16)
    stats = compute_stats(values)
    assert stats.max == float(values[2])
    assert stats.posinf == 0
    fp8 = np.array([448, -448], dtype=ml_dtypes.float8_e4m3fn)
    assert compute_stats(fp8).min == -448.0


@pytest.mark.parametrize("name", ["int4", "uint4", "int2", "uint2"])
def test_sub_byte_integer_arrays(name: str) -> None:
    """JAX's jnp.int4 arrays reach the kernel as ml_dtypes arrays, one value per byte."""
    dtype = getattr(ml_dtypes, name, None)
    if dtype is None:
        pytest.skip(f"ml_dtypes {ml_dtypes.__version__} has no {name}")
    values = [-1, 0, 1, 1] if name.startswith("int") else [3, 0, 1, 1]
    stats = compute_stats(np.array(values, dtype=dtype))
    assert (stats.min, stats.max) == (min(values), max(values))
    assert stats.zeros == 1
    assert stats.first == tuple(values)


def test_safetensors_small_floats(tmp_path) -> None:
    from safetensors.torch import save_file

    from tbweights.convert import describe

    path = tmp_path / "model.safetensors"
    save_file(
        {
            "bf16": torch.tensor([3e38, 1.0], dtype=torch.bfloat16),
            "f8": torch.tensor([448.0, -2.0]).to(torch.float8_e4m3fn),
            "f8b": torch.tensor([57344.0, 1.0]).to(torch.float8_e5m2),
        },
        path,
    )
    stats = {tensor.name: result for tensor, result in describe(path)}
    assert stats["bf16"].max == float(torch.tensor(3e38, dtype=torch.bfloat16))
    assert stats["bf16"].posinf == 0
    assert stats["f8"].min == -2.0
    assert stats["f8b"].max == 57344.0


def test_nested_tensor_skipped(tmp_path) -> None:
    nested = torch.nested.nested_tensor([torch.ones(2), torch.ones(3)])
    report = log_weights({"nt": nested, "w": torch.ones(4)}, tmp_path)
    assert [s.name for s in report.skipped] == ["nt"]
    assert "nested tensor; log its components" in report.skipped[0].reason
    assert [r.tensor.name for r in report.results] == ["w"]


def test_meta_and_lazy_parameters_reported(tmp_path) -> None:
    model = torch.nn.Sequential(torch.nn.LazyLinear(3), torch.nn.Linear(3, 2, device="meta"), torch.nn.Linear(2, 2))
    report = log_weights(model, tmp_path)
    skipped = {s.name: s.reason for s in report.skipped}
    assert set(skipped) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    assert "uninitialized lazy parameter" in skipped["0.weight"]
    assert "run one forward pass" in skipped["0.weight"]
    assert "meta device" in skipped["1.weight"]
    assert [r.tensor.name for r in report.results] == ["2.weight", "2.bias"]

    from conftest import RunReader
    from markdown_tables import code_text

    reader = RunReader(tmp_path)
    summarized = [code_text(row["name"]) for row in reader.table("tbweights/overview")]
    assert summarized == ["2.weight", "2.bias"]
    # The reasons follow the table as a list, one item per skipped tensor.
    text = reader.text("tbweights/overview")
    assert "\n\nSkipped:\n\n- `0.weight`: " in text
    assert "- `1.bias`: is on the meta device" in text


def test_frozen_parameters_included(tmp_path) -> None:
    model = torch.nn.Linear(2, 2)
    model.weight.requires_grad_(False)
    report = log_weights(model, tmp_path)
    assert [r.tensor.name for r in report.results] == ["weight", "bias"]
    assert model.weight.requires_grad is False


def test_tied_parameters_logged_once(tmp_path) -> None:
    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(4, 3)
            self.head = torch.nn.Linear(3, 4, bias=False)
            self.head.weight = self.embed.weight

    report = log_weights(Tied(), tmp_path)
    assert [r.tensor.name for r in report.results] == ["embed.weight"]
    assert report.results[0].tensor.aliases == ("head.weight",)

    from conftest import RunReader

    assert "| also named | `head.weight` |" in RunReader(tmp_path).text("embed/weight/stats")


def test_empty_tensors_not_taken_for_tied(tmp_path) -> None:
    """Two empty tensors share data pointer 0; they are still two tensors."""
    path = tmp_path / "empty.pt"
    torch.save({"a": torch.zeros(0, 10), "b": torch.zeros(0, 10)}, path)
    from tbweights.checkpoints import read_checkpoint

    tensors = list(read_checkpoint(path))
    assert [(t.name, t.aliases) for t in tensors] == [("a", ()), ("b", ())]


def test_tied_tensors_in_checkpoint(tmp_path) -> None:
    path = tmp_path / "tied.pt"
    shared = torch.randn(3, 3)
    torch.save({"encoder.weight": shared, "decoder.weight": shared, "other": torch.randn(3, 3)}, path)
    from tbweights.checkpoints import read_checkpoint

    tensors = list(read_checkpoint(path))
    assert [(t.name, t.aliases) for t in tensors] == [("encoder.weight", ("decoder.weight",)), ("other", ())]


def test_dtensor_replicated_and_sharded() -> None:
    distributed = pytest.importorskip("torch.distributed")
    if not distributed.is_available():
        pytest.skip("torch.distributed is not built in")
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    distributed.init_process_group("gloo", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        values = torch.arange(6.0).reshape(2, 3)
        replicated = distribute_tensor(values, mesh, [Replicate()])
        sharded = distribute_tensor(values, mesh, [Shard(0)])
        assert isinstance(replicated, DTensor)
        assert compute_stats(replicated).max == 5.0
        assert compute_stats(sharded).max == 5.0  # one rank: the shard is the whole tensor
    finally:
        distributed.destroy_process_group()
