"""Soft Filter Pruning (He et al., IJCAI 2018), with an exact hard prune at the end.

*Confirmed* (paper and the released code he-y/soft-filter-pruning): rank each layer's filters by
the L2 norm of their weights; after every epoch zero the lowest ``ratio`` share (conv weights
only); keep training all weights so zeroed filters can regrow; re-select every epoch; after the
last epoch remove the zeroed filters. The released code's ``--rate`` is the *keep* ratio; our
``ratio`` is the share removed, as everywhere in medprune.

medprune's choices:

- Filters are selected per Torch-Pruning group, so layers coupled by a residual addition zero the
  same channels and the final removal is consistent (the criterion scores the whole group).
- A zeroed filter still emits a constant: its BatchNorm gives ``beta - gamma·mean/std`` and the
  activation passes it on. Before removal that constant is measured at each consumer layer's
  input and folded into the consumer's bias (created if the layer had none), so the hard-pruned
  model equals the soft-pruned one. The fold is exact for linear layers and unpadded
  convolutions; for a padded convolution it is exact away from the border, where the padding
  would have met the constant — the largest output change is measured and recorded.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from medprune.compress.context import CompressContext
from medprune.compress._tp import tp

if TYPE_CHECKING:
    from medprune.compress.prune import PruneResult
from medprune.compress.schedules import SCHEDULES, Schedule
from medprune.engine.trainer import TrainHook
from medprune.errors import PruningError

__all__ = ["SoftFilterPruning", "SFPHook", "hard_prune_zeroed"]

log = logging.getLogger(__name__)



def _out_handlers() -> tuple[Any, ...]:
    return (tp.prune_conv_out_channels, tp.prune_linear_out_channels)


def _in_handlers() -> tuple[Any, ...]:
    return (tp.prune_conv_in_channels, tp.prune_linear_in_channels)


def _conv_outs(group: Any) -> list[nn.modules.conv._ConvNd]:
    return [dep.target.module for dep, _ in group
            if dep.handler in _out_handlers() and isinstance(dep.target.module, nn.modules.conv._ConvNd)]


class SFPHook(TrainHook):
    """Zero the lowest-scoring filters of every prunable group after each training epoch."""

    def __init__(self, model: nn.Module, example_inputs: Any, criterion: Any, *, ratio: float,
                 round_to: int | None, protect: tuple[str, ...] | list[str], max_layer_ratio: float = 0.95) -> None:
        self.criterion = criterion
        self.ratio = ratio
        self.round_to = round_to
        self.max_layer_ratio = max_layer_ratio
        from medprune.compress._graph import build_graph
        from medprune.compress.prune import is_grouped, resolve_protected

        self.graph = build_graph(model, example_inputs)
        protected = resolve_protected(model, self.graph, protect)
        roots = (nn.modules.conv._ConvNd, nn.Linear)
        self.groups = [g for g in self.graph.get_all_groups(ignored_layers=list(protected), root_module_types=roots)
                       if not is_grouped(g) and _conv_outs(g)]
        self.masks: list[list[int]] = [[] for _ in self.groups]

    @torch.no_grad()
    def apply(self) -> int:
        """Re-select and zero filters now; returns how many channels are zeroed in total."""
        from medprune.compress.prune import keep_count

        total = 0
        for i, group in enumerate(self.groups):
            scores = self.criterion(group)
            if scores is None:
                continue
            n = len(scores)
            n_zero = n - keep_count(n, self.ratio, round_to=self.round_to, max_layer_ratio=self.max_layer_ratio)
            idxs = torch.argsort(scores.float().cpu(), stable=True)[:n_zero]
            for conv in _conv_outs(group):
                conv.weight[idxs.to(conv.weight.device)] = 0.0
            self.masks[i] = sorted(idxs.tolist())
            total += n_zero
        return total

    def after_train_epoch(self, trainer: Any) -> None:
        zeroed = self.apply()
        log.debug("SFP: %d channels zeroed after epoch %s", zeroed, getattr(trainer, "epoch", "?"))


def _zeroed_channels(group: Any) -> list[int]:
    """Channels whose filters are exactly zero in every conv of the group."""
    convs = _conv_outs(group)
    if not convs:
        return []
    zero = None
    for conv in convs:
        z = conv.weight.detach().flatten(1).abs().sum(1) == 0
        zero = z if zero is None else zero & z.to(zero.device)
    return torch.nonzero(zero).flatten().tolist()


def hard_prune_zeroed(model: nn.Module, example_inputs: Any, *, protect: tuple[str, ...] | list[str] = ("first_conv",),
                      criterion_name: str = "sfp") -> tuple[PruneResult, float]:
    """Remove every channel whose filters are zero in all convs of its group, folding what it emitted.

    Returns the result and the largest absolute output change (eval mode, on ``example_inputs``).
    """
    import time

    from medprune.compress._graph import build_graph, default_forward_fn, no_inplace, preserved_state
    from medprune.compress.prune import Snapshot, finish_pruning, resolve_protected

    t0 = time.perf_counter()
    forward_fn = default_forward_fn(model)
    before = Snapshot.of(model, example_inputs, forward_fn)
    state = preserved_state(model, buffers=False)
    model.eval()
    with torch.no_grad():
        reference = model(example_inputs)
    graph = build_graph(model, example_inputs, forward_fn)
    protected = resolve_protected(model, graph, protect)
    names = {m: n for n, m in model.named_modules()}
    plans = []
    for group in graph.get_all_groups(ignored_layers=list(protected), root_module_types=(nn.modules.conv._ConvNd, nn.Linear)):
        zeroed = _zeroed_channels(group)
        n = graph.get_out_channels(group[0].dep.target.module)
        if zeroed and len(zeroed) < n:
            plans.append((group[0].dep.target.module, group[0].dep.handler, zeroed))
    # Record every consumer's input once, before anything changes.
    inputs: dict[nn.Module, torch.Tensor] = {}
    consumers = set()
    for root, handler, idxs in plans:
        for dep, _ in graph.get_pruning_group(root, handler, idxs):
            if dep.handler in _in_handlers():
                consumers.add(dep.target.module)
    hooks = [m.register_forward_pre_hook(lambda mod, args: inputs.__setitem__(mod, args[0].detach()))
             for m in consumers]
    try:
        with no_inplace(model), torch.no_grad():
            model(example_inputs)
    finally:
        for h in hooks:
            h.remove()
    removed: dict[str, list[int]] = {}
    with no_inplace(model), torch.no_grad():
        for root, handler, idxs in plans:
            group = graph.get_pruning_group(root, handler, idxs)
            for dep, in_idxs in group:
                if dep.handler in _in_handlers():
                    _fold(dep.target.module, inputs[dep.target.module], list(in_idxs))
            if graph.check_pruning_group(group):
                group.prune()
                removed[names.get(root, "?")] = list(idxs)
    with torch.no_grad():
        out = model(example_inputs)
    change = max(float((a - b).abs().max()) for a, b in zip(_tensors(reference), _tensors(out)))
    result = finish_pruning(model, example_inputs, forward_fn, state, None, before, removed, t0, criterion_name)
    return result, change


def _tensors(out: Any) -> list[torch.Tensor]:
    from medprune.compress._graph import flatten_outputs

    return flatten_outputs(out)


def _fold(layer: nn.Module, x: torch.Tensor, idxs: list[int]) -> None:
    """Add what input channels ``idxs`` contribute (their mean value) to ``layer``'s bias."""
    if isinstance(layer, nn.modules.conv._ConvNd):
        if layer.groups != 1:
            return  # a depthwise consumer is pruned together with its channel; nothing flows elsewhere
        const = x[:, idxs].transpose(0, 1).flatten(1).mean(1)  # per removed input channel
        w = layer.weight[:, idxs]  # (out, k, *kernel)
        delta = (w.flatten(2).sum(2) * const.to(w.dtype)).sum(1)
    elif isinstance(layer, nn.Linear):
        const = x.reshape(-1, x.shape[-1])[:, idxs].mean(0)
        delta = (layer.weight[:, idxs] * const.to(layer.weight.dtype)).sum(1)
    else:
        return
    if float(delta.abs().max()) == 0.0:
        return
    if layer.bias is None:
        layer.bias = nn.Parameter(torch.zeros_like(delta), requires_grad=layer.weight.requires_grad)
    layer.bias.add_(delta)


