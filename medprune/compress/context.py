"""What a pruning schedule is handed: the model, the criterion, the options and the services.

A schedule (``oneshot``, ``iterative``, ``sfp``, ``bpcp``) is a small object registered in
:data:`medprune.compress.schedules.SCHEDULES`; the job builds one :class:`CompressContext` and
calls ``schedule(ctx)``. The context carries callables instead of a trainer or a data set so a
schedule never needs to know where the data comes from: the same schedule runs inside
``medprune prune`` (fine-tuning through the :class:`~medprune.engine.trainer.Trainer`) and in a
plain Python session (``finetune=None`` skips fine-tuning).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

__all__ = ["PruneOptions", "CompressContext", "Batches", "FinetuneFn", "EvaluateFn"]

log = logging.getLogger(__name__)

#: Yields ``(images, labels)`` batches; each call starts a fresh, class-balanced pass.
Batches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]
#: ``finetune(model, epochs, hooks, tag) -> model`` trains ``model`` in place and returns it.
FinetuneFn = Callable[[nn.Module, int, Sequence[Any], str], nn.Module]
#: ``evaluate(model) -> metrics`` on the validation split (``classification_metrics`` schema).
EvaluateFn = Callable[[nn.Module], dict[str, Any]]


@dataclass
class PruneOptions:
    """How much to remove and where; shared by every schedule.

    Attributes:
        ratio: share of each layer's channels to remove (Torch-Pruning's meaning: per layer, or over
            all layers together when ``global_pruning``).
        layer_ratios: per-layer overrides, ``{"module.name.pattern*": ratio}`` (fnmatch patterns).
        global_pruning: rank channels of all layers together instead of layer by layer.
        round_to: keep channel counts at multiples of this (hardware kernels like multiples of 8);
            ``None`` or 1 disables it.
        protect: layers whose output channels are never pruned: module-name patterns and the
            tokens ``first_conv`` and ``classifier``. The model's output layers are always protected.
        max_layer_ratio: the most any one layer may lose (a layer is never emptied).
    """

    ratio: float = 0.5
    layer_ratios: dict[str, float] = field(default_factory=dict)
    global_pruning: bool = False
    round_to: int | None = 8
    protect: tuple[str, ...] = ("first_conv",)
    max_layer_ratio: float = 0.95


@dataclass
class CompressContext:
    """Everything a schedule may use; only ``model``, ``example_inputs`` and ``criterion`` are required.

    Attributes:
        model: the (trained) model to compress; schedules may modify it in place.
        example_inputs: a batch for graph tracing and the self-check (batch ≥ 2 so BatchNorm can
            run in train mode).
        criterion: a :class:`~medprune.compress.importance.Criterion`.
        options: :class:`PruneOptions`.
        calibration: class-balanced batches for data-driven criteria (``None``: data-free only).
        finetune: trains a model for some epochs (``None``: no fine-tuning).
        evaluate: validation metrics for the safety gate (``None``: no gate).
        finetune_epochs: epochs of fine-tuning after pruning (after each step for ``iterative``).
        max_worst_class_drop: the safety gate: the largest allowed drop of validation worst-class
            sensitivity below the unpruned model's (``None``: no gate).
        gate_action: ``backoff`` (undo the step that crossed the line) or ``stop`` (keep it, stop).
        calibration_batches: the most calibration batches a data-driven criterion reads.
        run_dir: where schedules write their own records (gates, masks); may be ``None``.
        events: what happened, in order (steps, back-offs); the job writes them to the run directory.
        task: the :class:`~medprune.tasks.Task`: which validation metric the gate watches
            (``None``: classification's worst-class sensitivity).
    """

    model: nn.Module
    example_inputs: torch.Tensor
    criterion: Any
    options: PruneOptions = field(default_factory=PruneOptions)
    calibration: Batches | None = None
    finetune: FinetuneFn | None = None
    evaluate: EvaluateFn | None = None
    finetune_epochs: int = 0
    max_worst_class_drop: float | None = None
    gate_action: str = "backoff"
    calibration_batches: int | None = None
    run_dir: Path | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    baseline: dict[str, Any] | None = None
    task: Any = None

    def event(self, kind: str, **details: Any) -> None:
        """Record (and log) one event of the schedule."""
        record = {"event": kind, **details}
        self.events.append(record)
        log.info("%s: %s", kind, details)

    def prune(self, model: nn.Module, ratio: float | None = None, layer_ratios: dict[str, float] | None = None) -> Any:
        """Prune ``model`` in place with this context's criterion and options; returns the PruneResult."""
        from medprune.compress.prune import prune_model

        opts = self.options
        return prune_model(model, self.example_inputs, criterion=self.criterion,
                           ratio=opts.ratio if ratio is None else ratio,
                           layer_ratios=opts.layer_ratios if layer_ratios is None else layer_ratios,
                           global_pruning=opts.global_pruning, round_to=opts.round_to, protect=opts.protect,
                           calibration=self.calibration() if self.calibration is not None else None,
                           calibration_batches=self.calibration_batches, max_layer_ratio=opts.max_layer_ratio)

    def gate_enabled(self) -> bool:
        """Whether the imbalance-aware safety gate is on (a limit and a validation function exist)."""
        return self.max_worst_class_drop is not None and self.evaluate is not None

    def check_safety(self, model: nn.Module, step: str) -> bool:
        """Compare ``model``'s validation gate metric (the task's: worst-class sensitivity, Dice) with the
        unpruned baseline.

        Records a ``safety_gate`` event; returns ``True`` when the drop stays within the limit.
        """
        gate = self.judge(model)
        if gate is None:
            return True
        self.event("safety_gate", step=step, metric=gate.metric, baseline=gate.baseline, value=gate.value,
                   drop=gate.drop, limit=gate.limit, passed=gate.status == "passed", warnings=gate.warnings)
        return gate.status == "passed"

    def judge(self, model: nn.Module) -> Any:
        """The safety gate's :class:`~medprune.compress.gate.GateResult` for ``model`` (``None`` when off)."""
        from medprune.compress.gate import judge_gate, task_gate

        if not self.gate_enabled():
            return None
        if self.baseline is None:
            raise RuntimeError("the safety gate needs the unpruned baseline: call record_baseline first")
        if self.task is None:
            return judge_gate(self.baseline, self.evaluate(model), self.max_worst_class_drop, what="the pruned model")
        return task_gate(self.baseline, self.evaluate(model), self.max_worst_class_drop, self.task,
                         what="the pruned model")

    def record_baseline(self, model: nn.Module) -> None:
        """Validation metrics of the unpruned model, for the safety gate."""
        if self.gate_enabled() and self.baseline is None:
            self.baseline = self.evaluate(model)
            watched = dict.fromkeys([self.task.gate_metric, *self.task.selection_metrics] if self.task is not None
                                    else ["worst_class_sensitivity", "balanced_accuracy"])
            self.event("baseline", **{key: self.baseline.get(key) for key in watched if key != "loss"})

    def run_finetune(self, model: nn.Module, epochs: int, hooks: Sequence[Any] = (), tag: str = "finetune") -> nn.Module:
        """Fine-tune through the injected trainer, or return the model unchanged when none is set."""
        if self.finetune is None or epochs <= 0:
            return model
        return self.finetune(model, epochs, hooks, tag)
