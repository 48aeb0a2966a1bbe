"""Formatting for `tbweights show`: terminal tables, JSON Lines and CSV.

The table is for reading: numbers to 4 significant digits, element counts as
`12.3k`/`1.5M`, long names shortened in the middle, every row fitted to a width.
JSON Lines and CSV are for scripts: full names, every number at full precision
(Python's shortest round-trip `repr`), and NaN/Inf as the strings `"NaN"`,
`"Infinity"` and `"-Infinity"`, because JSON has no literal for them.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tbweights.initcheck import InitFinding
from tbweights.stats import TensorStats
from tbweights.tensors import NamedTensor

GAP = "  "
ELLIPSIS = "…"
# Narrowest a shortened name may get before the row is allowed to run past the width.
MIN_NAME_WIDTH = 24

Number = float | int | bool | complex


def table_width(requested: int | None) -> int | None:
    """Return the width to fit the table to, or None for no limit.

    `requested` (from `--width`; 0 means no limit) wins, then the COLUMNS
    environment variable, then the terminal's width. When stdout is not a terminal
    the table is not cut, as `ps` does, so `> file` and `| less -S` keep every character.
    """
    if requested is not None:
        return requested or None
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


# Numbers for reading


def format_number(value: Number | None) -> str:
    """Format a number for the table: 4 significant digits, scientific only below 1e-3 or from 1e5 on."""
    if value is None:
        return "n/a"
    if isinstance(value, bool | int):
        return str(value)
    if isinstance(value, complex):
        imaginary = format_number(abs(value.imag))
        return f"{format_number(value.real)}{'-' if value.imag < 0 else '+'}{imaginary}j"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if 1e-3 <= magnitude < 1e5:
        decimals = max(0, 3 - math.floor(math.log10(magnitude)))
        return _strip_zeros(f"{value:.{decimals}f}")
    mantissa, _, exponent = f"{value:.3e}".partition("e")
    return f"{_strip_zeros(mantissa)}e{exponent}"


def _strip_zeros(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_count(count: int) -> str:
    """Format an element count: exact below 10,000, then 3 significant digits with k, M or B."""
    if count < 10_000:
        return str(count)
    for divisor, suffix in ((1e3, "k"), (1e6, "M"), (1e9, "B")):
        text = f"{count / divisor:.3g}"
        if float(text) < 1000:
            return text + suffix
    return f"{count / 1e9:,.0f}B"


def format_nonfinite(stats: TensorStats) -> str:
    """`0`, or the NaN, +Inf and -Inf counts that are not zero: `2 NaN, 1 +Inf`."""
    parts = [f"{n} {label}" for n, label in ((stats.nan, "NaN"), (stats.posinf, "+Inf"), (stats.neginf, "-Inf")) if n]
    return ", ".join(parts) or "0"


def format_shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def format_values(values: Sequence[Number]) -> str:
    return ", ".join(format_number(v) for v in values)


def printable(text: str) -> str:
    """Show control characters in a name as escapes, so one name stays on one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# Shortening


