"""Terminal output for the CLI: results on stdout, the rest on stderr."""

from __future__ import annotations

import csv
import enum
import io
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from tbweights.initcheck import InitReport
from tbweights.show_format import (
    INIT_FIELDS,
    INIT_TABLE,
    SHOW_FIELDS,
    SHOW_TABLE,
    csv_cells,
    failed_table_row,
    format_shape,
    init_record,
    init_table_row,
    json_line,
    render_table,
    show_record,
    show_table_row,
)
from tbweights.stats import TensorStats
from tbweights.tensors import NamedTensor


class ShowFormat(str, enum.Enum):
    """Output format of `tbweights show`: an aligned table, JSON Lines, or CSV with a header row."""

    TABLE = "table"
    JSON = "json"
    CSV = "csv"


class Progress:
    """A progress bar over tensors on stderr, shown only on a terminal."""

    def __init__(self, enabled: bool) -> None:
        self._bar: Any = tqdm(unit=" tensors", file=sys.stderr, disable=not enabled, leave=False)

    def start_checkpoint(self, path: str, step: int) -> None:
        self._bar.set_description(f"step {step} {path}")

    def advance(self, tensor: NamedTensor) -> None:
        self._bar.set_postfix_str(tensor.name[-40:], refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


class Output:
    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def result(self, line: str, flush: bool = False) -> None:
        print(line, file=sys.stdout, flush=flush)

    def warn(self, line: str) -> None:
        if not self.quiet:
            print(f"warning: {line}", file=sys.stderr)

    def debug(self, text: str) -> None:
        print(text, file=sys.stderr, end="")

    def error(self, line: str) -> None:
        print(f"error: {line}", file=sys.stderr)

    @contextmanager
    def progress(self) -> Iterator[Progress]:
        bar = Progress(enabled=not self.quiet and sys.stderr.isatty())
        try:
            yield bar
        finally:
            bar.close()


@dataclass(frozen=True)
class ShowCounts:
    """Tensors printed and tensors that failed in `print_show`."""

    rows: int
    failures: int


def print_show(
    rows: Iterable[tuple[NamedTensor, TensorStats | str]],
    out: Output,
    output_format: ShowFormat = ShowFormat.TABLE,
    width: int | None = None,
) -> ShowCounts:
    """Print one row per tensor and count what was printed and what failed.

    A tensor that could not be summarized gets a warning on stderr and keeps its
    row: dashes and the reason in the table, the reason in `error` in JSON Lines and CSV. The
    table is printed at the end, to align it, and fitted to `width` (None: no limit);
    JSON Lines and CSV rows are printed as each tensor is summarized.
    """
    table: list[list[str]] = []
    emit = _RecordPrinter(out, output_format, SHOW_FIELDS)
    failures = 0
    for tensor, stats in rows:
        if isinstance(stats, str):
            failures += 1
            out.warn(
                f"could not summarize tensor {tensor.name!r} ({tensor.dtype}, "
                f"shape {format_shape(tensor.shape)}): {stats}"
            )
        if output_format is ShowFormat.TABLE:
            row = failed_table_row(tensor, stats) if isinstance(stats, str) else show_table_row(tensor, stats)
            table.append(row)
        else:
            emit(show_record(tensor, stats))
    emit.finish()
    if output_format is ShowFormat.TABLE:
        for line in render_table(SHOW_TABLE, table, width):
            out.result(line)
        return ShowCounts(rows=len(table) - failures, failures=failures)
    return ShowCounts(rows=emit.count - failures, failures=failures)


def print_init(
    report: InitReport,
    out: Output,
    output_format: ShowFormat = ShowFormat.TABLE,
    width: int | None = None,
) -> None:
    """Print the initialization check: a table and a line of verdict counts, or one record per tensor."""
    if output_format is not ShowFormat.TABLE:
        emit = _RecordPrinter(out, output_format, INIT_FIELDS)
        for finding in report.findings:
            emit(init_record(finding))
        emit.finish()
        return
    for line in render_table(INIT_TABLE, [init_table_row(f) for f in report.findings], width):
        out.result(line)
    inferred = any(f.layer_inferred for f in report.findings)
    note = "; layers inferred from names and shapes" if inferred else ""
    out.result(f"init check: {report.summary_line()}{note}")


class _RecordPrinter:
    """Print dict records as JSON Lines, or as CSV rows under a header row printed before the first."""

    def __init__(self, out: Output, output_format: ShowFormat, fields: tuple[str, ...]) -> None:
        self._out = out
        self._format = output_format
        self._fields = fields
        self.count = 0

    def __call__(self, record: dict[str, object]) -> None:
        # Flushed per record, so a reader such as `jq` receives each tensor as soon as it is summarized.
        if self._format is ShowFormat.JSON:
            self._out.result(json_line(record), flush=True)
        else:
            if self.count == 0:
                self._out.result(_csv_line(list(self._fields)))
            self._out.result(_csv_line(csv_cells(record)), flush=True)
        self.count += 1

    def finish(self) -> None:
        """Print the CSV header when no record came, so an empty result is still valid CSV."""
        if self._format is ShowFormat.CSV and self.count == 0:
            self._out.result(_csv_line(list(self._fields)))


def _csv_line(cells: list[str]) -> str:
    """Format one CSV record without its line end. `csv` quotes a field that contains a line break."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()[:-1]
