"""`tbweights show` as users and scripts run it: table, JSON Lines and CSV."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from tbweights.convert import describe
from tbweights.show_format import ELLIPSIS, INIT_FIELDS, INIT_TABLE, SHOW_FIELDS, SHOW_TABLE, Column

LONG = "encoder.layers.11.attention.self.query.weight"


def show(*args: str, columns: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    command = [sys.executable, "-m", "tbweights", "show", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False)


@pytest.fixture(scope="module")
def tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    with_nonfinite = rng.standard_normal((3, 4)).astype(np.float32)
    with_nonfinite[0, 1] = np.nan
    with_nonfinite[1, 0] = np.inf
    with_nonfinite[2, 3] = -np.inf
    return {
        LONG: (rng.standard_normal((8, 6)) * 0.02).astype(np.float32),
        "encoder.layers.11.attention.self.query.bias": np.zeros(6, np.float32),
        "head.weight": with_nonfinite,
        "embed.weight": rng.standard_normal((5, 2)).astype(np.float16),
        "steps": np.array([2**53 + 1, -7, 0], np.int64),
        "mask": np.array([True, False, True]),
        "scale": np.array(1e-7, np.float64),
    }


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tensors) -> str:
    path = tmp_path_factory.mktemp("show") / "model.safetensors"
    save_file(tensors, str(path))
    return str(path)


def expected_first(array: np.ndarray, n: int) -> list[object]:
    """The first n values in C order, as `--format json` writes them."""
    values = []
    for value in array.ravel(order="C")[:n].tolist():
        if isinstance(value, float) and math.isnan(value):
            value = "NaN"
        elif isinstance(value, float) and math.isinf(value):
            value = "Infinity" if value > 0 else "-Infinity"
        values.append(value)
    return values


def reject_constant(name: str) -> None:
    raise ValueError(f"bare {name} in JSON output")


def column_spans(header: str, columns: tuple[Column, ...]) -> list[tuple[int, int]]:
    spans, position = [], 0
    for column in columns:
        start = header.index(column.title, position)
        spans.append((start, start + len(column.title)))
        position = start + len(column.title)
    return spans


def assert_aligned(lines: list[str], columns: tuple[Column, ...]) -> None:
    """Left-aligned columns start, and right-aligned ones end, at the header's offsets in every row."""
    spans = column_spans(lines[0], columns)
    for line in lines[1:]:
        for column, (start, end) in zip(columns, spans, strict=True):
            if not line[start:end].strip():
                continue  # an empty cell, such as a bias's fan in/out
            if column.right:
                assert line[end - 1] != " ", (column.title, line)
                assert end == len(line) or line[end : end + 2] == "  ", (column.title, line)
            else:
                assert line[start] != " ", (column.title, line)
                assert start == 0 or line[start - 2 : start] == "  ", (column.title, line)


def test_table_columns_aligned(checkpoint, tensors) -> None:
    result = show(checkpoint, columns=400)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 + len(tensors)
    assert_aligned(lines, SHOW_TABLE)
    assert sorted(line.split()[0] for line in lines[1:]) == sorted(tensors)


def test_table_numbers_for_reading(checkpoint) -> None:
    result = show(checkpoint, columns=400)
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "1 NaN, 1 +Inf, 1 -Inf" in rows["head.weight"]
    assert rows["head.weight"].split("-Inf")[1].split(", ")[1] == "nan"
    assert "1e-07" in rows["scale"]
    assert rows["steps"].endswith("9007199254740993, -7, 0")
    assert rows["mask"].endswith("True, False, True")


def test_table_fits_columns(checkpoint) -> None:
    result = show(checkpoint, columns=115)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 115
    assert "first values" not in lines[0]
    shortened = [line.split()[0] for line in lines[1:] if ELLIPSIS in line.split()[0]]
    assert shortened, result.stdout
    assert all(name.startswith("encoder.layers.") for name in shortened)
    assert any(name.endswith("weight") for name in shortened)
    assert any(name.endswith("bias") for name in shortened)
    assert_aligned(lines, tuple(c for c in SHOW_TABLE if c.title != "first values"))


def test_table_cuts_first_values_before_names(checkpoint) -> None:
    full = show(checkpoint, columns=400).stdout.splitlines()
    width = max(len(line) for line in full) - 10
    lines = show(checkpoint, columns=width).stdout.splitlines()
    assert max(len(line) for line in lines) <= width
    assert [line.split()[0] for line in lines] == [line.split()[0] for line in full]
    assert any(line.endswith(", " + ELLIPSIS) for line in lines)


def test_table_not_cut_when_piped(checkpoint) -> None:
    lines = show(checkpoint).stdout.splitlines()
    assert LONG in [line.split()[0] for line in lines]
    assert "first values" in lines[0]


def test_width_option_overrides_columns(checkpoint) -> None:
    assert LONG in show(checkpoint, "--width", "0", columns=60).stdout
    assert LONG not in show(checkpoint, "--width", "90", columns=400).stdout


def test_json_lines_match_checkpoint(checkpoint, tensors) -> None:
    result = show(checkpoint, "--format", "json", "--first", "100", columns=40)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line, parse_constant=reject_constant) for line in result.stdout.splitlines()]
    assert sorted(r["name"] for r in records) == sorted(tensors)
    for record in records:
        array = tensors[record["name"]]
        assert list(record) == list(SHOW_FIELDS)
        assert record["shape"] == list(array.shape)
        assert record["dtype"] == str(array.dtype)
        assert record["count"] == array.size
        assert record["first"] == expected_first(array, 100)
        assert record["error"] is None


