"""Quantized layers for Direct Quantization: learnable weight levels, a fitted activation quantizer.

Private machinery of :mod:`medprune.compress.quantize` (read its docstring for what is the paper's
and what is our reconstruction). Three pieces:

- :class:`ActQuantizer` — uniform fake quantization of a layer's input, ``a`` bits, clip range
  fitted on calibration batches (:class:`ClipSearch`) to minimise an injected objective
  (:data:`ACT_OBJECTIVES`: ``channel_balanced`` by default, ``mse`` for comparison);
- :class:`QuantConv2d` / :class:`QuantLinear` — ``nn.Conv2d`` / ``nn.Linear`` subclasses whose
  forward uses ``w_q = levels[nearest level of weight]`` with ``2**bits`` learnable ``levels``;
- :data:`LEVEL_INITS` — how the levels start (``kmeans``, ``quantile``, ``uniform``).

The layers stay ``nn.Conv2d`` / ``nn.Linear`` instances with the usual ``weight``/``bias``, so
:func:`~medprune.models.structure.capture_structure`, MAC counting and checkpoints see ordinary
layers; the extra state is ``levels`` (a parameter of ``2**bits`` values, independent of the layer
width) and the quantizer's scalar ``act.clip``/``act.signed`` buffers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn
from torch.nn import functional as F

from medprune.errors import QuantizationError
from medprune.registry import Registry

__all__ = ["LEVEL_INITS", "ACT_OBJECTIVES", "ActQuantizer", "ClipSearch", "QuantConv2d", "QuantLinear",
           "QUANT_LAYERS", "assign_levels", "round_ste", "channel_values"]

#: How a layer's ``2**bits`` levels start: ``fn(weight, n) -> levels`` (1-D, ``n`` values).
LEVEL_INITS = Registry("level init")

#: Objective of the activation clip search: ``fn(err, norm) -> score`` where ``err[g, c]`` is the
#: squared quantization error of channel ``c`` at clip candidate ``g`` and ``norm[c] = ‖x_c‖²``;
#: the candidate with the lowest score wins.
ACT_OBJECTIVES = Registry("activation objective")


# --------------------------------------------------------------------------- level initialisation
@LEVEL_INITS.register("uniform")
def _uniform_levels(weight: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` evenly spaced levels from the smallest to the largest weight."""
    w = weight.detach().flatten().float()
    return torch.linspace(float(w.min()), float(w.max()), n, device=w.device)


@LEVEL_INITS.register("quantile")
def _quantile_levels(weight: torch.Tensor, n: int) -> torch.Tensor:
    """Levels at the ``(k + 0.5) / n`` quantiles: every level starts with the same share of weights."""
    w = weight.detach().flatten().float().sort().values
    pos = ((torch.arange(n, device=w.device, dtype=torch.float64) + 0.5) / n * w.numel()).long()
    return w[pos.clamp_(max=w.numel() - 1)].clone()


def _lloyd(w: torch.Tensor, csum: torch.Tensor, csum2: torch.Tensor, levels: torch.Tensor,
           iters: int) -> tuple[torch.Tensor, float]:
    """Lloyd iterations on sorted weights ``w``; returns the levels and their squared error.

    On sorted weights each level's cluster is a contiguous run, so an iteration costs ``n`` binary
    searches and two prefix sums (``csum`` of ``w``, ``csum2`` of ``w²``) instead of assigning
    every weight.
    """
    levels = levels.sort().values
    for _ in range(iters + 1):
        bounds = torch.searchsorted(w, (levels[1:] + levels[:-1]) / 2)
        starts = torch.cat([bounds.new_zeros(1), bounds])
        ends = torch.cat([bounds, bounds.new_full((1,), w.numel())])
        counts = (ends - starts).double()
        sums = csum[ends] - csum[starts]
        new = torch.where(counts > 0, sums / counts.clamp_min(1.0), levels)
        if torch.equal(new, levels):
            break
        levels = new
    sse = (csum2[ends] - csum2[starts]) - 2 * levels * sums + counts * levels ** 2
    return levels, float(sse.sum())


