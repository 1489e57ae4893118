"""The trainer: train/validate loop, checkpoints every epoch, exact resume, DDP — for any task.

:class:`Trainer` fine-tunes whatever ``nn.Module`` it is handed (a registry model, a pruned one),
so the compression stages reuse it unchanged. It never branches on the kind of problem: the
:class:`~medprune.tasks.Task` gives the loss, the validation metrics, the class weights and the
strata of class-balanced sampling. It takes the optimiser and runtime settings, not the whole
experiment. Per epoch it

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

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medprune._io import atomic_write_text
from medprune._progress import progress_bar
from medprune.data.sampling import EpochSampler, ShardSampler
from medprune.engine.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from medprune.engine.distributed import DistInfo, all_reduce_sum, broadcast_buffers, gather_objects
from medprune.engine.optim import build_optimizer, build_scheduler, step_scheduler
from medprune.engine.settings import OptimConfig, RuntimeConfig
from medprune.errors import CheckpointError
from medprune.tasks import Evaluation, Task, first_output

__all__ = ["Trainer", "TrainResult", "predict", "EpochCallback", "TrainHook", "Distillation"]

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
            teacher_logits = first_output(self.teacher(x)).float()
        t = self.temperature
        # KL over the class axis, averaged over everything else: per image for classification
        # (= "batchmean"), per pixel for segmentation.
        kl = nn.functional.kl_div(nn.functional.log_softmax(student_logits.float() / t, dim=1),
                                  nn.functional.softmax(teacher_logits / t, dim=1), reduction="none")
        return kl.sum(dim=1).mean() * (t * t)


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


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, task: Task, *, batch_size: int, device: torch.device,
            workers: int = 0, dist_info: DistInfo = DistInfo(), amp: bool = False,
            progress: bool = False, desc: str = "eval", full: bool = True) -> Evaluation:
    """The model's outputs over ``dataset`` reduced by ``task``'s evaluator, each item exactly once.

    Under DDP each rank evaluates its shard and every rank receives the merged result. ``full=False``
    lets the task skip what only a final evaluation reports (per-epoch validation uses it).
    """
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), dist_info.rank,
                        dist_info.world_size), num_workers=workers)
    evaluator = task.evaluator(full)
    for x, y, idx in progress_bar(loader, enabled=progress and dist_info.is_main, desc=desc, leave=False):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
            output = model(x)
        evaluator.update(first_output(output).float(), y, idx)
    return evaluator.merge(gather_objects(evaluator.state(), dist_info))


class Trainer:
    """Train ``model`` on ``train_set``, select the best epoch on ``val_set``.

    Args:
        model: any ``nn.Module`` returning logits (or ``(logits, aux)`` in train mode).
        train_set / val_set: datasets yielding ``(image, target, index)``; ``val_set`` may expose
            ``patient_ids`` for patient-level metrics.
        task: the :class:`~medprune.tasks.Task`: loss, validation metrics, class weights, strata.
        optim: optimiser, schedule, early stopping (``optim`` settings).
        runtime: seed, workers, progress bars (``runtime`` settings).
        run_dir: where ``checkpoints/``, ``metrics.jsonl`` and TensorBoard events go.
        device: where to train.
        eval_batch_size: validation batch size (default ``optim.batch_size``).
        dist_info: this process's place in a DDP job (single process by default).
        callbacks: called after every epoch, once its checkpoint is on disk.
        model_spec: ``{"name", "kwargs"}`` stored in checkpoints so they can be rebuilt.
        hooks: :class:`TrainHook` objects (extra loss terms, per-step and per-epoch actions).
        distill: distil from a teacher (the unpruned model) while training.
        record: plain entries every checkpoint carries (the experiment config, input size,
            classes), so a checkpoint is usable on its own.
    """

    def __init__(self, model: nn.Module, train_set: Dataset, val_set: Dataset, task: Task, optim: OptimConfig,
                 runtime: RuntimeConfig, run_dir: str | Path, device: torch.device, *,
                 eval_batch_size: int | None = None, dist_info: DistInfo = DistInfo(),
                 callbacks: Sequence[EpochCallback] = (), model_spec: dict[str, Any] | None = None,
                 hooks: Sequence[TrainHook] = (), distill: Distillation | None = None,
                 record: dict[str, Any] | None = None) -> None:
        self.task = task
        self.optim_cfg = optim
        self.runtime = runtime
        self.eval_batch_size = eval_batch_size or optim.batch_size
        self.record = dict(record or {})
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.device = device
        self.dist = dist_info
        self.callbacks = list(callbacks)
        self.model_spec = model_spec or getattr(model, "medprune_spec", None)
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
        balance = self.optim_cfg.class_balance
        self.class_weights = task.class_weights(train_set).to(device) if balance == "weighted_loss" else None
        self.sampler = EpochSampler(len(train_set), seed=runtime.seed,
                                    labels=task.balance_labels(train_set) if balance == "balanced_sampler" else None,
                                    num_classes=task.balance_classes(train_set), rank=dist_info.rank,
                                    world_size=dist_info.world_size)
        self.train_loader = DataLoader(train_set, batch_size=self.optim_cfg.batch_size, sampler=self.sampler,
                                       num_workers=runtime.workers,
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
            **self.record,
        }

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
        loss = self.task.loss(output, target, self.class_weights)
        if self.distill is not None:
            a = self.distill.alpha
            loss = (1.0 - a) * loss + a * self.distill.loss(first_output(output), x)
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
        bar = progress_bar(self.train_loader, enabled=self.runtime.progress and self.dist.is_main,
                           desc=f"epoch {self.epoch + 1}/{self.optim_cfg.epochs}", leave=False)
        for x, y, _ in bar:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.use_amp):
                output = self.task.forward(self.net, x, y)
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

    @torch.no_grad()
    def recalibrate_bn(self) -> None:
        """Recompute every BatchNorm layer's running statistics over the training set (``optim.bn_recalibration``).

        With few batches per epoch the momentum-0.1 running estimates trail weights that still move
        fast, and a model validated (and saved) with them can score a validation loss in the hundreds
        while the same weights with fresh statistics are fine. As ``torch.optim.swa_utils.update_bn``
        does, each layer's statistics become the equal-weight average over the training batches
        (under DDP: over this rank's shard, then averaged across ranks by batch count). The model runs
        in eval mode except its BatchNorm layers, so dropout and train-only branches stay off; layers
        that forward does not reach (Inception's auxiliary head) keep their statistics, and every
        layer keeps its momentum and batch counter. Augmentation is seeded per (seed, epoch, index),
        so no global random state is drawn and resuming stays exact.
        """
        bns = [m for m in self.model.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        if not bns:
            return
        saved = [(m.momentum, m.num_batches_tracked.clone(), m.running_mean.clone(), m.running_var.clone())
                 for m in bns]
        sampler = ShardSampler(len(self.train_set), self.dist.rank, self.dist.world_size)
        batch_size = self.optim_cfg.batch_size
        loader = DataLoader(self.train_set, batch_size=batch_size, sampler=sampler,
                            num_workers=self.runtime.workers,
                            drop_last=len(sampler) % batch_size == 1)  # as in training: no batch of one
        was_training = self.model.training
        self.model.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
            m.train()
        counts = [0.0] * len(bns)
        try:
            for x, _, _ in loader:
                with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.use_amp):
                    self.model(x.to(self.device, non_blocking=True))
            counts = [float(m.num_batches_tracked) for m in bns]
            if self.dist.enabled:
                counts = self._average_bn_across_ranks(bns, counts)
        finally:
            for m, count, (momentum, batches, mean, var) in zip(bns, counts, saved):
                if count == 0:  # not reached by the forward, or interrupted: keep the old estimate
                    m.running_mean.copy_(mean)
                    m.running_var.copy_(var)
                m.momentum = momentum
                m.num_batches_tracked.copy_(batches)
            self.model.train(was_training)

    def _average_bn_across_ranks(self, bns: list[nn.Module], counts: list[float]) -> list[float]:
        """Replace each layer's per-rank statistics by their batch-count-weighted mean over ranks."""
        local = [v for m, c in zip(bns, counts) for v in (torch.cat([m.running_mean, m.running_var]).double() * c).tolist()]
        summed = all_reduce_sum([*local, *counts], self.dist, self.device)
        totals, offset = summed[len(local):], 0
        for m, total in zip(bns, totals):
            k = m.running_mean.numel()
            if total > 0:
                stats = torch.tensor(summed[offset:offset + 2 * k], dtype=torch.float64) / total
                m.running_mean.copy_(stats[:k])
                m.running_var.copy_(stats[k:])
            offset += 2 * k
        return totals

    def validate(self) -> tuple[dict[str, Any], Evaluation]:
        """Quick metrics (no intervals) over the whole validation set, each item once across ranks."""
        # The bare model, not the DDP wrapper: shards differ in length, and DDP's forward is a collective.
        evaluation = predict(self.model, self.val_set, self.task, batch_size=self.eval_batch_size, device=self.device,
                             workers=self.runtime.workers, dist_info=self.dist, amp=self.use_amp,
                             progress=self.runtime.progress, desc="validate", full=False)
        patients = getattr(self.val_set, "patient_ids", None)
        metrics = self.task.metrics(evaluation, [patients[i] for i in evaluation.indices] if patients else None, None)
        metrics["loss"] = evaluation.loss
        return metrics, evaluation

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
        if self.optim_cfg.bn_recalibration:
            self.recalibrate_bn()
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
            "val_loss": None if math.isnan(metrics["loss"]) else metrics["loss"],  # NaN: the task computes none
            **self.task.epoch_record(metrics),
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
                    **self.record})
            with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            self._log_tensorboard(record)
            log.info("epoch %d/%d  train_loss %.4f  %sval_%s %s%s", self.epoch, self.optim_cfg.epochs,
                     train_loss, "" if record["val_loss"] is None else f"val_loss {record['val_loss']:.4f}  ", self.metric,
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
