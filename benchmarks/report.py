"""Markdown tables from the results of `run.py`."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

MIB = 1 << 20


def progress(row: dict[str, Any]) -> None:
    """One line per finished case on stderr, so a long run shows where it is."""
    if "skipped" in row:
        state = f"skipped: {row['skipped']}"
    elif "error" in row:
        state = f"error: {row['error']}"
    else:
        state = f"median {row['median_s']:.4g} s, max RSS {row['max_rss_mib']:.0f} MiB"
    print(f"[bench] {row['label']} | {row['tool']}: {state}", file=sys.stderr, flush=True)


def markdown(result: dict[str, Any]) -> str:
    rows = result["results"]
    parts = [_environment(result)]
    for title, kind, render in (
        ("One float32 tensor: statistics and histogram", "tensor", _tensor_table),
        ("Every parameter of a GPT-2-shaped model at one step", "model", _model_table),
        ("Event writing: many small tensors at one step", "events", _events_table),
        ("Upcasting to float32, chunk by chunk", "upcast", _upcast_table),
        ("Interpreter start-up and import", "startup", _startup_table),
        ("Converting checkpoints (`tbweights convert`) against `cat FILE > /dev/null`", "convert", _convert_table),
        ("`tbweights convert --jobs`", "jobs", _jobs_table),
    ):
        selected = [r for r in rows if r["case"] == kind]
        if selected:
            parts.append(f"### {title}\n\n" + render(selected, rows))
    return "\n\n".join(parts) + "\n"


def _environment(result: dict[str, Any]) -> str:
    env = result["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    return (f"Scale `{result['scale']}`, median of {result['repeat']} timed runs per case after one warm-up "
            f"(`python benchmarks/run.py {' '.join(result['argv'])}`), {env['date']}.\n\n"
            f"CPU: {env['cpu']}, {env['cpus']} CPUs, {env['memory_gib']} GiB; {env['platform']}.\n"
            f"Versions: {versions}; tbweights at commit {env['tbweights_commit']}.")


def _table(header: Iterable[str], body: Iterable[Iterable[str]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _time(row: dict[str, Any]) -> str:
    if "skipped" in row:
        return row["skipped"]
    if "error" in row:
        return f"failed: {row['error']}"
    return f"{row['median_s']:.4g} s"


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _ok(row: dict[str, Any]) -> bool:
    return "median_s" in row and "error" not in row


def _tensor_table(rows: list[dict[str, Any]], _: list[dict[str, Any]]) -> str:
    body = []
    for elements in sorted({r["elements"] for r in rows}):
        group = [r for r in rows if r["elements"] == elements]
        ours = next((r for r in group if r["tool"] == "tbweights" and _ok(r)), None)
        for row in group:
            speed = f"{elements / row['median_s'] / 1e6:,.0f}" if _ok(row) else ""
            ratio = f"{ours['median_s'] / row['median_s']:.3f}" if ours and _ok(row) else ""
            cpu = f"{_median(row['cpu_s']) / elements * 1e9:.2f}" if _ok(row) and row.get("cpu_s") else ""
            body.append([f"{elements:,}", row["tool"], _time(row), speed, cpu, ratio,
                         _mib(row.get("peak_above_setup_mib")), _mib(row.get("max_rss_mib"))])
    return _table(["elements", "tool", "median", "M elements/s", "CPU ns per element (all threads)",
                   "time ratio tbweights / tool", "peak RSS above setup, MiB", "process max RSS, MiB"], body)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _model_table(rows: list[dict[str, Any]], _: list[dict[str, Any]]) -> str:
    ours = next((r for r in rows if r["tool"] == "tbweights" and _ok(r)), None)
    body = []
    for row in rows:
        ratio = f"{ours['median_s'] / row['median_s']:.3f}" if ours and _ok(row) else ""
        speedup = f"{row['median_s'] / ours['median_s']:.1f} x" if ours and _ok(row) else ""
        body.append([row["tool"], _time(row), ratio, speedup, _mib(row.get("peak_above_setup_mib")),
                     _mib(row.get("rss_setup_mib")), _mib(row.get("max_rss_mib"))])
    return _table(["tool", "median", "time ratio tbweights / tool", "tbweights faster by",
                   "peak RSS above the model, MiB", "RSS with the model, MiB", "process max RSS, MiB"], body)


def _events_table(rows: list[dict[str, Any]], _: list[dict[str, Any]]) -> str:
    body = [[row["tool"], str(row["count"]), _time(row),
             f"{row['median_s'] / row['count'] * 1e6:.0f}" if _ok(row) else ""] for row in rows]
    return _table(["tool", "tensors", "median", "µs per tensor"], body)


def _upcast_table(rows: list[dict[str, Any]], _: list[dict[str, Any]]) -> str:
    itemsize = {"float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1}
    body = []
    for row in rows:
        dtype = row["tool"].removesuffix("-astype")
        how = "NumPy / ml_dtypes cast" if row["tool"].endswith("-astype") else "tbweights"
        if _ok(row):
            rate = row["elements"] / row["median_s"]
            body.append([dtype, how, f"{row['elements']:,}", _time(row), f"{rate / 1e6:,.0f}",
                         f"{rate * itemsize[dtype] / 1e9:.2f}", f"{rate * 4 / 1e9:.2f}"])
        else:
            body.append([dtype, how, f"{row['elements']:,}", _time(row), "", "", ""])
    return _table(["dtype", "method", "elements", "median", "M elements/s", "GB/s read", "GB/s float32 written"], body)


def _startup_table(rows: list[dict[str, Any]], _: list[dict[str, Any]]) -> str:
    body = [[f"`{row['command']}`", _time(row), _mib(row.get("max_rss_mib"))] for row in rows]
    return _table(["command", "median", "max RSS, MiB"], body)


def _convert_table(rows: list[dict[str, Any]], everything: list[dict[str, Any]]) -> str:
    baselines = {r["tool"]: r for r in everything if r["case"] == "startup" and _ok(r)}
    body = []
    for name in dict.fromkeys(r["file"] for r in rows):
        cat = next((r for r in rows if r["file"] == name and r["tool"] == "cat" and _ok(r)), None)
        conv = next((r for r in rows if r["file"] == name and r["tool"] == "tbweights convert"), None)
        if conv is None:
            continue
        base = baselines.get("import torch" if name.endswith(".pt") else "import")
        above = conv["max_rss_mib"] - base["max_rss_mib"] if base and _ok(conv) else None
        limit = conv["largest_tensor_bytes"] / MIB + 128
        ratio = f"{conv['median_s'] / cat['median_s']:.1f}" if cat and _ok(conv) else ""
        body.append([name, f"{conv['bytes'] / 1e9:.2f}", _time(cat) if cat else "", _time(conv), ratio,
                     _mib(conv.get("max_rss_mib")), _mib(above), f"{limit:,.0f}"])
    return _table(["file", "GB", "cat (page cache)", "tbweights convert (whole process)", "convert / cat",
                   "max RSS, MiB", "above the import baseline, MiB", "limit: largest tensor + 128 MiB"], body)


def _jobs_table(rows: list[dict[str, Any]], _: list[dict[str, Any]]) -> str:
    body = [[row["tool"], f"{row['bytes'] / 1e9:.2f}", _time(row), _mib(row.get("max_rss_mib"))] for row in rows]
    return _table(["jobs", "GB in all", "median", "max RSS of the parent, MiB"], body)