def shorten_middle(text: str, width: int) -> str:
    """Cut `text` to `width` characters in the middle, keeping its start and its leaf.

    `encoder.layers.11.intermediate.dense.weight` at 30 becomes
    `encoder.layers.11.int…weight`. The end is the last name part (`weight`) plus
    whole parts before it, up to a third of the width. The start gets the rest,
    because layer numbers such as `11` usually sit there.
    """
    if len(text) <= width:
        return text
    if width <= len(ELLIPSIS):
        return text[:width]
    room = width - len(ELLIPSIS)
    separator = _last_separator(text)
    leaf = len(text) - separator - 1 if separator >= 0 else room // 2
    tail_room = min(max(leaf, room // 3), room - min(room // 2, 4))
    tail = text[len(text) - tail_room :] if tail_room > 0 else ""
    cut = _first_separator(tail)
    if 0 <= cut < len(tail) - 1:
        tail = tail[cut + 1 :]
    head = text[: room - len(tail)]
    return f"{head}{ELLIPSIS}{tail}"


def _first_separator(text: str) -> int:
    found = [i for i in (text.find("."), text.find("/")) if i >= 0]
    return min(found, default=-1)


def _last_separator(text: str) -> int:
    return max(text.rfind("."), text.rfind("/"))


def shorten_end(text: str, width: int) -> str:
    """Cut `text` to `width` characters at the end, after a whole `, `-separated item where one fits."""
    if len(text) <= width:
        return text
    if width <= len(ELLIPSIS):
        return text[:width]
    marker = ", " + ELLIPSIS
    cut = text.rfind(", ", 0, width - len(marker) + 1)
    if cut > 0:
        return text[:cut] + marker
    return text[: width - len(ELLIPSIS)] + ELLIPSIS


# Tables


@dataclass(frozen=True)
class Column:
    """One table column: its title, alignment, and how its cells shrink.

    A column without `shorten` keeps its width. One with it shrinks down to
    `min_width`; an `optional` column is left out instead of going below it.
    """

    title: str
    right: bool = False
    shorten: Callable[[str, int], str] | None = None
    min_width: int = 0
    optional: bool = False


def render_table(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None) -> list[str]:
    """Lay out an aligned table in at most `width` characters per line (None: no limit).

    Shrinkable columns give up room from the last one on. Rows that still do not
    fit run past `width`.
    """
    widths = [max([display_width(c.title), *(display_width(row[i]) for row in rows)]) for i, c in enumerate(columns)]
    visible = _fit_widths(columns, widths, width)
    lines = []
    for row in [[c.title for c in columns], *rows]:
        cells = []
        for i in visible:
            cell = _fit_cell(row[i], widths[i], columns[i].shorten or shorten_end)
            fill = " " * (widths[i] - display_width(cell))
            cells.append(fill + cell if columns[i].right else cell + fill)
        lines.append(GAP.join(cells).rstrip())
    return lines


def display_width(text: str) -> int:
    """Count the terminal columns of `text`: wide and fullwidth East Asian characters take two, combining marks none."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in "WF" else 1
    return width


def _fit_cell(cell: str, width: int, shorten: Callable[[str, int], str]) -> str:
    """Shorten `cell` to at most `width` terminal columns.

    The shorten functions count characters, so a cell with wide characters is
    shortened again, one character less each time, until it fits.
    """
    target = width
    fitted = cell
    while display_width(fitted) > width and target > 0:
        fitted = shorten(cell, target)
        target -= 1
    return fitted


def _fit_widths(columns: Sequence[Column], widths: list[int], width: int | None) -> list[int]:
    """Shrink `widths` in place to fit `width`; return the indices of the columns to show.

    Shrinkable columns give way first, the last ones first, each down to its
    `min_width`. Only when that is not enough are optional columns left out,
    and the room they leave goes back to the columns that were shrunk.
    """
    visible = list(range(len(columns)))
    if width is None:
        return visible
    natural = list(widths)
    excess = sum(widths) + len(GAP) * (len(columns) - 1) - width
    for i in reversed(range(len(columns))):
        if excess <= 0:
            break
        if columns[i].shorten is not None:
            cut = min(excess, widths[i] - min(widths[i], columns[i].min_width))
            widths[i] -= cut
            excess -= cut
    for i in reversed(range(len(columns))):
        if excess <= 0:
            break
        if columns[i].optional:
            visible.remove(i)
            excess -= widths[i] + len(GAP)
    for i in visible:
        if excess >= 0:
            break
        regain = min(-excess, natural[i] - widths[i])
        widths[i] += regain
        excess += regain
    return visible


SHOW_TABLE = (
    Column("name", shorten=shorten_middle, min_width=MIN_NAME_WIDTH),
    Column("shape"),
    Column("dtype"),
    Column("count", right=True),
    Column("mean", right=True),
    Column("std", right=True),
    Column("min", right=True),
    Column("max", right=True),
    Column("nan/inf", right=True),
    Column("first values", shorten=shorten_end, min_width=16, optional=True),
)


def show_table_row(tensor: NamedTensor, stats: TensorStats) -> list[str]:
    return [
        printable(tensor.name),
        format_shape(tensor.shape),
        tensor.dtype,
        format_count(stats.count),
        format_number(stats.mean),
        format_number(stats.std),
        format_number(stats.min),
        format_number(stats.max),
        format_nonfinite(stats),
        format_values(stats.first),
    ]


def failed_table_row(tensor: NamedTensor, reason: str) -> list[str]:
    """Build the table row of a tensor that could not be summarized: dashes for the statistics, the reason last."""
    dashes = ["-"] * 5  # mean, std, min, max, nan/inf
    name, shape, count = printable(tensor.name), format_shape(tensor.shape), format_count(tensor.size)
    return [name, shape, tensor.dtype, count, *dashes, reason]


INIT_TABLE = (
    Column("name", shorten=shorten_middle, min_width=MIN_NAME_WIDTH),
    Column("shape"),
    Column("layer", shorten=shorten_end, min_width=12),
    Column("fan in/out", right=True),
    Column("closest scheme"),
    Column("expected std", right=True),
    Column("measured std", right=True),
    Column("expected bounds"),
    Column("measured min, max"),
    Column("verdict"),
    Column("why", shorten=shorten_end, min_width=12),
)


def init_table_row(finding: InitFinding) -> list[str]:
    fan = "" if finding.fan_in is None else f"{finding.fan_in}/{finding.fan_out}"
    return [
        printable(finding.name),
        format_shape(finding.shape),
        finding.layer,
        fan,
        finding.scheme or "",
        format_number(finding.expected_std),
        format_number(finding.measured_std),
        _format_bounds(finding.expected_bounds, "none" if finding.scheme else ""),
        _format_bounds(finding.measured_bounds, "n/a"),
        finding.verdict.value,
        printable(finding.reason),
    ]


def _format_bounds(bounds: tuple[float, float] | None, missing: str) -> str:
    return missing if bounds is None else f"{format_number(bounds[0])}, {format_number(bounds[1])}"


# JSON Lines and CSV for scripts


def json_number(value: Number | None) -> Any:
    """Convert a number for JSON: NaN and Inf to strings, complex to [real, imag], the rest unchanged."""
    if isinstance(value, complex):
        return [json_number(value.real), json_number(value.imag)]
    if not isinstance(value, float) or math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


SHOW_FIELDS = (
    "name", "shape", "dtype", "role", "count", "mean", "std", "min", "max",
    "zeros", "nan", "posinf", "neginf", "first", "error",
)  # fmt: skip


def show_record(tensor: NamedTensor, stats: TensorStats | str) -> dict[str, Any]:
    """Build the JSON-ready record of one tensor, keyed by `SHOW_FIELDS`. A failure leaves the statistics None."""
    record: dict[str, Any] = dict.fromkeys(SHOW_FIELDS)
    record.update(name=tensor.name, shape=list(tensor.shape), dtype=tensor.dtype, role=tensor.role.value)
    if isinstance(stats, str):
        record["error"] = stats
        return record
    record.update(count=stats.count, zeros=stats.zeros, nan=stats.nan, posinf=stats.posinf, neginf=stats.neginf)
    for key in ("mean", "std", "min", "max"):
        record[key] = json_number(getattr(stats, key))
    record["first"] = [json_number(v) for v in stats.first]
    return record


INIT_FIELDS = (
    "name", "shape", "layer", "layer_inferred", "fan_in", "fan_out", "scheme", "default_scheme",
    "expected_std", "expected_bounds", "measured_std", "measured_bounds", "verdict", "reason", "error",
)  # fmt: skip


def init_record(finding: InitFinding) -> dict[str, Any]:
    """Build the JSON-ready record of one finding, keyed by `INIT_FIELDS`."""
    record = {key: getattr(finding, key, None) for key in INIT_FIELDS}
    record["shape"] = list(finding.shape)
    record["verdict"] = finding.verdict.value
    for key in ("expected_std", "measured_std"):
        record[key] = json_number(record[key])
    for key in ("expected_bounds", "measured_bounds"):
        bounds = record[key]
        record[key] = None if bounds is None else [json_number(bounds[0]), json_number(bounds[1])]
    return record


def json_line(record: dict[str, Any]) -> str:
    # allow_nan=False: a non-finite float that slipped past `json_number` fails here, not in the reader.
    return json.dumps(record, ensure_ascii=False, allow_nan=False)


def csv_cells(record: dict[str, Any]) -> list[str]:
    """Convert a record to CSV cells: lists to JSON text, None to an empty cell, numbers in full."""
    cells = []
    for value in record.values():
        if value is None:
            cells.append("")
        elif isinstance(value, list):
            cells.append(json.dumps(value, allow_nan=False))
        elif isinstance(value, bool):
            cells.append("true" if value else "false")
        else:
            cells.append(str(value))
    return cells
