"""BPCP: block pruning by learned Bernoulli gates, then channel pruning (Huang & Wang 2020).

*Confirmed from the released code* (Pokemon-Huang/BPCP; DESIGN.md §5):

1. Every residual block ``b`` gets a logit ``α_b`` (initialised to 0) and, at every training
   iteration, a gate ``g_b ~ Bernoulli(σ(α_b))``; the block computes ``g_b · F_b(x) + shortcut(x)``.
   The loss is ``CE + γ · Σ_b |g_b|`` (``γ = 0.05``). ``α`` is learnt with a straight-through
   estimator, ``∂L/∂α_b = ∂L/∂g_b · σ(α_b)(1 − σ(α_b))``, jointly with the weights and without
   weight decay.
2. Blocks with ``σ(α_b) ≥ 0.5`` are kept; the network is rebuilt without the others (a plain,
   shallower ResNet — no gate parameters remain).
3. Channels are pruned by ``|γ|`` of BatchNorm; channels that share a residual stream are scored
   jointly (element-wise max over the coupled BatchNorms) and removed together; then fine-tuning.

medprune's choices:

- The gates are those of :meth:`residual_blocks` of a registry ResNet
  (:mod:`medprune.models.resnet`): the first block of a stage that changes width or stride is not
  gated (the released code gates it as well and keeps its 1×1 projection when it goes).
- Gates are drawn from a local, seeded generator on the CPU (the same draws on every device); at
  evaluation the gate is deterministic, ``1[σ(α_b) ≥ 0.5]``, so validation during gate training
  sees the network that step 2 will build.
- The penalty is ``γ · Σ|g_b|`` as in the released code (its ``l1_loss`` on the gates): its
  gradient reaches ``α_b`` only on iterations where the block was on (``d|g|/dg = 0`` at ``g = 0``).
- Step 3 calls :func:`medprune.compress.prune.prune_model` with the ``bn_scale`` criterion and
  ``reduction="max"``; Torch-Pruning's dependency groups couple the layers of a residual stream.

Example (``finetune`` as the job builds it, or any ``finetune(model, epochs, hooks, tag)``)::

    ctx = CompressContext(model=create_model("preresnet56_v2", num_classes=10), example_inputs=x,
                          criterion=None, options=PruneOptions(ratio=0.5), finetune=finetune)
    small = create_schedule("bpcp", gate_epochs=10, gamma=0.05)(ctx)
    small.medprune_spec["kwargs"]["keep_blocks"]   # which blocks survived
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from medprune.compress.context import CompressContext
from medprune.compress.importance import create_criterion
from medprune.compress.schedules import SCHEDULES, Schedule
from medprune.engine.trainer import TrainHook
from medprune.errors import ConfigError, PruningError
from medprune.models import create_model

__all__ = ["GateParameters", "BlockGates", "straight_through_gates", "remove_gated_blocks", "BPCP"]

log = logging.getLogger(__name__)

GATES_ATTR = "bpcp_gates"
"""Name of the module holding the gate logits on a gated model (``model.bpcp_gates.alpha``)."""


class _BernoulliStraightThrough(torch.autograd.Function):
    """Forward: the given 0/1 ``sample``; backward: ``∂L/∂α = ∂L/∂g · σ(α)(1 − σ(α))``."""

    @staticmethod
    def forward(ctx: Any, alpha: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(torch.sigmoid(alpha))
        return sample.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (prob,) = ctx.saved_tensors
        return grad * prob * (1 - prob), None


def straight_through_gates(alpha: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample ``g ~ Bernoulli(σ(alpha))`` (values exactly 0 or 1) with BPCP's straight-through gradient.

    The uniforms are drawn on the CPU from ``generator`` (so a seed gives the same gates on any
    device) and compared with ``σ(alpha)`` on ``alpha``'s device.
    """
    uniform = torch.rand(alpha.shape, generator=generator).to(device=alpha.device, dtype=alpha.dtype)
    sample = (uniform < torch.sigmoid(alpha.detach())).to(alpha.dtype)
    return _BernoulliStraightThrough.apply(alpha, sample)