@LEVEL_INITS.register("kmeans")
def _kmeans_levels(weight: torch.Tensor, n: int, iters: int = 30) -> torch.Tensor:
    """1-D k-means (Lloyd): the levels of least squared weight error that it finds.

    Started from both the quantiles and the uniform grid (the quantiles suit few levels, the grid
    many), keeping the better result.
    """
    w = weight.detach().flatten().double().sort().values
    csum = torch.cat([w.new_zeros(1), w.cumsum(0)])
    csum2 = torch.cat([w.new_zeros(1), (w * w).cumsum(0)])
    runs = [_lloyd(w, csum, csum2, init(w, n).double(), iters) for init in (_quantile_levels, _uniform_levels)]
    return min(runs, key=lambda run: run[1])[0].float()


def assign_levels(weight: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Index (into ``levels``) of the nearest level of every weight; levels need not be sorted."""
    ordered, order = torch.sort(levels.detach())
    midpoints = (ordered[1:] + ordered[:-1]) / 2
    return order[torch.bucketize(weight.detach(), midpoints)]


# --------------------------------------------------------------------------- weight quantization
class _DirectQuant(torch.autograd.Function):
    """``w_q = levels[idx]``; ∂L/∂levels[k] = Σ ∂L/∂w_q over the weights assigned to k.

    The weights receive ∂L/∂w_q straight through, except where a weight lies beyond the outermost
    level and the gradient would push it further out (it could never come back to a level).
    """

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, levels: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight, levels, idx)
        return levels[idx]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        weight, levels, idx = ctx.saved_tensors
        grad_levels = None
        if ctx.needs_input_grad[1]:
            grad_levels = torch.zeros_like(levels).index_add_(0, idx.flatten(), grad.flatten().to(levels.dtype))
        grad_weight = None
        if ctx.needs_input_grad[0]:
            lo, hi = levels.min(), levels.max()
            outward = ((weight > hi) & (grad < 0)) | ((weight < lo) & (grad > 0))
            grad_weight = grad.masked_fill(outward, 0.0)
        return grad_weight, grad_levels, None


class _RoundSTE(torch.autograd.Function):
    """``round`` forward, identity backward; exported to ONNX as ``Round``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad

    @staticmethod
    def symbolic(g: Any, x: Any) -> Any:
        return g.op("Round", x)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer (ties to even, like ONNX ``Round``) with a straight-through gradient."""
    return _RoundSTE.apply(x)


# --------------------------------------------------------------------------- activation quantization
@ACT_OBJECTIVES.register("channel_balanced")
def _channel_balanced(err: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """Σ_c ‖x_c − Q(x_c)‖² / ‖x_c‖² over channels that carry signal: every channel counts alike."""
    alive = norm > 0
    return (err[:, alive] / norm[alive]).sum(dim=1)


@ACT_OBJECTIVES.register("mse")
def _tensor_mse(err: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """‖x − Q(x)‖² over the whole tensor: high-variance channels dominate."""
    return err.sum(dim=1)


def _qrange(bits: int, signed: bool) -> tuple[int, int]:
    if signed:  # symmetric, zero exactly representable: {-(2^(b-1)-1), ..., 2^(b-1)-1}
        top = 2 ** (bits - 1) - 1
        return -top, top
    return 0, 2 ** bits - 1


def fake_quant(x: torch.Tensor, clip: torch.Tensor | float, bits: int, signed: bool) -> torch.Tensor:
    """Uniform fake quantization of ``x`` to ``bits`` over ``[0, clip]`` or ``[-clip, clip]``."""
    qmin, qmax = _qrange(bits, signed)
    scale = clip / qmax
    # clamp before rounding: the straight-through gradient is 1 exactly on [qmin, qmax]·scale
    return round_ste(torch.clamp(x / scale, qmin, qmax)) * scale


def channel_values(x: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """``x`` as ``(channels, values)``: channel ``c``'s values over batch and positions."""
    return x.detach().movedim(channel_dim, 0).reshape(x.shape[channel_dim], -1).float()


class ClipSearch:
    """Grid search of an activation clip range over streamed calibration batches.

    Two passes over the same batches: :meth:`observe` finds the largest magnitude and whether the
    input is ever negative (signed quantizer) and :meth:`accumulate` adds, for each of ``grid``
    candidate clips ``max|x|·k/grid``, every channel's squared error and squared norm.
    :meth:`best` returns the candidate the objective scores lowest. Each batch contributes at most
    ``max_values`` values (``max_values / channels`` per channel, at least 64: a seeded random
    subset of positions), so the search costs ``grid × max_values`` per layer and batch.
    """

    def __init__(self, bits: int, objective: str = "channel_balanced", *, grid: int = 64,
                 channel_dim: int = 1, max_values: int = 2 ** 13, seed: int = 0) -> None:
        self.bits, self.grid, self.channel_dim, self.max_values = bits, grid, channel_dim, max_values
        self.objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = ACT_OBJECTIVES.get(objective)
        self.max_abs = 0.0
        self.signed = False
        self._err: torch.Tensor | None = None
        self._norm: torch.Tensor | None = None
        self._generator = torch.Generator().manual_seed(seed)

    def observe(self, x: torch.Tensor) -> None:
        """Pass 1: range and sign of ``x``."""
        self.max_abs = max(self.max_abs, float(x.detach().abs().max()))
        self.signed = self.signed or bool((x.detach() < 0).any())

    def candidates(self, device: torch.device | None = None) -> torch.Tensor:
        """The ``grid`` clip values tried, ascending."""
        top = self.max_abs if self.max_abs > 0 else 1.0
        return torch.arange(1, self.grid + 1, dtype=torch.float32, device=device) * (top / self.grid)

    def accumulate(self, x: torch.Tensor) -> None:
        """Pass 2: per-channel squared error of every candidate on ``x``."""
        values = channel_values(x, self.channel_dim)
        per_channel = max(64, self.max_values // values.shape[0])
        if values.shape[1] > per_channel:
            keep = torch.randperm(values.shape[1], generator=self._generator)[:per_channel]
            values = values[:, keep.to(values.device)]
        clips = self.candidates(values.device).view(-1, 1, 1)  # all candidates at once: (grid, C, values)
        with torch.no_grad():
            err = ((values - fake_quant(values, clips, self.bits, self.signed)) ** 2).sum(dim=2)
        norm = (values ** 2).sum(dim=1)
        self._err = err if self._err is None else self._err + err
        self._norm = norm if self._norm is None else self._norm + norm

    def scores(self) -> torch.Tensor:
        """The objective of every candidate (lower is better)."""
        if self._err is None or self._norm is None:
            raise QuantizationError("activation clip search saw no calibration batch")
        return self.objective(self._err, self._norm)

    def best(self) -> float:
        """The clip value with the lowest objective."""
        scores = self.scores()
        return float(self.candidates()[int(torch.argmin(scores.cpu()))])


class ActQuantizer(nn.Module):
    """Fake quantization of a layer input to ``bits`` (uniform, ``[0, clip]`` or ``[-clip, clip]``).

    ``clip`` and ``signed`` are buffers set by calibration (see :class:`ClipSearch`) and stored in
    the state dict; an uncalibrated quantizer refuses to run instead of producing NaNs. While
    ``bypass`` is true (during calibration) the input passes unchanged.
    """

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = int(bits)
        self.register_buffer("clip", torch.tensor(float("nan")))
        self.register_buffer("signed", torch.tensor(False))
        self.calibrated = False
        self._signed = False  # a Python mirror of ``signed``: traced graphs take no branch on a tensor
        self.bypass = False

    def set_range(self, clip: float, signed: bool) -> None:
        """Fix the clip range (calibration result)."""
        if not clip > 0:
            raise QuantizationError(f"activation clip must be > 0, got {clip}")
        self.clip.fill_(float(clip))
        self.signed.fill_(bool(signed))
        self._signed = bool(signed)
        self.calibrated = True

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        self.calibrated = bool(torch.isfinite(self.clip)) and float(self.clip) > 0
        self._signed = bool(self.signed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bypass:
            return x
        if not self.calibrated:
            raise QuantizationError("an activation quantizer has no clip range: quantize_model needs "
                                    "calibration batches when act_bits is set")
        return fake_quant(x, self.clip, self.bits, self._signed)

    def extra_repr(self) -> str:
        clip = f"{float(self.clip):.4g}" if self.calibrated else "uncalibrated"
        return f"bits={self.bits}, clip={clip}, signed={self._signed}"


# --------------------------------------------------------------------------- quantized layers
_Float = TypeVar("_Float", nn.Conv2d, nn.Linear)


class _QuantWeights:
    """Shared by the quantized conv and linear layers: levels, assignment, the input quantizer."""

    weight: nn.Parameter
    levels: nn.Parameter
    bits: int
    act: ActQuantizer | None

    def _filled(self, plain: _Float) -> _Float:
        """``plain`` (a float twin built on the meta device) given the quantized weights and the bias."""
        with torch.no_grad():
            plain.weight = nn.Parameter(self.quantized_weight().detach().clone())
            plain.bias = nn.Parameter(self.bias.detach().clone()) if self.bias is not None else None
        return plain

    def _setup_quant(self, bits: int, act_bits: int | None) -> None:
        self.bits = int(bits)
        dev = self.weight.device
        self.levels = nn.Parameter(torch.linspace(-1.0, 1.0, 2 ** self.bits, device=dev, dtype=torch.float32))
        self.act = ActQuantizer(act_bits) if act_bits is not None else None

    @torch.no_grad()
    def init_levels(self, method: str = "kmeans") -> None:
        """Place the levels on this layer's weights (``LEVEL_INITS[method]``)."""
        self.levels.copy_(LEVEL_INITS.get(method)(self.weight, 2 ** self.bits).to(self.levels))

    def assignment(self) -> torch.Tensor:
        """Index of each weight's level (re-computed from the current weights on every call)."""
        return assign_levels(self.weight, self.levels)

    def quantized_weight(self) -> torch.Tensor:
        """``levels[assignment]``, differentiable in the levels (summed) and the weights (straight through).

        Without autograd (evaluation, calibration) the result is cached until ``weight`` or
        ``levels`` change: any in-place update (an optimiser step, ``load_state_dict``) bumps a
        tensor's version, a move to another device or dtype changes its storage.
        """
        if torch.is_grad_enabled():
            return _DirectQuant.apply(self.weight, self.levels, self.assignment()).to(self.weight.dtype)
        key = tuple((id(t), t.data_ptr(), t._version, t.dtype, t.device) for t in (self.weight, self.levels))
        cached = getattr(self, "_cached_weight", None)
        if cached is None or cached[0] != key:
            cached = (key, self.levels[self.assignment()].to(self.weight.dtype))
            self._cached_weight = cached
        return cached[1]

    @torch.no_grad()
    def snap(self) -> None:
        """Write the quantized values into ``weight``: the stored weights become the quantized ones."""
        self.weight.copy_(self.quantized_weight())

    def _quant_repr(self) -> str:
        return f", bits={self.bits}"


class QuantConv2d(nn.Conv2d, _QuantWeights):
    """``nn.Conv2d`` computing with ``2**bits`` learnable weight levels and a quantized input."""

    @classmethod
    def from_float(cls, conv: nn.Conv2d, bits: int, act_bits: int | None) -> QuantConv2d:
        """A quantized twin of ``conv`` sharing its weight and bias parameters."""
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                padding_mode=conv.padding_mode, device="meta")
        q.weight, q.bias = conv.weight, conv.bias
        q._setup_quant(bits, act_bits)
        return q

    def to_float(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` holding the quantized weights (for export)."""
        plain = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
                          padding=self.padding, dilation=self.dilation, groups=self.groups,
                          bias=self.bias is not None, padding_mode=self.padding_mode, device="meta")
        return self._filled(plain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act is not None:
            x = self.act(x)
        return self._conv_forward(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._quant_repr()


class QuantLinear(nn.Linear, _QuantWeights):
    """``nn.Linear`` computing with ``2**bits`` learnable weight levels and a quantized input."""

    @classmethod
    def from_float(cls, linear: nn.Linear, bits: int, act_bits: int | None) -> QuantLinear:
        """A quantized twin of ``linear`` sharing its weight and bias parameters."""
        q = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        q.weight, q.bias = linear.weight, linear.bias
        q._setup_quant(bits, act_bits)
        return q

    def to_float(self) -> nn.Linear:
        """A plain ``nn.Linear`` holding the quantized weights (for export)."""
        plain = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        return self._filled(plain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act is not None:
            x = self.act(x)
        return F.linear(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._quant_repr()


#: Float layer class → its quantized twin (exact types: subclasses with their own forward are left alone).
QUANT_LAYERS: dict[type[nn.Module], type[nn.Module]] = {nn.Conv2d: QuantConv2d, nn.Linear: QuantLinear}
