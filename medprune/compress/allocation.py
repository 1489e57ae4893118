"""Worst-class-aware allocation: per-layer pruning ratios from a per-layer sensitivity analysis.

A uniform ratio takes as much from a layer the minority class depends on as from one nothing
depends on; global ranking by norms does not know which is which either. Here every prunable
layer (each group root Torch-Pruning would prune) is pruned *alone* on a copy of the model at
each candidate ratio, and the copy's validation metric the safety gate watches (the task's
``gate_metric``: worst-class sensitivity for classification) is compared with the unpruned
model's — a cheap sensitivity analysis without fine-tuning. Each probe also gives the MACs it
saves. The allocation then spends a MACs budget greedily: starting from no pruning, it takes the
layer step (a layer's ratio to its next candidate) with the smallest worst-class drop per MAC
saved until the predicted saving reaches ``1 − macs_keep`` of the model's MACs. Probes add up only
approximately (pruning a layer's outputs and its consumer's outputs together saves less than the
two probes predict), so a copy is pruned with the chosen ratios and its real MACs measured; while
it saves less than the budget, the shortfall is asked for again. Prediction and measurement are
both recorded.

Example::

    ratios, record = worst_class_allocation(ctx, model, macs_keep=0.5)
    ctx.prune(model, ratio=0.0, layer_ratios=ratios)
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from medprune.errors import PruningError

__all__ = ["LayerProbe", "Allocation", "worst_class_allocation", "allocate", "prunable_layers", "refresh_batchnorm"]

log = logging.getLogger(__name__)

#: How many times the budget is raised when the pruned copy saves less than the probes predicted.
_MAX_ROUNDS = 64


@dataclass(frozen=True)
class LayerProbe:
    """One layer pruned alone at ``ratio``: the MACs it saved and the gate metric's drop on validation."""

    layer: str
    ratio: float
    macs_saved: int
    drop: float


@dataclass
class Allocation:
    """The chosen per-layer ratios, the budget, what the probes predicted and every probe."""

    metric: str
    baseline: float
    macs_before: int
    macs_keep: float
    ratios: dict[str, float]
    predicted_macs_saved: int
    predicted_drop: float
    measured_macs_saved: int = 0
    probes: list[LayerProbe] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["probes"] = [asdict(p) for p in self.probes]
        return out


def refresh_batchnorm(model: nn.Module, batches: Iterable[Any]) -> None:
    """Recompute ``model``'s BatchNorm running statistics over ``batches`` (images, or ``(images, labels)``
    pairs) as the equal-weight average (``torch.optim.swa_utils.update_bn``); the weights are untouched and
    the model is left in eval mode."""
    import torch

    device = next(model.parameters()).device
    torch.optim.swa_utils.update_bn(((b[0] if isinstance(b, (tuple, list)) else b).to(device) for b in batches),
                                    model)
    model.eval()


def prunable_layers(model: nn.Module, example_inputs: Any, protect: Sequence[str] = ()) -> list[str]:
    """Names of the layers whose output channels pruning would remove (one per group root, in graph order)."""
    from medprune.compress._graph import build_graph, default_forward_fn, preserved_state
    from medprune.compress.prune import group_roots, resolve_protected

    with preserved_state(model):
        graph = build_graph(model, example_inputs, default_forward_fn(model))
        protected = resolve_protected(model, graph, protect)
        return group_roots(model, graph, protected)


def allocate(probes: Sequence[LayerProbe], budget: int) -> tuple[dict[str, float], int, float]:
    """Greedy multiple-choice allocation: per layer at most one ratio among its probes, predicted MACs saved
    ≥ ``budget``, taking each time the step with the smallest extra drop per extra MAC saved (a drop below
    zero — a probe that improved the metric — counts as zero). Returns ``(ratios, predicted saving,
    predicted drop)``; if every layer at its largest ratio saves less than ``budget``, all are taken."""
    by_layer: dict[str, list[LayerProbe]] = {}
    for p in probes:
        by_layer.setdefault(p.layer, []).append(p)
    for steps in by_layer.values():
        steps.sort(key=lambda p: p.ratio)
    level = {layer: -1 for layer in by_layer}  # index of the chosen probe, -1: not pruned
    saved, drop = 0, 0.0

    def step(layer: str) -> tuple[float, int, float, int] | None:
        """The layer's next probe that saves more than its current one (a ratio that rounds to the same width
        saves nothing and is skipped): ``(drop per MAC, MACs, drop, its index)``."""
        i = level[layer]
        cur_saved = by_layer[layer][i].macs_saved if i >= 0 else 0
        cur_drop = max(0.0, by_layer[layer][i].drop) if i >= 0 else 0.0
        for j in range(i + 1, len(by_layer[layer])):
            nxt = by_layer[layer][j]
            d_saved = nxt.macs_saved - cur_saved
            if d_saved > 0:
                d_drop = max(0.0, nxt.drop) - cur_drop
                return d_drop / d_saved, d_saved, d_drop, j
        return None

    while saved < budget:
        options = [(s, layer) for layer in by_layer if (s := step(layer)) is not None]
        if not options:
            break
        # smallest drop per MAC; among equals, the bigger saving first, then the layer name (deterministic)
        (cost, d_saved, d_drop, j), layer = min(options, key=lambda o: (o[0][0], -o[0][1], o[1]))
        level[layer] = j
        saved += d_saved
        drop += d_drop
    ratios = {layer: by_layer[layer][i].ratio for layer, i in level.items() if i >= 0}
    return ratios, saved, drop


