"""Shared test helpers: read event files back with TensorBoard's own reader."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from markdown_tables import table_records


class RunReader:
    """Every tensor summary of one run, as TensorBoard's EventAccumulator loads it."""

    def __init__(self, logdir: str | os.PathLike[str]) -> None:
        self.accumulator = event_accumulator.EventAccumulator(
            os.fspath(logdir), size_guidance={event_accumulator.TENSORS: 0}
        )
        self.accumulator.Reload()

    @property
    def tags(self) -> list[str]:
        return list(self.accumulator.Tags()["tensors"])

    def plugin(self, tag: str) -> str:
        return self.accumulator.SummaryMetadata(tag).plugin_data.plugin_name

    def steps(self, tag: str) -> list[int]:
        return [event.step for event in self.accumulator.Tensors(tag)]

    def value(self, tag: str, step: int = 0) -> np.ndarray:
        for event in self.accumulator.Tensors(tag):
            if event.step == step:
                return tensor_util.make_ndarray(event.tensor_proto)
        raise KeyError(f"no step {step} for tag {tag!r}")

    def text(self, tag: str, step: int = 0) -> str:
        value = self.value(tag, step)
        return value.item().decode("utf-8") if value.ndim == 0 else str(value)

    def table(self, tag: str, step: int = 0) -> list[dict[str, str]]:
        """The rows of the Markdown table in a text summary, as {column: cell} dicts."""
        return table_records(self.text(tag, step))


@pytest.fixture
def read_run():
    return RunReader


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    return tmp_path / "run"
