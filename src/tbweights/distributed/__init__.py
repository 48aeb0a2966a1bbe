"""Log a model sharded across `torch.distributed` processes, each rank reading only its shards.

FSDP2 (`fully_shard`), tensor-parallel DTensor layouts and FSDP1
(`FullyShardedDataParallel`) models are summarized without gathering any full
parameter: each rank scans its own shards and the ranks combine the partial
results with a few collectives per step (see `tbweights.distributed.collective`).
Only rank 0 of the group writes the event file, and every rank gets the same
`StepReport` back. The histograms, first values and counts equal what logging
the unsharded model in one process writes; mean and std agree up to float
rounding.

>>> writer = DistributedWeightWriter("runs/fsdp")   # on every rank
>>> writer.log(model, step=0)                       # collective: call it on every rank

Importing this module imports torch and `torch.distributed`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import torch.distributed as dist
from tensorboard.compat.proto import summary_pb2

from tbweights.distributed.collective import sharded_stats
from tbweights.distributed.layout import local_parts
from tbweights.stats import DEFAULT_BUCKETS, DEFAULT_FIRST, TensorStats
from tbweights.tensors import NamedTensor
from tbweights.writer import (
    Skipped,
    StepReport,
    SummaryOptions,
    SummarySink,
    WeightWriter,
)

__all__ = ["DistributedWeightWriter", "log_weights_distributed"]


class _DiscardSink:
    """The sink of ranks that do not write: summaries are built and dropped."""

    def write_summary(self, step: int, values: list[summary_pb2.Summary.Value]) -> None:
        del step, values

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class DistributedWeightWriter:
    """A `WeightWriter` for sharded models: construct and call it on every rank of `group`.

    Rank 0 of `group` writes to `logdir` (or to `sink`); the other ranks may pass
    the same arguments or none, and write nothing. `group` defaults to the
    default process group, which must be initialized first.
    """

    def __init__(
        self,
        logdir: str | os.PathLike[str] | None = None,
        *,
        group: Any = None,
        first: int = DEFAULT_FIRST,
        buckets: int = DEFAULT_BUCKETS,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        include_buffers: bool = False,
        sink: SummarySink | None = None,
        filename_suffix: str = "",
    ) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "torch.distributed is not initialized; call torch.distributed.init_process_group "
                "on every rank first (torchrun sets the environment it needs)"
            )
        self.group = group
        self.rank = dist.get_rank(group)
        options: dict[str, Any] = {
            "first": first,
            "buckets": buckets,
            "include": include,
            "exclude": exclude,
            "include_buffers": include_buffers,
        }
        if self.rank == 0:
            self._writer = WeightWriter(logdir, sink=sink, filename_suffix=filename_suffix, **options)
        else:
            self._writer = WeightWriter(sink=_DiscardSink(), **options)

    @property
    def options(self) -> SummaryOptions:
        return self._writer.options

    @property
    def path(self) -> str | None:
        """The event file's path on rank 0 when this writer made one; None on other ranks."""
        return self._writer.path

    def log(self, model: Any, step: int = 0) -> StepReport:
        """Summarize every tensor of a sharded model at `step`; collective over the group.

        `model` is an `nn.Module` (FSDP2, tensor parallel, FSDP1 or plain) or a mapping
        of names to tensors, such as an FSDP2 model's `state_dict()`. Plain tensors
        are taken to be replicated: rank 0's copy is the one summarized.
        """
        parts = [
            part
            for part in local_parts(model, self.group, self.options.include_buffers)
            if self.options.selects(part.tensor.name)
        ]
        outcomes = sharded_stats(parts, self.group, buckets=self.options.buckets, first=self.options.first)
        computed: list[tuple[NamedTensor, TensorStats]] = []
        skipped: list[Skipped] = []
        for part, outcome in zip(parts, outcomes, strict=True):
            if isinstance(outcome, str):
                skipped.append(Skipped(part.tensor.name, outcome))
            else:
                computed.append((part.tensor, outcome))
        return self._writer.log_stats(computed, step, skipped)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> DistributedWeightWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def log_weights_distributed(
    model: Any,
    logdir: str | os.PathLike[str] | None,
    step: int = 0,
    *,
    group: Any = None,
    **options: Any,
) -> StepReport:
    """Write one step of weight summaries for a sharded model; call it on every rank.

    Rank 0 of `group` writes a new event file in `logdir`. Options are those of
    `DistributedWeightWriter`: `first`, `buckets`, `include`, `exclude`,
    `include_buffers`, `sink`, `filename_suffix`.
    """
    with DistributedWeightWriter(logdir, group=group, **options) as writer:
        return writer.log(model, step)

