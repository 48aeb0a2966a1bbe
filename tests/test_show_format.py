"""Number, name and table formatting of `tbweights show`."""

from __future__ import annotations

import math

import pytest

from tbweights.show_format import (
    ELLIPSIS,
    Column,
    format_count,
    format_number,
    json_number,
    render_table,
    shorten_end,
    shorten_middle,
    table_width,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "0"),
        (1.0, "1"),
        (0.12345678, "0.1235"),
        (-0.0012345, "-0.001234"),
        (0.00012345, "1.234e-04"),
        (12345.678, "12346"),
        (123456.7, "1.235e+05"),
        (1.7e308, "1.7e+308"),
        (math.nan, "nan"),
        (-math.inf, "-inf"),
        (3 + 4j, "3+4j"),
        (1 - 2.5j, "1-2.5j"),
        (True, "True"),
        (-128, "-128"),
        (None, "n/a"),
    ],
)
def test_format_number(value, text) -> None:
    assert format_number(value) == text


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0"), (9999, "9999"), (12345, "12.3k"), (999_999, "1M"), (2_359_296, "2.36M"), (7 * 10**9, "7B")],
)
def test_format_count(count, text) -> None:
    assert format_count(count) == text


NAME = "encoder.layers.11.attention.self.query.weight"


def test_shorten_middle_keeps_start_and_leaf() -> None:
    for width in range(25, len(NAME)):
        short = shorten_middle(NAME, width)
        assert len(short) == width, short
        assert short.startswith("encoder.layers.11."), short
        assert short.endswith(".weight") or short.endswith(ELLIPSIS + "weight"), short
        assert short.count(ELLIPSIS) == 1, short


def test_shorten_middle_examples() -> None:
    assert shorten_middle(NAME, 25) == "encoder.layers.11.…weight"
    assert shorten_middle(NAME, 40) == "encoder.layers.11.attention…query.weight"


def test_shorten_middle_leaves_short_names() -> None:
    assert shorten_middle(NAME, len(NAME)) == NAME
    assert shorten_middle("fc1.weight", 30) == "fc1.weight"


def test_shorten_middle_without_separator() -> None:
    short = shorten_middle("a" * 30 + "b" * 30, 21)
    assert short == "a" * 10 + ELLIPSIS + "b" * 10


def test_shorten_middle_tiny_widths() -> None:
    for width in range(0, 6):
        assert len(shorten_middle(NAME, width)) == width


def test_shorten_end_cuts_after_a_value() -> None:
    assert shorten_end("0.1, -0.2345, 0.3", 16) == "0.1, -0.2345, …"
    assert shorten_end("0.1, -0.2345, 0.3", 10) == "0.1, …"
    assert shorten_end("-0.123456789", 6) == "-0.12…"


def test_json_number_non_finite() -> None:
    assert json_number(math.nan) == "NaN"
    assert json_number(math.inf) == "Infinity"
    assert json_number(-math.inf) == "-Infinity"
    assert json_number(1 - 2j) == [1.0, -2.0]
    assert json_number(0.1) == 0.1


COLUMNS = (
    Column("name", shorten=shorten_middle, min_width=10),
    Column("mean", right=True),
    Column("first values", shorten=shorten_end, min_width=8, optional=True),
)
ROWS = [["layers.0.fc1.weight", "0.1", "1, 2, 3, 4"], ["layers.1.fc2.bias", "-12.5", "5, 6"]]


def test_render_table_without_limit() -> None:
    assert render_table(COLUMNS, ROWS, None) == [
        "name                  mean  first values",
        "layers.0.fc1.weight    0.1  1, 2, 3, 4",
        "layers.1.fc2.bias    -12.5  5, 6",
    ]


def test_render_table_cuts_first_values_first() -> None:
    lines = render_table(COLUMNS, ROWS, 37)
    assert lines[1] == "layers.0.fc1.weight    0.1  1, 2, …"
    assert max(len(line) for line in lines) <= 37


def test_render_table_shrinks_names_before_dropping() -> None:
    assert render_table(COLUMNS, ROWS, 28)[:2] == ["name          mean  first v…", "laye…weight    0.1  1, 2, …"]
    assert render_table(COLUMNS, ROWS, 20)[:2] == ["name            mean", "layers…weight    0.1"]


def test_render_table_overflows_past_min_width() -> None:
    assert render_table(COLUMNS, ROWS, 5)[1] == "laye…eight    0.1"


def test_table_width_sources(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "97")
    assert table_width(None) == 97
    assert table_width(50) == 50
    assert table_width(0) is None