def kept(alpha: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the blocks BPCP keeps: ``σ(α) ≥ 0.5``."""
    return torch.sigmoid(alpha.detach()) >= 0.5


class GateParameters(nn.Module):
    """The gate logits ``alpha`` (one per gated block, initialised to 0) and the blocks' names.

    Attached to the model as ``model.bpcp_gates`` so the trainer's optimiser (built from
    ``model.parameters()``) learns them; ``alpha`` is 1-D, so it gets no weight decay.
    """

    def __init__(self, block_names: list[str]) -> None:
        super().__init__()
        self.block_names = list(block_names)
        self.alpha = nn.Parameter(torch.zeros(len(block_names)))

    def probabilities(self) -> dict[str, float]:
        """``{block name: σ(α)}``."""
        return dict(zip(self.block_names, torch.sigmoid(self.alpha.detach()).tolist()))


class BlockGates(TrainHook):
    """Bernoulli gates on the removable residual blocks of ``model``, and BPCP's gate penalty.

    Construction registers ``model.bpcp_gates`` (:class:`GateParameters`) and a forward pre-hook
    on ``model`` that sets every gated block's ``gate`` before each forward: a straight-through
    Bernoulli sample in training mode, ``1[σ(α) ≥ 0.5]`` in eval mode. As a
    :class:`~medprune.engine.trainer.TrainHook` it adds ``γ · Σ|g_b|`` of the last forward to the
    training loss. :meth:`close` removes the pre-hook and the blocks' gates (the logits stay on
    the model for :func:`remove_gated_blocks`).

    Example::

        gates = BlockGates(model, gamma=0.05, seed=0)
        loss = F.cross_entropy(model(x), y) + gates.extra_loss(None, None, y)
    """

    def __init__(self, model: nn.Module, gamma: float = 0.05, seed: int = 0) -> None:
        if not hasattr(model, "residual_blocks"):
            raise PruningError("bpcp needs a residual network that lists its removable blocks (residual_blocks()), "
                               f"e.g. resnet56_cifar or preresnet56_v2; got {type(model).__name__}")
        if hasattr(model, GATES_ATTR):
            raise PruningError(f"{type(model).__name__} already carries BPCP gates ({GATES_ATTR})")
        blocks = model.residual_blocks()
        if not blocks:
            raise PruningError(f"{type(model).__name__} has no removable residual blocks to gate")
        self.model = model
        self.gamma = float(gamma)
        self.blocks = [block for _, block in blocks]
        self.generator = torch.Generator().manual_seed(int(seed))
        param = next(model.parameters())
        gates = GateParameters([name for name, _ in blocks]).to(device=param.device, dtype=param.dtype)
        model.add_module(GATES_ATTR, gates)
        self.last_gates: torch.Tensor | None = None
        self._handle: Any = model.register_forward_pre_hook(self._set_gates)

    @property
    def alpha(self) -> nn.Parameter:
        """The gate logits, one per gated block."""
        return getattr(self.model, GATES_ATTR).alpha

    def _set_gates(self, module: nn.Module, args: Any) -> None:
        alpha = self.alpha
        if module.training:
            gates = straight_through_gates(alpha, self.generator)
        else:
            gates = kept(alpha).to(alpha.dtype)
        self.last_gates = gates
        for i, block in enumerate(self.blocks):
            block.gate = gates[i]

    def penalty(self) -> torch.Tensor:
        """``γ · Σ_b |g_b|`` of the gates of the last forward."""
        if self.last_gates is None:
            raise RuntimeError("no gates sampled yet: run a forward pass of the model first")
        return self.gamma * self.last_gates.abs().sum()

    def extra_loss(self, trainer: Any, output: Any, target: torch.Tensor) -> torch.Tensor | None:
        return self.penalty() if self.last_gates is not None else None

    def after_step(self, trainer: Any) -> None:
        # drop the references into the finished step's autograd graph; the next forward sets new gates
        self.last_gates = None
        for block in self.blocks:
            block.gate = None

    def close(self) -> None:
        """Remove the pre-hook and the blocks' gates; ``model.bpcp_gates`` stays."""
        self._handle.remove()
        self.after_step(None)


def remove_gated_blocks(model: nn.Module) -> nn.Module:
    """A new, shallower model without the gated blocks whose ``σ(α) < 0.5``, and without gates.

    The model is rebuilt from its registry spec with ``keep_blocks`` updated
    (``model.medprune_spec["kwargs"]["keep_blocks"]`` records the result) and every kept weight
    and buffer is copied by name (block names keep their full-network index, see
    :mod:`medprune.models.resnet`). Its outputs equal the gated model's in eval mode. It lands on
    the device of ``model`` and in its train/eval mode; ``model`` itself is left unchanged.
    """
    gates = getattr(model, GATES_ATTR, None)
    if not isinstance(gates, GateParameters):
        raise PruningError(f"{type(model).__name__} carries no BPCP gates; attach BlockGates and train them first")
    spec = getattr(model, "medprune_spec", None)
    if not isinstance(spec, dict) or "name" not in spec or not hasattr(model, "keep_blocks_without"):
        raise PruningError("bpcp rebuilds the shortened network from the model registry; build the model with "
                           "medprune.models.create_model")
    removed = [name for name, keep in zip(gates.block_names, kept(gates.alpha).tolist()) if not keep]
    mask = model.keep_blocks_without(removed)
    dropped = (f"{GATES_ATTR}.", *(f"{name}." for name in removed))
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith(dropped)}
    with torch.device("meta"):  # no weights drawn (nor global random numbers consumed): all come from `state`
        new = create_model(spec["name"], **{**spec["kwargs"], "keep_blocks": mask})
    try:
        new.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise PruningError(f"the weights of {spec['name']} do not fit its registry architecture (was it "
                           f"channel-pruned before bpcp? bpcp removes blocks first): {exc}") from None
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    for name, param in new.named_parameters():
        param.requires_grad_(grads[name])
    new.medprune_spec["pretrained"] = spec.get("pretrained", False)
    return new.train(model.training)


