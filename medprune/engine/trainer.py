"""The classification trainer: train/validate loop, checkpoints every epoch, exact resume, DDP.

:class:`Trainer` fine-tunes whatever ``nn.Module`` it is handed (a registry model, a pruned one),
so the compression stages reuse it unchanged. Per epoch it

1. trains on this rank's shard of an epoch-seeded order (class-balanced if asked),
2. validates on every validation sample exactly once across ranks and gathers the predictions,
3. steps the schedule, logs one line to ``metrics.jsonl`` and TensorBoard,
4. writes ``checkpoints/last.pt`` atomically (model, optimizer, scheduler, scaler, RNG, epoch,
   history) and ``checkpoints/best.pt`` when the early-stopping metric improves.

``fit(resume=True)`` continues from ``last.pt``; on CPU with a fixed seed the final weights equal
those of an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medprune._io import atomic_write_text
from medprune._progress import progress_bar
from medprune.config import ExperimentConfig
from medprune.engine.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from medprune.engine.distributed import DistInfo, all_reduce_sum, broadcast_buffers, gather_objects
from medprune.engine.optim import build_optimizer, build_scheduler, step_scheduler
from medprune.data.sampling import EpochSampler, ShardSampler, inverse_frequency_weights
from medprune.errors import CheckpointError
from medprune.metrics import classification_metrics

__all__ = ["Trainer", "TrainResult", "Predictions", "predict", "EpochCallback", "TrainHook", "Distillation"]

log = logging.getLogger(__name__)

#: Called after each epoch's checkpoint is written: ``callback(trainer, record)``.
EpochCallback = Callable[["Trainer", dict[str, Any]], None]


class TrainHook:
    """Extension points the compression schedules use; every method is optional.

    - ``extra_loss(trainer, output, target)`` returns a tensor added to the training loss
      (BPCP's gate penalty) or ``None``;
    - ``after_step(trainer)`` runs after each optimiser step;
    - ``after_train_epoch(trainer)`` runs after an epoch's training, before validation
      (SFP zeroes its filters here, so validation and the checkpoint see the soft-pruned model).
    """

    def extra_loss(self, trainer: "Trainer", output: Any, target: torch.Tensor) -> torch.Tensor | None:
        return None

    def after_step(self, trainer: "Trainer") -> None:
        return None

    def after_train_epoch(self, trainer: "Trainer") -> None:
        return None


@dataclass
class Distillation:
    """Knowledge distillation from a frozen teacher (Hinton et al. 2015).

    loss = (1 - alpha) * CE(student, y) + alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T))
    """

    teacher: nn.Module
    alpha: float = 0.5
    temperature: float = 4.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"distillation alpha must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise ValueError(f"distillation temperature must be > 0, got {self.temperature}")
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def loss(self, student_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = _logits(self.teacher(x)).float()
        t = self.temperature
        return nn.functional.kl_div(nn.functional.log_softmax(student_logits.float() / t, dim=1),
                                    nn.functional.softmax(teacher_logits / t, dim=1),
                                    reduction="batchmean") * (t * t)


@dataclass
class Predictions:
    """Model outputs over a data set, in data-set order."""

    indices: np.ndarray
    probs: np.ndarray
    labels: np.ndarray
    loss: float


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` leaves behind."""

    epochs_run: int
    best_epoch: int | None
    best_value: float | None
    metric: str
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    last_checkpoint: Path | None = None
    best_checkpoint: Path | None = None


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _logits(output: Any) -> torch.Tensor:
    """Main logits of a model output (Inception's train mode may return ``(logits, aux)``)."""
    if isinstance(output, (tuple, list)):
        return output[0]
    return output


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, *, batch_size: int, device: torch.device,
            workers: int = 0, dist_info: DistInfo = DistInfo(), amp: bool = False,
            progress: bool = False, desc: str = "eval") -> Predictions:
    """Softmax probabilities for every sample of ``dataset``, each sample predicted exactly once.

    Under DDP each rank predicts its shard and every rank receives the merged result.
    """
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), dist_info.rank,
                        dist_info.world_size), num_workers=workers)
    idx_parts, prob_parts, label_parts = [], [], []
    loss_sum = 0.0
    bar = progress_bar(loader, enabled=progress and dist_info.is_main, desc=desc, leave=False)
    for x, y, idx in bar:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
            logits = _logits(model(x)).float()
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        prob_parts.append(torch.softmax(logits, dim=1).cpu().numpy())
        label_parts.append(y.cpu().numpy())
        idx_parts.append(idx.numpy())
    k = int(getattr(dataset, "num_classes", 0) or (prob_parts[0].shape[1] if prob_parts else 0))
    local = (np.concatenate(idx_parts) if idx_parts else np.zeros(0, dtype=np.int64),
             np.concatenate(prob_parts) if prob_parts else np.zeros((0, k), dtype=np.float32),
             np.concatenate(label_parts) if label_parts else np.zeros(0, dtype=np.int64), loss_sum)
    parts = gather_objects(local, dist_info)
    indices = np.concatenate([p[0] for p in parts])
    order = np.argsort(indices, kind="stable")
    probs = np.concatenate([p[1] for p in parts])[order]
    labels = np.concatenate([p[2] for p in parts])[order]
    total_loss = sum(p[3] for p in parts)
    return Predictions(indices=indices[order], probs=probs, labels=labels,
                       loss=total_loss / max(1, len(indices)))


