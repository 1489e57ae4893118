"""Pruning schedules: when and how often to prune, registered like the criteria.

A schedule is a small object with ``__call__(ctx: CompressContext) -> nn.Module``; the engine never
branches on schedule names. ``oneshot`` and ``iterative`` live here, ``sfp`` in
:mod:`medprune.compress.sfp`, ``bpcp`` in :mod:`medprune.compress.bpcp`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from medprune.compress.context import CompressContext
from medprune.registry import Registry

__all__ = ["SCHEDULES", "Schedule", "create_schedule", "list_schedules"]

SCHEDULES = Registry("schedule")
"""Name → schedule class."""


class Schedule:
    """Base class: a schedule turns a trained model into a compressed one."""

    name: ClassVar[str] = ""

    def __call__(self, ctx: CompressContext) -> nn.Module:
        raise NotImplementedError


def create_schedule(name: str, **options: Any) -> Schedule:
    """Build the schedule registered as ``name`` with its options (unknown names suggest)."""
    return SCHEDULES.create(name, **options)


def list_schedules() -> list[str]:
    """Registered schedule names."""
    return SCHEDULES.names()


def _step_ratio(total: float, k: int, steps: int) -> float:
    """Ratio to remove at step ``k`` (1-based) of ``steps`` so that after it ``total·k/steps`` is gone."""
    before = total * (k - 1) / steps
    after = total * k / steps
    return 1.0 - (1.0 - after) / (1.0 - before)


@SCHEDULES.register
class OneShot(Schedule):
    """Prune once to the target ratio, then fine-tune (``finetune_epochs`` overrides the config).

    The job behind it (:func:`medprune.workflows.prune.prune_job`) then judges the result with the
    safety gate, as it does for every schedule.
    """

    name = "oneshot"

    def __init__(self, finetune_epochs: int | None = None) -> None:
        self.finetune_epochs = finetune_epochs

    def __call__(self, ctx: CompressContext) -> nn.Module:
        ctx.record_baseline(ctx.model)
        result = ctx.prune(ctx.model)
        ctx.event("prune", step=1, ratio=ctx.options.ratio, macs_before=result.macs_before,
                  macs_after=result.macs_after, params_after=result.params_after)
        epochs = ctx.finetune_epochs if self.finetune_epochs is None else self.finetune_epochs
        # The job judges the returned model with the safety gate, whatever the schedule.
        return ctx.run_finetune(result.model, epochs, (), "finetune")


@SCHEDULES.register
class Iterative(Schedule):
    """Prune in ``steps`` equal steps (of the original widths), fine-tuning after each.

    After every step the imbalance-aware safety gate compares validation worst-class sensitivity
    with the unpruned model's; when it drops more than the configured limit the schedule either
    undoes that step and stops (``backoff``) or keeps it and stops (``stop``), and records why.
    """

    name = "iterative"

    def __init__(self, steps: int = 3, finetune_epochs: int | None = None) -> None:
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.steps = int(steps)
        self.finetune_epochs = finetune_epochs

    def __call__(self, ctx: CompressContext) -> nn.Module:
        import copy

        ctx.record_baseline(ctx.model)
        model = ctx.model
        epochs = ctx.finetune_epochs if self.finetune_epochs is None else self.finetune_epochs
        opts = ctx.options
        for k in range(1, self.steps + 1):
            previous = copy.deepcopy(model) if ctx.gate_enabled() and ctx.gate_action == "backoff" else None
            ratio = _step_ratio(opts.ratio, k, self.steps)
            layer_ratios = {p: _step_ratio(r, k, self.steps) for p, r in opts.layer_ratios.items()}
            result = ctx.prune(model, ratio=ratio, layer_ratios=layer_ratios)
            ctx.event("prune", step=k, of=self.steps, step_ratio=round(ratio, 4),
                      cumulative_ratio=round(opts.ratio * k / self.steps, 4), macs_after=result.macs_after,
                      params_after=result.params_after)
            model = ctx.run_finetune(result.model, epochs, (), f"finetune_step{k}")
            if not ctx.check_safety(model, f"step{k}"):
                if previous is not None:
                    ctx.event("safety_backoff", step=k, message=f"step {k} dropped worst-class sensitivity past "
                              f"the limit; undone, keeping the model of step {k - 1}")
                    model = previous
                else:
                    ctx.event("safety_stop", step=k, message=f"step {k} dropped worst-class sensitivity past "
                              "the limit; stopping here")
                break
        return model
