"""Optimisers and per-epoch learning-rate schedules built from :class:`~medprune.config.OptimConfig`.

The optimiser is always built from the parameters the model has *now*, so a pruned model (whose
parameters were replaced) gets a fresh one. Frozen parameters (``requires_grad=False``) are left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from medprune.engine.settings import OptimConfig

__all__ = ["build_optimizer", "build_scheduler", "step_scheduler", "LrFactor"]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD with momentum (``sgdm``), Adam or AdamW over the trainable parameters.

    Weight decay is not applied to biases and normalisation weights (1-D parameters).
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters")
    if cfg.optimizer == "sgdm":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr)


@dataclass
class LrFactor:
    """Multiplier of the base learning rate at a given epoch (warm-up, then the schedule)."""

    name: str
    epochs: int
    warmup: int
    step_size: int
    gamma: float
    min_ratio: float

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup:
            return (epoch + 1) / (self.warmup + 1)
        e = epoch - self.warmup
        if self.name == "cosine":
            span = max(1, self.epochs - self.warmup)
            return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * min(e, span) / span))
        if self.name == "step":
            return self.gamma ** (e // self.step_size)
        return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau:
    """A per-epoch schedule: constant, cosine, step (all with linear warm-up) or reduce-on-plateau."""
    s = cfg.schedule
    if s.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=s.gamma,
                                                          patience=s.patience, min_lr=s.min_lr)
    factor = LrFactor(s.name, cfg.epochs, s.warmup_epochs, s.step_size, s.gamma, min(1.0, s.min_lr / cfg.lr))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def step_scheduler(scheduler: object, cfg: OptimConfig, value: float | None, maximize: bool) -> None:
    """Advance ``scheduler`` by one epoch (plateau watches the early-stopping metric)."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        if value is not None and not math.isnan(value):
            scheduler.step(value if maximize else -value)
    elif scheduler is not None:
        scheduler.step()
