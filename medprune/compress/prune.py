"""Structured filter pruning that really removes channels: medprune's layer over Torch-Pruning.

Torch-Pruning builds the dependency graph and performs the surgery (layers coupled by residual
additions, concatenations and normalisations shrink together). medprune decides *what* to remove
and makes the result safe to use:

- channels are scored by a registered criterion (:mod:`medprune.compress.importance`), calibrated on
  class-balanced batches when it is data-driven;
- per-layer (Torch-Pruning's meaning of ``ratio``) or global ranking, per-layer overrides,
  ``round_to`` widths, protected layers, and no layer is ever emptied;
- the gaps of Torch-Pruning 1.6.1 are closed (:mod:`medprune.compress._graph`): in-place
  activations, train-only branches, detectors, and the model is returned in the mode it came in
  with frozen parameters still frozen;
- a self-check runs forward and backward in eval and train mode and compares output shapes.

Example::

    import medprune
    result = medprune.prune_model(model, torch.randn(2, 1, 112, 112), criterion="l2", ratio=0.5)
    result.model            # the same object, now smaller
    result.macs_after / result.macs_before
    medprune.save_model(result.model, "pruned.pt")
"""

from __future__ import annotations

import fnmatch
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import torch
from medprune.compress._tp import tp
from torch import nn

from medprune.compress._graph import (ForwardFn, build_graph, default_forward_fn, flatten_outputs, input_layers,
                                      no_inplace, output_layers, preserved_state)
from medprune.errors import PruningError
from medprune.models.cost import count_params, total_macs
from medprune.models.structure import capture_structure

__all__ = ["PruneResult", "prune_model", "prune_channels", "keep_count", "self_check", "layer_widths", "Snapshot",
           "finish_pruning", "resolve_protected", "is_grouped"]

log = logging.getLogger(__name__)

_ROOTS = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass
class PruneResult:
    """What :func:`prune_model` did.

    Attributes:
        model: the pruned model (the object passed in, modified in place).
        kept: ``{layer: (channels before, channels after)}`` for every conv/linear layer, in module order.
        removed: ``{root layer: [removed output-channel indices]}`` for each pruned group.
        params_before / params_after, macs_before / macs_after: at the example input's size.
        seconds: wall time of scoring and surgery (calibration included).
        criterion: the criterion's name.
    """

    model: nn.Module
    kept: dict[str, tuple[int, int]]
    removed: dict[str, list[int]] = field(default_factory=dict)
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    seconds: float = 0.0
    criterion: str = ""

    @property
    def macs_reduction(self) -> float:
        """``macs_before / macs_after`` (2.0 = half the multiply-accumulates)."""
        return self.macs_before / max(1, self.macs_after)

    def summary(self) -> dict[str, Any]:
        """JSON-ready record of the result (no tensors)."""
        return {"criterion": self.criterion, "params_before": self.params_before, "params_after": self.params_after,
                "macs_before": self.macs_before, "macs_after": self.macs_after,
                "macs_reduction": round(self.macs_reduction, 4), "seconds": round(self.seconds, 3),
                "kept": {k: list(v) for k, v in self.kept.items()}}