def worst_class_allocation(ctx: Any, model: nn.Module, *, macs_keep: float = 0.5,
                           candidates: Sequence[float] = (0.25, 0.5, 0.75),
                           refresh: Callable[[nn.Module], None] | None = None) -> tuple[dict[str, float], Allocation]:
    """Per-layer ratios for ``model`` keeping about ``macs_keep`` of its MACs with the least predicted drop of the
    validation gate metric; ``ctx`` is the :class:`~medprune.compress.context.CompressContext` (criterion,
    options, calibration, validation ``evaluate`` and task). See the module docstring.

    ``refresh(model)`` runs on every probe (and on a copy of the unpruned model, the reference) before it is
    evaluated — recompute its BatchNorm statistics (:func:`refresh_batchnorm`) on images drawn as in
    training: a layer pruned alone leaves the statistics of every later layer stale, and a probe judged with
    them measures that (on sklearn's digits nearly every probe dropped worst-class sensitivity to 0), not what
    the layer is worth."""
    from medprune.models.cost import total_macs

    if ctx.evaluate is None:
        raise PruningError("worst-class allocation needs validation data to measure each layer's sensitivity")
    if not 0.0 < macs_keep < 1.0:
        raise PruningError(f"allocation macs_keep must be in (0, 1), got {macs_keep}")
    bad = [r for r in candidates if not 0.0 < float(r) < 1.0]
    if not candidates or bad:
        raise PruningError(f"allocation candidates must be ratios in (0, 1), got {list(candidates)}")
    metric = ctx.task.gate_metric if ctx.task is not None else "worst_class_sensitivity"
    reference = copy.deepcopy(model)
    if refresh is not None:  # the probes are judged with refreshed statistics: so is the reference
        refresh(reference)
    base = ctx.evaluate(reference).get(metric)
    if base is None:
        raise PruningError(f"the unpruned model has no validation {metric}: cannot measure sensitivities")
    macs0 = int(total_macs(model, ctx.example_inputs))
    layers = prunable_layers(model, ctx.example_inputs, ctx.options.protect)
    probes: list[LayerProbe] = []
    for layer in layers:
        for r in sorted(float(c) for c in candidates):
            trial = copy.deepcopy(model)
            result = ctx.prune(trial, ratio=0.0, layer_ratios={**dict.fromkeys(layers, 0.0), layer: r})
            if refresh is not None:
                refresh(trial)
            value = ctx.evaluate(trial).get(metric)
            drop = float(base) - float(value) if value is not None else 1.0
            probes.append(LayerProbe(layer, r, int(macs0 - result.macs_after), drop))
    target = int(round((1.0 - macs_keep) * macs0))  # MACs to save
    budget, measured, previous = target, 0, None
    for _ in range(_MAX_ROUNDS):
        chosen, saved, drop = allocate(probes, budget)
        if chosen == previous:  # every step is taken: the probes can predict no more saving
            break
        previous = chosen
        ratios = {**dict.fromkeys(layers, 0.0), **chosen}  # every layer named: each group gets exactly its own ratio
        trial = copy.deepcopy(model)
        measured = int(macs0 - ctx.prune(trial, ratio=0.0, layer_ratios=ratios).macs_after)
        # Probes add up only roughly: pruning a layer's inputs and outputs together saves less than the two
        # probes predict. Ask for the shortfall again until the pruned copy really meets the budget.
        everything = len(chosen) == len(layers) and all(r == max(candidates) for r in chosen.values())
        if measured >= target or everything:
            break
        budget = saved + (target - measured)  # past what this choice predicted: at least one more step
    log.info("worst-class allocation: %d layers probed at %s, %d chosen, predicted MACs x%.2f, predicted %s drop %.3f",
             len(layers), list(candidates), len(chosen), macs0 / max(1, macs0 - saved), metric, drop)
    return ratios, Allocation(metric=metric, baseline=float(base), macs_before=macs0, macs_keep=float(macs_keep),
                              ratios=ratios, predicted_macs_saved=int(saved), predicted_drop=float(drop),
                              measured_macs_saved=measured, probes=probes)
