"""Trainer: artefacts, exact resume after a kill, early stopping, class balancing, clipping."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medprune.config import config_from_dict, load_config
from medprune.engine.checkpoint import load_checkpoint
from medprune.workflows.data import prepare_data
from medprune.workflows.jobs import train
from medprune.data.sampling import EpochSampler, ShardSampler, inverse_frequency_weights
from medprune.errors import CheckpointError, ConfigError
from tests.conftest import ROOT, write_yaml


class Killed(Exception):
    """Stands in for a process being killed between epochs."""


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_writes_every_artefact(tiny_config_dict: dict) -> None:
    cfg = config_from_dict(tiny_config_dict, "tiny.yaml")
    outcome = train(cfg)
    run = outcome.run_dir
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert {"train_loss", "val_loss", "val_balanced_accuracy", "val_worst_class_sensitivity", "lr"} <= json.loads(lines[0]).keys()
    for name in ("config.yaml", "splits.json", "checkpoints/last.pt", "checkpoints/best.pt", "metrics.json",
                 "predictions.csv", "confusion_matrix.png", "roc.png"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert load_config(run / "config.yaml") == cfg
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["synthetic_data"] is True
    assert set(metrics["per_class"]) == {"healthy", "sick"}
    assert {"sensitivity", "specificity", "ppv", "npv", "f1", "auc", "support"} <= set(metrics["per_class"]["sick"])
    assert "balanced_accuracy" in metrics["ci"] and "patient" in metrics
    splits = json.loads((run / "splits.json").read_text())
    assert not set(splits["train"]) & set(splits["val"]) and not set(splits["train"]) & set(splits["test"])
    assert metrics["n_patients"] == len(splits["test"])
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["epoch"] == 3 and last["kind"] == "train" and len(last["history"]) == 3
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == outcome.result.best_epoch


@pytest.mark.parametrize("bn_recalibration", [False, True])
def test_resume_after_kill_reproduces_uninterrupted_weights(tmp_path: Path, tiny_config_dict: dict,
                                                            bn_recalibration: bool) -> None:
    tiny_config_dict["optim"]["bn_recalibration"] = bn_recalibration
    full = config_from_dict({**tiny_config_dict, "name": "full"}, "t.yaml")
    train(full, evaluate_test=False)

    cut = config_from_dict({**tiny_config_dict, "name": "cut"}, "t.yaml")

    def kill_after_first(trainer, record) -> None:
        if record["epoch"] == 1:
            raise Killed

    with pytest.raises(Killed):
        train(cut, callbacks=[kill_after_first], evaluate_test=False)
    assert load_checkpoint(cut.run_dir / "checkpoints" / "last.pt")["epoch"] == 1
    with pytest.raises(CheckpointError,
                       match=r"already holds a training run; continue it with --resume \(resume=True in Python\)"):
        train(cut, evaluate_test=False)
    train(cut, resume=True, evaluate_test=False)

    a = load_checkpoint(full.run_dir / "checkpoints" / "last.pt")
    b = load_checkpoint(cut.run_dir / "checkpoints" / "last.pt")
    assert _states_equal(a["model"], b["model"])
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    assert all(torch.equal(a["optimizer"]["state"][k]["momentum_buffer"], b["optimizer"]["state"][k]["momentum_buffer"])
               for k in a["optimizer"]["state"])
    hist_a = [{k: v for k, v in r.items() if k != "seconds"} for r in a["history"]]
    hist_b = [{k: v for k, v in r.items() if k != "seconds"} for r in b["history"]]
    assert hist_a == hist_b
    assert len((cut.run_dir / "metrics.jsonl").read_text().splitlines()) == 3


def test_resume_without_checkpoint_is_refused(tiny_config_dict: dict) -> None:
    cfg = config_from_dict(tiny_config_dict, "t.yaml")
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(cfg, resume=True)


@pytest.mark.slow
def test_sigkill_during_training_then_resume(tmp_path: Path, tiny_config_dict: dict) -> None:
    """A real SIGKILL at an arbitrary moment: the resumed run still ends with the same weights."""
    tiny_config_dict["optim"]["epochs"] = 4
    path = write_yaml(tmp_path / "k.yaml", tiny_config_dict)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "medprune.cli", "train", str(path)]
    ref = subprocess.run([*cmd, "name=ref"], env=env, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    proc = subprocess.Popen([*cmd, "name=killed"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = Path(tiny_config_dict["runtime"]["out_dir"]) / "killed" / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists()
    killed_at = load_checkpoint(last)["epoch"]
    resumed = subprocess.run([*cmd, "name=killed", "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    a = load_checkpoint(Path(tiny_config_dict["runtime"]["out_dir"]) / "ref" / "checkpoints" / "last.pt")
    b = load_checkpoint(last)
    assert killed_at >= 1 and b["epoch"] == 4
    assert _states_equal(a["model"], b["model"])
    ma = json.loads((last.parents[1] / "metrics.json").read_text())
    mb = json.loads((Path(tiny_config_dict["runtime"]["out_dir"]) / "ref" / "metrics.json").read_text())
    assert ma["balanced_accuracy"] == mb["balanced_accuracy"]


def test_early_stopping_stops_after_patience(tiny_config_dict: dict) -> None:
    tiny_config_dict["optim"].update(lr=1e-12, epochs=6, early_stopping={"metric": "balanced_accuracy", "patience": 2})
    outcome = train(config_from_dict(tiny_config_dict, "t.yaml"), evaluate_test=False)
    # the metric cannot move with a vanishing lr: best at epoch 1, then 2 epochs without improvement
    assert outcome.result.stopped_early is True
    assert outcome.result.epochs_run == 3
    assert outcome.result.best_epoch == 1


def test_class_weights_and_balanced_sampler() -> None:
    labels = [0] * 90 + [1] * 10
    w = inverse_frequency_weights(labels, 2)
    assert torch.allclose(w, torch.tensor([100 / (2 * 90), 100 / (2 * 10)]))
    sampler = EpochSampler(100, seed=3, labels=labels, num_classes=2)
    drawn = np.array([labels[i] for e in range(20) for i in (sampler.set_epoch(e) or list(sampler))])
    assert abs(drawn.mean() - 0.5) < 0.05  # the 1:9 minority is drawn half the time
    plain = EpochSampler(100, seed=3)
    plain.set_epoch(0)
    first = list(plain)
    assert sorted(first) == list(range(100))
    plain.set_epoch(1)
    assert list(plain) != first
    plain.set_epoch(0)
    assert list(plain) == first  # an epoch's order is a pure function of (seed, epoch)


def test_samplers_shard_without_overlap() -> None:
    shards = [list(ShardSampler(11, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))
    ranks = [EpochSampler(11, seed=0, rank=r, world_size=3) for r in range(3)]
    for s in ranks:
        s.set_epoch(2)
    got = [list(s) for s in ranks]
    assert all(len(g) == 4 for g in got)  # padded to equal length for DDP
    assert set(sum(got, [])) == set(range(11))


def test_weighted_loss_changes_training(tiny_config_dict: dict) -> None:
    tiny_config_dict["optim"]["epochs"] = 1
    plain = train(config_from_dict({**tiny_config_dict, "name": "plain"}, "t.yaml"), evaluate_test=False)
    tiny_config_dict["optim"]["class_balance"] = "weighted_loss"
    weighted = train(config_from_dict({**tiny_config_dict, "name": "weighted"}, "t.yaml"), evaluate_test=False)
    a = plain.result.history[0]["train_loss"]
    b = weighted.result.history[0]["train_loss"]
    assert a != pytest.approx(b, rel=1e-6)


def test_gradient_clipping_bounds_the_update(tiny_config_dict: dict) -> None:
    from medprune.workflows.helpers import build_model
    from medprune.workflows.helpers import config_trainer as Trainer

    tiny_config_dict["optim"].update(lr=1.0, momentum=0.0, grad_clip=1e-3, batch_size=64, epochs=1)
    cfg = config_from_dict(tiny_config_dict, "t.yaml")
    data = prepare_data(cfg, cfg.run_dir)
    torch.manual_seed(0)
    model = build_model(cfg)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    trainer = Trainer(model, data.datasets["train"], data.datasets["val"], cfg, cfg.run_dir, torch.device("cpu"))
    trainer.train_one_epoch()  # one batch holds the whole tiny training split
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert len(data.datasets["train"]) <= 64
    assert float((after - before).norm()) <= 1e-3 * (1 + 1e-4)


def test_corrupt_checkpoint_and_arbitrary_pickle_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt: not a readable PyTorch checkpoint"):
        load_checkpoint(bad)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "medprune.checkpoint/1", "model": {}, "payload": Killed("code")}, evil)
    with pytest.raises(CheckpointError, match="evil.pt: refused to load"):
        load_checkpoint(evil)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(empty)


class _TrainOnlyBranchNet(nn.Module):
    """Dropout → conv → BN → GAP → linear, plus a BN that only train-mode forwards reach (like Inception's aux head)."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)  # would change the statistics if recalibration ran it in train mode
        self.conv = nn.Conv2d(1, 3, 3, bias=False)
        self.bn = nn.BatchNorm2d(3)
        self.aux_bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(self.conv(self.drop(x)))
        if self.training:
            h = h + 0.0 * self.aux_bn(h)
        return self.fc(h.mean(dim=(2, 3)))


def _tiny_trainer(tiny_config_dict: dict, model: nn.Module, **optim):
    from medprune.workflows.helpers import config_trainer as Trainer

    tiny_config_dict["optim"].update(optim)
    cfg = config_from_dict(tiny_config_dict, "t.yaml")
    data = prepare_data(cfg, cfg.run_dir)
    return Trainer(model, data.datasets["train"], data.datasets["val"], cfg, cfg.run_dir, torch.device("cpu")), data


def test_bn_recalibration_is_the_average_of_training_batch_statistics(tiny_config_dict: dict) -> None:
    torch.manual_seed(0)
    model = _TrainOnlyBranchNet()
    trainer, data = _tiny_trainer(tiny_config_dict, model, batch_size=5, bn_recalibration=True)
    trainer.train_one_epoch()
    train_set = data.datasets["train"]
    aux_before = {k: v.clone() for k, v in model.aux_bn.state_dict().items()}
    counter_before = model.bn.num_batches_tracked.clone()
    weights_before = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k}
    # closed form: equal-weight mean of the batch means and unbiased batch variances of conv(x), no dropout
    means, variances = [], []
    with torch.no_grad():
        for start in range(0, len(train_set), 5):
            x = torch.stack([train_set[i][0] for i in range(start, min(start + 5, len(train_set)))])
            h = model.conv(x)
            means.append(h.mean(dim=(0, 2, 3)))
            variances.append(h.var(dim=(0, 2, 3), unbiased=True))
    assert len(train_set) % 5 != 1 and len(means) >= 2
    trainer.recalibrate_bn()
    assert torch.allclose(model.bn.running_mean, torch.stack(means).mean(0), atol=1e-5)
    assert torch.allclose(model.bn.running_var, torch.stack(variances).mean(0), rtol=1e-4)
    # the train-only branch, the weights, the momentum and the batch counter are left as they were
    for k, v in model.aux_bn.state_dict().items():
        assert torch.equal(v, aux_before[k]), k
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights_before.items())
    assert model.bn.momentum == 0.1 and torch.equal(model.bn.num_batches_tracked, counter_before)
    assert model.training  # the mode it was in


