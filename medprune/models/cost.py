"""Per-stage cost of a model: output channels, pixel positions, their product, and MACs.

A model that declares its stages with ``stage_modules() -> {stage name: [child module names]}``
(the Inception models do) can be measured stage by stage::

    rows = stage_cost_table(create_model("inception_mv4"), (3, 299, 299))
    logger.info("\\n%s", format_stage_costs(rows))

The forward runs on the *meta* device (shapes only, no arithmetic), so a full-size 299-px model
costs milliseconds. MACs count multiply-accumulates of convolution and ``nn.Linear`` layers only
(the usual convention; BatchNorm, pooling and ReLU are left out) for one image in eval mode, so a
train-only auxiliary head is not counted. :func:`count_macs` is medprune's one MAC counter: the
pruning engine, bench, sweep and reports all read it. A model whose shapes depend on the data
declares ``data_dependent_shapes = True`` (a detector: its RoI head runs on the proposals that
survive NMS, at most ``rpn_post_nms_top_n``); it is counted on a seeded random input instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

__all__ = ["StageCost", "stage_cost_table", "format_stage_costs", "count_macs", "total_macs", "count_params",
           "layer_macs", "meta_forward", "MAC_LAYERS"]


@dataclass(frozen=True)
class StageCost:
    """One stage of a network: its output shape and the MACs of the layers inside it."""

    name: str
    channels: int
    height: int
    width: int
    macs: int

    @property
    def positions(self) -> int:
        """Pixel positions of the stage output (``height × width``)."""
        return self.height * self.width

    @property
    def activation(self) -> int:
        """Channels × positions of the stage output: the quantity Inception MV4 balances."""
        return self.channels * self.positions


#: The layers whose multiply-accumulates are counted.
MAC_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


def layer_macs(module: nn.Module, output: torch.Tensor, samples: int = 1) -> int:
    """Multiply-accumulates of one conv or linear layer per input sample, from its ``output`` for ``samples`` inputs.

    Convolutions: output elements × (input channels / groups) × kernel size; linear layers: output
    elements × input features. Every row of the output counts: a detector's RoI head runs its layers
    on a batch of RoIs (one row per proposal) for a single image, so "the first row" would count one
    proposal of a hundred.
    """
    if isinstance(output, (tuple, list)):
        output = output[0]
    elements = output.numel() // max(1, int(samples))
    if isinstance(module, nn.modules.conv._ConvNd):
        return elements * module.weight[0].numel()  # (in / groups) × kernel
    return elements * module.in_features


def meta_forward(model: nn.Module, input_size: tuple[int, ...],
                 hooks: list[tuple[nn.Module, Any]]) -> torch.Tensor:
    """Forward one meta image ``(1, *input_size)`` through ``model`` (left unchanged, eval mode) with
    temporary forward hooks: shapes only, no arithmetic, milliseconds for a 299-px Inception."""
    state = {k: torch.empty_like(v, device="meta") for k, v in model.state_dict(keep_vars=True).items()}
    handles = [m.register_forward_hook(fn) for m, fn in hooks]
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            return functional_call(model, state, (torch.empty(1, *input_size, device="meta"),))
    finally:
        for m, mode in modes.items():
            m.training = mode
        for handle in handles:
            handle.remove()


def count_macs(model: nn.Module, inputs: Sequence[int] | Any, *,
               forward_fn: Callable[[nn.Module, Any], Any] | None = None) -> dict[str, int]:
    """MACs per conv/linear layer (by qualified name) for ONE sample, in eval mode — medprune's one MAC counter.

    ``inputs`` is either an input size ``(C, H, W)`` — the forward then runs on the meta device (shapes
    only) — or example inputs: a batch tensor (its first sample is run) or whatever ``forward_fn(model,
    inputs)`` feeds a model that does not take one tensor (a detector's list of images). A train-only
    branch (Inception's auxiliary head) is not counted; the model's modes are restored.
    """
    macs: dict[str, int] = {}
    samples = 1  # the forward below runs one sample, except a forward_fn's own inputs

    def hook_for(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            macs[name] = macs.get(name, 0) + layer_macs(module, output, samples)
        return hook

    layers = [(m, hook_for(n)) for n, m in model.named_modules() if isinstance(m, MAC_LAYERS)]
    if isinstance(inputs, (tuple, list)) and inputs and all(isinstance(v, int) for v in inputs):
        if not getattr(model, "data_dependent_shapes", False):
            meta_forward(model, tuple(inputs), layers)
            return macs
        # A detector's shapes depend on the data (proposals surviving NMS): count on a seeded frame.
        g = torch.Generator().manual_seed(0)
        inputs = torch.randn((1, *inputs), generator=g).to(next(model.parameters()).device)
    handles = [m.register_forward_hook(fn) for m, fn in layers]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            if isinstance(inputs, torch.Tensor):
                model(inputs[:1])
            elif forward_fn is not None:
                samples = len(inputs) if isinstance(inputs, (list, tuple)) else 1
                forward_fn(model, inputs)
            else:
                model(inputs)
    finally:
        for m, mode in modes.items():
            m.training = mode
        for handle in handles:
            handle.remove()
    return macs


def total_macs(model: nn.Module, inputs: Sequence[int] | Any, *,
               forward_fn: Callable[[nn.Module, Any], Any] | None = None) -> int:
    """Sum of :func:`count_macs` over the layers: the model's MACs for one sample."""
    return int(sum(count_macs(model, inputs, forward_fn=forward_fn).values()))


def count_params(model: nn.Module) -> int:
    """Number of parameters of ``model`` (shared parameters counted once; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def stage_cost_table(model: nn.Module, input_size: tuple[int, int, int] | None = None) -> list[StageCost]:
    """Output channels, positions, channels × positions and MACs of each stage of ``model``.

    ``model`` must define ``stage_modules()`` (ordered stage name → names of its child modules, the
    last of which produces the stage output); a final ``head`` row holds the layers outside every
    stage (the classifier). A stage with no modules repeats the previous output at 0 MACs.
    ``input_size`` is ``(C, H, W)``, by default ``model.default_input_size``.

    Example (Inception-V4 at 299 px): ``[(r.name, r.channels, r.positions) for r in rows]`` →
    ``[('stem', 384, 1225), ('inception_a', 384, 1225), ('inception_b', 1024, 289),
    ('inception_c', 1536, 64), ('head', 1000, 1)]``.
    """
    if not hasattr(model, "stage_modules"):
        raise TypeError(f"{type(model).__name__} does not declare stage_modules()")
    input_size = tuple(input_size or model.default_input_size)
    stages: dict[str, list[str]] = model.stage_modules()
    shapes: dict[str, torch.Size] = {}

    def keep_shape(stage: str) -> Any:
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            shapes[stage] = output.shape
        return hook

    hooks = [(model.get_submodule(names[-1]), keep_shape(stage)) for stage, names in stages.items() if names]
    macs: dict[str, int] = {}
    layer_hooks: list[tuple[nn.Module, Any]] = []
    for name, module in model.named_modules():
        if isinstance(module, MAC_LAYERS):
            owner = next((s for s, names in stages.items()
                          if any(name == n or name.startswith(n + ".") for n in names)), "head")

            def add(mod: nn.Module, args: Any, output: torch.Tensor, owner: str = owner) -> None:
                macs[owner] = macs.get(owner, 0) + layer_macs(mod, output)
            layer_hooks.append((module, add))
    logits = meta_forward(model, input_size, hooks + layer_hooks)
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    rows: list[StageCost] = []
    previous = torch.Size((1, *input_size))
    for stage in stages:
        shape = shapes.get(stage, previous)
        rows.append(StageCost(stage, shape[1], shape[2], shape[3], macs.get(stage, 0)))
        previous = shape
    rows.append(StageCost("head", logits.shape[1], 1, 1, macs.get("head", 0)))
    return rows


def format_stage_costs(rows: list[StageCost]) -> str:
    """A fixed-width text table of :func:`stage_cost_table` rows, with a MACs total line."""
    lines = [f"{'stage':<12} {'channels':>8} {'H×W':>9} {'channels×positions':>19} {'MMACs':>10}"]
    for r in rows:
        lines.append(f"{r.name:<12} {r.channels:>8} {f'{r.height}×{r.width}':>9} {r.activation:>19,} "
                     f"{r.macs / 1e6:>10.1f}")
    lines.append(f"{'total':<12} {'':>8} {'':>9} {'':>19} {sum(r.macs for r in rows) / 1e6:>10.1f}")
    return "\n".join(lines)
