"""The `tbweights` command: convert checkpoints to TensorBoard runs, or show them.

The CLI only parses arguments, calls the library and prints. Results go to
stdout; progress, warnings and errors to stderr. A known error prints one
`error:` line and exits 1; usage errors exit 2; `--debug` shows tracebacks.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from types import FrameType

from tbweights import __version__
from tbweights.checkpoints import LoadOptions
from tbweights.checkpoints.runs import MAX_STEP
from tbweights.cli_output import Output, ShowFormat, print_init, print_show
from tbweights.convert import convert, describe
from tbweights.errors import TbweightsError
from tbweights.show_format import table_width
from tbweights.stats import DEFAULT_BUCKETS, DEFAULT_FIRST
from tbweights.writer import MAX_BUCKETS

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_SIGINT = 130  # 128 + the signal number, as shells report a killed process
EXIT_SIGTERM = 143
EXIT_SIGPIPE = 141  # the reader of stdout closed it early, as `| head` does


class Terminated(BaseException):
    """SIGTERM arrived; raised like KeyboardInterrupt so open files are closed."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()

_CONVERT_EPILOG = """\
steps:
  Each checkpoint becomes one step of the run. With --step N the checkpoints get
  N, N+1, ... in the order given. Otherwise the step is read from the file name,
  then from its folder's name: the number after step, iter, checkpoint, ckpt or
  epoch (checkpoint-500/ -> 500, epoch=4-step=1000.ckpt -> 1000), or a number that
  ends the name (model_00010.pt -> 10); a name without one gets its position.

training runs:
  A folder of checkpoints named with their steps (checkpoint-500/, ckpt-1000.pt,
  epoch=3-step=1200.ckpt, model_00010.safetensors, TensorFlow ckpt-N) is read as
  all of them, in step order; weight files without a step number (last.ckpt) are
  left out with a warning. Steps already in the logdir are skipped, so converting
  the folder again after training saved more checkpoints adds the new ones.

examples:
  tbweights convert model.safetensors --logdir runs/model
  tbweights convert run/checkpoint-*/model.safetensors --logdir runs/train
  tbweights convert lightning_run/checkpoints --logdir runs/train
  tbweights convert last.ckpt --logdir runs/x --exclude '*.num_batches_tracked'
"""

_SHOW_EPILOG = """\
formats:
  table  Numbers to 4 significant digits, counts as 12.3k/4.5M, long names
         shortened in the middle, the first values cut first to fit the width.
  json   JSON Lines: one object per tensor with full names and numbers at
         full precision. NaN and infinities are the strings "NaN", "Infinity"
         and "-Infinity". A tensor that could not be read has an "error" string.
  csv    The same fields as json, with shape and first values as JSON text.

examples:
  tbweights show model.safetensors
  tbweights show model.safetensors --format json | jq -r 'select(.nan > 0) | .name'
  tbweights show last.ckpt --check-init --format csv > init.csv
"""