def test_bn_recalibration_is_off_by_default_and_changes_only_statistics(tiny_config_dict: dict) -> None:
    from medprune.config import OptimConfig

    assert OptimConfig().bn_recalibration is False
    tiny_config_dict["optim"]["epochs"] = 1
    plain = train(config_from_dict({**tiny_config_dict, "name": "plain"}, "t.yaml"), evaluate_test=False)
    tiny_config_dict["optim"]["bn_recalibration"] = True
    recal = train(config_from_dict({**tiny_config_dict, "name": "recal"}, "t.yaml"), evaluate_test=False)
    a = load_checkpoint(plain.run_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(recal.run_dir / "checkpoints" / "last.pt")["model"]
    stats = [k for k in a if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(a[k], b[k]) for k in a if k not in stats)  # same training, same weights
    assert all(not torch.equal(a[k], b[k]) for k in stats)  # every BN layer recalibrated
    assert plain.result.history[0]["train_loss"] == recal.result.history[0]["train_loss"]


def test_bn_recalibration_must_be_a_boolean(tiny_config_dict: dict) -> None:
    tiny_config_dict["optim"]["bn_recalibration"] = "yes"
    with pytest.raises(ConfigError, match=r"t.yaml: optim.bn_recalibration: must be true or false"):
        config_from_dict(tiny_config_dict, "t.yaml")


def _recal_worker(rank: int, world: int, port: int, cfg_dict: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from medprune.engine.distributed import DistInfo
    from medprune.workflows.helpers import config_trainer as Trainer

    dist.init_process_group("gloo", rank=rank, world_size=world)
    cfg = config_from_dict(cfg_dict, "ddp.yaml")
    data = prepare_data(cfg, cfg.run_dir, DistInfo(rank, world, rank))
    torch.manual_seed(0)
    model = _TrainOnlyBranchNet()
    Trainer(model, data.datasets["train"], data.datasets["val"], cfg, cfg.run_dir, torch.device("cpu"),
            dist_info=DistInfo(rank, world, rank)).recalibrate_bn()
    torch.save({k: v.clone() for k, v in model.bn.state_dict().items()}, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_bn_recalibration_under_ddp_gives_every_rank_the_average_over_all_batches(tmp_path: Path, tiny_config_dict: dict) -> None:
    import socket

    import torch.multiprocessing as mp

    tiny_config_dict["optim"]["batch_size"] = 2
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_recal_worker, args=(2, port, tiny_config_dict, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    # closed form: every rank's batches of 2 over its shard (a last batch of one dropped), each batch
    # weighing the same whichever rank ran it
    cfg = config_from_dict(tiny_config_dict, "ddp.yaml")
    train_set = prepare_data(cfg, cfg.run_dir).datasets["train"]
    torch.manual_seed(0)
    model = _TrainOnlyBranchNet()
    means, variances = [], []
    with torch.no_grad():
        for rank in (0, 1):
            shard = list(ShardSampler(len(train_set), rank, 2))
            for start in range(0, len(shard) - len(shard) % 2, 2):
                h = model.conv(torch.stack([train_set[i][0] for i in shard[start:start + 2]]))
                means.append(h.mean(dim=(0, 2, 3)))
                variances.append(h.var(dim=(0, 2, 3), unbiased=True))
    assert torch.allclose(r0["running_mean"], torch.stack(means).mean(0), atol=1e-5)
    assert torch.allclose(r0["running_var"], torch.stack(variances).mean(0), rtol=1e-4)
