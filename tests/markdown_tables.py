"""Read back the Markdown tables tbweights writes as text summaries (the per-tensor
statistics, `tbweights/overview` and `tbweights/init_check`).

The cells are split the way Python-Markdown's tables extension, TensorBoard's renderer,
splits them: at `|`, but not at an escaped `\\|` or at a `|` inside a code span.
"""

from __future__ import annotations

import re


def split_row(line: str) -> list[str]:
    """Split one table row into its cells, stripped, still in Markdown."""
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    cells: list[str] = []
    cell = ""
    i = 0
    while i < len(line):
        char = line[i]
        if char == "\\" and i + 1 < len(line):
            cell += line[i : i + 2]
            i += 2
        elif char == "`":
            fence = "`" * (len(line[i:]) - len(line[i:].lstrip("`")))
            close = re.compile(rf"(?<!`){fence}(?!`)").search(line, i + len(fence))
            end = close.end() if close else i + len(fence)
            cell += line[i:end]
            i = end
        elif char == "|":
            cells.append(cell.strip())
            cell = ""
            i += 1
        else:
            cell += char
            i += 1
    if cell.strip():
        cells.append(cell.strip())
    return cells


def parse_table(text: str) -> list[list[str]]:
    """Return the first Markdown table in `text`: the header row, then one row per body line."""
    lines = text.splitlines()
    start = None
    for i in range(len(lines) - 1):
        if lines[i].lstrip().startswith("|") and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1].strip()):
            start = i
            break
    if start is None:
        raise ValueError(f"no Markdown table in {text[:200]!r}")
    rows = [split_row(lines[start])]
    for line in lines[start + 2 :]:
        if not line.lstrip().startswith("|"):
            break
        rows.append(split_row(line))
    return rows


def table_records(text: str) -> list[dict[str, str]]:
    """Return the first table's body rows as {header: cell} dicts."""
    header, *rows = parse_table(text)
    return [dict(zip(header, row, strict=True)) for row in rows]


def code_text(cell: str) -> str:
    """Return the verbatim text of a cell of code spans (`summaries.code_span`, or `name_cell`'s
    lines joined by `<br>`)."""
    return "".join(_span_text(line) for line in cell.split("<br>"))


def _span_text(cell: str) -> str:
    match = re.fullmatch(r"(`+)(.*?)\1", cell, re.DOTALL)
    if match is None:
        raise ValueError(f"not a code span: {cell!r}")
    text = match.group(2)
    if len(text) >= 2 and text.startswith(" ") and text.endswith(" ") and text.strip():
        text = text[1:-1]
    return text