class Trainer:
    """Train ``model`` on ``train_set``, select the best epoch on ``val_set``.

    Args:
        model: any ``nn.Module`` returning logits (or ``(logits, aux)`` in train mode).
        train_set / val_set: datasets yielding ``(image, label, index)``; ``val_set`` must expose
            ``patient_ids`` for patient-level metrics (optional).
        config: the experiment config (``optim``, ``runtime``, ``eval`` sections are used).
        run_dir: where ``checkpoints/``, ``metrics.jsonl`` and TensorBoard events go.
        device: where to train.
        dist_info: this process's place in a DDP job (single process by default).
        callbacks: called after every epoch, once its checkpoint is on disk.
        model_spec: ``{"name", "kwargs"}`` stored in checkpoints so they can be rebuilt.
        hooks: :class:`TrainHook` objects (extra loss terms, per-step and per-epoch actions).
        distill: distil from a teacher (the unpruned model) while training.
    """

    def __init__(self, model: nn.Module, train_set: Dataset, val_set: Dataset, config: ExperimentConfig,
                 run_dir: str | Path, device: torch.device, *, dist_info: DistInfo = DistInfo(),
                 callbacks: Sequence[EpochCallback] = (), model_spec: dict[str, Any] | None = None,
                 hooks: Sequence[TrainHook] = (), distill: Distillation | None = None) -> None:
        self.config = config
        self.optim_cfg = config.optim
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.device = device
        self.dist = dist_info
        self.callbacks = list(callbacks)
        self.model_spec = model_spec or getattr(model, "medprune_spec", None)
        self.classes = list(config.data.classes)
        self.train_set = train_set
        self.val_set = val_set
        self.model = model.to(device)
        self.hooks = list(hooks)
        self.distill = distill
        if distill is not None:
            distill.teacher.to(device)
        self.net: nn.Module = self.model
        if dist_info.enabled:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        labels = list(getattr(train_set, "labels"))
        k = len(self.classes)
        balance = self.optim_cfg.class_balance
        self.class_weights = inverse_frequency_weights(labels, k).to(device) if balance == "weighted_loss" else None
        self.sampler = EpochSampler(len(train_set), seed=config.runtime.seed,
                                    labels=labels if balance == "balanced_sampler" else None, num_classes=k,
                                    rank=dist_info.rank, world_size=dist_info.world_size)
        self.train_loader = DataLoader(train_set, batch_size=self.optim_cfg.batch_size, sampler=self.sampler,
                                       num_workers=config.runtime.workers,
                                       # a last batch of one sample breaks BatchNorm in train mode
                                       drop_last=len(self.sampler) % self.optim_cfg.batch_size == 1,
                                       pin_memory=device.type == "cuda",
                                       persistent_workers=False)  # workers must see set_epoch
        self.optimizer = build_optimizer(self.model, self.optim_cfg)
        self.scheduler = build_scheduler(self.optimizer, self.optim_cfg)
        self.use_amp = self.optim_cfg.amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.metric = self.optim_cfg.early_stopping.metric
        self.maximize = self.optim_cfg.early_stopping.maximize
        self.epoch = 0
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.stopped = False
        self.history: list[dict[str, Any]] = []
        self._tb = None

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """Everything needed to continue training exactly where it stopped."""
        return {
            "kind": "train",
            "epoch": self.epoch,
            "model": _unwrap(self.model).state_dict(),
            "model_spec": self.model_spec,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.use_amp else None,
            "rng": capture_rng(),
            "best": {"metric": self.metric, "value": self.best_value, "epoch": self.best_epoch},
            "bad_epochs": self.bad_epochs,
            "stopped": self.stopped,
            "history": self.history,
            "config": self.config.to_dict(),
            **self._model_record(),
        }

    def _model_record(self) -> dict[str, Any]:
        """What the model eats and what its outputs mean, so a checkpoint is usable on its own."""
        h, w = self.config.data.image_size
        return {"input_size": [1 if self.config.data.channels == "gray" else 3, int(h), int(w)],
                "classes": list(self.classes)}

    def load_state(self, ckpt: dict[str, Any], source: str | Path) -> None:
        """Restore a state written by :meth:`state`."""
        if ckpt.get("kind") != "train":
            raise CheckpointError(f"{source}: holds weights only, not a training state; cannot resume from it")
        from medprune.engine.checkpoint import load_model_weights

        load_model_weights(_unwrap(self.model), ckpt, source)
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            if self.scheduler is not None and ckpt.get("scheduler") is not None:
                self.scheduler.load_state_dict(ckpt["scheduler"])
            if self.use_amp and ckpt.get("scaler") is not None:
                self.scaler.load_state_dict(ckpt["scaler"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{source}: optimizer/scheduler state does not fit this config ({exc})") from None
        restore_rng(ckpt["rng"])
        self.epoch = int(ckpt["epoch"])
        best = ckpt.get("best") or {}
        if best.get("metric") not in (None, self.metric):
            raise CheckpointError(f"{source}: was selecting the best epoch by {best['metric']!r}, the config now "
                                  f"says {self.metric!r}; start a new run or restore the metric")
        self.best_value, self.best_epoch = best.get("value"), best.get("epoch")
        self.bad_epochs = int(ckpt.get("bad_epochs", 0))
        self.stopped = bool(ckpt.get("stopped", False))
        self.history = list(ckpt.get("history", []))

    # ------------------------------------------------------------------ loop
    def _loss(self, output: Any, target: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ce = dict(weight=self.class_weights, label_smoothing=self.optim_cfg.label_smoothing)
        if isinstance(output, (tuple, list)):
            loss = nn.functional.cross_entropy(output[0], target, **ce)
            for aux in output[1:]:
                loss = loss + self.optim_cfg.aux_weight * nn.functional.cross_entropy(aux, target, **ce)
        else:
            loss = nn.functional.cross_entropy(output, target, **ce)
        if self.distill is not None:
            a = self.distill.alpha
            loss = (1.0 - a) * loss + a * self.distill.loss(_logits(output), x)
        for hook in self.hooks:
            extra = hook.extra_loss(self, output, target)
            if extra is not None:
                loss = loss + extra
        return loss

    def train_one_epoch(self) -> float:
        """One pass over this rank's shard; returns the mean training loss across ranks."""
        self.sampler.set_epoch(self.epoch)
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(self.epoch)
        self.net.train()
        loss_sum, count = 0.0, 0
        bar = progress_bar(self.train_loader, enabled=self.config.runtime.progress and self.dist.is_main,
                           desc=f"epoch {self.epoch + 1}/{self.optim_cfg.epochs}", leave=False)
        for x, y, _ in bar:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.use_amp):
                output = self.net(x)
                loss = self._loss(output, y, x)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at epoch {self.epoch + 1}; "
                                         "lower optim.lr or set optim.grad_clip")
            self.scaler.scale(loss).backward()
            if self.optim_cfg.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.optim_cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            for hook in self.hooks:
                hook.after_step(self)
            loss_sum += float(loss.detach()) * len(y)
            count += len(y)
            bar.set_postfix(loss=f"{loss_sum / count:.4f}")
        for hook in self.hooks:
            hook.after_train_epoch(self)
        # Keep BatchNorm statistics identical on every replica before validating.
        broadcast_buffers(self.model, self.dist)
        total, n = all_reduce_sum([loss_sum, count], self.dist, self.device)
        return total / max(1.0, n)

    def validate(self) -> tuple[dict[str, Any], Predictions]:
        """Metrics over the whole validation set (each sample once, gathered across ranks)."""
        # The bare model, not the DDP wrapper: shards differ in length, and DDP's forward is a collective.
        preds = predict(self.model, self.val_set,
                        batch_size=self.config.eval.batch_size or self.optim_cfg.batch_size, device=self.device,
                        workers=self.config.runtime.workers, dist_info=self.dist, amp=self.use_amp,
                        progress=self.config.runtime.progress, desc="validate")
        patients = getattr(self.val_set, "patient_ids", None)
        metrics = classification_metrics(preds.labels, preds.probs, self.classes,
                                         patient_ids=[patients[i] for i in preds.indices] if patients else None,
                                         n_bootstrap=0)
        metrics["loss"] = preds.loss
        return metrics, preds

    def _improved(self, value: float | None) -> bool:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        if self.best_value is None:
            return True
        delta = self.optim_cfg.early_stopping.min_delta
        return value > self.best_value + delta if self.maximize else value < self.best_value - delta

    def fit(self, resume: bool = False) -> TrainResult:
        """Train until ``optim.epochs`` (or early stopping); resume from ``last.pt`` if asked."""
        last = self.ckpt_dir / "last.pt"
        if resume:
            self.load_state(load_checkpoint(last, map_location=self.device), last)
            log.info("resumed from %s at epoch %d", last, self.epoch)
            if self.dist.is_main:
                self._rewrite_history()
        epochs = self.optim_cfg.epochs
        try:
            while self.epoch < epochs and not self.stopped:
                record = self._run_epoch()
                for callback in self.callbacks:
                    callback(self, record)
        finally:
            if self._tb is not None:
                self._tb.close()
                self._tb = None
        return TrainResult(epochs_run=self.epoch, best_epoch=self.best_epoch, best_value=self.best_value,
                           metric=self.metric, stopped_early=self.stopped, history=self.history,
                           last_checkpoint=last if last.exists() else None,
                           best_checkpoint=(self.ckpt_dir / "best.pt") if (self.ckpt_dir / "best.pt").exists() else None)

    def _run_epoch(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        train_loss = self.train_one_epoch()
        metrics, _ = self.validate()
        value = metrics.get(self.metric)
        step_scheduler(self.scheduler, self.optim_cfg, value, self.maximize)
        self.epoch += 1
        improved = self._improved(value)
        if improved:
            self.best_value, self.best_epoch, self.bad_epochs = float(value), self.epoch, 0
        else:
            self.bad_epochs += 1
        patience = self.optim_cfg.early_stopping.patience
        if patience is not None and self.bad_epochs >= patience:
            self.stopped = True
        record = {
            "epoch": self.epoch,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": train_loss,
            "val_loss": metrics["loss"],
            **{f"val_{k}": metrics.get(k) for k in ("accuracy", "balanced_accuracy", "worst_class_sensitivity",
                                                     "macro_f1", "macro_auc")},
            **{f"val_sensitivity_{c}": (metrics["per_class"][c] or {}).get("sensitivity") for c in self.classes},
            "best_epoch": self.best_epoch,
            "early_stop": self.stopped,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        self.history.append(record)
        if self.dist.is_main:
            save_checkpoint(self.ckpt_dir / "last.pt", self.state())
            if improved:
                save_checkpoint(self.ckpt_dir / "best.pt", {
                    "kind": "weights", "epoch": self.epoch, "model": _unwrap(self.model).state_dict(),
                    "model_spec": self.model_spec, "best": {"metric": self.metric, "value": self.best_value},
                    "config": self.config.to_dict(), **self._model_record()})
            with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            self._log_tensorboard(record)
            log.info("epoch %d/%d  train_loss %.4f  val_loss %.4f  val_%s %s%s", self.epoch, self.optim_cfg.epochs,
                     train_loss, metrics["loss"], self.metric,
                     f"{value:.4f}" if isinstance(value, float) else value, "  (best)" if improved else "")
        return record

    def _rewrite_history(self) -> None:
        """Make ``metrics.jsonl`` hold exactly the checkpoint's epochs (a kill may have left one more)."""
        text = "".join(json.dumps(r) + "\n" for r in self.history)
        atomic_write_text(self.run_dir / "metrics.jsonl", text)

    def _log_tensorboard(self, record: dict[str, Any]) -> None:
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                self._tb.add_scalar(key, value, record["epoch"])
        self._tb.flush()
