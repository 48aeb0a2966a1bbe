"""Worker processes for tests/test_distributed.py (spawned, so they live in an importable module).

Each case builds the same small model on every rank, logs the unsharded copy in
one process (rank 0) as the reference, shards the model one way, logs it with
`log_weights_distributed`, and pickles every rank's statistics into `outdir`.
"""

from __future__ import annotations

import copy
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from tbweights import log_weights
from tbweights.distributed import log_weights_distributed


class Net(nn.Module):
    """Uneven sizes (7 rows over 2 or 4 ranks), a bf16 layer, constants, NaN and Inf."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.fc1 = nn.Linear(6, 7)
        self.norm = nn.LayerNorm(7)
        self.fc2 = nn.Linear(7, 3)
        self.wide = nn.Linear(300, 500)  # 150,000 elements: more than one kernel chunk
        self.low = nn.Linear(5, 5).to(torch.bfloat16)
        self.register_buffer("positions", torch.arange(9))
        with torch.no_grad():
            self.fc1.weight[0, 1] = float("nan")
            self.fc1.weight[3, 2] = float("inf")
            self.fc2.bias[1] = float("-inf")
            self.wide.weight[0, 4] = 0.0


def build_model() -> Net:
    torch.manual_seed(1234)
    return Net()


def _stats_by_name(report: Any) -> dict[str, Any]:
    return {r.tensor.name: (r.stats, r.tensor.shape, r.tensor.dtype) for r in report.results} | {
        s.name: s.reason for s in report.skipped
    }


def _leave() -> None:
    """Tear down and exit this worker without the interpreter's exit-time C++ teardown.

    With gloo on a loaded 2-core machine, about one worker in ten aborted there
    ("terminate called without an active exception") after all its work was done.
    """
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_case(rank: int, world: int, port: int, case: str, outdir: str) -> None:
    """Entry point for `torch.multiprocessing.spawn`."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        out = Path(outdir)
        model = build_model()
        if rank == 0:
            reference = log_weights(copy.deepcopy(model), out / "single", include_buffers=True)
            (out / "single.pkl").write_bytes(pickle.dumps(_stats_by_name(reference)))
        sharded = SHARDERS[case](model, world)
        report = log_weights_distributed(sharded, out / "dist", include_buffers=True)
        (out / f"rank{rank}.pkl").write_bytes(pickle.dumps(_stats_by_name(report)))
    except BaseException:
        dist.destroy_process_group()
        raise
    _leave()


def _fsdp2(model: Net, world: int) -> nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    for layer in (model.embed, model.fc1, model.fc2, model.wide, model.low):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _tensor_parallel(model: Net, world: int) -> nn.Module:
    """Colwise fc1 and embedding (Shard(0) and Shard(1)), rowwise fc2 and wide (Shard(1), Replicate bias)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    mesh = init_device_mesh("cpu", (world,))
    plan = {"embed": ColwiseParallel(), "fc1": ColwiseParallel(), "fc2": RowwiseParallel(), "wide": RowwiseParallel()}
    return parallelize_module(model, mesh, plan)


def _fsdp2_over_tensor_parallel(model: Net, world: int) -> nn.Module:
    """2-D: tensor parallel inside pairs of ranks, FSDP2 across them (_StridedShard placements)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    mesh = init_device_mesh("cpu", (world // 2, 2), mesh_dim_names=("dp", "tp"))
    plan = {"embed": ColwiseParallel(), "fc1": ColwiseParallel(), "fc2": RowwiseParallel(), "wide": ColwiseParallel()}
    parallelize_module(model, mesh["tp"], plan)
    fully_shard(model.low, mesh=mesh["dp"])
    fully_shard(model, mesh=mesh["dp"])
    return model


def _fsdp1(model: Net, world: int, use_orig_params: bool) -> nn.Module:
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    return FullyShardedDataParallel(
        model,
        auto_wrap_policy=ModuleWrapPolicy({nn.Linear}),
        device_id=torch.device("cpu"),
        use_orig_params=use_orig_params,
    )


SHARDERS = {
    "fsdp2": _fsdp2,
    "tensor_parallel": _tensor_parallel,
    "fsdp2_tp": _fsdp2_over_tensor_parallel,
    "fsdp1_orig": lambda model, world: _fsdp1(model, world, True),
    "fsdp1_flat": lambda model, world: _fsdp1(model, world, False),
}


def save_sharded_checkpoint(rank: int, world: int, port: int, outdir: str) -> None:
    """Entry point for `torch.multiprocessing.spawn`: an FSDP2 model saved with `dcp.save` from every rank."""
    import torch.distributed.checkpoint as dcp

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = _fsdp2(build_model(), world)
        dcp.save({"model": model.state_dict()}, checkpoint_id=outdir)
    except BaseException:
        dist.destroy_process_group()
        raise
    _leave()
