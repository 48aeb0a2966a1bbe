"""One benchmark case in a fresh process: `python benchmarks/cases.py '<json spec>'`.

The process builds its input, runs the measured call once to warm up, resets the
kernel's peak-RSS counter (`/proc/self/clear_refs`), then times `repeat` calls and
prints one JSON line: the times, the RSS after setup and the peak RSS above it.
`run.py` starts one such process per case and tool.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data  # noqa: E402


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def tensor_call(tool: str, elements: int, logdir: str) -> Callable[[], Any]:
    values = data.tensor(elements)
    if tool == "tbweights-stats":
        from tbweights import compute_stats

        return lambda: compute_stats(values)
    if tool == "tbweights":
        from tbweights.tensors import NamedTensor
        from tbweights.writer import WeightWriter

        writer = WeightWriter(logdir)
        record = NamedTensor("w", values.shape, "float32", lambda: values)
        return lambda: writer.log_tensors([record], 0)
    if tool.startswith(("torch", "tensorboardx")):
        import torch

        tensor = torch.from_numpy(values)
        writer = peer_writer(tool, logdir)
        bins = "tensorflow" if tool.endswith("default") else 30
        return lambda: (writer.add_histogram("w", tensor, 0, bins=bins), writer.flush())
    if tool == "tf":
        import tensorflow as tf

        tensor = tf.convert_to_tensor(values)
        writer = tf.summary.create_file_writer(logdir)

        def call() -> None:
            with writer.as_default():
                tf.summary.histogram("w", tensor, step=0)
            writer.flush()

        return call
    raise ValueError(f"unknown tool {tool!r}")


def peer_writer(tool: str, logdir: str) -> Any:
    if tool.startswith("torch"):
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(logdir)
    from tensorboardX import SummaryWriter as XWriter

    return XWriter(logdir)


def model_call(tool: str, scale: str, logdir: str) -> Callable[[], Any]:
    model = data.torch_model(scale)
    if tool == "tbweights":
        from tbweights.writer import WeightWriter

        writer = WeightWriter(logdir)
        return lambda: writer.log(model, 0)
    if tool.startswith(("torch", "tensorboardx")):
        writer = peer_writer(tool, logdir)
        bins = "tensorflow" if tool.endswith("default") else 30

        def loop() -> None:
            for name, param in model.named_parameters():
                writer.add_histogram(name, param, 0, bins=bins)
            writer.flush()

        return loop
    if tool == "tf":
        import tensorflow as tf

        tensors = {name: tf.convert_to_tensor(p.detach().numpy()) for name, p in model.named_parameters()}
        del model
        writer = tf.summary.create_file_writer(logdir)

        def tf_loop() -> None:
            with writer.as_default():
                for name, tensor in tensors.items():
                    tf.summary.histogram(name.replace(".", "/"), tensor, step=0)
            writer.flush()

        return tf_loop
    raise ValueError(f"unknown tool {tool!r}")


def events_call(tool: str, count: int, logdir: str) -> Callable[[], Any]:
    """Log `count` small tensors; `tbweights-tbcrc` frames records with TensorBoard's pure-Python CRC."""
    from tbweights import events
    from tbweights.writer import WeightWriter

    if tool == "tbweights-tbcrc":
        import io

        from tensorboard.summary.writer.record_writer import RecordWriter

        def tensorboard_frame(payload: bytes) -> bytes:
            buffer = io.BytesIO()
            RecordWriter(buffer).write(payload)
            return buffer.getvalue()

        events.frame_record = tensorboard_frame
    tensors = data.many_tensors(count)
    writer = WeightWriter(logdir)
    return lambda: writer.log(tensors, 0)


def upcast_call(tool: str, elements: int) -> Callable[[], Any]:
    """Upcast `elements` values chunk by chunk: `<dtype>` with tbweights, `<dtype>-astype` with NumPy/ml_dtypes."""
    import ml_dtypes
    import numpy as np

    from tbweights.stats import CHUNK_ELEMENTS
    from tbweights.stats_chunks import Upcaster

    name = tool.removesuffix("-astype")
    dtype = np.dtype({"float16": np.float16, "bfloat16": ml_dtypes.bfloat16,
                      "float8_e4m3fn": ml_dtypes.float8_e4m3fn, "float8_e5m2": ml_dtypes.float8_e5m2}[name])
    source = data.tensor(elements).astype(dtype)
    if tool.endswith("-astype"):
        buffer = np.empty(CHUNK_ELEMENTS, dtype=np.float32)

        def astype() -> None:
            for start in range(0, source.size, CHUNK_ELEMENTS):
                part = source[start : start + CHUNK_ELEMENTS]
                np.copyto(buffer[: part.size], part, casting="unsafe")

        return astype
    upcast = Upcaster(dtype, CHUNK_ELEMENTS)

    def ours() -> None:
        for start in range(0, source.size, CHUNK_ELEMENTS):
            upcast(source[start : start + CHUNK_ELEMENTS])

    return ours


def build(spec: dict[str, Any], logdir: str) -> Callable[[], Any]:
    kind, tool = spec["case"], spec["tool"]
    if kind == "tensor":
        return tensor_call(tool, spec["elements"], logdir)
    if kind == "model":
        return model_call(tool, spec["scale"], logdir)
    if kind == "events":
        return events_call(tool, spec["count"], logdir)
    if kind == "upcast":
        return upcast_call(tool, spec["elements"])
    raise ValueError(f"unknown case {kind!r}")


def main() -> None:
    spec = json.loads(sys.argv[1])
    with tempfile.TemporaryDirectory(prefix="tbw-bench-") as logdir:
        start = time.perf_counter()
        call = build(spec, logdir)
        setup_s = time.perf_counter() - start
        call()  # warm-up: first-touch allocations, lazy imports, caches
        rss_setup = rss_kib("VmRSS")
        has_peak = reset_peak()
        times, cpu = [], []
        for _ in range(spec.get("repeat", 3)):
            start, start_cpu = time.perf_counter(), time.process_time()
            call()
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        peak = rss_kib("VmHWM")
    print(json.dumps({
        "times_s": times,
        "cpu_s": cpu,  # CPU time of all threads: less sensitive than wall time to other load
        "setup_s": setup_s,
        "rss_setup_mib": rss_setup / 1024,
        "peak_above_setup_mib": (peak - rss_setup) / 1024 if has_peak else None,
    }))


if __name__ == "__main__":
    main()
