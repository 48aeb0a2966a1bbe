"""`log_weights` and `WeightWriter` on live models, read back with TensorBoard's reader."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
from tensorboard.plugins.histogram.summary_v2 import histogram_pb
from tensorboard.util import tensor_util

import tbweights
from markdown_tables import code_text, parse_table
from tbweights import WeightWriter, log_weights
from tbweights.summaries import NAME_LINE_WIDTH, OVERVIEW_COLUMNS, name_cell, overview_markdown

torch = pytest.importorskip("torch", reason="the torch extra is not installed")


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10), torch.nn.BatchNorm1d(10)
    )


def reference(values: np.ndarray) -> np.ndarray:
    return tensor_util.make_ndarray(histogram_pb("ref", values).value[0].tensor)


def test_import_does_not_load_frameworks() -> None:
    code = "import sys, tbweights; print('torch' in sys.modules, 'tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_module_tags_and_plugins(logdir, read_run) -> None:
    log_weights(mlp(), logdir, step=0)
    run = read_run(logdir)
    for tag in ("0/weight", "0/bias", "2/weight", "2/bias", "3/weight", "3/bias"):
        assert run.plugin(tag) == "histograms"
        assert run.plugin(tag + "/stats") == "text"
    assert run.plugin("tbweights/overview") == "text"
    assert "3/running_mean" not in run.tags


def test_module_histograms_equal_histogram_pb(logdir, read_run) -> None:
    model = mlp()
    log_weights(model, logdir)
    run = read_run(logdir)
    for name, param in model.named_parameters():
        tag = name.replace(".", "/")
        values = param.detach().numpy()
        histogram = run.value(tag)
        np.testing.assert_array_equal(histogram, reference(values))
        assert histogram[:, 2].sum() == values.size


def test_text_keeps_name_stats_and_first_values(logdir, read_run) -> None:
    model = mlp()
    log_weights(model, logdir, first=3)
    text = read_run(logdir).text("0/weight/stats")
    weight = model[0].weight.detach().numpy()
    assert "`0.weight`" in text
    assert "| shape | (128, 784) |" in text
    assert "| dtype | float32 |" in text
    assert "| count | 100352 |" in text
    first = ", ".join(f"{v:.6g}" for v in weight.reshape(-1)[:3].tolist())
    assert f"| first 3 (row-major) | {first} |" in text
    assert f"| mean | {weight.astype(np.float64).mean():.6g} |" in text


def test_overview_table_has_a_row_per_tensor(logdir, read_run) -> None:
    log_weights(mlp(), logdir)
    text = read_run(logdir).text("tbweights/overview")
    header, *rows = parse_table(text)
    assert header == list(OVERVIEW_COLUMNS)
    assert all(len(row) == len(header) for row in rows)
    names = [code_text(row[0]) for row in rows]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias", "3.weight", "3.bias"]
    assert "Skipped" not in text


LORA_NAME = "base_model.model.model.language_model.layers.0.self_attn.q_proj.base_layer.lora_A.default.weight"


def test_name_cell_wraps_long_names() -> None:
    cell = name_cell(LORA_NAME)
    lines = cell.split("<br>")
    assert len(lines) > 1
    assert all(len(code_text(line)) <= NAME_LINE_WIDTH for line in lines)
    assert code_text(cell) == LORA_NAME


def test_name_cell_breaks_after_separators() -> None:
    assert name_cell("fc1.weight") == "`fc1.weight`"
    assert name_cell("layers.0/fc1.weight") == "`layers.0/fc1.`<br>`weight`"
    assert name_cell("x" * 30 + ".b") == "`" + "x" * 30 + ".`<br>`b`"  # a long part stays whole


def test_overview_keeps_long_names_whole(logdir, read_run) -> None:
    names = [LORA_NAME, LORA_NAME.replace("lora_A", "lora_B"), "head/w|odd`name"]
    log_weights({name: np.ones((2, 3), np.float32) for name in names}, logdir)
    rows = parse_table(read_run(logdir).text("tbweights/overview"))[1:]
    assert [code_text(row[0]) for row in rows] == names


def test_overview_row_matches_statistics(logdir, read_run) -> None:
    model = mlp()
    report = log_weights(model, logdir)
    rows = {code_text(row["name"]): row for row in read_run(logdir).table("tbweights/overview")}
    stats = next(r.stats for r in report.results if r.tensor.name == "2.weight")
    assert rows["2.weight"]["shape"] == "(10, 128)"
    assert rows["2.weight"]["dtype"] == "float32"
    assert rows["2.weight"]["mean"] == f"{stats.mean:.6g}"
    assert rows["2.weight"]["max"] == f"{stats.max:.6g}"
    assert rows["2.weight"]["non-finite"] == "0"


def test_overview_lists_skipped_under_table() -> None:
    rows = [["`a|b`", "(2,)", "float32", "0", "1", "-1", "1", "0"]]
    text = overview_markdown(rows, [("odd|name`", "not readable: a | b\nc")])
    header, *parsed = parse_table(text)
    assert header == list(OVERVIEW_COLUMNS)
    assert [code_text(row[0]) for row in parsed] == ["a|b"]
    assert text.endswith("\n\nSkipped:\n\n- `` odd|name` ``: not readable: a \\| b\\nc")


def test_model_left_as_found() -> None:
    model = mlp().double().eval()
    model[2].weight.requires_grad_(False)
    before = copy.deepcopy(model.state_dict())
    with WeightWriter(sink=_NullSink()) as writer:
        writer.log(model, step=0)
    assert not model.training
    assert model[0].weight.dtype == torch.float64
    assert model[0].weight.requires_grad
    assert not model[2].weight.requires_grad
    assert model[0].weight.device.type == "cpu"
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_buffers_by_option(logdir, read_run) -> None:
    log_weights(mlp(), logdir, include_buffers=True)
    tags = read_run(logdir).tags
    assert "3/running_mean" in tags
    assert "3/num_batches_tracked" in tags


def test_include_and_exclude(logdir, read_run) -> None:
    log_weights(mlp(), logdir, include=["*.weight"], exclude=["3.*"])
    histogram_tags = [t for t in read_run(logdir).tags if read_run(logdir).plugin(t) == "histograms"]
    assert histogram_tags == ["0/weight", "2/weight"]


def test_several_steps_in_one_run(logdir, read_run) -> None:
    model = mlp()
    with WeightWriter(logdir) as writer:
        for step in (0, 10, 20):
            writer.log(model, step=step)
            with torch.no_grad():
                model[0].weight.mul_(2.0)
    run = read_run(logdir)
    assert run.steps("0/weight") == [0, 10, 20]
    assert run.steps("tbweights/overview") == [0, 10, 20]
    assert run.value("0/weight", 20)[-1, 1] == pytest.approx(4 * run.value("0/weight", 0)[-1, 1])
    assert len(list(logdir.iterdir())) == 1


def test_state_dict_and_numpy_mapping(logdir, read_run) -> None:
    state = mlp().state_dict()
    arrays = {"enc.w": np.ones((2, 3), np.float32), "enc": {"b": np.arange(3)}}
    log_weights(state, logdir / "torch")
    log_weights(arrays, logdir / "numpy")
    assert "3/running_var" in read_run(logdir / "torch").tags
    numpy_run = read_run(logdir / "numpy")
    assert "enc/w" in numpy_run.tags
    assert "enc/b" in numpy_run.tags


def test_single_array(logdir, read_run) -> None:
    report = log_weights(np.linspace(-1, 1, 100), logdir)
    assert [r.tensor.name for r in report.results] == ["tensor"]
    assert read_run(logdir).value("tensor")[:, 2].sum() == 100


def test_tied_weights_logged_once(logdir, read_run) -> None:
    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(20, 4)
            self.head = torch.nn.Linear(4, 20, bias=False)
            self.head.weight = self.embed.weight

    report = log_weights(Tied(), logdir)
    assert [r.tensor.name for r in report.results] == ["embed.weight"]
    assert report.results[0].tensor.aliases == ("head.weight",)
    assert "`head.weight`" in read_run(logdir).text("embed/weight/stats")


def test_bfloat16_module(logdir, read_run) -> None:
    model = torch.nn.Linear(8, 4).to(torch.bfloat16)
    log_weights(model, logdir)
    values = model.weight.detach().float().numpy()
    np.testing.assert_array_equal(read_run(logdir).value("weight"), reference(values))
    assert "| dtype | bfloat16 |" in read_run(logdir).text("weight/stats")


def test_unsupported_model_type(tmp_path) -> None:
    with pytest.raises(tbweights.UnsupportedModelError, match="builtins.object"):
        log_weights(object(), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_invalid_options_fail_before_writing(tmp_path) -> None:
    with pytest.raises(ValueError, match="buckets must be between 1 and"):
        WeightWriter(tmp_path / "x", buckets=0)
    assert not (tmp_path / "x").exists()


class _NullSink:
    def write_summary(self, step, values) -> None:
        self.last = (step, values)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_pattern_string_is_one_pattern(logdir) -> None:
    report = log_weights({"fc.weight": np.ones(2), "other": np.ones(2), "cat": np.ones(2)}, logdir, include="fc*")
    assert [r.tensor.name for r in report.results] == ["fc.weight"]


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"first": 1.5}, TypeError, "first must be an int, got 1.5"),
        ({"buckets": "3"}, TypeError, "buckets must be an int"),
        ({"buckets": 10**7}, ValueError, "buckets must be between 1 and 10000"),
        ({"first": -1}, ValueError, "first must be 0 or more"),
    ],
)
def test_invalid_option_values(tmp_path, options, error, message) -> None:
    with pytest.raises(error, match=message):
        WeightWriter(tmp_path / "run", **options)
