"""The initialization check on layers built with each scheme, and on deliberately broken ones."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest

from markdown_tables import code_text, parse_table
from tbweights import WeightWriter
from tbweights.initcheck import (
    MARKDOWN_COLUMNS,
    InitFinding,
    InitReport,
    Verdict,
    check_checkpoint,
    check_init,
    check_tensors,
    init_check_markdown,
)
from tbweights.initschemes import Layout, fans
from tbweights.stats import compute_stats
from tbweights.tensors import NamedTensor, guess_role

torch = pytest.importorskip("torch", reason="the torch extra is not installed")
nn = torch.nn


def linear(init: Callable[[torch.Tensor], object] | None = None, fan_in: int = 256, fan_out: int = 64) -> nn.Module:
    torch.manual_seed(0)
    layer = nn.Linear(fan_in, fan_out)
    if init is not None:
        with torch.no_grad():
            init(layer.weight)
    return layer


def conv(init: Callable[[torch.Tensor], object] | None = None) -> nn.Module:
    torch.manual_seed(0)
    layer = nn.Conv2d(16, 64, 3)  # fan_in 144, fan_out 576
    if init is not None:
        with torch.no_grad():
            init(layer.weight)
    return layer


# (layer, scheme name the check must report as closest)
CONSISTENT_CASES = {
    "linear default": (lambda: linear(), "PyTorch default U(±1/sqrt(fan_in))"),
    "xavier_uniform": (lambda: linear(nn.init.xavier_uniform_), "xavier_uniform / glorot_uniform"),
    "xavier_normal": (lambda: linear(nn.init.xavier_normal_), "xavier_normal"),
    "kaiming_uniform": (
        lambda: linear(lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu")),
        "kaiming_uniform (fan_in, relu) / he_uniform",
    ),
    "kaiming_normal": (
        lambda: linear(lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu")),
        "kaiming_normal (fan_in, relu)",
    ),
    "lecun_normal": (
        lambda: linear(lambda w: nn.init.kaiming_normal_(w, nonlinearity="linear")),
        "lecun_normal / kaiming_normal (fan_in, linear)",
    ),
    "lecun_uniform": (
        lambda: linear(lambda w: nn.init.kaiming_uniform_(w, nonlinearity="linear")),
        "lecun_uniform / kaiming_uniform (fan_in, linear)",
    ),
    "orthogonal": (lambda: linear(nn.init.orthogonal_), "orthogonal (gain 1)"),
    "orthogonal relu gain": (
        lambda: linear(lambda w: nn.init.orthogonal_(w, gain=math.sqrt(2.0))),
        "orthogonal (gain 1.41)",
    ),
    "normal 0.02": (lambda: linear(lambda w: nn.init.normal_(w, std=0.02)), "normal(0, 0.02) (GPT-2/BERT)"),
    "conv default": (lambda: conv(), "PyTorch default U(±1/sqrt(fan_in))"),
    "conv kaiming fan_out": (
        lambda: conv(lambda w: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")),
        "kaiming_normal (fan_out, relu)",
    ),
    "conv xavier_uniform": (lambda: conv(nn.init.xavier_uniform_), "xavier_uniform / glorot_uniform"),
}


@pytest.mark.parametrize("case", sorted(CONSISTENT_CASES))
def test_scheme_is_recognized(case: str) -> None:
    build, scheme = CONSISTENT_CASES[case]
    finding = check_init(build())["weight"]
    assert finding.scheme == scheme
    assert finding.verdict is Verdict.CONSISTENT, finding.reason


def test_default_layers_all_consistent() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, 128),
        nn.LayerNorm(128),
        nn.Conv2d(3, 16, 3),
        nn.BatchNorm2d(16),
        nn.Embedding(100, 32),
        nn.LSTM(8, 16),
        nn.MultiheadAttention(32, 4),
        nn.GroupNorm(4, 16),
    )
    report = check_init(model)
    assert report.counts()[Verdict.CONSISTENT] == len(report.findings)
    assert report["0.bias"].scheme == "PyTorch default U(±1/sqrt(fan_in))"
    assert report["1.weight"].scheme == "ones"
    assert report["1.bias"].scheme == "zeros"
    assert report["4.weight"].scheme == "PyTorch Embedding default normal(0, 1)"
    assert report["5.weight_hh_l0"].scheme == "PyTorch RNN default U(±1/sqrt(hidden_size))"
    assert report["6.in_proj_weight"].scheme == "xavier_uniform / glorot_uniform"
    assert report["0.weight"].layer == "torch.nn.Linear"
    assert not report["0.weight"].layer_inferred


def test_expected_and_measured_values() -> None:
    layer = linear()
    finding = check_init(layer)["weight"]
    bound = 1.0 / math.sqrt(256)
    weight = layer.weight.detach().numpy()
    assert finding.fan_in == 256
    assert finding.fan_out == 64
    assert finding.expected_std == pytest.approx(bound / math.sqrt(3.0))
    assert finding.expected_bounds == pytest.approx((-bound, bound))
    assert finding.measured_std == pytest.approx(float(weight.std()), rel=1e-5)
    assert finding.measured_bounds == pytest.approx((float(weight.min()), float(weight.max())))


def test_nan_is_broken() -> None:
    layer = linear()
    with torch.no_grad():
        layer.weight[3, 7] = float("nan")
        layer.weight[0, 0] = float("inf")
    finding = check_init(layer)["weight"]
    assert finding.verdict is Verdict.BROKEN
    assert "1 NaN, 1 +Inf" in finding.reason


def test_zero_weight_is_broken_zero_bias_is_not() -> None:
    layer = linear(nn.init.zeros_)
    nn.init.zeros_(layer.bias)
    report = check_init(layer)
    assert report["weight"].verdict is Verdict.BROKEN
    assert "all zeros" in report["weight"].reason
    assert report["bias"].verdict is Verdict.CONSISTENT
    assert report["bias"].scheme == "zeros"
    assert not report.ok


def test_constant_weight_is_broken() -> None:
    finding = check_init(linear(lambda w: nn.init.constant_(w, 0.5)))["weight"]
    assert finding.verdict is Verdict.BROKEN
    assert "every value is 0.5" in finding.reason


def test_gain_ten_times_too_large_is_broken() -> None:
    square = linear(lambda w: nn.init.kaiming_normal_(w), fan_in=128, fan_out=128)
    with torch.no_grad():
        square.weight.mul_(20.0)
    finding = check_init(square)["weight"]
    assert finding.verdict is Verdict.BROKEN
    assert "more than 10x off" in finding.reason


def test_wrong_gain_is_suspicious() -> None:
    # A hand-written He init with gain 2 where sqrt(2) was meant.
    layer = linear(lambda w: nn.init.normal_(w, std=2.0 / math.sqrt(128)), fan_in=128, fan_out=128)
    finding = check_init(layer)["weight"]
    assert finding.verdict is Verdict.SUSPICIOUS
    assert finding.scheme == "kaiming_normal (fan_in, relu)"
    assert "std is 1.41x" in finding.reason


def test_fan_out_on_dense_is_suspicious() -> None:
    # A hand-written He init that reads fan_in from shape[0], which is fan_out in PyTorch's (out, in).
    finding = check_init(linear(lambda w: nn.init.normal_(w, std=math.sqrt(2.0 / w.shape[0]))))["weight"]
    assert finding.verdict is Verdict.SUSPICIOUS
    assert finding.scheme == "kaiming_normal (fan_out, relu)"
    assert "fan_out" in finding.reason


def test_shifted_uniform_is_suspicious() -> None:
    finding = check_init(linear(lambda w: nn.init.uniform_(w, 0.0, 0.1)))["weight"]
    assert finding.verdict is Verdict.SUSPICIOUS
    assert "far from 0" in finding.reason


def test_random_norm_scale_is_suspicious() -> None:
    norm = nn.LayerNorm(64)
    nn.init.normal_(norm.weight)
    finding = check_init(norm)["weight"]
    assert finding.verdict is Verdict.SUSPICIOUS
    assert "ones" in finding.reason


def test_integer_buffer_is_unchecked() -> None:
    report = check_init(nn.BatchNorm1d(4), include_buffers=True)
    assert report["num_batches_tracked"].verdict is Verdict.UNCHECKED
    assert report["running_mean"].verdict is Verdict.UNCHECKED


def test_fans_follow_each_framework() -> None:
    assert fans((64, 16, 3, 3), Layout.TORCH) == (144, 576)  # OIHW
    assert fans((3, 3, 16, 64), Layout.KERAS) == (144, 576)  # HWIO
    assert fans((64, 256), Layout.TORCH) == (256, 64)  # (out, in)
    assert fans((256, 64), Layout.KERAS) == (256, 64)  # (in, out)
    assert fans((7,), Layout.TORCH) == (7, 7)


def test_checkpoint_layers_inferred(tmp_path) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 64), nn.LayerNorm(64), nn.Conv2d(3, 8, 3))
    nn.init.zeros_(model[0].weight)
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(model.state_dict(), str(path))
    report = check_checkpoint(path)
    assert report["0.weight"].verdict is Verdict.BROKEN
    assert report["0.weight"].layer_inferred
    assert report["0.weight"].layer.startswith("dense (inferred: 2-D weight")
    assert report["0.bias"].scheme == "PyTorch default U(±1/sqrt(fan_in))"
    assert report["0.bias"].verdict is Verdict.CONSISTENT
    assert report["1.weight"].scheme == "ones"
    assert report["2.weight"].scheme == "PyTorch default U(±1/sqrt(fan_in))"


def test_show_check_init_prints_table(tmp_path) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    model = linear()
    nn.init.zeros_(model.weight)
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(model.state_dict(), str(path))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-m", "tbweights", "show", "--check-init", str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert out.returncode == 1, out.stderr
    assert "error: some tensors have a broken initialization" in out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["name", "shape", "layer"]
    weight_line = next(line for line in lines if line.startswith("weight "))
    assert "broken" in weight_line
    assert lines[-1].startswith("init check: 1 consistent, 0 suspicious, 1 broken, 0 unchecked")


def test_writer_writes_report_at_first_step(logdir, read_run) -> None:
    model = linear()
    with WeightWriter(logdir, check_init=True) as writer:
        first = writer.log(model, step=0)
        second = writer.log(model, step=1)
    assert first.init_check is not None
    assert first.init_check["weight"].verdict is Verdict.CONSISTENT
    assert second.init_check is None
    run = read_run(logdir)
    assert run.plugin("tbweights/init_check") == "text"
    assert run.steps("tbweights/init_check") == [0]
    text = run.text("tbweights/init_check", 0)
    header, *_ = parse_table(text)
    assert header == list(MARKDOWN_COLUMNS)
    rows = run.table("tbweights/init_check", 0)
    assert [code_text(row["name"]) for row in rows] == ["weight", "bias"]
    assert rows[0]["layer"] == "Linear"
    assert rows[0]["verdict"] == "consistent"
    assert rows[0]["expected std"] == f"{first.init_check['weight'].expected_std:.6g}"


def keras_tensors(keras, layer, input_shape, use_layer_type):
    layer.build(input_shape)
    items = []
    for weight in layer.weights:
        values = np.asarray(weight.numpy())
        layer_type = f"keras.layers.{type(layer).__name__}" if use_layer_type else None
        tensor = NamedTensor(
            name=weight.path,
            shape=values.shape,
            dtype=str(values.dtype),
            load=lambda v=values: v,
            role=guess_role(weight.path, values.ndim),
            layer_type=layer_type,
        )
        items.append((tensor, compute_stats(values), values))
    return items


@pytest.mark.parametrize("use_layer_type", [True, False], ids=["layer type", "inferred"])
def test_keras_defaults_consistent(use_layer_type: bool) -> None:
    keras = pytest.importorskip("keras", reason="Keras is not installed")
    keras.utils.set_random_seed(0)
    cases = [
        (keras.layers.Dense(64, name="dense"), (4, 256)),
        (keras.layers.Dense(64, kernel_initializer="he_normal", name="he"), (4, 256)),
        (keras.layers.Conv2D(64, 3, name="conv"), (1, 8, 8, 16)),
        (keras.layers.Embedding(1000, 32, name="embedding"), (4,)),
        (keras.layers.LayerNormalization(name="norm"), (4, 64)),
        (keras.layers.Dense(64, kernel_initializer="orthogonal", name="orthogonal"), (4, 256)),
        (keras.layers.Dense(64, kernel_initializer="lecun_uniform", name="lecun"), (4, 256)),
        (keras.layers.Dense(64, kernel_initializer="glorot_normal", name="glorot_normal"), (4, 256)),
    ]
    items = []
    for layer, shape in cases:
        items += keras_tensors(keras, layer, shape, use_layer_type)
    report = check_tensors(items)
    assert report["dense/kernel"].scheme == "xavier_uniform / glorot_uniform"
    assert report["dense/kernel"].fan_in == 256
    assert report["dense/bias"].scheme == "zeros"
    assert report["he/kernel"].scheme == "he_normal (fan_in, Keras, truncated)"
    assert report["conv/kernel"].scheme == "xavier_uniform / glorot_uniform"
    assert (report["conv/kernel"].fan_in, report["conv/kernel"].fan_out) == (144, 576)
    assert report["embedding/embeddings"].scheme == "Keras Embedding default U(±0.05)"
    assert report["norm/gamma"].scheme == "ones"
    assert report["norm/beta"].scheme == "zeros"
    assert report["orthogonal/kernel"].scheme == "orthogonal (gain 1)"
    assert report["lecun/kernel"].scheme == "lecun_uniform / kaiming_uniform (fan_in, linear)"
    assert report["glorot_normal/kernel"].scheme == "glorot_normal (Keras, truncated)"
    assert report.counts()[Verdict.CONSISTENT] == len(report.findings)


def test_keras_kernel_read_as_torch_layout_is_flagged() -> None:
    keras = pytest.importorskip("keras", reason="Keras is not installed")
    keras.utils.set_random_seed(0)
    layer = keras.layers.Dense(64, name="dense")
    layer.build((4, 256))
    kernel = np.asarray(layer.kernel.numpy())  # (in, out) = (256, 64)
    # He init written for PyTorch's (out, in): it takes shape[1] = 64 as fan_in, which is Keras's fan_out.
    rng = np.random.default_rng(0)
    wrong = rng.normal(0.0, math.sqrt(2.0 / kernel.shape[1]), kernel.shape).astype(np.float32)
    tensor = NamedTensor(
        name="dense/kernel",
        shape=wrong.shape,
        dtype="float32",
        load=lambda: wrong,
        role=guess_role("dense/kernel", 2),
        layer_type="keras.layers.Dense",
    )
    finding = check_tensors([(tensor, compute_stats(wrong), wrong)])["dense/kernel"]
    assert finding.scheme == "kaiming_normal (fan_out, relu)"
    assert finding.verdict is Verdict.SUSPICIOUS


def test_live_keras_model() -> None:
    keras = pytest.importorskip("keras", reason="Keras is not installed")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(16, 3, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, kernel_initializer="zeros", name="head"),
        ]
    )
    report = check_init(model)
    by_leaf = {finding.name.split("/", 1)[1]: finding for finding in report.findings}
    assert by_leaf["conv/kernel"].scheme == "xavier_uniform / glorot_uniform"
    assert (by_leaf["conv/kernel"].fan_in, by_leaf["conv/kernel"].fan_out) == (27, 144)
    assert by_leaf["bn/gamma"].scheme == "ones"
    assert by_leaf["head/kernel"].verdict is Verdict.BROKEN
    assert by_leaf["head/bias"].verdict is Verdict.CONSISTENT


def test_check_init_on_sharded_checkpoint(tmp_path) -> None:
    """Sharded readers release a shard once past it; the check must still load every tensor."""
    import json

    safetensors_torch = pytest.importorskip("safetensors.torch")
    model = nn.Sequential(nn.Linear(8, 6), nn.Linear(6, 4))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    shards = {"model-00001-of-00002.safetensors": ["0.weight", "0.bias"],
              "model-00002-of-00002.safetensors": ["1.weight", "1.bias"]}
    for file_name, names in shards.items():
        safetensors_torch.save_file({n: state[n] for n in names}, str(tmp_path / file_name))
    weight_map = {n: f for f, names in shards.items() for n in names}
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True))
    report = check_checkpoint(tmp_path)
    assert [f.verdict for f in report.findings] == [Verdict.CONSISTENT] * 4


def test_scaled_default_names_the_default_ratio() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 128))
    with torch.no_grad():
        model[0].weight.mul_(10.0)
    finding = check_init(model)["0.weight"]
    assert finding.verdict is Verdict.SUSPICIOUS
    assert "x the layer's default" in finding.reason


def test_conv_default_beats_xavier_by_bounds() -> None:
    """A 3-channel conv's default init and Xavier have close stds; the bounds tell them apart."""
    picked = []
    for seed in range(10):
        torch.manual_seed(seed)
        finding = check_init(nn.Sequential(nn.Conv2d(3, 16, 3)))["0.weight"]
        picked.append(finding.scheme)
    assert picked.count("PyTorch default U(±1/sqrt(fan_in))") >= 8


