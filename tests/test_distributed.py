"""DDP through torch.distributed (gloo on CPU): replicas stay identical, validation covers each sample once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from medprune.config import config_from_dict
from tests.conftest import ROOT, write_yaml


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg_dict: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from medprune.engine.distributed import DistInfo, cleanup_distributed
    from medprune.workflows.jobs import train
    from medprune.engine.trainer import predict

    cfg = config_from_dict(cfg_dict, "ddp.yaml")
    outcome = train(cfg, evaluate_test=False)
    val = outcome.data.datasets["val"]
    preds = predict(outcome.model, val, cfg.build_task(), batch_size=3, device=torch.device("cpu"),
                    dist_info=DistInfo(rank, world, rank))
    torch.save({"params": {k: v.clone() for k, v in outcome.model.state_dict().items()},
                "indices": torch.as_tensor(preds.indices), "n_val": len(val),
                "history": outcome.result.history}, Path(out) / f"rank{rank}.pt")
    cleanup_distributed()


def test_two_process_ddp_keeps_replicas_identical(tmp_path: Path, tiny_config_dict: dict) -> None:
    tiny_config_dict["optim"]["epochs"] = 2
    mp.spawn(_worker, args=(2, _free_port(), tiny_config_dict, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["params"].keys() == r1["params"].keys()
    for key in r0["params"]:
        assert torch.equal(r0["params"][key], r1["params"][key]), key  # weights and BN statistics
    # every validation image predicted exactly once across the two ranks
    assert r0["indices"].tolist() == list(range(r0["n_val"]))
    assert r1["indices"].tolist() == r0["indices"].tolist()
    # both ranks saw the same gathered validation metrics every epoch
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(r0["history"]) == strip(r1["history"])
    # only rank 0 wrote the run directory's files, once per epoch
    run = Path(tiny_config_dict["runtime"]["out_dir"]) / "tiny"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
def test_cli_nproc_launches_torchrun(tmp_path: Path, tiny_config_dict: dict) -> None:
    tiny_config_dict["optim"]["epochs"] = 1
    path = write_yaml(tmp_path / "ddp.yaml", tiny_config_dict)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "medprune.cli", "train", str(path), "--nproc", "2"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = Path(tiny_config_dict["runtime"]["out_dir"]) / "tiny"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_samples"] > 0 and "per_class" in metrics
    assert "rank 1 of 2" in proc.stderr or "rank 0 of 2" in proc.stderr


def _worker_report(path: Path, monkeypatch: pytest.MonkeyPatch, message: str, exit_code: int) -> None:
    from medprune.engine.distributed import WORKER_ENV, record_worker_failure

    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(path))
    monkeypatch.setenv(WORKER_ENV, "1")
    assert record_worker_failure(message, exit_code=exit_code)


def test_a_rank_stopped_after_reporting_keeps_the_exit_code_it_meant(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ranks refuse the same bad sample (exit 2); the launcher SIGTERMs rank 1 once rank 0 has
    exited, before rank 1 gets to exit itself. It reported first, so it leads the list — and the
    run once exited 1 ("killed by a signal") instead of 2 (bad input)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from medprune.engine.distributed import _failures

    _worker_report(tmp_path / "r1.json", monkeypatch, "manifest.csv: 1 bad sample(s)", 2)
    _worker_report(tmp_path / "r0.json", monkeypatch, "manifest.csv: 1 bad sample(s)", 2)
    stopped = ProcessFailure(local_rank=1, pid=11, exitcode=-15, error_file=str(tmp_path / "r1.json"))
    exited = ProcessFailure(local_rank=0, pid=10, exitcode=2, error_file=str(tmp_path / "r0.json"))
    failures = _failures(ChildFailedError("medprune", {0: exited, 1: stopped}))
    assert [(f.rank, f.exit_code) for f in failures] == [(1, 2), (0, 2)]
    assert all("1 bad sample(s)" in f.message for f in failures)
    # A rank killed without a report of its own (the OOM killer) still reads as a failure, code 1.
    killed = ProcessFailure(local_rank=1, pid=12, exitcode=-9, error_file=str(tmp_path / "none.json"))
    assert [(f.rank, f.exit_code) for f in _failures(ChildFailedError("medprune", {1: killed}))] == [(1, 1)]