def test_json_non_finite_values(checkpoint, tensors) -> None:
    lines = show(checkpoint, "--format", "json").stdout.splitlines()
    record = next(r for r in map(json.loads, lines) if r["name"] == "head.weight")
    finite = tensors["head.weight"][np.isfinite(tensors["head.weight"])].astype(np.float64)
    assert (record["nan"], record["posinf"], record["neginf"]) == (1, 1, 1)
    assert record["first"][1] == "NaN"
    assert record["mean"] == pytest.approx(finite.mean(), rel=1e-12)
    assert record["min"] == finite.min()
    assert record["max"] == finite.max()


def test_csv_matches_checkpoint(checkpoint, tensors) -> None:
    result = show(checkpoint, "--format", "csv", "--first", "3")
    assert result.returncode == 0, result.stderr
    reader = csv.DictReader(io.StringIO(result.stdout))
    assert reader.fieldnames == list(SHOW_FIELDS)
    rows = list(reader)
    assert sorted(row["name"] for row in rows) == sorted(tensors)
    for row in rows:
        array = tensors[row["name"]]
        assert json.loads(row["shape"]) == list(array.shape)
        assert row["dtype"] == str(array.dtype)
        assert int(row["count"]) == array.size
        assert json.loads(row["first"]) == expected_first(array, 3)
        assert row["error"] == ""
    head = next(row for row in rows if row["name"] == "head.weight")
    assert (head["nan"], head["posinf"], head["neginf"]) == ("1", "1", "1")
    assert float(head["max"]) == np.nanmax(np.where(np.isinf(tensors["head.weight"]), np.nan, tensors["head.weight"]))


@pytest.fixture(scope="module")
def with_bad_tensor(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("bad") / "mixed.npz"
    np.savez(path, w=np.arange(6, dtype=np.float32).reshape(2, 3), labels=np.array(["a", "bc"]))
    return str(path)


def test_describe_skips_unselected_tensors(with_bad_tensor) -> None:
    rows = list(describe(with_bad_tensor, select=lambda name: name != "labels"))
    assert [tensor.name for tensor, _ in rows] == ["w"]
    assert not isinstance(rows[0][1], str)


def test_excluded_bad_tensor_is_not_read(with_bad_tensor) -> None:
    result = show(with_bad_tensor, "--exclude", "labels")
    assert result.returncode == 0
    assert "labels" not in result.stderr


@pytest.mark.parametrize("output_format", ["json", "csv"])
def test_failed_tensor_is_a_row(with_bad_tensor, output_format) -> None:
    result = show(with_bad_tensor, "--format", output_format)
    assert result.returncode == 1
    if output_format == "json":
        rows = [json.loads(line) for line in result.stdout.splitlines()]
    else:
        rows = list(csv.DictReader(io.StringIO(result.stdout)))
    by_name = {row["name"]: row for row in rows}
    assert sorted(by_name) == ["labels", "w"]
    assert "not numbers" in by_name["labels"]["error"]
    assert by_name["w"]["error"] in (None, "")
    assert "could not summarize tensor 'labels'" in result.stderr
    assert "1 tensor(s) could not be summarized" in result.stderr


def test_failed_tensor_warns_in_table(with_bad_tensor) -> None:
    result = show(with_bad_tensor)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["name", "w", "labels"]
    assert "not numbers" in lines[2]
    assert lines[2].split()[4:9] == ["-"] * 5
    assert "error: 1 tensor(s) skipped" in result.stderr


def test_empty_csv_has_header(checkpoint) -> None:
    result = show(checkpoint, "--format", "csv", "--include", "no-such-*")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [",".join(SHOW_FIELDS)]
    assert "no tensor in" in result.stderr
    assert "matched the --include/--exclude patterns" in result.stderr


def test_json_into_closed_pipe(checkpoint) -> None:
    command = f"{sys.executable} -m tbweights show {checkpoint} --format json | head -c 10"
    result = subprocess.run(command, shell=True, capture_output=True, text=True, check=False)
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def zero_init(tmp_path_factory) -> str:
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("init") / "model.safetensors"
    save_file(
        {
            "fc1.weight": rng.uniform(-0.125, 0.125, (32, 64)).astype(np.float32),
            "fc1.bias": np.zeros(32, np.float32),
            "fc2.weight": np.zeros((10, 32), np.float32),
        },
        str(path),
    )
    return str(path)


def test_check_init_table(zero_init) -> None:
    result = show(zero_init, "--check-init", columns=400)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert_aligned(lines[:-1], INIT_TABLE)
    assert lines[-1].startswith("init check: ")
    assert "broken" in next(line for line in lines if line.startswith("fc2.weight "))


def test_check_init_json(zero_init) -> None:
    result = show(zero_init, "--check-init", "--format", "json")
    assert result.returncode == 1
    assert "see the verdict field" in result.stderr
    records = {r["name"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert sorted(records) == ["fc1.bias", "fc1.weight", "fc2.weight"]
    assert list(records["fc2.weight"]) == list(INIT_FIELDS)
    assert records["fc2.weight"]["verdict"] == "broken"
    assert records["fc2.weight"]["shape"] == [10, 32]
    assert records["fc1.weight"]["measured_bounds"][1] <= 0.125
    assert records["fc1.weight"]["error"] is None


def test_check_init_csv(zero_init) -> None:
    result = show(zero_init, "--check-init", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    by_name = {row["name"]: row for row in rows}
    assert sorted(by_name) == ["fc1.bias", "fc1.weight", "fc2.weight"]
    assert by_name["fc2.weight"]["verdict"] == "broken"
    assert json.loads(by_name["fc1.weight"]["shape"]) == [32, 64]
    assert "init check" not in result.stdout
