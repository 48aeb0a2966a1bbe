"""Run tbweights and its peers side by side, one fresh process per case and tool.

    python benchmarks/run.py --scale smoke              # seconds; what CI runs
    python benchmarks/run.py --scale full --tf-python /path/to/venv-with-tf/bin/python

Cases: one float32 tensor (statistics and histogram); every parameter of a
GPT-2-small-shaped torch model at one step; event writing for thousands of small
tensors (native CRC-32C against TensorBoard's pure-Python one); upcasting float16,
bfloat16 and float8 chunk by chunk; `tbweights convert` of safetensors and torch
zip checkpoints (float32 and bfloat16) against `cat FILE > /dev/null`, and
`--jobs 2` against one process. Each tool runs in its own process (`cases.py`),
which reports the median of `--repeat` timed calls after one warm-up call, and
its peak RSS; this script adds the process's max RSS from `wait4` and writes JSON
and Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import data  # noqa: E402
import report  # noqa: E402

TENSOR_TOOLS = ["tbweights-stats", "tbweights", "torch-default", "torch-30", "tensorboardx-default", "tf"]
MODEL_TOOLS = ["tbweights", "torch-default", "torch-30", "tensorboardx-default", "tf"]
CHECKPOINT_KINDS = ["safetensors-float32", "torch-float32", "safetensors-bfloat16", "torch-bfloat16"]
UPCAST_DTYPES = ["float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"]
# TensorFlow's histogram needed about 69 bytes per input byte (measured at 16M elements):
# 128M float32 elements would need about 35 GB.
TF_MAX_ELEMENTS = 1 << 25

SIZES = {
    "smoke": {"tensor": [1 << 16], "events": 40, "upcast": 1 << 16},
    "full": {"tensor": [1 << 20, 1 << 24, 1 << 27], "events": 5000, "upcast": 1 << 26},
}


# Runs the command given as JSON, then writes its exit code, wall time and max RSS
# (from wait4, for that child alone) as the last line of stderr.
_LAUNCHER = """
import json, os, sys, time
command = json.loads(sys.argv[1])
start = time.perf_counter()
pid = os.posix_spawnp(command[0], command, os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
sys.stderr.flush()
print(json.dumps({"returncode": os.waitstatus_to_exitcode(status), "wall_s": wall,
                  "max_rss_kib": usage.ru_maxrss}), file=sys.stderr)
"""


@dataclass
class Runner:
    python: str
    tf_python: str | None
    repeat: int
    tools: set[str] | None = None  # None: every tool
    results: list[dict[str, Any]] = field(default_factory=list)

    def wants(self, tool: str) -> bool:
        return self.tools is None or tool in self.tools

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        src = HERE.parent / "src"
        if src.is_dir():
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH", "")) if p)
        return env

    def case(self, spec: dict[str, Any], label: str) -> None:
        if not self.wants(spec["tool"]):
            return
        python = self.tf_python if spec["tool"] == "tf" else self.python
        if python is None:
            self.skip(spec, label, "TensorFlow is not installed for this run (--tf-python)")
            return
        spec = {**spec, "repeat": spec.get("repeat", self.repeat)}
        command = [python, str(HERE / "cases.py"), json.dumps(spec)]
        outcome, wall, max_rss = self.spawn(command)
        row = {
            **spec,
            "label": label,
            "command": " ".join(command[1:2]) + f" '{json.dumps(spec)}'",
            "max_rss_mib": max_rss,
            "wall_s": wall,
        }
        if outcome.returncode != 0:
            row["error"] = (outcome.stderr.strip().splitlines() or ["failed"])[-1]
        else:
            measured = json.loads(outcome.stdout.strip().splitlines()[-1])
            row.update(measured, median_s=statistics.median(measured["times_s"]))
        self.results.append(row)
        report.progress(row)

    def spawn(self, command: list[str]) -> tuple[subprocess.CompletedProcess[str], float, float]:
        """Run a command; its wall time and max RSS (MiB), for this command only.

        A child's max RSS counts the memory of the process it was forked from until
        it calls exec, so the command is started by a small launcher process
        (`python -S`, about 10 MiB) rather than by this one, which has imported torch.
        """
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            launcher = [sys.executable, "-S", "-c", _LAUNCHER, json.dumps(command)]
            start = time.perf_counter()
            finished = subprocess.run(launcher, stdout=out, stderr=err, env=self.env(), check=False)
            wall = time.perf_counter() - start
            out.seek(0)
            err.seek(0)
            stderr_lines = err.read().splitlines()
            usage = json.loads(stderr_lines.pop()) if finished.returncode == 0 and stderr_lines else {}
            outcome = subprocess.CompletedProcess(
                command, usage.get("returncode", finished.returncode), out.read(), "\n".join(stderr_lines)
            )
        return outcome, usage.get("wall_s", wall), usage.get("max_rss_kib", float("nan")) / 1024

    def skip(self, spec: dict[str, Any], label: str, reason: str) -> None:
        row = {**spec, "label": label, "skipped": reason}
        self.results.append(row)
        report.progress(row)

    def timed_command(self, spec: dict[str, Any], label: str, command: list[str], repeat: int) -> None:
        """Run a whole command `repeat` times after one warm-up run (page cache, disk)."""
        self.spawn(command)
        walls, rss = [], []
        error = None
        for _ in range(repeat):
            outcome, wall, max_rss = self.spawn(command)
            if outcome.returncode != 0:
                error = (outcome.stderr.strip().splitlines() or ["failed"])[-1]
            walls.append(wall)
            rss.append(max_rss)
        row = {
            **spec,
            "label": label,
            "command": " ".join(command),
            "times_s": walls,
            "median_s": statistics.median(walls),
            "max_rss_mib": max(rss),
        }
        if error:
            row["error"] = error
        self.results.append(row)
        report.progress(row)


def run_tensor_cases(runner: Runner, scale: str) -> None:
    for elements in SIZES[scale]["tensor"]:
        for tool in TENSOR_TOOLS:
            spec = {"case": "tensor", "tool": tool, "elements": elements}
            label = f"tensor {elements:,} float32"
            if tool == "tf" and elements > TF_MAX_ELEMENTS:
                runner.skip(spec, label, "not run: would need about 35 GB (69 x the input, measured at 16M elements)")
                continue
            repeat = 1 if elements >= 1 << 27 and tool.startswith(("torch-default", "tensorboardx")) else None
            runner.case({**spec, **({"repeat": repeat} if repeat else {})}, label)


def run_model_cases(runner: Runner, scale: str) -> None:
    largest = max(_numel(shape) for shape in data.gpt2_shapes(**data.model_shape(scale)).values()) * 4
    for tool in MODEL_TOOLS:
        spec = {"case": "model", "tool": tool, "scale": scale}
        label = f"GPT-2 model ({scale}) at one step"
        need = 69 * largest + (2 << 30)
        if tool == "tf" and _available_bytes() < need:
            runner.skip(
                spec,
                label,
                f"not run: the largest tensor would need about {need / 2**30:.0f} GiB "
                f"(69 x its size, measured at 16M elements) and {_available_bytes() / 2**30:.0f} GiB are free",
            )
            continue
        runner.case(spec, label)


def _available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def run_event_cases(runner: Runner, scale: str) -> None:
    count = SIZES[scale]["events"]
    for tool in ("tbweights", "tbweights-tbcrc"):
        runner.case({"case": "events", "tool": tool, "count": count}, f"{count} small tensors at one step")


def run_upcast_cases(runner: Runner, scale: str) -> None:
    elements = SIZES[scale]["upcast"]
    for dtype in UPCAST_DTYPES:
        for tool in (dtype, f"{dtype}-astype"):
            runner.case({"case": "upcast", "tool": tool, "elements": elements}, f"upcast {elements:,} {dtype}")


def run_convert_cases(runner: Runner, scale: str, folder: Path, kinds: list[str]) -> None:
    python = runner.python
    repeat = 3 if scale == "full" else 1
    runner.timed_command({"case": "startup", "tool": "python"}, "interpreter start-up", [python, "-c", "pass"], repeat)
    runner.timed_command(
        {"case": "startup", "tool": "import"},
        "python -c 'import tbweights.cli'",
        [python, "-c", "import tbweights.cli"],
        repeat,
    )
    files = []
    for dtype in ("float32", "bfloat16"):
        for kind in ("safetensors", "torch"):
            if f"{kind}-{dtype}" not in kinds:
                continue
            path = folder / f"{dtype}.{'safetensors' if kind == 'safetensors' else 'pt'}"
            data.write_checkpoint(path, scale, dtype, kind)
            files.append(path)
            size = path.stat().st_size
            label = f"{kind} {dtype} checkpoint, {size / 1e9:.2f} GB"
            largest = max(_numel(s) for s in data.checkpoint_shapes(scale, dtype).values()) * (
                4 if dtype == "float32" else 2
            )
            spec = {"case": "convert", "file": path.name, "bytes": size, "largest_tensor_bytes": largest}
            runner.timed_command({**spec, "tool": "cat"}, label, ["sh", "-c", f"cat '{path}' > /dev/null"], repeat)
            logdir = folder / "logs"
            runner.timed_command(
                {**spec, "tool": "tbweights convert"},
                label,
                [python, "-m", "tbweights", "convert", str(path), "--logdir", str(logdir), "-q"],
                repeat,
            )
            shutil.rmtree(logdir, ignore_errors=True)
            if kind == "torch" and not any(r["tool"] == "import torch" for r in runner.results):
                # torch.load is imported by the CLI only for torch files: measure its baseline too.
                runner.timed_command(
                    {"case": "startup", "tool": "import torch"},
                    "python -c 'import tbweights.cli, torch'",
                    [python, "-c", "import tbweights.cli, torch"],
                    repeat,
                )
    if len(files) < 2:
        for path in files:
            path.unlink()
        return
    total = sum(p.stat().st_size for p in files)
    label = f"4 checkpoints, {total / 1e9:.2f} GB"
    for jobs in (1, 2):
        logdir = folder / f"jobs{jobs}"
        runner.timed_command(
            {"case": "jobs", "tool": f"--jobs {jobs}", "bytes": total},
            label,
            [
                python,
                "-m",
                "tbweights",
                "convert",
                *map(str, files),
                "--logdir",
                str(logdir),
                "--jobs",
                str(jobs),
                "-q",
            ],
            1,
        )
        shutil.rmtree(logdir, ignore_errors=True)
    for path in files:
        path.unlink()


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def environment(python: str, tf_python: str | None) -> dict[str, Any]:
    probe = (
        "import json, sys, numpy, torch, tensorboard, tensorboardX, ml_dtypes\n"
        "print(json.dumps({'python': sys.version.split()[0], 'numpy': numpy.__version__, 'torch': torch.__version__,"
        " 'tensorboard': tensorboard.__version__, 'tensorboardX': tensorboardX.__version__,"
        " 'ml_dtypes': ml_dtypes.__version__}))"
    )
    versions = json.loads(subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout)
    if tf_python:
        tf = subprocess.run(
            [tf_python, "-c", "import tensorflow as tf; print(tf.__version__)"], capture_output=True, text=True
        )
        versions["tensorflow"] = tf.stdout.strip() or "unavailable"
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {
        "cpu": cpu,
        "cpus": len(os.sched_getaffinity(0)),
        "memory_gib": round(_mem_total_gib(), 1),
        "platform": platform.platform(),
        "versions": versions,
        "tbweights_commit": commit.stdout.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def _mem_total_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SIZES), default="smoke", help="input sizes (default smoke)")
    parser.add_argument("--repeat", type=int, default=None, help="timed calls per case (default: 1 smoke, 5 full)")
    parser.add_argument(
        "--cases",
        default="tensor,model,events,upcast,convert",
        help="comma-separated subset of: tensor, model, events, upcast, convert",
    )
    parser.add_argument(
        "--tools",
        default=None,
        help="comma-separated tools to run in the tensor, model, events and upcast cases (default all)",
    )
    parser.add_argument(
        "--checkpoints",
        default=",".join(CHECKPOINT_KINDS),
        help=f"comma-separated checkpoints for the convert case (default {','.join(CHECKPOINT_KINDS)})",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter for tbweights and the torch peers")
    parser.add_argument("--tf-python", default=None, help="interpreter with TensorFlow, for the tf.summary peer")
    parser.add_argument("--workdir", default=None, help="folder for checkpoint files (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--markdown", default=None, help="write the result tables as Markdown here")
    args = parser.parse_args(argv)

    repeat = args.repeat or (5 if args.scale == "full" else 1)
    tools = set(args.tools.split(",")) if args.tools else None
    runner = Runner(args.python, args.tf_python, repeat, tools)
    chosen = set(args.cases.split(","))
    with tempfile.TemporaryDirectory(prefix="tbw-bench-", dir=args.workdir) as folder:
        for name, run in (
            ("tensor", run_tensor_cases),
            ("model", run_model_cases),
            ("events", run_event_cases),
            ("upcast", run_upcast_cases),
        ):
            if name in chosen:
                run(runner, args.scale)
        if "convert" in chosen:
            run_convert_cases(runner, args.scale, Path(folder), args.checkpoints.split(","))
    result = {
        "scale": args.scale,
        "repeat": repeat,
        "argv": sys.argv[1:],
        "environment": environment(args.python, args.tf_python),
        "results": runner.results,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    tables = report.markdown(result)
    if args.markdown:
        Path(args.markdown).write_text(tables)
    print(tables)
    return 1 if any("error" in row for row in runner.results) else 0


if __name__ == "__main__":
    sys.exit(main())
