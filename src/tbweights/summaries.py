"""Build TensorBoard summary protos: histograms, text and scalars.

Plugin metadata comes from TensorBoard's own plugin modules and tensors from
its `tensor_util`, so the protos are exactly what TensorBoard's readers expect.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.util import tensor_util

from tbweights.stats import TensorStats
from tbweights.tensors import NamedTensor

_HISTOGRAM_METADATA = histogram_metadata.create_summary_metadata(display_name=None, description=None)
_TEXT_METADATA = text_metadata.create_summary_metadata(display_name=None, description=None)
_SCALAR_METADATA = scalar_metadata.create_summary_metadata(display_name=None, description=None)

COMPLEX_NOTE = "mean, std, min, max, zeros and the histogram are of the magnitude abs(z)"
# Count and first values are in each tensor's own table. In the overview they would
# widen it past a text card in a 1280-pixel window, and TensorBoard then splits its words.
OVERVIEW_COLUMNS = ("name", "shape", "dtype", "mean", "std", "min", "max", "non-finite")
# Maximum length of one line of a name cell, in characters. With longer lines the overview and
# init-check tables grow wider than a text card in a 1280-pixel window, and
# TensorBoard 2.21 then breaks their numbers across lines.
NAME_LINE_WIDTH = 16
_NAME_PARTS = re.compile(r"[^./]*[./]|[^./]+$")


def histogram_value(tag: str, histogram: np.ndarray) -> summary_pb2.Summary.Value:
    tensor = tensor_util.make_tensor_proto(histogram, dtype=np.float64)
    return summary_pb2.Summary.Value(tag=tag, metadata=_HISTOGRAM_METADATA, tensor=tensor)


def text_value(tag: str, text: str | np.ndarray) -> summary_pb2.Summary.Value:
    array = np.asarray(text, dtype=object)
    tensor = tensor_util.make_tensor_proto(array)
    return summary_pb2.Summary.Value(tag=tag, metadata=_TEXT_METADATA, tensor=tensor)


def scalar_value(tag: str, value: float) -> summary_pb2.Summary.Value:
    tensor = tensor_util.make_tensor_proto(np.float32(value))
    return summary_pb2.Summary.Value(tag=tag, metadata=_SCALAR_METADATA, tensor=tensor)


def fmt(value: float | int | bool | complex | None) -> str:
    """Numbers as people read them: 6 significant digits, integers in full."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, complex):
        return f"{value.real:.6g}{value.imag:+.6g}j"
    return f"{value:.6g}"


def fmt_shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def fmt_first(values: Sequence[float | int | bool | complex]) -> str:
    return ", ".join(fmt(v) for v in values)


def code_span(text: str) -> str:
    """A Markdown code span that TensorBoard renders as `text` verbatim, even inside a table.

    TensorBoard's Markdown (Python-Markdown with tables) keeps `|`, `\\`, `<` and `&`
    literal inside a code span, so only backticks and line breaks need care. The
    delimiter is one backtick longer than the longest run in the text. A line break
    would end the table row, so it is shown as the two characters `\\n`.
    """
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def name_cell(name: str) -> str:
    """Render a tensor name for a table cell, verbatim, broken into lines after `.` or `/`.

    Each line is a code span of at most `NAME_LINE_WIDTH` characters (a longer part
    stays whole), and `<br>` joins them. TensorBoard's sanitizer keeps `<br>`.
    """
    lines: list[str] = []
    for part in _NAME_PARTS.findall(name):
        if lines and len(lines[-1]) + len(part) <= NAME_LINE_WIDTH:
            lines[-1] += part
        else:
            lines.append(part)
    return "<br>".join(code_span(line) for line in lines) if lines else code_span(name)


def escape_markdown(text: str) -> str:
    """Keep raw text, such as a name or a reason, from being read as Markdown or HTML."""
    escaped = text.replace("\\", "\\\\").replace("|", "\\|").replace("`", "'").replace("<", "&lt;")
    # A line break would end the table row; show it as the two characters `\n`.
    return escaped.replace("\r", "\\r").replace("\n", "\\n")


def tensor_markdown(tensor: NamedTensor, stats: TensorStats) -> str:
    """Render the text summary of one tensor: its name verbatim, statistics and first values."""
    rows = [
        ("name", code_span(tensor.name)),
        ("role", tensor.role.value),
        ("shape", fmt_shape(tensor.shape)),
        ("dtype", tensor.dtype),
        ("count", fmt(stats.count)),
        ("mean", fmt(stats.mean)),
        ("std", fmt(stats.std)),
        ("min", fmt(stats.min)),
        ("max", fmt(stats.max)),
        ("zeros", fmt(stats.zeros)),
        ("NaN", fmt(stats.nan)),
        ("+Inf", fmt(stats.posinf)),
        ("-Inf", fmt(stats.neginf)),
        (f"first {len(stats.first)} (row-major)", fmt_first(stats.first)),
    ]
    if stats.nonfinite:
        rows.append(("note", f"mean, std, min, max and the histogram cover the {stats.finite} finite values"))
    if tensor.dtype.startswith("complex"):
        rows.append(("note", COMPLEX_NOTE))
    if tensor.aliases:
        rows.append(("also named", ", ".join(code_span(a) for a in tensor.aliases)))
    if tensor.note:
        rows.append(("note", escape_markdown(tensor.note)))
    return markdown_table(("statistic", "value"), rows)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Join cells into a Markdown table. Each cell must already be escaped (`code_span`, `escape_markdown`).

    TensorBoard renders a scalar string of this form with a header row and at the
    width of its content, where a 2-D string tensor is stretched to the card width.
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def overview_row(tensor: NamedTensor, stats: TensorStats) -> list[str]:
    """Build the Markdown cells of one tensor's overview row (`OVERVIEW_COLUMNS`)."""
    return [
        name_cell(tensor.name),
        fmt_shape(tensor.shape),
        tensor.dtype,
        fmt(stats.mean),
        fmt(stats.std),
        fmt(stats.min),
        fmt(stats.max),
        fmt(stats.nonfinite),
    ]


def overview_markdown(rows: Sequence[Sequence[str]], skipped: Sequence[tuple[str, str]] = ()) -> str:
    """Render the overview: a Markdown table of `overview_row`s, then the (name, reason) of each skipped tensor.

    A reason is free text of any length, so it goes in a list under the table
    rather than into a cell, where it would widen the table past its card.
    """
    text = markdown_table(OVERVIEW_COLUMNS, rows)
    if skipped:
        items = [f"- {code_span(name)}: {escape_markdown(reason)}" for name, reason in skipped]
        text += "\n\nSkipped:\n\n" + "\n".join(items)
    return text