def layer_widths(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv/linear layer, by name."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            out[name] = m.out_channels
        elif isinstance(m, nn.Linear):
            out[name] = m.out_features
    return out


def keep_count(channels: int, ratio: float, *, round_to: int | None = 8, max_layer_ratio: float = 0.95) -> int:
    """How many of ``channels`` to keep when removing ``ratio`` of them.

    The kept count is rounded to the nearest multiple of ``round_to`` (never below one multiple when
    the layer has at least that many channels), never drops below ``(1 - max_layer_ratio)`` of the
    layer nor below one channel, and never exceeds ``channels``.

    >>> keep_count(64, 0.5), keep_count(64, 0.7), keep_count(6, 0.5), keep_count(10, 0.99)
    (32, 16, 3, 8)
    """
    if not 0.0 <= ratio < 1.0:
        raise PruningError(f"pruning ratio must be in [0, 1), got {ratio}")
    target = channels * (1.0 - ratio)
    floor = max(1, math.ceil(channels * (1.0 - max_layer_ratio) - 1e-9))
    if round_to and round_to > 1 and channels >= round_to:
        kept = max(round_to, int(math.floor(target / round_to + 0.5)) * round_to)
        floor = math.ceil(floor / round_to) * round_to
    else:
        kept = int(math.floor(target + 0.5))
    return int(min(channels, max(kept, floor, 1)))


def _output_shapes(model: nn.Module, example_inputs: Any, forward_fn: ForwardFn) -> dict[str, list[tuple[int, ...]]]:
    shapes: dict[str, list[tuple[int, ...]]] = {}
    with preserved_state(model), no_inplace(model), torch.no_grad():
        model.eval()
        with torch.no_grad():
            shapes["eval"] = [tuple(t.shape[1:]) for t in flatten_outputs(model(example_inputs))] \
                if isinstance(example_inputs, torch.Tensor) else []
        shapes["train"] = [tuple(t.shape[1:]) for t in flatten_outputs(forward_fn(model, example_inputs))]
    return shapes


def self_check(model: nn.Module, example_inputs: Any, expected: dict[str, list[tuple[int, ...]]] | None = None,
               forward_fn: ForwardFn | None = None) -> None:
    """Run forward and backward in eval and train mode; compare output shapes with ``expected``.

    Leaves the model's modes, gradients (``None``) and BatchNorm statistics as they were. Raises
    :class:`~medprune.errors.PruningError` describing the first failure.
    """
    forward_fn = forward_fn or default_forward_fn(model)
    with preserved_state(model), torch.enable_grad():
        for mode in ("eval", "train"):
            try:
                if mode == "eval":
                    if not isinstance(example_inputs, torch.Tensor):
                        continue
                    model.eval()
                    out = model(example_inputs)
                else:
                    out = forward_fn(model, example_inputs)
                tensors = [t for t in flatten_outputs(out) if t.is_floating_point()]
                got = [tuple(t.shape[1:]) for t in flatten_outputs(out)]
                if expected is not None and got != expected[mode]:
                    raise PruningError(f"self-check: {mode}-mode output shapes changed from {expected[mode]} to {got}")
                loss = sum(t.float().mean() for t in tensors if t.requires_grad)
                if isinstance(loss, torch.Tensor):
                    loss.backward()
            except PruningError:
                raise
            except RuntimeError as exc:
                raise PruningError(f"self-check: the pruned model fails in {mode} mode: "
                                   f"{str(exc).splitlines()[0]}") from None
            finally:
                for p in model.parameters():
                    p.grad = None


@dataclass
class Snapshot:
    """Widths, parameters and MACs of a model before pruning (shared with the SFP hard prune)."""

    widths: dict[str, int]
    params: int
    macs: int

    @classmethod
    def of(cls, model: nn.Module, example_inputs: Any, forward_fn: ForwardFn | None) -> "Snapshot":
        return cls(layer_widths(model), count_params(model), total_macs(model, example_inputs, forward_fn=forward_fn))


def finish_pruning(model: nn.Module, example_inputs: Any, forward_fn: ForwardFn, state: preserved_state,
            expected: dict[str, list[tuple[int, ...]]] | None, before: Snapshot, removed: dict[str, list[int]],
            t0: float, criterion: str) -> PruneResult:
    """Restore modes and frozen flags, record the new widths in the spec, self-check, summarise."""
    state.restore()
    spec = getattr(model, "medprune_spec", None)
    if isinstance(spec, dict):
        model.medprune_spec = {**spec, "structure": capture_structure(model)}
    if expected is not None:
        self_check(model, example_inputs, expected, forward_fn)
    widths_after = layer_widths(model)
    return PruneResult(model=model, kept={n: (before.widths.get(n, w), w) for n, w in widths_after.items()},
                       removed=removed, params_before=before.params, params_after=count_params(model),
                       macs_before=before.macs, macs_after=total_macs(model, example_inputs, forward_fn=forward_fn),
                       seconds=time.perf_counter() - t0, criterion=criterion)


def resolve_protected(model: nn.Module, graph: tp.DependencyGraph, protect: Sequence[str]) -> set[nn.Module]:
    """Modules whose output channels must not change: the model's outputs plus ``protect``."""
    names = {m: n for n, m in model.named_modules()}
    protected = set(output_layers(graph))
    prunable = [n for n, m in model.named_modules() if isinstance(m, _ROOTS)]
    for token in protect:
        if token == "classifier":
            continue  # output layers are always protected
        if token == "first_conv":
            protected |= input_layers(graph)
            continue
        matched = [m for n, m in model.named_modules() if isinstance(m, _ROOTS) and fnmatch.fnmatchcase(n, token)]
        if not matched:
            from medprune.registry import suggest

            raise PruningError(f"protect: pattern {token!r} matches no conv or linear layer; "
                               + suggest(token, prunable[:40], "layer").split("; ", 1)[-1])
        protected |= set(matched)
    log.debug("protected layers: %s", sorted(names.get(m, "?") for m in protected))
    return protected


def _group_ratio(group: Any, names: dict[nn.Module, str], ratio: float, layer_ratios: dict[str, float]) -> tuple[float, bool]:
    """The ratio for a group: the first ``layer_ratios`` pattern matching its root layer, else the first matching
    one of its layers (the layers its channels couple, consumers included), else ``ratio``. The root comes first
    so that a ratio per layer name (:mod:`medprune.compress.allocation`) sets exactly that layer's group."""
    root = names.get(group[0].dep.target.module)
    for pattern, r in layer_ratios.items():
        if root is not None and fnmatch.fnmatchcase(root, pattern):
            return float(r), True
    for pattern, r in layer_ratios.items():
        for dep, _ in group:
            name = names.get(dep.target.module)
            if name is not None and fnmatch.fnmatchcase(name, pattern):
                return float(r), True
    return ratio, False


def group_roots(model: nn.Module, graph: Any, protected: set[nn.Module]) -> list[str]:
    """Names of the root layers of the groups :func:`prune_model` would consider (protected and grouped
    convolutions left out), in graph order."""
    names = {m: n for n, m in model.named_modules()}
    return [names.get(group[0].dep.target.module, "?") for group in _candidate_groups(graph, protected, names)]


def _candidate_groups(graph: Any, protected: set[nn.Module], names: dict[nn.Module, str]) -> Iterator[Any]:
    """The groups pruning considers: rooted at a conv or linear layer, not protected, no grouped convolution."""
    for group in graph.get_all_groups(ignored_layers=list(protected), root_module_types=_ROOTS):
        if is_grouped(group):
            log.info("skipping %s: grouped convolution", names.get(group[0].dep.target.module))
            continue
        yield group


def is_grouped(group: Any) -> bool:
    """Groups with grouped (non-depthwise) convolutions are skipped: their channel blocks must move together."""
    for dep, _ in group:
        m = dep.target.module
        if isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and m.groups != m.in_channels:
            return True
    return False


@torch.no_grad()
def _plan(groups: list[tuple[Any, torch.Tensor, float, bool]], *, global_pruning: bool, ratio: float,
          round_to: int | None, max_layer_ratio: float) -> list[int]:
    """Number of channels to remove from each group."""
    plan = [0] * len(groups)
    global_idx = [i for i, (_, _, _, own) in enumerate(groups) if global_pruning and not own]
    for i, (group, scores, r, own) in enumerate(groups):
        if i in global_idx:
            continue
        n = len(scores)
        plan[i] = n - keep_count(n, r, round_to=round_to, max_layer_ratio=max_layer_ratio)
    if global_idx:
        normed = []
        for i in global_idx:
            s = groups[i][1].double()
            normed.append(s / s.mean().clamp_min(1e-12))
        allscores = torch.cat(normed)
        n_remove = int(round(len(allscores) * ratio))
        if n_remove > 0:
            threshold = torch.kthvalue(allscores, n_remove).values
            for i, s in zip(global_idx, normed):
                n = len(s)
                want = int((s <= threshold).sum())
                kept = keep_count(n, want / n if want < n else 0.999999, round_to=round_to,
                                  max_layer_ratio=max_layer_ratio)
                plan[i] = n - kept
    return plan


def prune_model(model: nn.Module, example_inputs: Any, *, criterion: Any = "l2", ratio: float = 0.5,
                layer_ratios: dict[str, float] | None = None, global_pruning: bool = False,
                round_to: int | None = 8, protect: Sequence[str] = ("first_conv",),
                calibration: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
                calibration_batches: int | None = None, max_layer_ratio: float = 0.95,
                forward_fn: ForwardFn | None = None, check: bool = True) -> PruneResult:
    """Remove output channels from ``model`` (in place) and return what was done.

    Args:
        model: any ``nn.Module``; registry models keep a rebuildable spec (see :func:`save_model`).
        example_inputs: a batch for tracing and the self-check (a batch of one is doubled for the
            train-mode trace, as BatchNorm needs two samples).
        criterion: a registered name (``medprune.list_criteria()``) or a criterion object.
        ratio: share of channels to remove per layer (or overall with ``global_pruning``).
        layer_ratios: ``{"layer.name.pattern*": ratio}`` overrides (fnmatch patterns).
        round_to: keep channel counts at multiples of this (``None``/1: exact counts).
        protect: layer-name patterns plus ``first_conv`` / ``classifier`` whose outputs stay intact;
            the model's output layers are always protected.
        calibration: ``(images, labels)`` batches (class-balanced) for data-driven criteria.
        calibration_batches: use at most this many calibration batches.
        max_layer_ratio: the most any layer may lose.
        forward_fn: how to run the model for tracing in train mode (detectors get one by default).
        check: run :func:`self_check` afterwards.
    """
    from medprune.compress.importance import Criterion, create_criterion

    t0 = time.perf_counter()
    crit = create_criterion(criterion) if isinstance(criterion, str) else criterion
    if not isinstance(crit, Criterion):
        raise PruningError(f"criterion must be a registered name or a Criterion, got {type(crit).__name__}")
    if not 0.0 <= ratio < 1.0:
        raise PruningError(f"ratio must be in [0, 1), got {ratio}")
    for pattern, r in (layer_ratios or {}).items():
        if not 0.0 <= float(r) < 1.0:
            raise PruningError(f"layer_ratios[{pattern!r}] must be in [0, 1), got {r}")
    forward_fn = forward_fn or default_forward_fn(model)
    state = preserved_state(model, buffers=False)
    before = Snapshot.of(model, example_inputs, forward_fn)
    expected = _output_shapes(model, example_inputs, forward_fn) if check else None

    if crit.data_driven:
        if calibration is None:
            raise PruningError(f"criterion {crit.name!r} is data-driven: pass calibration batches "
                               "(compress.calibration in the config)")
        with preserved_state(model):
            crit.calibrate(model, calibration, max_batches=calibration_batches)

    graph = build_graph(model, example_inputs, forward_fn)
    names = {m: n for n, m in model.named_modules()}
    protected = resolve_protected(model, graph, protect)
    scored: list[tuple[Any, torch.Tensor, float, bool]] = []
    for group in _candidate_groups(graph, protected, names):
        scores = crit(group)
        if scores is None:
            continue
        scores = torch.nan_to_num(scores.detach().float().cpu(), nan=0.0)
        r, own = _group_ratio(group, names, ratio, layer_ratios or {})
        scored.append((group, scores, r, own))
    plan = _plan(scored, global_pruning=global_pruning, ratio=ratio, round_to=round_to,
                 max_layer_ratio=max_layer_ratio)
    removed: dict[str, list[int]] = {}
    with no_inplace(model):
        for (group, scores, _, _), n_remove in zip(scored, plan):
            if n_remove <= 0:
                continue
            root = group[0].dep.target.module
            idxs = torch.argsort(scores, stable=True)[:n_remove].tolist()
            pruning_group = graph.get_pruning_group(root, group[0].dep.handler, sorted(idxs))
            if graph.check_pruning_group(pruning_group):
                pruning_group.prune()
                removed[names.get(root, "?")] = sorted(idxs)
    if hasattr(crit, "reset"):
        crit.reset()
    result = finish_pruning(model, example_inputs, forward_fn, state, expected, before, removed, t0,
                     getattr(crit, "name", type(crit).__name__))
    log.info("pruned with %s: params %d -> %d, MACs %d -> %d (%.2fx fewer)", result.criterion, result.params_before,
             result.params_after, result.macs_before, result.macs_after, result.macs_reduction)
    return result


def prune_channels(model: nn.Module, example_inputs: Any, removals: dict[str, Sequence[int]], *,
                   forward_fn: ForwardFn | None = None, check: bool = True) -> PruneResult:
    """Remove given output channels: ``{layer name: [channel indices]}`` (SFP's final hard prune).

    Coupled layers (residual partners, the following BatchNorm and consumers) shrink with them.
    """
    t0 = time.perf_counter()
    forward_fn = forward_fn or default_forward_fn(model)
    state = preserved_state(model, buffers=False)
    before = Snapshot.of(model, example_inputs, forward_fn)
    expected = _output_shapes(model, example_inputs, forward_fn) if check else None
    graph = build_graph(model, example_inputs, forward_fn)
    modules = dict(model.named_modules())
    protected = output_layers(graph)
    done: dict[str, list[int]] = {}
    with no_inplace(model):
        for name, idxs in removals.items():
            layer = modules.get(name)
            if not isinstance(layer, _ROOTS):
                raise PruningError(f"prune_channels: {name!r} is not a conv or linear layer of the model")
            if layer in protected:
                raise PruningError(f"prune_channels: {name!r} is an output layer; its channels are the predictions")
            idxs = sorted({int(i) for i in idxs})
            width = before.widths[name]
            if len(idxs) >= width:
                raise PruningError(f"prune_channels: removing {len(idxs)} of {width} channels would empty {name!r}")
            if not idxs:
                continue
            handler = tp.prune_conv_out_channels if isinstance(layer, nn.modules.conv._ConvNd) \
                else tp.prune_linear_out_channels
            group = graph.get_pruning_group(layer, handler, idxs)
            if graph.check_pruning_group(group):
                group.prune()
                done[name] = idxs
    return finish_pruning(model, example_inputs, forward_fn, state, expected, before, done, t0, "explicit")