@SCHEDULES.register
class SoftFilterPruning(Schedule):
    """SFP: ``epochs`` of training with filters zeroed (and free to regrow) after each epoch, then removal.

    Options: ``epochs`` (soft-pruning epochs, default 10), ``finetune_epochs`` (plain fine-tuning
    after the removal; default 0 as SFP trains the final architecture already).
    """

    name = "sfp"

    def __init__(self, epochs: int = 10, finetune_epochs: int = 0) -> None:
        if int(epochs) < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self.epochs = int(epochs)
        self.finetune_epochs = int(finetune_epochs)

    def __call__(self, ctx: CompressContext) -> nn.Module:
        if getattr(ctx.criterion, "data_driven", False):
            raise PruningError(f"sfp re-selects filters every epoch from the weights; criterion "
                               f"{ctx.criterion.name!r} is data-driven — use l2 (the paper's), l1 or fpgm")
        ctx.record_baseline(ctx.model)
        opts = ctx.options
        hook = SFPHook(ctx.model, ctx.example_inputs, ctx.criterion, ratio=opts.ratio, round_to=opts.round_to,
                       protect=opts.protect, max_layer_ratio=opts.max_layer_ratio)
        hook.apply()  # the released code masks before the first epoch too
        model = ctx.run_finetune(ctx.model, self.epochs, (hook,), "sfp")
        with torch.no_grad():
            hook.apply()  # the best epoch's weights may have regrown: select and zero once more
        result, change = hard_prune_zeroed(model, ctx.example_inputs, protect=opts.protect)
        ctx.event("sfp_hard_prune", removed_channels=sum(len(v) for v in result.removed.values()),
                  macs_before=result.macs_before, macs_after=result.macs_after, max_output_change=change)
        return ctx.run_finetune(result.model, self.finetune_epochs, (), "finetune")
