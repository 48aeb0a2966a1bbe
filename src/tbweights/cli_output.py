"""Terminal output for the CLI: results on stdout, the rest on stderr."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

from tbweights.initcheck import InitReport
from tbweights.stats import TensorStats
from tbweights.summaries import fmt, fmt_first, fmt_shape
from tbweights.tensors import NamedTensor

SHOW_COLUMNS = ("name", "shape", "dtype", "mean", "std", "min", "max", "nonfinite", "first values")


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

    def result(self, line: str) -> None:
        print(line, file=sys.stdout)

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


def print_show_table(rows: Iterable[tuple[NamedTensor, TensorStats | str]], out: Output) -> int:
    """Print an aligned table, one row per tensor; return how many tensors failed."""
    table = [list(SHOW_COLUMNS)]
    failures = 0
    for tensor, stats in rows:
        if isinstance(stats, str):
            failures += 1
            out.warn(
                f"skipped tensor {tensor.name!r} ({tensor.dtype}, shape {fmt_shape(tensor.shape)}): {stats}"
            )
            continue
        table.append(
            [
                tensor.name,
                fmt_shape(tensor.shape),
                tensor.dtype,
                fmt(stats.mean),
                fmt(stats.std),
                fmt(stats.min),
                fmt(stats.max),
                str(stats.nonfinite),
                fmt_first(stats.first),
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(SHOW_COLUMNS) - 1)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)] + [row[-1]]
        out.result("  ".join(cells).rstrip())
    return failures


def print_init_table(report: InitReport, out: Output) -> None:
    """Print the initialization check as an aligned table, then one line of verdict counts."""
    table = report.table()
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)] + [row[-1]]
        out.result("  ".join(cells).rstrip())
    inferred = any(f.layer_inferred for f in report.findings)
    note = "; layers inferred from names and shapes" if inferred else ""
    out.result(f"init check: {report.summary_line()}{note}")