def _integer(text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
    return value


def _positive(text: str) -> int:
    return _integer(text, 1, MAX_BUCKETS)


def _non_negative(text: str) -> int:
    return _integer(text, 0, MAX_STEP)


def expand_globs(patterns: Sequence[str]) -> list[str]:
    """Expand glob patterns that the shell left alone (quoted, or on Windows)."""
    paths: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) and not os.path.exists(pattern) else []
        paths.extend(matches or [pattern])
    return paths


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--first",
        type=_non_negative,
        default=DEFAULT_FIRST,
        metavar="N",
        help=f"number of first values to show per tensor, row-major (default {DEFAULT_FIRST})",
    )
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATTERN",
        help="only tensors whose name matches this glob pattern (repeatable)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="leave out tensors whose name matches this glob pattern (repeatable)",
    )
    parser.add_argument(
        "--include-optimizer",
        action="store_true",
        help="also read optimizer and scheduler state from training checkpoints",
    )
    parser.add_argument(
        "--include-constants",
        action="store_true",
        help="also read the small integer constants of ONNX graphs (shapes, axes, indices)",
    )
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow loaders that can run code from the file (full pickles, "
        "TorchScript, NumPy object arrays) and ONNX external data outside the "
        "model's folder; only for files you trust",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress or warnings on stderr")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tbweights", description="See neural-network weights in TensorBoard."
    )
    parser.add_argument("--version", action="version", version=f"tbweights {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    conv = commands.add_parser(
        "convert",
        help="write checkpoints as steps of a TensorBoard run",
        description="Write the weights of checkpoint files to a TensorBoard log directory.",
        epilog=_CONVERT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    conv.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="checkpoint files or folders")
    conv.add_argument("--logdir", required=True, metavar="DIR", help="TensorBoard log directory to write to")
    conv.add_argument(
        "--step",
        type=_non_negative,
        default=None,
        metavar="N",
        help="step of the first checkpoint (see 'steps' below)",
    )
    conv.add_argument(
        "--buckets",
        type=_positive,
        default=DEFAULT_BUCKETS,
        metavar="K",
        help=f"histogram buckets per tensor (default {DEFAULT_BUCKETS}, as tf.summary.histogram)",
    )
    conv.add_argument(
        "--jobs",
        "-j",
        type=_positive,
        default=1,
        metavar="N",
        help="summarize up to N checkpoints at once in worker processes; "
        "the run written is the same as with one (default 1)",
    )
    _add_common(conv)

    show = commands.add_parser(
        "show",
        help="print each tensor's statistics and first values",
        description="Print one row per tensor: name, shape, dtype, statistics, first values.",
        epilog=_SHOW_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint file or folder")
    show.add_argument(
        "--check-init",
        action="store_true",
        help="compare each tensor with common initialization schemes (PyTorch and Keras defaults, "
        "Xavier, Kaiming, LeCun, orthogonal) and print the closest one and a verdict; "
        "exits 1 when a tensor's initialization is broken",
    )
    show.add_argument(
        "--format",
        type=_show_format,
        default=ShowFormat.TABLE,
        metavar="{table,json,csv}",
        help="table: aligned for reading (default); json: one JSON object per line; "
        "csv: a header row, then one row per tensor (see 'formats' below)",
    )
    show.add_argument(
        "--width",
        type=_non_negative,
        default=None,
        metavar="N",
        help="fit the table to N characters per line, 0 for no limit (default: $COLUMNS, "
        "else the terminal's width; no limit when stdout is not a terminal)",
    )
    _add_common(show)

    demo = commands.add_parser(
        "demo",
        help="log a built-in 784-128-10 MLP at step 0",
        description="Write the initial weights of a built-in MLP, to try tbweights and TensorBoard.",
    )
    demo.add_argument(
        "--logdir", default="runs/demo", metavar="DIR", help="log directory (default runs/demo)"
    )
    demo.add_argument("--quiet", "-q", action="store_true", help=argparse.SUPPRESS)
    demo.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return parser


def _load_options(args: argparse.Namespace) -> LoadOptions:
    return LoadOptions(
        trust=args.trust_checkpoint,
        include_optimizer=args.include_optimizer,
        include_constants=args.include_constants,
    )


def run_convert(args: argparse.Namespace, out: Output) -> int:
    checkpoints = expand_globs(args.checkpoints)
    with out.progress() as progress:
        report = convert(
            checkpoints,
            args.logdir,
            start_step=args.step,
            load_options=_load_options(args),
            first=args.first,
            buckets=args.buckets,
            include=args.include,
            exclude=args.exclude,
            jobs=args.jobs,
            on_checkpoint=progress.start_checkpoint,
            on_tensor=progress.advance,
        )
    for reason in report.left_out:
        out.warn(reason)
    if report.step_warning:
        out.warn(report.step_warning)
    for warning in report.shard_warnings:
        out.warn(warning)
    for path, step in report.already_logged:
        out.result(f"step {step} already in {report.logdir}, skipped ({path})")
    skipped_tensors = 0
    for path, step_report in report.steps:
        out.result(f"step {step_report.step}: {len(step_report.results)} tensors from {path}")
        if not step_report.results and not step_report.skipped:
            out.warn(_nothing_selected(path, args))
        for skipped in step_report.skipped:
            out.warn(f"skipped tensor {skipped.name!r} in {path}: {skipped.reason}")
        skipped_tensors += len(step_report.skipped)
    for failed in report.failed:
        if args.debug and failed.error is not None:
            out.debug("".join(traceback.format_exception(failed.error)))
        out.error(failed.reason)
    if report.steps:
        out.result(f"wrote {len(report.steps)} step(s) to {report.event_file}")
        out.result(f"open it with: tensorboard --logdir {report.logdir}")
    elif report.already_logged and not report.failed and report.left_out:
        # Not "every step": a checkpoint below the last logged step is not in the logdir.
        out.result(f"nothing new to write to {report.logdir}; {len(report.left_out)} checkpoint(s) left out, see above")
    elif report.already_logged and not report.failed:
        out.result(f"nothing new to write: {report.logdir} already contains every step")
    attempted = len(report.steps) + len(report.failed)
    if report.failed and attempted > 1:
        out.error(f"{len(report.failed)} of {attempted} checkpoint(s) skipped; see the errors above")
    if skipped_tensors:
        out.error(f"{skipped_tensors} tensor(s) skipped; {_see_warnings(out)}")
    return EXIT_ERROR if report.failed or skipped_tensors else 0


def _see_warnings(out: Output) -> str:
    """Point at the per-tensor warnings, which --quiet does not print."""
    return "rerun without --quiet to see which and why" if out.quiet else "see the warnings above"


def _nothing_selected(path: str, args: argparse.Namespace) -> str:
    if args.include or args.exclude:
        return f"no tensor in {path} matched the --include/--exclude patterns"
    return f"no tensors found in {path}"


def run_show(args: argparse.Namespace, out: Output) -> int:
    from tbweights.writer import SummaryOptions

    selection = SummaryOptions(include=tuple(args.include), exclude=tuple(args.exclude))
    if args.check_init:
        from tbweights.initcheck import check_checkpoint

        report = check_checkpoint(args.checkpoint, _load_options(args), select=selection.selects)
        print_init(report, out, args.format, table_width(args.width))
        if not report.findings:
            out.warn(f"no tensors found in {args.checkpoint}")
        if not report.ok:
            where = "the table above" if args.format is ShowFormat.TABLE else "the verdict field"
            out.error(f"some tensors have a broken initialization; see {where}")
            return EXIT_ERROR
        return 0
    rows = describe(args.checkpoint, first=args.first, load_options=_load_options(args), select=selection.selects)
    shown = print_show(rows, out, args.format, table_width(args.width))
    if shown.rows == 0 and shown.failures == 0:
        out.warn(_nothing_selected(args.checkpoint, args))
    if shown.failures:
        if args.format is ShowFormat.TABLE:
            out.error(f"{shown.failures} tensor(s) skipped; {_see_warnings(out)}")
        else:
            out.error(f"{shown.failures} tensor(s) could not be summarized; see the error field of their rows")
        return EXIT_ERROR
    return 0


def run_demo(args: argparse.Namespace, out: Output) -> int:
    from tbweights.demo import demo_model
    from tbweights.writer import log_weights

    report = log_weights(demo_model(), args.logdir, step=0)
    out.result(f"wrote {len(report.results)} tensors of a 784-128-10 MLP at step 0 to {args.logdir}")
    out.result(f"open it with: tensorboard --logdir {args.logdir}")
    return 0


def _show_format(value: str) -> ShowFormat:
    """Parse `--format`; argparse would name the enum class in its error otherwise."""
    try:
        return ShowFormat(value.lower())
    except ValueError:
        names = ", ".join(fmt.value for fmt in ShowFormat)
        raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from {names})") from None


