"""The ONNX reader on models written by the `onnx` library and by `torch.onnx.export`."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
from onnx import TensorProto, helper, numpy_helper

from tbweights.checkpoints import LoadOptions, detect, read_checkpoint
from tbweights.convert import convert, describe
from tbweights.errors import CheckpointError
from tbweights.stats import as_numpy, compute_stats
from tbweights.tags import clean_tag

LONG_NAME = (
    "/encoder/layer.0/attention/self/query/MatMul;/encoder/layer.0/attention/self/key/MatMul;"
    "/encoder/layer.0/attention/self/value/MatMul;/encoder/layer.0/attention/output/dense/MatMul_fused_weight"
)


def tbweights(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tbweights", *args], capture_output=True, text=True)


def loaded(path: Path, **options: Any) -> dict[str, np.ndarray]:
    return {t.name: np.asarray(as_numpy(t.load())) for t in read_checkpoint(path, LoadOptions(**options))}


def save(model: Any, path: Path, **kwargs: Any) -> Path:
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path), **kwargs)
    return path


def make_model(graph: Any) -> Any:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def assert_run_matches(logdir: Path, expected: dict[str, np.ndarray], read_run: Any) -> None:
    """Each expected tensor has a histogram equal to its own statistics and a text naming it."""
    run = read_run(logdir)
    histogram_tags = sorted(tag for tag in run.tags if run.plugin(tag) == "histograms")
    assert histogram_tags == sorted(clean_tag(name) for name in expected)
    for name, array in expected.items():
        histogram = run.value(clean_tag(name))
        assert histogram[:, 2].sum() == array.size, name
        np.testing.assert_array_equal(histogram, compute_stats(array).histogram, err_msg=name)
        assert name in run.text(clean_tag(name) + "/stats")


# --- models built with onnx.helper ------------------------------------------------


def linear_graph(weight: np.ndarray, bias: np.ndarray, shape_values: list[int]) -> Any:
    """x @ weight + bias, then a Reshape whose shape is an int64 Constant node."""
    nodes = [
        helper.make_node("MatMul", ["x", LONG_NAME], ["h"], name="/encoder/MatMul"),
        helper.make_node("Add", ["h", "bias"], ["y"], name="/encoder/Add"),
        helper.make_node(
            "Constant", [], ["/Constant_output_0"], name="/Constant",
            value=numpy_helper.from_array(np.array(shape_values, np.int64)),
        ),
        helper.make_node("Reshape", ["y", "/Constant_output_0"], ["z"], name="/Reshape"),
        helper.make_node("Constant", [], ["/scale"], name="/ScaleConst", value_float=0.5),
        helper.make_node("Constant", [], ["/offsets"], name="/OffsetConst", value_floats=[0.25, -1.5, 3.0]),
        helper.make_node("Constant", [], ["/axis"], name="/AxisConst", value_int=1),
        helper.make_node("Mul", ["z", "/scale"], ["out"], name="/Mul"),
    ]
    rows, cols = weight.shape
    return helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 2])],
        initializer=[numpy_helper.from_array(weight, LONG_NAME), numpy_helper.from_array(bias, "bias")],
    )


@pytest.fixture
def linear(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((6, 4)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    path = save(make_model(linear_graph(weight, bias, [2, 2])), tmp_path / "linear.onnx")
    expected = {
        LONG_NAME: weight,
        "bias": bias,
        "/scale": np.array(0.5, np.float32),
        "/offsets": np.array([0.25, -1.5, 3.0], np.float32),
    }
    return path, expected


def test_detects_onnx_by_suffix_and_content(linear) -> None:
    path, _ = linear
    assert detect(path).name == "onnx"


@pytest.mark.parametrize("new_name", ["model.bin", "model"])
def test_renamed_model_error_names_suffix(linear, new_name) -> None:
    path, _ = linear
    renamed = path.rename(path.with_name(new_name))
    with pytest.raises(CheckpointError, match="if it is an ONNX model, give it the .onnx suffix"):
        list(read_checkpoint(renamed))


def test_initializers_and_constants(linear) -> None:
    path, expected = linear
    tensors = loaded(path)
    assert list(tensors) == list(expected)
    for name, array in expected.items():
        np.testing.assert_array_equal(tensors[name], array)
        assert tensors[name].dtype == array.dtype


def test_integer_constants_by_option(linear) -> None:
    path, _ = linear
    tensors = loaded(path, include_constants=True)
    np.testing.assert_array_equal(tensors["/Constant_output_0"], [2, 2])
    assert tensors["/axis"].shape == ()
    assert tensors["/axis"].dtype == np.int64


def test_integer_constant_rule(tmp_path: Path) -> None:
    tensors = {
        "shape": np.array([2, 2], np.int64),  # small 1-D int64: left out
        "axis": np.array(0, np.int32),  # int32 scalar: left out
        "bias_q": np.arange(4, dtype=np.int32),  # small, but quantized data of DequantizeLinear: kept
        "positions": np.arange(65, dtype=np.int64),  # more than 64 elements: kept
        "table": np.ones((2, 2), np.int64),  # two dimensions: kept
        "codes": np.arange(4, dtype=np.int8),  # int8: kept
    }
    graph = helper.make_graph(
        [
            helper.make_node("DequantizeLinear", ["bias_q", "scale"], ["bias"]),
            helper.make_node("Reshape", ["x", "shape"], ["y"]),
        ],
        "rule",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2]),
         helper.make_tensor_value_info("bias", TensorProto.FLOAT, [4])],
        initializer=[numpy_helper.from_array(v, k) for k, v in tensors.items()]
        + [numpy_helper.from_array(np.array(0.1, np.float32), "scale")],
    )
    path = save(make_model(graph), tmp_path / "rule.onnx")
    assert list(loaded(path)) == ["bias_q", "positions", "table", "codes", "scale"]
    assert list(loaded(path, include_constants=True)) == [*tensors, "scale"]


def test_constant_notes(linear) -> None:
    path, _ = linear
    notes = {t.name: t.note for t in read_checkpoint(path)}
    assert notes["bias"] == ""
    assert notes["/scale"] == "Constant node"


def test_convert_reads_back(linear, logdir: Path, read_run: Any) -> None:
    path, expected = linear
    report = convert([path], logdir)
    assert report.failed == []
    (_, step_report), = report.steps
    assert step_report.skipped == []
    assert_run_matches(logdir, expected, read_run)


def test_long_names_give_readable_tags(linear, logdir: Path, read_run: Any) -> None:
    path, _ = linear
    convert([path], logdir)
    tag = clean_tag(LONG_NAME)
    assert len(tag) <= 200
    assert tag.startswith("encoder/layer.0/attention/self/query/MatMul_")
    assert tag.endswith("/MatMul_fused_weight")
    assert ";" not in tag
    assert LONG_NAME in read_run(logdir).text(tag + "/stats")


def test_similar_long_names_stay_apart(tmp_path: Path, logdir: Path, read_run: Any) -> None:
    # The names differ only in `;` against `:`, which both clean to `_`, and share 200 characters.
    first = LONG_NAME + ";/encoder/layer.0/output/LayerNorm/Mul"
    second = first.replace(";", ":")
    graph = helper.make_graph(
        [helper.make_node("Add", [first, second], ["y"])],
        "long",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        initializer=[
            numpy_helper.from_array(np.array([1.0, 2.0], np.float32), first),
            numpy_helper.from_array(np.array([3.0, 4.0], np.float32), second),
        ],
    )
    convert([save(make_model(graph), tmp_path / "long.onnx")], logdir)
    run = read_run(logdir)
    histograms = sorted(tag for tag in run.tags if run.plugin(tag) == "histograms")
    assert len(histograms) == 2
    assert histograms[0] != histograms[1]
    assert all(len(tag) <= 210 for tag in histograms)
    texts = [run.text(tag + "/stats") for tag in histograms]
    assert sorted(name for name in (first, second) if any(name in text for text in texts)) == sorted([first, second])


def test_sparse_initializer_densified(tmp_path: Path) -> None:
    values = numpy_helper.from_array(np.array([1.5, -2.0, 4.0], np.float32), "sparse_w")
    flat = numpy_helper.from_array(np.array([1, 5, 11], np.int64), "flat")
    coords = numpy_helper.from_array(np.array([[0, 1], [1, 0]], np.int64), "coords")
    values_2d = numpy_helper.from_array(np.array([7.0, 8.0], np.float32), "sparse_c")
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "sparse",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        sparse_initializer=[
            helper.make_sparse_tensor(values, flat, [3, 4]),
            helper.make_sparse_tensor(values_2d, coords, [2, 2]),
        ],
    )
    tensors = loaded(save(make_model(graph), tmp_path / "sparse.onnx"))
    expected = np.zeros(12, np.float32)
    expected[[1, 5, 11]] = [1.5, -2.0, 4.0]
    np.testing.assert_array_equal(tensors["sparse_w"], expected.reshape(3, 4))
    np.testing.assert_array_equal(tensors["sparse_c"], [[0.0, 7.0], [8.0, 0.0]])


# --- subgraphs ------------------------------------------------------------------


def branch(name: str, value: np.ndarray) -> Any:
    """A subgraph that returns x + an initializer of its own plus a Constant node."""
    return helper.make_graph(
        [
            helper.make_node("Constant", [], [f"{name}_c"], value=numpy_helper.from_array(value * 2)),
            helper.make_node("Add", ["x", f"{name}_w"], [f"{name}_s"]),
            helper.make_node("Add", [f"{name}_s", f"{name}_c"], [f"{name}_out"]),
        ],
        name,
        [],
        [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [3])],
        initializer=[numpy_helper.from_array(value, f"{name}_w")],
    )


def test_if_branches_named_by_path(tmp_path: Path) -> None:
    then_value = np.array([1.0, 2.0, 3.0], np.float32)
    else_value = np.array([-1.0, -2.0, -3.0], np.float32)
    node = helper.make_node(
        "If", ["cond"], ["y"], name="/If_0",
        then_branch=branch("then", then_value), else_branch=branch("else", else_value),
    )
    graph = helper.make_graph(
        [node],
        "main",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )
    tensors = loaded(save(make_model(graph), tmp_path / "if.onnx"))
    assert sorted(tensors) == sorted(
        ["/If_0/then_branch/then_w", "/If_0/then_branch/then_c", "/If_0/else_branch/else_w", "/If_0/else_branch/else_c"]
    )
    np.testing.assert_array_equal(tensors["/If_0/then_branch/then_c"], then_value * 2)
    np.testing.assert_array_equal(tensors["/If_0/else_branch/else_w"], else_value)


def test_loop_and_scan_bodies_nested(tmp_path: Path) -> None:
    inner_value = np.arange(3, dtype=np.float32)
    inner_if = helper.make_node(
        "If", ["cond_in"], ["body_y"], then_branch=branch("t", inner_value), else_branch=branch("e", -inner_value)
    )
    loop_body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Constant", [], ["loop_c"], value=numpy_helper.from_array(np.full(3, 9.0, np.float32))),
            inner_if,
        ],
        "loop_body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("body_y", TensorProto.FLOAT, [3])],
    )
    scan_body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "scan_w"], ["s_out"])],
        "scan_body",
        [helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [3])],
        initializer=[numpy_helper.from_array(np.full(3, 0.5, np.float32), "scan_w")],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Loop", ["trips", "cond"], ["loop_y"], name="loop", body=loop_body),
            helper.make_node("Scan", ["x"], ["scan_y"], name="scan", body=scan_body, num_scan_inputs=1),
        ],
        "main",
        [helper.make_tensor_value_info("trips", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("loop_y", TensorProto.FLOAT, [None, 3]),
         helper.make_tensor_value_info("scan_y", TensorProto.FLOAT, [2, 3])],
    )
    tensors = loaded(save(make_model(graph), tmp_path / "loop.onnx"))
    assert sorted(tensors) == sorted([
        "loop/body/loop_c",
        "loop/body/If_2/then_branch/t_w",
        "loop/body/If_2/then_branch/t_c",
        "loop/body/If_2/else_branch/e_w",
        "loop/body/If_2/else_branch/e_c",
        "scan/body/scan_w",
    ])
    np.testing.assert_array_equal(tensors["loop/body/If_2/else_branch/e_c"], -inner_value * 2)


def test_function_constants_prefixed(tmp_path: Path) -> None:
    bias = np.array([0.5, -0.5], np.float32)
    function = helper.make_function(
        "custom",
        "AddBias",
        ["x"],
        ["y"],
        [
            helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(bias)),
            helper.make_node("Add", ["x", "b"], ["y"]),
        ],
        opset_imports=[helper.make_opsetid("", 17)],
    )
    graph = helper.make_graph(
        [helper.make_node("AddBias", ["x"], ["y"], domain="custom")],
        "main",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(
        graph, functions=[function],
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)],
    )
    tensors = loaded(save(model, tmp_path / "function.onnx"))
    assert list(tensors) == ["function:AddBias/b"]
    np.testing.assert_array_equal(tensors["function:AddBias/b"], bias)


def test_equal_names_made_unique(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(np.ones(2, np.float32))),
            helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(np.zeros(2, np.float32))),
        ],
        "dup",
        [],
        [helper.make_tensor_value_info("w", TensorProto.FLOAT, [2])],
    )
    path = tmp_path / "dup.onnx"
    onnx.save_model(make_model(graph), str(path))  # not SSA, so the checker would reject it
    tensors = loaded(path)
    assert list(tensors) == ["w", "w#2"]
    np.testing.assert_array_equal(tensors["w#2"], [0.0, 0.0])


# --- dtypes -----------------------------------------------------------------------


def dtype_model(tmp_path: Path, tensors: list[Any]) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "dtypes",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        initializer=tensors,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    return save(model, tmp_path / "dtypes.onnx")


DTYPE_CASES = [
    ("f16", np.float16, TensorProto.FLOAT16, "float16"),
    ("bf16", ml_dtypes.bfloat16, TensorProto.BFLOAT16, "bfloat16"),
    ("f8e4m3", ml_dtypes.float8_e4m3fn, TensorProto.FLOAT8E4M3FN, "float8_e4m3fn"),
    ("f8e5m2", ml_dtypes.float8_e5m2, TensorProto.FLOAT8E5M2, "float8_e5m2"),
    ("f8e4m3fnuz", ml_dtypes.float8_e4m3fnuz, TensorProto.FLOAT8E4M3FNUZ, "float8_e4m3fnuz"),
    ("f64", np.float64, TensorProto.DOUBLE, "float64"),
    ("i8", np.int8, TensorProto.INT8, "int8"),
    ("u16", np.uint16, TensorProto.UINT16, "uint16"),
]


@pytest.mark.parametrize("raw", [True, False], ids=["raw_data", "typed_fields"])
def test_dtypes_round_trip(tmp_path: Path, raw: bool) -> None:
    base = np.array([[0.5, -1.25, 2.0], [3.5, 0.0, -0.75]], np.float32)
    tensors, expected = [], {}
    for name, numpy_type, code, shown in DTYPE_CASES:
        values = base.astype(numpy_type)
        tensors.append(helper.make_tensor(name, code, values.shape, values.tobytes() if raw else values, raw=raw))
        expected[name] = (values, shown)
    flags = np.array([True, False, True])
    tensors.append(helper.make_tensor("flags", TensorProto.BOOL, [3], flags.tobytes() if raw else flags, raw=raw))
    path = dtype_model(tmp_path, tensors)
    records = {t.name: t for t in read_checkpoint(path)}
    for name, (values, shown) in expected.items():
        assert records[name].dtype == shown
        array = records[name].load()
        assert array.dtype == values.dtype, name
        np.testing.assert_array_equal(array.astype(np.float64), values.astype(np.float64), err_msg=name)
    np.testing.assert_array_equal(records["flags"].load(), flags)


def test_bfloat16_in_int32_data(tmp_path: Path) -> None:
    values = np.array([1.5, -2.0, 0.0078125], ml_dtypes.bfloat16)
    tensor = TensorProto(name="bf", data_type=TensorProto.BFLOAT16, dims=[3])
    tensor.int32_data.extend(values.view(np.uint16).astype(np.int32).tolist())
    tensors = loaded(dtype_model(tmp_path, [tensor]))
    assert tensors["bf"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(tensors["bf"].astype(np.float32), values.astype(np.float32))


@pytest.mark.parametrize("raw", [True, False], ids=["raw_data", "typed_fields"])
def test_int4_widened_to_int8(tmp_path: Path, raw: bool) -> None:
    if not hasattr(TensorProto, "INT4"):
        pytest.skip(f"onnx {onnx.__version__} has no INT4 type (added in onnx 1.16)")
    signed = [-8, -1, 0, 1, 5, 7]
    unsigned = [0, 3, 15, 9, 2]
    # Two values per byte, the first in the low nibble; an odd count leaves the last high nibble 0.
    signed_bytes, unsigned_bytes = bytes([0xF8, 0x10, 0x75]), bytes([0x30, 0x9F, 0x02])
    tensors = [
        helper.make_tensor("i4", TensorProto.INT4, [2, 3], signed_bytes if raw else signed, raw=raw),
        helper.make_tensor("u4", TensorProto.UINT4, [5], unsigned_bytes if raw else unsigned, raw=raw),
    ]
    path = dtype_model(tmp_path, tensors)
    records = {t.name: t for t in read_checkpoint(path)}
    assert records["i4"].dtype == "int4"
    assert records["i4"].shape == (2, 3)
    i4 = records["i4"].load()
    assert i4.dtype == np.int8
    np.testing.assert_array_equal(i4, np.reshape(signed, (2, 3)))
    u4 = records["u4"].load()
    assert u4.dtype == np.uint8
    np.testing.assert_array_equal(u4, unsigned)
    stats = dict(describe(path))
    assert [s.count for s in stats.values()] == [6, 5]


def test_packed_floats_and_int2(tmp_path: Path) -> None:
    if not hasattr(TensorProto, "INT2"):
        pytest.skip(f"onnx {onnx.__version__} has no INT2 type (added in onnx 1.20)")
    floats = np.array([0.5, -1.0, 6.0, 1.5, 0.0], ml_dtypes.float4_e2m1fn)
    tensors = [
        numpy_helper.from_array(floats, "f4"),
        helper.make_tensor("i2", TensorProto.INT2, [5], [1, -2, 0, 1, -1]),
    ]
    records = {t.name: t for t in read_checkpoint(dtype_model(tmp_path, tensors))}
    assert records["f4"].dtype == "float4_e2m1fn"
    np.testing.assert_array_equal(records["f4"].load().astype(np.float32), [0.5, -1.0, 6.0, 1.5, 0.0])
    assert records["i2"].dtype == "int2"
    np.testing.assert_array_equal(records["i2"].load(), [1, -2, 0, 1, -1])


def test_string_tensor_reported(tmp_path: Path) -> None:
    words = helper.make_tensor("vocab", TensorProto.STRING, [2], [b"a", b"b"])
    weight = numpy_helper.from_array(np.ones(2, np.float32), "w")
    described = dict(describe(dtype_model(tmp_path, [words, weight])))
    reasons = {t.name: s for t, s in described.items()}
    assert isinstance(reasons["vocab"], str)
    assert "string" in reasons["vocab"]
    assert reasons["w"].count == 2


# --- external data -------------------------------------------------------------------


@pytest.mark.parametrize("one_file", [True, False], ids=["one_file", "file_per_tensor"])
def test_external_data(tmp_path: Path, one_file: bool, logdir: Path, read_run: Any) -> None:
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((6, 4)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    folder = tmp_path / "model"
    folder.mkdir()
    path = save(
        make_model(linear_graph(weight, bias, [2, 2])), folder / "linear.onnx",
        save_as_external_data=True, all_tensors_to_one_file=one_file,
        location="linear.onnx.data" if one_file else None, size_threshold=0, convert_attribute=True,
    )
    # Files: the model, then one data file, or one per initializer and per Constant `value` tensor.
    assert len(list(folder.iterdir())) == (2 if one_file else 4)
    tensors = {t.name: t for t in read_checkpoint(path, LoadOptions(include_constants=True))}
    constant = next(n for n in onnx.load(str(path), load_external_data=False).graph.node if n.op_type == "Constant")
    assert constant.attribute[0].t.data_location == TensorProto.EXTERNAL
    np.testing.assert_array_equal(tensors["/Constant_output_0"].load(), [2, 2])
    array = tensors[LONG_NAME].load()
    np.testing.assert_array_equal(array, weight)
    assert not array.flags.owndata  # a view of the memory-mapped file
    np.testing.assert_array_equal(tensors["/offsets"].load(), [0.25, -1.5, 3.0])
    convert([path], logdir)
    assert_run_matches(logdir, {LONG_NAME: weight, "bias": bias, "/scale": np.array(0.5, np.float32),
                                "/offsets": np.array([0.25, -1.5, 3.0], np.float32)}, read_run)


def external_model(tmp_path: Path) -> tuple[Path, np.ndarray]:
    weight = np.arange(24, dtype=np.float32).reshape(6, 4)
    folder = tmp_path / "model"
    folder.mkdir()
    path = save(
        make_model(linear_graph(weight, np.ones(4, np.float32), [2, 2])), folder / "m.onnx",
        save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0,
    )
    return path, weight


def set_location(path: Path, tensor_name: str, location: str) -> None:
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        if tensor.name == tensor_name:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
    onnx.save_model(model, str(path))


def test_missing_external_file_keeps_others(tmp_path: Path) -> None:
    path, _ = external_model(tmp_path)
    set_location(path, "bias", "gone.bin")
    described = {t.name: s for t, s in describe(path)}
    assert "gone.bin" in described["bias"]
    assert "'bias'" in described["bias"]
    assert described[LONG_NAME].count == 24


def test_external_location_outside_folder_rejected(tmp_path: Path) -> None:
    path, weight = external_model(tmp_path)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.full(4, 7.0, np.float32).tobytes())
    set_location(path, "bias", "../secret.bin")
    bias = {t.name: t for t in read_checkpoint(path)}["bias"]
    with pytest.raises(CheckpointError, match="outside the model's folder.*--trust-checkpoint"):
        bias.load()
    trusted = {t.name: t for t in read_checkpoint(path, LoadOptions(trust=True))}
    np.testing.assert_array_equal(trusted["bias"].load(), np.full(4, 7.0, np.float32))
    set_location(path, "bias", str(secret))
    with pytest.raises(CheckpointError, match="outside the model's folder"):
        {t.name: t for t in read_checkpoint(path)}["bias"].load()


def test_truncated_external_data(tmp_path: Path) -> None:
    path, _ = external_model(tmp_path)
    model = onnx.load(str(path), load_external_data=False)
    location = next(e.value for t in model.graph.initializer if t.name == "bias" for e in t.external_data
                    if e.key == "location")
    data = path.parent / location
    data.write_bytes(data.read_bytes()[:8])
    with pytest.raises(CheckpointError, match="truncated"):
        {t.name: t for t in read_checkpoint(path)}["bias"].load()


# --- bad files and detection -------------------------------------------------------


def test_corrupt_onnx_clear_error(tmp_path: Path, linear) -> None:
    path, _ = linear
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match="not a valid ONNX model"):
        list(read_checkpoint(broken))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff\xfe not protobuf at all")
    with pytest.raises(CheckpointError, match="not a valid ONNX model"):
        list(read_checkpoint(garbage))


def test_model_without_graph_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"\x08\x07")  # ir_version 7 and nothing else: parses, but contains no graph
    assert detect(path).name == "onnx"
    with pytest.raises(CheckpointError, match="contains no graph"):
        list(read_checkpoint(path))


def test_missing_onnx_package_named(linear) -> None:
    path, _ = linear
    code = (
        "import sys; sys.modules['onnx'] = None\n"
        "from tbweights.cli import main\n"
        f"sys.exit(main(['show', {str(path)!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert "pip install 'tbweights[onnx]'" in result.stderr


def test_onnx_content_under_other_name_not_claimed(tmp_path: Path, linear) -> None:
    path, _ = linear
    other = tmp_path / "model.weights"
    other.write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        detect(other)


# --- torch.onnx.export and the CLI ---------------------------------------------------


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    torch = pytest.importorskip("torch", reason="the torch extra is not installed")

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.query = torch.nn.Linear(8, 8)
            self.norm = torch.nn.LayerNorm(8)
            self.conv = torch.nn.Conv1d(8, 4, 3)

        def forward(self, x: Any) -> Any:
            batch, time, channels = x.shape
            y = self.norm(self.query(x)).reshape(batch, time, 2, 4).reshape(batch, time, channels)
            return self.conv(y.transpose(1, 2)) * 0.5

    torch.manual_seed(0)
    block = Block().eval()
    path = tmp_path / "block.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated in torch 2.9+
        # dynamo=False: the default exporter needs the onnxscript package.
        torch.onnx.export(block, (torch.randn(2, 5, 8),), str(path), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "batch", 1: "time"}})
    model = onnx.load(str(path))
    expected = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return path, expected


def test_torch_export_weights(exported) -> None:
    path, initializers = exported
    tensors = loaded(path)
    for name, array in initializers.items():
        np.testing.assert_array_equal(tensors[name], array, err_msg=name)
    matmul = [name for name in initializers if name.startswith("onnx::MatMul_")]
    assert len(matmul) == 1  # the Linear's transposed weight
    scale = [name for name in tensors if name not in initializers]
    assert len(scale) == 1
    assert tensors[scale[0]].item() == 0.5
    assert not any(tensors[name].dtype == np.int64 for name in tensors)


def test_cli_convert_and_show(exported, tmp_path: Path, read_run: Any) -> None:
    path, initializers = exported
    result = tbweights("convert", str(path), "--logdir", str(tmp_path / "run"), "--step", "3", "-q")
    assert result.returncode == 0, result.stderr
    run = read_run(tmp_path / "run")
    for name, array in initializers.items():
        assert run.value(clean_tag(name), 3)[:, 2].sum() == array.size
    shown = tbweights("show", str(path), "--first", "3")
    assert shown.returncode == 0, shown.stderr
    assert "onnx::MatMul_" in shown.stdout
    assert "conv.weight" in shown.stdout
    assert "(4, 8, 3)" in shown.stdout
    assert "int64" not in shown.stdout
    with_constants = tbweights("show", str(path), "--include-constants")
    assert "int64" in with_constants.stdout


def test_cli_corrupt_onnx(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\x08\x07\x12\xff\xff\xff\x0f truncated")
    result = tbweights("show", str(path))
    assert result.returncode == 1
    assert "error:" in result.stderr
    assert "bad.onnx" in result.stderr
    assert "Traceback" not in result.stderr
