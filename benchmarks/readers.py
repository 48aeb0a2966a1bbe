"""Reading other formats: `tbweights convert` against each format's own library plus `add_histogram`.

    python benchmarks/readers.py --scale smoke        # seconds; what the test suite runs
    python benchmarks/readers.py --scale full --out readers.json

The formats are GGUF with Q8_0, Q4_0, F16 and F32 tensors, ONNX with external
data, Flax msgpack and Orbax `StandardCheckpointer`. For each, the script writes a
checkpoint with the format's own library (`format_files.py`) under `--workdir`.
Then it runs these in fresh processes, each `--repeat` times after one `cat` that
warms the page cache:

- `cat FILES > /dev/null`, every file of the checkpoint: the floor;
- `python -m tbweights convert PATH --logdir DIR -q`;
- the peer (`reader_peers.py`): load with the format's library, then
  `SummaryWriter.add_histogram` for every tensor, with torch.utils.tensorboard and
  with tensorboardX (one run: see `PEER_REPEAT`).

Memory is the process's max RSS from `wait4` minus that of a process that only
imports the same modules: `import tbweights.cli` and the format's library for
tbweights, `reader_peers.py --import-only` for a peer. The wall time of that
process is the start-up and import part. Tables give medians and the ratios
tbweights / peer; the files are deleted at the end.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import format_files  # noqa: E402
import run  # noqa: E402

PEERS = ["torch", "tensorboardx"]
# torch.utils.tensorboard's histogram code came from tensorboardX, and the two took within 8% of
# each other's time in a first run of this script, so one tensorboardX run keeps the default run short.
PEER_REPEAT = {"tensorboardx": 1}
# Modules that `tbweights convert` imports for each format besides the CLI, for its import baseline.
TBWEIGHTS_IMPORTS = {
    "gguf": "gguf.quants",
    "onnx": "onnx",
    "flax-msgpack": "msgpack",
    "orbax": "jax, orbax.checkpoint",
}
LIBRARIES = {"gguf": "gguf", "onnx": "onnx", "flax-msgpack": "flax", "orbax": "orbax-checkpoint"}


def measure(
    runner: run.Runner, command: list[str], repeat: int, before: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Run `command` `repeat` times: wall times, their median, the largest max RSS, the last stdout line."""
    walls, rss, outputs = [], [], []
    error = None
    for _ in range(repeat):
        if before:
            before()
        outcome, wall, max_rss = runner.spawn(command)
        if outcome.returncode != 0:
            error = (outcome.stderr.strip().splitlines() or ["failed"])[-1]
        walls.append(wall)
        rss.append(max_rss)
        lines = outcome.stdout.strip().splitlines()
        if lines and lines[-1].startswith("{"):
            outputs.append(json.loads(lines[-1]))
    row: dict[str, Any] = {"times_s": walls, "median_s": statistics.median(walls), "max_rss_mib": max(rss)}
    if outputs:
        row["output"] = {key: statistics.median(o[key] for o in outputs) for key in outputs[0]}
    if error:
        row["error"] = error
    return row


def run_format(runner: run.Runner, kind: str, scale: str, folder: Path, peers: list[str]) -> list[dict[str, Any]]:
    python, repeat = runner.python, runner.repeat
    start = time.perf_counter()
    path = format_files.write(kind, folder / kind, scale)
    written_s = time.perf_counter() - start
    parts = format_files.files(path)
    size = sum(p.stat().st_size for p in parts)
    spec = {"format": kind, "bytes": size, "files": len(parts), "write_s": written_s}
    print(f"[readers] {kind}: {size / 1e6:.0f} MB in {len(parts)} files, written in {written_s:.1f} s",
          file=sys.stderr, flush=True)
    rows = []

    def add(tool: str, command: list[str], result: dict[str, Any], baseline: dict[str, Any] | None) -> None:
        row = {**spec, "tool": tool, "command": " ".join(command), **result}
        if baseline:
            row["baseline_mib"] = baseline["max_rss_mib"]
            row["baseline_s"] = baseline["median_s"]
            row["baseline_command"] = baseline["command"]
            row["above_baseline_mib"] = row["max_rss_mib"] - baseline["max_rss_mib"]
        rows.append(row)
        run.report.progress({**row, "label": kind, "case": "readers"})

    cat = ["sh", "-c", "cat " + " ".join(f"'{p}'" for p in parts) + " > /dev/null"]
    runner.spawn(cat)  # warm-up: the page cache
    add("cat", cat, measure(runner, cat, repeat), None)

    import_command = [python, "-c", f"import tbweights.cli, {TBWEIGHTS_IMPORTS[kind]}"]
    baseline = {**measure(runner, import_command, repeat), "command": " ".join(import_command)}
    logdir = folder / f"{kind}-logs"
    convert = [python, "-m", "tbweights", "convert", str(path), "--logdir", str(logdir), "-q"]
    add("tbweights convert", convert, measure(runner, convert, repeat, lambda: shutil.rmtree(logdir, True)), baseline)

    for peer in peers:
        script = [python, str(HERE / "reader_peers.py"), peer, kind, str(path), str(logdir)]
        peer_repeat = min(repeat, PEER_REPEAT.get(peer, repeat))
        peer_baseline = {**measure(runner, [*script, "--import-only"], peer_repeat), "command": " ".join(script[:4])}
        result = measure(runner, script, peer_repeat, lambda: shutil.rmtree(logdir, True))
        add(f"{peer} add_histogram", script, result, peer_baseline)
    shutil.rmtree(logdir, ignore_errors=True)
    shutil.rmtree(folder / kind, ignore_errors=True)
    return rows


