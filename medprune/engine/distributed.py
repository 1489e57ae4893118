"""``torch.distributed`` plumbing: process-group set-up from torchrun's environment, gathers.

medprune never runs its own process pool: ``medprune train --nproc N`` re-launches itself under
``torch.distributed.run`` (torchrun), and each worker joins the process group here — gloo on CPU,
nccl on CUDA.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "gather_objects", "all_reduce_sum",
           "launch_torchrun", "under_torchrun", "barrier", "broadcast_buffers"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and logs."""
        return self.rank == 0


def under_torchrun() -> bool:
    """True when this process was started by torchrun (it sets LOCAL_RANK and WORLD_SIZE)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group described by torchrun's environment, or return a single-process info.

    The backend is nccl for CUDA devices and gloo otherwise.
    """
    if not under_torchrun():
        return DistInfo()
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ["LOCAL_RANK"])
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        log.info("joined process group: rank %d of %d (%s)", rank, world, backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def cleanup_distributed() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op in a single-process job)."""
    if info.enabled:
        dist.barrier()


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every process receives the list of every process's ``obj`` (rank order)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: Sequence[float], info: DistInfo, device: torch.device) -> list[float]:
    """Sum each of ``values`` across processes."""
    if not info.enabled:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm running statistics) to every process."""
    if not info.enabled:
        return
    for buf in module.buffers():
        dist.broadcast(buf, src=0)


def launch_torchrun(nproc: int, argv: Sequence[str]) -> int:
    """Run ``python -m medprune.cli <argv>`` under torchrun with ``nproc`` local processes.

    Returns torchrun's exit code. The workers see LOCAL_RANK/WORLD_SIZE and join the group.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "medprune.cli", *argv]
    env = dict(os.environ)
    # Two processes on a small CPU must not each start one thread per core.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    log.info("launching: %s", " ".join(cmd))
    return subprocess.call(cmd, env=env)
