"""`tbweights show` tables stay aligned when names contain East Asian wide characters or combining marks."""

from __future__ import annotations

from tbweights.show_format import Column, display_width, render_table, shorten_middle

COLUMNS = (Column("name", shorten=shorten_middle, min_width=10), Column("mean", right=True))
ROWS = [
    ["abc.weight", "0.1"],
    ["e\u0301.weight", "0.2"],  # "é" as e plus a combining accent
    ["编码器.层.十一.注意力.weight", "0.3"],
]


def test_display_width_counts_columns() -> None:
    assert display_width("abc") == 3
    assert display_width("层") == 2
    assert display_width("e\u0301") == 1


def test_wide_names_align_without_limit() -> None:
    lines = render_table(COLUMNS, ROWS, None)
    assert {display_width(line) for line in lines} == {display_width(lines[0])}
    assert lines[3] == "编码器.层.十一.注意力.weight   0.3"


def test_wide_names_shortened_to_width() -> None:
    lines = render_table(COLUMNS, ROWS, 20)
    assert [display_width(line) for line in lines] == [20, 20, 20, 20]
    assert lines[3].endswith("…weight   0.3")
