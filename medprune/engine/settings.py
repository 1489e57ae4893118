"""Settings of the engine: optimiser, schedule, early stopping, runtime.

``optim:`` and ``runtime:`` in an experiment config (:mod:`medprune.config` assembles the
sections). The early-stopping metric is checked against the task's metrics by the experiment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from medprune.schema import check

__all__ = ["ScheduleConfig", "EarlyStoppingConfig", "OptimConfig", "RuntimeConfig"]


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, stepped once per epoch, with an optional linear warm-up."""

    name: Literal["constant", "cosine", "step", "plateau"] = "constant"
    warmup_epochs: int = 0
    step_size: int = 10
    gamma: float = 0.1
    min_lr: float = 0.0
    patience: int = 3

    def __post_init__(self) -> None:
        check(self.warmup_epochs >= 0, "warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        check(self.step_size >= 1, "step_size", f"must be >= 1, got {self.step_size}")
        check(0 < self.gamma <= 1, "gamma", f"must be in (0, 1], got {self.gamma}")
        check(self.min_lr >= 0, "min_lr", f"must be >= 0, got {self.min_lr}")
        check(self.patience >= 0, "patience", f"must be >= 0, got {self.patience}")


@dataclass
class EarlyStoppingConfig:
    """Which validation metric picks ``best.pt``, and when to stop (patience ``null`` = never)."""

    metric: str | None = None  # default: the task's (balanced_accuracy, mean_dice, ...)
    patience: int | None = None
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if self.patience is not None:
            check(self.patience >= 1, "patience", f"must be >= 1 or null, got {self.patience}")
        check(self.min_delta >= 0, "min_delta", f"must be >= 0, got {self.min_delta}")

    @property
    def maximize(self) -> bool:
        """True unless the metric is the loss."""
        return self.metric != "loss"


@dataclass
class OptimConfig:
    """Optimiser, schedule, class balancing and stopping rule."""

    optimizer: Literal["sgdm", "adam", "adamw"] = "sgdm"
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 10
    epochs: int = 30
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    class_balance: Literal["none", "weighted_loss", "balanced_sampler"] = "none"
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    grad_clip: float | None = None
    amp: bool = True
    label_smoothing: float = 0.0
    aux_weight: float = 0.4
    # Recompute BatchNorm running statistics over the training set before every validation:
    # with few batches per epoch, momentum-0.1 estimates lag the weights (see Trainer.recalibrate_bn).
    bn_recalibration: bool = False

    def __post_init__(self) -> None:
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr:g}")
        check(0 <= self.momentum < 1, "momentum", f"must be in [0, 1), got {self.momentum}")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        if self.grad_clip is not None:
            check(self.grad_clip > 0, "grad_clip", f"must be > 0 or null, got {self.grad_clip}")
        check(0 <= self.label_smoothing < 1, "label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        check(self.aux_weight >= 0, "aux_weight", f"must be >= 0, got {self.aux_weight}")
        check(isinstance(self.bn_recalibration, bool), "bn_recalibration",
              f"must be true or false, got {self.bn_recalibration!r}")
        check(not (self.schedule.name == "plateau" and self.schedule.warmup_epochs > 0), "schedule.warmup_epochs",
              "warm-up is not available with the plateau schedule; set it to 0 or use cosine/step")
        check(self.schedule.warmup_epochs < self.epochs or self.schedule.warmup_epochs == 0,
              "schedule.warmup_epochs", f"must be < epochs ({self.epochs}), got {self.schedule.warmup_epochs}")


@dataclass
class RuntimeConfig:
    """Seed, device, data-loader workers, output folder."""

    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    workers: int = 0
    out_dir: str = "runs"
    threads: int | None = None
    deterministic: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        check(self.workers >= 0, "workers", f"must be >= 0, got {self.workers}")
        if self.threads is not None:
            check(self.threads >= 1, "threads", f"must be >= 1, got {self.threads}")