def test_markdown_keeps_odd_names_and_reasons() -> None:
    def finding(name: str, verdict: Verdict, reason: str, inferred: bool) -> InitFinding:
        layer = "dense (inferred: 2-D weight; torch layout)" if inferred else "torch.nn.Linear"
        return InitFinding(
            name=name, shape=(2, 3), layer=layer, layer_inferred=inferred, fan_in=3, fan_out=2,
            scheme="PyTorch default U(±1/sqrt(fan_in))", default_scheme=None, expected_std=0.3,
            expected_bounds=None, measured_std=0.25, measured_bounds=(-0.5, 0.5), verdict=verdict, reason=reason,
        )  # fmt: skip

    report = InitReport(
        [
            finding("head.odd|name<b>", Verdict.SUSPICIOUS, "a | b\nc", inferred=True),
            finding("`tick`", Verdict.CONSISTENT, "", inferred=False),
        ]
    )
    text = init_check_markdown(report)
    header, *rows = parse_table(text)
    assert header == list(MARKDOWN_COLUMNS)
    assert [code_text(row[0]) for row in rows] == ["head.odd|name<b>", "`tick`"]
    assert [row[1] for row in rows] == ["dense\\*", "Linear"]
    assert rows[0][5] == "suspicious"
    notes = text.split("\n\n")[1:]
    assert notes[0] == "\\* layer inferred from the tensor's name and shape"
    # The reason stays on one line, its `|` escaped, and only findings with a reason get one.
    assert notes[1] == "- `head.odd|name<b>` (suspicious): a \\| b\\nc"