def _check_options(**options: Any) -> None:
    for key, (value, minimum, integer) in options.items():
        if value is None:
            continue
        bad_type = isinstance(value, bool) or not isinstance(value, int if integer else (int, float))
        if bad_type or not math.isfinite(value) or value < minimum:
            kind = "an integer" if integer else "a number"
            raise ConfigError(f"schedule 'bpcp': {key} must be {kind} >= {minimum}, got {value!r}")


@SCHEDULES.register
class BPCP(Schedule):
    """BPCP: learn Bernoulli block gates, remove the blocks that switch off, prune channels, fine-tune.

    Options:
        gate_epochs: epochs of joint training of weights and gates (default 10).
        gamma: weight of the gate penalty ``γ · Σ|g_b|`` (0.05, as in the paper's code).
        channel_ratio: share of channels removed after block removal (``None``: the config's
            ``compress.ratio``; 0 skips channel pruning).
        finetune_epochs: plain fine-tuning at the end (``None``: the config's).
        seed: seed of the gate sampling.
        channel_criterion: criterion of the channel step (``bn_scale``, the paper's; scores of
            coupled layers are combined by their element-wise max).
    """

    name = "bpcp"

    def __init__(self, gate_epochs: int = 10, gamma: float = 0.05, channel_ratio: float | None = None,
                 finetune_epochs: int | None = None, seed: int = 0, channel_criterion: str = "bn_scale") -> None:
        _check_options(gate_epochs=(gate_epochs, 0, True), gamma=(gamma, 0.0, False),
                       channel_ratio=(channel_ratio, 0.0, False), finetune_epochs=(finetune_epochs, 0, True),
                       seed=(seed, 0, True))
        if channel_ratio is not None and channel_ratio >= 1:
            raise ConfigError(f"schedule 'bpcp': channel_ratio must be in [0, 1), got {channel_ratio!r}")
        self.gate_epochs = gate_epochs
        self.gamma = gamma
        self.channel_ratio = channel_ratio
        self.finetune_epochs = finetune_epochs
        self.seed = seed
        self.channel_criterion = channel_criterion

    def __call__(self, ctx: CompressContext) -> nn.Module:
        ctx.record_baseline(ctx.model)
        model = self.remove_blocks(ctx)
        ratio = ctx.options.ratio if self.channel_ratio is None else self.channel_ratio
        if ratio > 0:
            model = self.prune_channels(ctx, model, ratio)
        epochs = ctx.finetune_epochs if self.finetune_epochs is None else self.finetune_epochs
        # The job judges the returned model with the safety gate, whatever the schedule.
        return ctx.run_finetune(model, epochs, (), "bpcp_finetune")

    def remove_blocks(self, ctx: CompressContext) -> nn.Module:
        """Steps 1–2: train the gates with the weights, then rebuild without the blocks switched off."""
        if ctx.finetune is None or self.gate_epochs == 0:
            log.warning("bpcp: no gate training (no fine-tuning function or gate_epochs=0); every block stays")
        gates = BlockGates(ctx.model, gamma=self.gamma, seed=self.seed)
        try:
            trained = ctx.run_finetune(ctx.model, self.gate_epochs, (gates,), "bpcp_gates")
        finally:
            gates.close()
        probabilities = getattr(trained, GATES_ATTR).probabilities()
        model = remove_gated_blocks(trained)
        removed = [name for name, p in probabilities.items() if p < 0.5]
        ctx.event("bpcp_blocks", kept=[name for name, p in probabilities.items() if p >= 0.5], removed=removed,
                  probabilities={name: round(p, 4) for name, p in probabilities.items()},
                  keep_blocks=model.medprune_spec["kwargs"]["keep_blocks"])
        return model

    def prune_channels(self, ctx: CompressContext, model: nn.Module, ratio: float) -> nn.Module:
        """Step 3: remove ``ratio`` of the channels by BatchNorm ``|γ|``, residual streams scored by their max."""
        from medprune.compress.prune import prune_model

        opts = ctx.options
        criterion = create_criterion(self.channel_criterion, reduction="max")
        result = prune_model(model, ctx.example_inputs, criterion=criterion, ratio=ratio,
                             layer_ratios=opts.layer_ratios, global_pruning=opts.global_pruning,
                             round_to=opts.round_to, protect=opts.protect,
                             calibration=ctx.calibration() if ctx.calibration is not None else None,
                             calibration_batches=ctx.calibration_batches, max_layer_ratio=opts.max_layer_ratio)
        ctx.event("bpcp_channels", ratio=ratio, params_before=result.params_before, params_after=result.params_after,
                  macs_before=result.macs_before, macs_after=result.macs_after)
        return result.model