_COMMANDS = {"convert": run_convert, "show": run_show, "demo": run_demo}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Output(quiet=args.quiet)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.WARNING, format="warning: %(message)s")
    # The CLI reports skipped tensors itself, with the file's name.
    logging.getLogger("tbweights.writer").setLevel(logging.ERROR)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        return _run(args, out)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace, out: Output) -> int:
    try:
        return _COMMANDS[args.command](args, out)
    except BrokenPipeError:
        # The reader of stdout went away (`tbweights show x | head`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_SIGPIPE
    except TbweightsError as error:
        if args.debug:
            raise
        out.error(str(error))
        return EXIT_ERROR
    except KeyboardInterrupt:
        out.error(f"interrupted (SIGINT); {_INTERRUPTED}")
        return EXIT_SIGINT
    except Terminated:
        out.error(f"terminated (SIGTERM); {_INTERRUPTED}")
        return EXIT_SIGTERM
    except Exception as error:  # noqa: BLE001 - the last line of defence; --debug shows it
        if args.debug:
            raise
        out.error(f"unexpected {type(error).__name__}: {error}; rerun with --debug for the traceback and report it")
        return EXIT_ERROR


_INTERRUPTED = "the event file holds every record written before the signal, each one complete"


if __name__ == "__main__":
    sys.exit(main())
