"""``torch.distributed`` plumbing: process-group set-up from torchrun's environment, gathers.

medprune never runs its own process pool: ``medprune train --nproc N`` re-launches itself under
``torch.distributed.run`` (torchrun), and each worker joins the process group here — gloo on CPU,
nccl on CUDA.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "gather_objects", "all_reduce_sum",
           "launch_torchrun", "under_torchrun", "barrier", "broadcast_buffers", "LaunchResult", "RankFailure",
           "record_worker_failure", "WORKER_ENV"]

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


@dataclass(frozen=True)
class RankFailure:
    """One worker of a failed distributed run: its rank, exit code and one-line reason."""

    rank: int
    exit_code: int
    message: str
    traceback: str | None = None


@dataclass(frozen=True)
class LaunchResult:
    """How a ``--nproc N`` run ended: exit code 0, or the failing ranks (root cause first)."""

    exit_code: int
    failures: tuple[RankFailure, ...] = ()
    log: Path | None = None


#: Set in the workers medprune launches, so their ``main`` reports failures to the launcher.
WORKER_ENV = "MEDPRUNE_DDP_WORKER"


def record_worker_failure(message: str, traceback_text: str | None = None, exit_code: int | None = None) -> bool:
    """In a launched worker, hand the failure to the launcher (torchelastic's error file).

    Returns ``False`` outside such a worker (nothing written). The launcher prints one line per
    failing rank from these files, instead of every rank's traceback. ``exit_code`` is the code the
    worker is about to exit with: the launcher may stop it (SIGTERM) before it gets there, once
    another rank has failed, and the failure must still read as what it was (2 for bad input).
    """
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not (path and os.environ.get(WORKER_ENV)):
        return False
    import json
    import time

    # torchelastic reads {"message": str, "timestamp": int}; the traceback rides along for the log.
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    Path(path).write_text(json.dumps({"message": " ".join(message.split()), "timestamp": int(now),
                                      "medprune_time": now, "medprune_traceback": traceback_text,
                                      "medprune_exit_code": exit_code}),
                          encoding="utf-8")
    return True


def launch_torchrun(nproc: int, module: str, argv: Sequence[str], log_dir: Path | None = None) -> LaunchResult:
    """Run ``python -m <module> <argv>`` as ``nproc`` local DDP workers (torchrun's launcher); the command
    line passes its own module, so this layer names none above it.

    Uses torch's elastic launcher (what the ``torchrun`` command runs) in this process, so a
    failure arrives as data — each failing rank's exit code and the one-line reason its worker
    recorded — rather than as torchrun's report of every rank's traceback. Tracebacks of failing
    ranks are written to ``log_dir/ddp_failure.log``. Workers see LOCAL_RANK/WORLD_SIZE and join
    the process group themselves.
    """
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=0.2, start_method="spawn")
    # Two processes on a small CPU must not each start one thread per core.
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // nproc)),
           WORKER_ENV: "1"}
    saved = {k: os.environ.get(k) for k in env}
    elastic = logging.getLogger("torch.distributed.elastic")
    level = elastic.level
    os.environ.update(env)
    elastic.setLevel(logging.CRITICAL)  # the launcher's own failure report is replaced by ours
    log.info("launching %d workers: python -m %s %s", nproc, module, " ".join(argv))
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", module, *argv)
        return LaunchResult(exit_code=0)
    except ChildFailedError as exc:
        failures = _failures(exc)
    except SignalException as exc:  # the launcher turns Ctrl-C into this after stopping the workers
        import signal

        if exc.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        raise
    finally:
        elastic.setLevel(level)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    path = None
    traces = [f"rank {f.rank} (exit code {f.exit_code}):\n{f.traceback}" for f in failures if f.traceback]
    if traces and log_dir is not None:
        from medprune._io import atomic_write_text

        path = atomic_write_text(Path(log_dir) / "ddp_failure.log", "\n".join(traces))
    return LaunchResult(exit_code=failures[0].exit_code or 1, failures=tuple(failures), log=path)


def _failures(exc: Any) -> list[RankFailure]:
    """The failing ranks of a ChildFailedError, earliest first (the root cause leads).

    Ranks the launcher stopped because another rank failed (SIGTERM, no report of their own) are
    left out when some rank reported a failure: they did not fail, they were stopped.
    """
    reported, stopped = [], []
    for rank, failure in exc.failures.items():
        data = failure.error_file_data if isinstance(failure.error_file_data, dict) else {}
        if data.get("message"):
            message = str(failure.message)
        elif failure.exitcode < 0:
            message = f"killed by signal {-failure.exitcode} ({failure.signal_name()})"
        else:
            message = "exited without a report (see the output above)"
        # A rank that reported and was then stopped by the launcher exits by signal: keep the code it meant.
        meant = data.get("medprune_exit_code")
        code = failure.exitcode if failure.exitcode > 0 else int(meant) if isinstance(meant, int) and meant > 0 else 1
        entry = (float(data.get("medprune_time") or failure.timestamp), int(rank), RankFailure(rank=int(rank), exit_code=code, message=message,
                                                           traceback=data.get("medprune_traceback")))
        (reported if data.get("message") else stopped).append(entry)
    chosen = reported or stopped
    return [f for _, _, f in sorted(chosen, key=lambda t: (t[0], t[1]))]
