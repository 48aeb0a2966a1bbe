"""Write into a summary writer the user already has, so a run keeps one event stream.

Supported writers, each recognized only when its module is already imported:

- `torch.utils.tensorboard.SummaryWriter`: summaries go to the event file that
  its `add_scalar` and `add_histogram` write, through its file writer's
  `add_summary`.
- `tensorboardX.SummaryWriter`: the same, after copying our proto into
  tensorboardX's own generated `Summary` class (same schema, other module).
- a `tf.summary` writer (`tf.summary.create_file_writer`): through
  `tf.summary.experimental.write_raw_pb` under `writer.as_default()`.

The user owns the writer: closing a `WeightWriter` flushes it and leaves it open.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tensorboard.compat.proto import summary_pb2

from tbweights.errors import TbweightsError
from tbweights.events import EventFile


class UnsupportedWriterError(TbweightsError, TypeError):
    """The object given in place of a log directory is no writer tbweights can use."""

    def __init__(self, obj: object) -> None:
        self.type_name = f"{type(obj).__module__}.{type(obj).__qualname__}"
        super().__init__(
            f"cannot write to a {self.type_name}: pass a log directory, a torch.utils.tensorboard or "
            "tensorboardX SummaryWriter, a tf.summary writer, or an object with write_summary, flush and close"
        )


class _FileWriterSink:
    """A torch or tensorboardX `SummaryWriter`; `convert` turns our proto into the writer's class."""

    def __init__(self, writer: Any, summary_class: Any = None) -> None:
        self.writer = writer
        self._summary_class = summary_class

    def write_summary(self, step: int, values: list[summary_pb2.Summary.Value]) -> None:
        summary: Any = summary_pb2.Summary(value=values)
        if self._summary_class is not None:
            summary = self._summary_class.FromString(summary.SerializeToString())
        # `_get_file_writer` is what both writers' own add_* methods call; it reopens a closed writer.
        self.writer._get_file_writer().add_summary(summary, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.flush()


class _TfSummarySink:
    """A `tf.summary` writer. TensorFlow is already imported, because the user created the writer."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def write_summary(self, step: int, values: list[summary_pb2.Summary.Value]) -> None:
        tf = sys.modules["tensorflow"]
        payload = summary_pb2.Summary(value=values).SerializeToString()
        with self.writer.as_default():
            tf.summary.experimental.write_raw_pb(payload, step=step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.flush()


def _is_instance(obj: object, module: str, attribute: str) -> bool:
    """isinstance against `module.attribute`, looked up only if `module` is already imported."""
    loaded = sys.modules.get(module)
    cls = getattr(loaded, attribute, None) if loaded is not None else None
    return isinstance(cls, type) and isinstance(obj, cls)


def sink_for(target: Any, filename_suffix: str = "") -> Any:
    """Return the sink for a log directory or a user's writer (see the module docstring)."""
    if isinstance(target, str | os.PathLike):
        return EventFile(target, filename_suffix)
    if _is_instance(target, "torch.utils.tensorboard", "SummaryWriter"):
        return _FileWriterSink(target)
    if _is_instance(target, "tensorboardX", "SummaryWriter"):
        from tensorboardX.proto import summary_pb2 as tensorboardx_summary_pb2

        return _FileWriterSink(target, tensorboardx_summary_pb2.Summary)
    if _is_tf_summary_writer(target):
        return _TfSummarySink(target)
    if all(callable(getattr(target, method, None)) for method in ("write_summary", "flush", "close")):
        return target
    raise UnsupportedWriterError(target)


def _is_tf_summary_writer(obj: object) -> bool:
    tf = sys.modules.get("tensorflow")
    writer_class = getattr(getattr(tf, "summary", None), "SummaryWriter", None)
    return isinstance(writer_class, type) and isinstance(obj, writer_class)