def markdown(result: dict[str, Any]) -> str:
    header = ["format", "MB", "tool", "runs", "median", "of which start-up + import", "time tbweights / tool",
              "max RSS, MiB",
              "above import baseline, MiB", "memory tbweights / tool", "peer: load + add_histogram"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result["results"]:
        if "skipped" in row:
            lines.append(f"| {row['format']} | | | | {row['skipped']} |" + " |" * (len(header) - 5))
            continue
        ours = next(
            r for r in result["results"] if r.get("format") == row["format"] and r["tool"] == "tbweights convert"
        )
        time_ratio = f"{ours['median_s'] / row['median_s']:.2f}" if row["tool"] != "tbweights convert" else "1"
        above = row.get("above_baseline_mib")
        memory_ratio = ""
        if above is not None and row["tool"] != "tbweights convert":
            memory_ratio = f"{ours['above_baseline_mib'] / above:.2f}" if above > 0 else "n/a"
        split = ""
        if "output" in row:
            split = f"{row['output']['load_s']:.2f} + {row['output']['histogram_s']:.2f} s"
        median = f"{row['median_s']:.3g} s" + (" (error)" if "error" in row else "")
        lines.append("| " + " | ".join([
            row["format"], f"{row['bytes'] / 1e6:,.0f}", row["tool"], str(len(row["times_s"])), median,
            f"{row['baseline_s']:.2f} s" if "baseline_s" in row else "", time_ratio,
            f"{row['max_rss_mib']:,.0f}", "" if above is None else f"{above:,.0f}", memory_ratio, split,
        ]) + " |")
    return "\n".join(lines) + "\n"


def environment() -> dict[str, Any]:
    versions = {}
    for name in ("numpy", "torch", "tensorboard", "tensorboardX", "gguf", "onnx", "flax", "jax", "orbax-checkpoint",
                 "msgpack"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "missing"
    commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {
        "tbweights_commit": commit.stdout.strip(),
        "python": sys.version.split()[0],
        "versions": versions,
        "cpus": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def missing_library(kind: str) -> str | None:
    names = {"gguf": ["gguf"], "onnx": ["onnx"], "flax-msgpack": ["flax"], "orbax": ["orbax.checkpoint", "jax"]}[kind]
    for name in names:
        try:
            __import__(name)
        except ImportError:
            return f"{LIBRARIES[kind]} is not installed"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["smoke", "full"], default="full", help="file sizes (default full)")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per command (default: 1 smoke, 3 full)")
    parser.add_argument("--formats", default=",".join(format_files.FORMATS),
                        help=f"comma-separated subset of {','.join(format_files.FORMATS)}")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated subset of torch,tensorboardx")
    parser.add_argument("--workdir", default=None, help="folder for the files (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    repeat = args.repeat or (3 if args.scale == "full" else 1)
    runner = run.Runner(sys.executable, None, repeat)
    peers = [p for p in args.peers.split(",") if p]
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="tbw-readers-", dir=args.workdir) as folder:
        for kind in args.formats.split(","):
            reason = missing_library(kind)
            if reason:
                rows.append({"format": kind, "tool": "all", "skipped": f"not run: {reason}"})
                continue
            rows.extend(run_format(runner, kind, args.scale, Path(folder), peers))
    result = {
        "scale": args.scale,
        "repeat": repeat,
        "argv": sys.argv[1:] if argv is None else argv,
        "total_s": time.perf_counter() - started,
        "load_average_before": load_before,
        "environment": environment(),
        "results": rows,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(markdown(result))
    print(f"{result['total_s']:.0f} s in all; load average before {load_before[0]:.2f}, "
          f"after {result['environment']['load_average'][0]:.2f}")
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
