"""Channel-importance criteria: small injected objects that score a Torch-Pruning group.

A criterion follows Torch-Pruning's API shape — ``criterion(group) -> scores`` — so the pruning
engine never branches on a criterion's name. Data-driven criteria first collect statistics with
:meth:`Criterion.calibrate` over *every* batch they are given (the engine feeds class-balanced
batches, see :func:`medprune.compress.calibration.class_balanced_batches`).

Example::

    crit = create_criterion("beta_rank")
    crit.calibrate(model, batches)                      # data-driven: needs calibration data
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    group = DG.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=list(range(16)))
    scores = crit(group)                                # 16 scores, higher = more important

Registered names: see :func:`list_criteria`. Scores of one group are reduced across the coupled
layers with ``reduction`` (``mean`` per channel over the layers that score it, ``max`` or
``sum``); they are not normalised across layers — the engine does that for global ranking —
except where a method's definition normalises within a layer (``beta_rank`` and the information
criteria min-max normalise each layer, as their papers do).

Normalisation layers: BatchNorm and InstanceNorm (MONAI's U-Nets) are treated alike — the norm
criteria read their affine γ/β, ``taylor`` scores their γ/β, and feature maps are read after them.
Segmentation calibration batches ``(images, masks)`` with ``(N, H, W)`` int64 masks work with every
criterion: only ``taylor`` reads the labels, through a per-pixel cross-entropy.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medprune.compress import _stats
from medprune.compress._tp import tp
from medprune.errors import ConfigError, PruningError
from medprune.registry import Registry, suggest

__all__ = [
    "CRITERIA",
    "Criterion",
    "create_criterion",
    "list_criteria",
    "L1",
    "L2",
    "BNScale",
    "FPGM",
    "Taylor",
    "BNExpectation",
    "InfoCapacity",
    "InfoIndependence",
    "CapacityIndependence",
    "BetaRank",
    "ClassConditional",
    "MeanActivation",
    "channel_selectivity",
]

log = logging.getLogger(__name__)

#: Every channel-importance criterion, by name.
CRITERIA = Registry("criterion")

_REDUCTIONS = ("mean", "max", "sum")


def _out_fns() -> tuple[Any, ...]:
    """Handlers that remove a layer's *output* channels; only these deps are scored."""
    return (tp.prune_conv_out_channels, tp.prune_depthwise_conv_out_channels, tp.prune_linear_out_channels,
            tp.prune_batchnorm_out_channels, tp.prune_instancenorm_out_channels)

_CONV_LINEAR = (nn.modules.conv._ConvNd, nn.Linear)
#: Per-channel normalisations whose affine γ/β belong to one channel each: BatchNorm and InstanceNorm.
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
#: Modules that pass a feature map through unchanged in eval mode (calibration runs in eval mode).
_EVAL_IDENTITY = (nn.modules.dropout._DropoutNd,)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]


class Criterion:
    """Scores the output channels of the layers in a Torch-Pruning group; higher = keep.

    Subclasses set ``name``, the layer types they score (``targets``) and implement
    :meth:`_compute`; data-driven ones also implement :meth:`_collect`.

    Args:
        reduction: how the scores of the coupled layers of one group are combined per channel:
            ``"mean"`` (over the layers that score that channel), ``"max"`` or ``"sum"``.
    """

    name: ClassVar[str] = ""
    data_driven: ClassVar[bool] = False
    needs_grad: ClassVar[bool] = False
    targets: ClassVar[tuple[type, ...]] = _CONV_LINEAR

    def __init__(self, reduction: str = "mean", **options: Any) -> None:
        if reduction not in _REDUCTIONS:
            raise ConfigError(f"criterion {self.name!r}: " + suggest(str(reduction), _REDUCTIONS, "reduction"))
        if options:
            accepted = [p for p in inspect.signature(type(self).__init__).parameters
                        if p not in ("self", "reduction", "options")]
            bad = sorted(options)[0]
            raise ConfigError(f"criterion {self.name!r}: " + suggest(bad, accepted, "option"))
        self.reduction = reduction
        self._state: dict[nn.Module, Any] = {}
        self._channels: dict[nn.Module, int] = {}
        self._names: dict[nn.Module, str] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"

    # ------------------------------------------------------------------ calibration
    def calibrate(self, model: nn.Module, batches: Iterable[Batch] | Callable[[], Iterable[Batch]], *,
                  loss_fn: LossFn | None = None, max_batches: int | None = None) -> None:
        """Collect per-channel statistics over all ``batches`` (up to ``max_batches``).

        A no-op for data-free criteria. Earlier statistics are dropped first. Hooks and
        temporary settings are removed even if a batch fails; ``model.training`` is restored.
        ``batches`` may also be a zero-argument callable returning the batches.
        """
        if not self.data_driven:
            log.debug("criterion %s is data-free; calibrate() does nothing", self.name)
            return
        self.reset()
        if callable(batches) and not isinstance(batches, Iterable):
            batches = batches()
        self._names = {m: n or "<model>" for n, m in model.named_modules()}
        was_training = model.training
        model.eval()
        try:
            n = self._collect(model, _batches(batches, _device(model), max_batches), loss_fn)
        except BaseException:
            self.reset()  # never leave half-collected statistics behind
            raise
        finally:
            model.train(was_training)
        self._channels = {m: _stats.out_channels(m) for m in self._state}
        log.info("criterion %s calibrated on %d batches, %d layers", self.name, n, len(self._state))

    def _collect(self, model: nn.Module, batches: Iterator[Batch], loss_fn: LossFn | None) -> int:
        """Fill ``self._state[module]``; return the number of batches seen."""
        raise NotImplementedError

    def reset(self) -> None:
        """Drop all collected statistics."""
        self._state, self._channels, self._names = {}, {}, {}

    # ------------------------------------------------------------------ scoring
    def can_score(self, module: nn.Module) -> bool:
        """Whether this criterion scores the output channels of ``module``."""
        return isinstance(module, self.targets) and getattr(module, "weight", None) is not None

    def layer_scores(self, module: nn.Module) -> torch.Tensor | None:
        """Scores of every output channel of ``module`` (float32, CPU), or None if not scorable.

        Raises:
            PruningError: a data-driven criterion has no statistics for ``module``, or they
                were collected when the layer had a different width.
        """
        if not self.can_score(module):
            return None
        if self.data_driven:
            self._check_calibrated(module)
        return self._compute(module).to("cpu", torch.float32)

    def _compute(self, module: nn.Module) -> torch.Tensor:
        raise NotImplementedError

    def _check_calibrated(self, module: nn.Module) -> None:
        label = self._names.get(module) or f"{type(module).__name__}{tuple(module.weight.shape)}"
        if not self._names:
            raise PruningError(f"criterion {self.name!r} is data-driven and has no statistics for layer {label}: "
                               "call calibrate(model, batches) with calibration data before scoring")
        if module not in self._state:
            raise PruningError(f"criterion {self.name!r}: layer {label} was not run during calibration "
                               "(a branch skipped in eval mode?); calibrate with data that reaches it")
        now, then = _stats.out_channels(module), self._channels[module]
        if now != then:
            raise PruningError(f"criterion {self.name!r}: layer {label} has {now} output channels but was "
                               f"calibrated with {then}; call calibrate again after pruning")

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        """Scores of the channels of ``group``'s root, one per root index (float32, CPU).

        Every dep that removes output channels of a layer this criterion scores contributes
        ``layer_scores(layer)[idxs]`` at its root indices; contributions are reduced with
        ``reduction``. Returns None when no layer of the group can be scored.
        """
        root = list(group[0].root_idxs)
        where = {r: k for k, r in enumerate(root)}
        n = len(root)
        total = torch.zeros(n, dtype=torch.float64)
        count = torch.zeros(n, dtype=torch.float64)
        best = torch.full((n,), -math.inf, dtype=torch.float64)
        for i, (dep, idxs) in enumerate(group):
            if dep.handler not in _out_fns():
                continue
            roots = group[i].root_idxs
            if any(r is None for r in roots):
                continue
            scores = self.layer_scores(dep.target.module)
            if scores is None:
                continue
            pos = [where.get(r) for r in roots]
            keep = [k for k, p in enumerate(pos) if p is not None]
            if not keep:
                continue
            vals = scores.double()[torch.as_tensor([idxs[k] for k in keep], dtype=torch.long)]
            at = torch.as_tensor([pos[k] for k in keep], dtype=torch.long)
            total.index_add_(0, at, vals)
            count.index_add_(0, at, torch.ones_like(vals))
            best.scatter_reduce_(0, at, vals, reduce="amax")
        if not bool((count > 0).any()):
            return None
        if self.reduction == "sum":
            out = total
        elif self.reduction == "max":
            out = torch.where(count > 0, best, torch.zeros_like(best))
        else:
            out = total / count.clamp_min(1.0)
        return out.float()


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _batches(batches: Iterable[Any], device: torch.device, max_batches: int | None) -> Iterator[Batch]:
    """Yield ``(inputs, labels)`` on ``device``; raise if there is not a single batch."""
    if max_batches is not None and max_batches < 1:
        raise PruningError(f"max_batches must be at least 1, got {max_batches}")
    n = 0
    for batch in batches:
        if max_batches is not None and n >= max_batches:
            break
        if isinstance(batch, (tuple, list)):
            x, y = batch[0], batch[1] if len(batch) > 1 else None
        else:
            x, y = batch, None
        n += 1
        yield x.to(device), (y.to(device) if isinstance(y, torch.Tensor) else y)
    if n == 0:
        raise PruningError("calibrate() received no batches: pass calibration data "
                           "(e.g. class_balanced_batches(dataset, batch_size=..., num_batches=...)())")


def create_criterion(name: str, **options: Any) -> Criterion:
    """Build the criterion registered as ``name``; unknown names suggest close matches."""
    return CRITERIA.create(name, **options)


def list_criteria() -> list[str]:
    """Names of all registered criteria, sorted."""
    return CRITERIA.names()


# ====================================================================== data-free, weight based
@CRITERIA.register
class L1(Criterion):
    """L1 norm of each output filter's weights (Li et al. 2017). Data-free; *confirmed* method."""

    name = "l1"

    def _compute(self, module: nn.Module) -> torch.Tensor:
        return _stats.weight_rows(module).abs().sum(1)


@CRITERIA.register
class L2(Criterion):
    """L2 norm of each output filter's weights (the Soft Filter Pruning ranking). Data-free."""

    name = "l2"

    def _compute(self, module: nn.Module) -> torch.Tensor:
        return _stats.weight_rows(module).norm(dim=1)


@CRITERIA.register
class FPGM(Criterion):
    """Filter pruning via geometric median (He et al., CVPR 2019). Data-free; *confirmed*.

    Score of filter i = Σ_j ‖w_i − w_j‖₂ within its layer: a filter close to the layer's geometric
    median is replaceable by the others and scores low.
    """

    name = "fpgm"

    def _compute(self, module: nn.Module) -> torch.Tensor:
        rows = _stats.weight_rows(module)
        return torch.cdist(rows, rows).sum(1)


class _NormCriterion(Criterion):
    """Base of the criteria that read the affine parameters (γ, β) of BatchNorm or InstanceNorm.

    InstanceNorm qualifies as well as BatchNorm: it normalises each channel of each image to zero
    mean and unit variance over its positions, so the pre-activation of channel c is
    γ_c·x̂ + β_c with x̂ standardised — γ_c is the channel's spread and β_c its mean in every image
    (exactly, where BatchNorm's running statistics give them only on average).

    Only normalisation deps are scored: a group with no normalisation layer (a U-Net's transposed
    convolution feeding a concatenation, a detector's FPN) returns None and keeps its width. A
    group whose normalisation layers have no affine parameters raises :class:`PruningError` —
    there is no γ to rank by, and skipping it would silently leave the model unpruned.
    """

    targets = _NORMS

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        scores = super().__call__(group)
        if scores is None:
            for dep, _ in group:
                norm = dep.target.module
                if isinstance(norm, _NORMS) and getattr(norm, "weight", None) is None:
                    label = str(dep.target.name).split(" (", 1)[0]
                    raise PruningError(
                        f"criterion {self.name!r} ranks channels by the scale γ of their normalisation layer, but "
                        f"{label} ({type(norm).__name__}) has none (affine=False); build the model with affine "
                        "normalisation or use another criterion (l1, l2, fpgm, taylor)")
        return scores


@CRITERIA.register
class BNScale(_NormCriterion):
    """|γ| of BatchNorm or InstanceNorm (network slimming, Liu et al. 2017; BPCP's channel score). Data-free.

    See :class:`_NormCriterion` for InstanceNorm and for groups without a normalisation layer.
    """

    name = "bn_scale"

    def _compute(self, module: nn.Module) -> torch.Tensor:
        return module.weight.detach().to("cpu", torch.float64).abs()


@CRITERIA.register
class BNExpectation(_NormCriterion):
    """Expected post-ReLU activation from BatchNorm/InstanceNorm parameters (Oh et al., WACV 2022). Data-free.

    *Reconstruction* of the exact form: channel c's pre-activation is z ~ N(β_c, γ_c²), scored by
    E[max(0, z)] = β·Φ(β/|γ|) + |γ|·φ(β/|γ|); for γ = 0 it is max(β, 0). The formula is ReLU's
    whatever the activation is: for MONAI's LeakyReLU/PReLU U-Nets it ranks by the positive part only.
    See :class:`_NormCriterion` for InstanceNorm and for groups without a normalisation layer.

    **Unsafe under class imbalance.** The score is the channel's mean activation on the
    *training* distribution, so it prunes rarely-firing channels first — and a channel that
    responds to a rare class is exactly that, since the majority class sets BatchNorm's
    statistics. On the 1:10 thermography phantom (small_cnn, per-layer ratio 0.5, seed 0) it
    kept 0 of the 16 most sick-selective channels of the last conv layer (l2 kept 14), and the
    pruned models lost the minority class (test balanced accuracy 0.56 over 3 seeds, l2 0.88).
    On an imbalanced task prefer a criterion that does not rank by firing rate, and keep the
    safety gate (``compress.safety``) on.
    """

    name = "bn_expectation"

    def _compute(self, module: nn.Module) -> torch.Tensor:
        gamma = module.weight.detach().to("cpu", torch.float64).abs()
        beta = (module.bias.detach().to("cpu", torch.float64) if module.bias is not None
                else torch.zeros_like(gamma))
        safe = torch.where(gamma > 0, gamma, torch.ones_like(gamma))
        t = beta / safe
        cdf = 0.5 * (1.0 + torch.erf(t / math.sqrt(2.0)))
        pdf = torch.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
        return torch.where(gamma > 0, beta * cdf + gamma * pdf, beta.clamp_min(0.0))


# ====================================================================== gradient based
@CRITERIA.register
class Taylor(Criterion):
    """First-order Taylor importance (Molchanov et al., CVPR 2019), normalisation layers included.

    For every parameter p of a layer, A_p = mean over calibration samples of p·∂L/∂p (batches
    weighted by their size, so two batches give exactly the value of their concatenation under
    a mean-reduced loss); the score of an output channel is Σ|A_p| over the parameters that
    belong to it — the filter's weights and bias for conv/linear, γ and β for BatchNorm and
    affine InstanceNorm.

    The default loss is cross-entropy: class indices ``(N,)`` for logits ``(N, K)``, masks
    ``(N, H, W)`` for a segmentation model's ``(N, K, H, W)`` (the mean over pixels; integer masks
    of any integer dtype are read as int64), or class probabilities of the logits' shape. Labels
    of another shape raise :class:`PruningError` naming both shapes.

    Torch-Pruning 1.6's ``GroupTaylorImportance`` tests for the GroupNorm handler where it means
    BatchNorm, so BatchNorm never contributes there (DESIGN.md §4.6); here it does. The model
    runs in eval mode (running BatchNorm statistics, no dropout) with gradients enabled;
    frozen parameters of scored layers are unfrozen for the pass and re-frozen afterwards, and
    every parameter's ``.grad`` is left as None.
    """

    name = "taylor"
    data_driven = True
    needs_grad = True
    targets = _CONV_LINEAR + _NORMS

    def _collect(self, model: nn.Module, batches: Iterator[Batch], loss_fn: LossFn | None) -> int:
        loss_fn = loss_fn or F.cross_entropy
        layers = [m for m in model.modules() if self.can_score(m)]
        params = [(m, k, p) for m in layers for k in ("weight", "bias")
                  if isinstance(p := getattr(m, k, None), torch.Tensor)]
        frozen = [p for _, _, p in params if not p.requires_grad]
        acc: dict[nn.Module, dict[str, torch.Tensor]] = {}
        n_samples, n_batches = 0, 0
        try:
            for p in frozen:
                p.requires_grad_(True)
            for x, y in batches:
                if y is None:
                    raise PruningError("criterion 'taylor' needs labelled calibration batches (images, labels)")
                model.zero_grad(set_to_none=True)
                with torch.enable_grad():
                    out = model(x)
                    logits = out[0] if isinstance(out, tuple) else out
                    if loss_fn is F.cross_entropy:
                        y = _cross_entropy_targets(logits, y)
                    loss = loss_fn(logits, y)
                loss.backward()
                nb = int(x.shape[0])
                for m, k, p in params:
                    if p.grad is None:
                        continue
                    term = (p.detach() * p.grad).to(_acc_dtype(p.device)) * nb
                    slot = acc.setdefault(m, {})
                    slot[k] = slot[k] + term if k in slot else term
                n_samples += nb
                n_batches += 1
        finally:
            model.zero_grad(set_to_none=True)
            for p in frozen:
                p.requires_grad_(False)
        self._state = {m: {k: (v / n_samples).to("cpu", torch.float64) for k, v in d.items()}
                       for m, d in acc.items()}
        return n_batches

    def _compute(self, module: nn.Module) -> torch.Tensor:
        st = self._state[module]
        c = _stats.out_channels(module)
        w = st.get("weight")
        if w is None:
            score = torch.zeros(c, dtype=torch.float64)
        elif isinstance(module, _NORMS):
            score = w.abs()
        else:
            score = _stats.weight_rows(module, w).abs().sum(1)
        if "bias" in st:
            score = score + st["bias"].abs()
        return score


def _acc_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _cross_entropy_targets(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y`` as cross-entropy takes it with ``logits``: class indices (int64) or probabilities."""
    index_shape = (logits.shape[0], *logits.shape[2:])
    if tuple(y.shape) == index_shape and not y.is_floating_point() and not y.is_complex() and y.dtype != torch.bool:
        return y.long()
    if y.shape == logits.shape and y.is_floating_point():
        return y
    kind = "masks (N, H, W)" if logits.dim() > 2 else "labels (N,)"
    raise PruningError(f"criterion 'taylor': calibration labels of shape {tuple(y.shape)} ({y.dtype}) do not fit the "
                       f"model's logits {tuple(logits.shape)}; cross-entropy needs integer class {kind} — "
                       f"shape {index_shape} — or class probabilities shaped like the logits")


# ====================================================================== activation based
#: Element-wise activation modules that may end a layer's feature map (see :class:`_FeatureMaps`).
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
                nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus)


def _version(t: torch.Tensor) -> int | None:
    try:
        return int(t._version)
    except RuntimeError:  # inference-mode tensors carry no version counter
        return None


class _FeatureMaps:
    """Follows a scored layer's output through the modules that directly consume it, in order.

    The feature map of a conv/linear layer is what the next layer reads: its output after the
    normalisation module (BatchNorm or InstanceNorm) and the activation module that are the very
    next modules run on that same tensor (``conv → BN → ReLU`` gives the post-ReLU map;
    ``conv → ReLU`` or ``conv → BN`` stop earlier). An eval-mode Dropout on the way passes the
    map through (MONAI's blocks run norm → dropout → activation). The chain stops at anything
    else — a residual addition, a functional activation, an in-place change between modules,
    another layer — and the last tensor of the chain is handed to ``emit(layer, tensor)``. Only
    one chain is open at a time (a copy of the open tensor is kept in case it is changed in place
    later, e.g. ``out += identity``).
    """

    def __init__(self, emit: Callable[[nn.Module, torch.Tensor], None]) -> None:
        self.emit = emit
        self.open: tuple[nn.Module, torch.Tensor, torch.Tensor, int, int | None] | None = None
        self.claimed: nn.Module | None = None

    def start(self, layer: nn.Module, output: Any) -> None:
        self.close()
        if isinstance(output, torch.Tensor):
            self.open = (layer, output, output.detach().clone(), 0, _version(output))

    def close(self) -> None:
        if self.open is not None:
            layer, _, snapshot, _, _ = self.open
            self.open, self.claimed = None, None
            self.emit(layer, snapshot)

    def pre(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        """Forward pre-hook of every leaf module: extend the open chain or close it."""
        if self.open is None:
            return
        _, tensor, _, stage, version = self.open
        x = inputs[0] if inputs else None
        follows = (x is tensor and version is not None and _version(tensor) == version
                   and ((isinstance(module, _NORMS) and stage == 0)
                        or (isinstance(module, _ACTIVATIONS) and stage < 2)
                        or (isinstance(module, _EVAL_IDENTITY) and not module.training)))
        if follows:
            self.claimed = module
        else:
            self.close()

    def post(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        """Forward hook of normalisation, activation and dropout modules: take the chain one step further."""
        if self.open is None or self.claimed is not module:
            return
        self.claimed = None
        layer, _, snapshot, stage, _ = self.open
        if not isinstance(output, torch.Tensor) or output.shape != inputs[0].shape:
            self.close()
        elif isinstance(module, _EVAL_IDENTITY):  # same values: same snapshot, same stage
            self.open = (layer, output, snapshot, stage, _version(output))
        elif isinstance(module, _ACTIVATIONS):  # nothing extends a chain past its activation
            self.open = None
            self.emit(layer, output)
        else:
            self.open = (layer, output, output.detach().clone(), 1, _version(output))


class _ActivationCriterion(Criterion):
    """Collects streaming statistics of conv/linear inputs and outputs with forward hooks.

    ``accumulators`` names what is kept per layer: ``in_moments`` (per input channel),
    ``out_moments`` (per output channel), ``out_cov`` (output channel covariance) and
    ``out_hist`` (per output channel histogram). With ``feature_maps`` the ``out_*`` statistics
    are taken on the layer's feature map — its output after the normalisation and activation
    modules that directly follow it (:class:`_FeatureMaps`) — instead of its raw output.
    """

    data_driven = True
    accumulators: ClassVar[tuple[str, ...]] = ()
    feature_maps: ClassVar[bool] = False
    bins: int = 32

    def _new(self, kind: str) -> Any:
        if kind.endswith("moments"):
            return _stats.ChannelMoments()
        if kind == "out_cov":
            return _stats.ChannelCovariance()
        return _stats.ChannelHistogram(self.bins)

    def _slot(self, module: nn.Module) -> dict[str, Any]:
        st = self._state.get(module)
        if st is None:
            st = self._state[module] = {k: self._new(k) for k in self.accumulators}
        return st

    def _update(self, module: nn.Module, prefix: str, tensor: torch.Tensor) -> None:
        for kind, acc in self._slot(module).items():
            if kind.startswith(prefix):
                acc.update(_stats.channels_first(tensor, module))

    def _collect(self, model: nn.Module, batches: Iterator[Batch], loss_fn: LossFn | None) -> int:
        maps = _FeatureMaps(lambda layer, t: self._update(layer, "out_", t)) if self.feature_maps else None

        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            self._slot(module)
            self._update(module, "in_", inputs[0])
            if maps is None:
                self._update(module, "out_", output)
            else:
                maps.start(module, output)

        handles = [m.register_forward_hook(hook) for m in model.modules() if self.can_score(m)]
        if maps is not None:
            for m in model.modules():
                if next(m.children(), None) is None:  # leaf modules, in the order they run
                    handles.append(m.register_forward_pre_hook(maps.pre))
                    if isinstance(m, _NORMS + _ACTIVATIONS + _EVAL_IDENTITY):
                        handles.append(m.register_forward_hook(maps.post))
        n = 0
        try:
            with torch.no_grad():
                for x, _ in batches:
                    model(x)
                    if maps is not None:
                        maps.close()
                    n += 1
        finally:
            for h in handles:
                h.remove()
        return n


def _check_data_free(name: str, data_free: Any) -> bool:
    if not isinstance(data_free, bool):
        raise ConfigError(f"criterion {name!r}: data_free must be true or false, got {data_free!r}")
    return data_free


def _check_bins(name: str, bins: Any) -> int:
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ConfigError(f"criterion {name!r}: bins must be an integer >= 2, got {bins!r}")
    return bins


def _capacity(module: nn.Module, state: dict[str, Any] | None, bins: int, data_free: bool) -> torch.Tensor:
    """Entropy (bits) per output channel, of its feature-map or (data-free) weight histogram."""
    if data_free:
        return _stats.entropy(_stats.histogram_rows(_stats.weight_rows(module), bins))
    assert state is not None  # layer_scores checked calibration
    return _stats.entropy(state["out_hist"].counts)


def _independence(module: nn.Module, state: dict[str, Any] | None, data_free: bool) -> torch.Tensor:
    """1 − mean |correlation| with the layer's other channels (feature maps or weights)."""
    if data_free:
        corr = _stats.weight_correlation(_stats.weight_rows(module))
    else:
        assert state is not None  # layer_scores checked calibration
        corr = state["out_cov"].correlation()
    return 1.0 - _stats.offdiag_abs_mean(corr)


@CRITERIA.register
class InfoCapacity(_ActivationCriterion):
    """Information capacity (Tang et al., arXiv 2303.03645), min-max normalised per layer.

    *Confirmed*: capacity is an entropy of the information a filter carries, estimated from its
    feature maps. *Reconstruction* (no code exists): the Shannon entropy of a ``bins``-bin
    histogram of filter i's feature-map values over all calibration batches. The feature map is
    what the next layer reads: the filter's output after the BatchNorm and activation modules that
    directly follow it (``conv → BN → ReLU``; the chain stops at a residual addition or a
    functional activation). The histogram range is shared by all channels of the layer (the
    first batch's range, widened by 50 %), as for the weights in the data-free variant, so a faint
    or dead channel (always 0 after its ReLU) has low entropy. ``data_free=True`` uses the
    histogram of the filter's weights over the layer's weight range instead, so it needs no data.

    (An earlier version used a range per channel on the raw conv output. That entropy is blind
    to amplitude — it measures only the shape of each channel's distribution — and pruned the
    heavy-tailed channels that respond strongly to rare patterns first: worse than random
    pruning on the imbalanced thermography phantom.)
    """

    name = "info_capacity"
    accumulators = ("out_hist",)
    feature_maps = True

    def __init__(self, reduction: str = "mean", *, bins: int = 32, data_free: bool = False, **options: Any) -> None:
        super().__init__(reduction, **options)
        self.bins = _check_bins(self.name, bins)
        self.data_free = _check_data_free(self.name, data_free)
        self.data_driven = not self.data_free  # type: ignore[misc]  # the option decides per instance

    def _compute(self, module: nn.Module) -> torch.Tensor:
        return _stats.minmax(_capacity(module, self._state.get(module), self.bins, self.data_free))


@CRITERIA.register
class InfoIndependence(_ActivationCriterion):
    """Information independence (Tang et al.), min-max normalised per layer.

    *Confirmed*: how little a filter correlates with the other filters of its layer.
    *Reconstruction*: 1 − mean_{j≠i} |corr(f_i, f_j)|, with f the spatially flattened feature maps
    over all calibration batches (channel covariance accumulated batch by batch in float64, so it
    equals the covariance of the concatenated data). Feature maps are read after the filter's
    BatchNorm and activation, as in :class:`InfoCapacity`. A channel with constant output (e.g. a
    ReLU that never fires) counts as fully correlated. ``data_free=True`` correlates the filters'
    weight vectors instead.
    """

    name = "info_independence"
    accumulators = ("out_cov",)
    feature_maps = True

    def __init__(self, reduction: str = "mean", *, data_free: bool = False, **options: Any) -> None:
        super().__init__(reduction, **options)
        self.data_free = _check_data_free(self.name, data_free)
        self.data_driven = not self.data_free  # type: ignore[misc]

    def _compute(self, module: nn.Module) -> torch.Tensor:
        return _stats.minmax(_independence(module, self._state.get(module), self.data_free))


@CRITERIA.register
class CapacityIndependence(_ActivationCriterion):
    """Tang et al.'s fusion: minmax(capacity) + λ·minmax(independence) within each layer.

    Filters low on both are pruned first. Options as :class:`InfoCapacity` plus ``lam`` (λ ≥ 0).
    """

    name = "capacity_independence"
    accumulators = ("out_hist", "out_cov")
    feature_maps = True

    def __init__(self, reduction: str = "mean", *, lam: float = 1.0, bins: int = 32, data_free: bool = False,
                 **options: Any) -> None:
        super().__init__(reduction, **options)
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
            raise ConfigError(f"criterion {self.name!r}: lam must be a finite number >= 0, got {lam!r}")
        self.lam = float(lam)
        self.bins = _check_bins(self.name, bins)
        self.data_free = _check_data_free(self.name, data_free)
        self.data_driven = not self.data_free  # type: ignore[misc]

    def _compute(self, module: nn.Module) -> torch.Tensor:
        st = self._state.get(module)
        cap = _capacity(module, st, self.bins, self.data_free)
        ind = _independence(module, st, self.data_free)
        return _stats.minmax(cap) + self.lam * _stats.minmax(ind)


@CRITERIA.register
class BetaRank(_ActivationCriterion):
    """Beta-Rank (Homayounfar et al., arXiv 2304.07461): L1(w_i)·β_i, min-max normalised per layer.

    *Confirmed*: β is the standardized regression coefficient σ(input seen by the filter) /
    σ(filter output). Definitions used here: σ_in is the standard deviation of all input values
    the filter reads (every channel of its input group, all positions and samples — for an
    ordinary convolution the whole layer input), σ_out,i that of output channel i over positions
    and samples; both aggregate every calibration batch (the released code read one batch), so
    two batches give the value of their concatenation. A filter with constant output scores 0.

    ``variant="code"`` uses the released code's inverse ratio σ_out,i/σ_in; the code's axis
    slicing, which we consider a bug, is not reproduced.

    **Checked by hand** (``tests/test_criteria_imbalance.py``): σ_in/σ_out rewards a *small* output
    spread, so the paper equation ranks a faint copy of another channel first and a channel that
    fires only on the minority class last (over class-balanced data its output spreads most); per
    class it is no better (on the majority class that channel is constant, scored 0). The code's
    inverse ratio ranks the minority channel first.
    """

    name = "beta_rank"
    accumulators = ("in_moments", "out_moments")
    _VARIANTS = ("paper", "code")

    def __init__(self, reduction: str = "mean", *, variant: str = "paper", **options: Any) -> None:
        super().__init__(reduction, **options)
        if variant not in self._VARIANTS:
            raise ConfigError(f"criterion {self.name!r}: " + suggest(str(variant), self._VARIANTS, "variant"))
        self.variant = variant

    def _compute(self, module: nn.Module) -> torch.Tensor:
        st = self._state[module]
        groups = getattr(module, "groups", 1)
        c = _stats.out_channels(module)
        sigma_in = _stats.pooled_std(st["in_moments"], groups).repeat_interleave(c // groups)
        sigma_out = st["out_moments"].std()
        num, den = (sigma_in, sigma_out) if self.variant == "paper" else (sigma_out, sigma_in)
        beta = torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(den))
        return _stats.minmax(_stats.weight_rows(module).abs().sum(1) * beta)


@CRITERIA.register
class MeanActivation(_ActivationCriterion):
    """Mean of each channel's feature map over the calibration images (activation-based pruning).

    The feature map is read after the channel's normalisation and activation (as in
    :class:`InfoCapacity`), so for ReLU networks it is the channel's average firing strength. On an
    imbalanced calibration set it prunes what the rare class uses first — its place is inside
    ``class_conditional`` and in :func:`channel_selectivity`, which compare it class by class.
    """

    name = "mean_activation"
    accumulators = ("out_moments",)
    feature_maps = True

    def _compute(self, module: nn.Module) -> torch.Tensor:
        st = self._state[module]["out_moments"]
        assert st.mean is not None  # layer_scores checked calibration
        return st.mean.clone()


def channel_selectivity(model: nn.Module, batches: Iterable[Batch] | Callable[[], Iterable[Batch]],
                        minority: int) -> dict[str, torch.Tensor]:
    """Per layer, how selective each output channel is for class ``minority``, in [−1, 1]:
    ``(m_min − m_rest) / (|m_min| + |m_rest|)`` with ``m`` the channel's mean feature map on that class's
    calibration images and on the other classes' (their mean). 1: fires only on the minority class;
    −1: never on it; 0: alike. Measured on class-labelled batches (class-balanced ones are best)."""
    crit = ClassConditional(base="mean_activation", combine="mean")
    crit.calibrate(model, batches)
    if minority not in crit.per_class:
        raise PruningError(f"channel_selectivity: class {minority} has no image in the calibration batches")
    names = {m: n for n, m in model.named_modules()}
    out: dict[str, torch.Tensor] = {}
    for module in crit._state:
        mine = crit.per_class[minority].layer_scores(module).double()
        others = [c.layer_scores(module).double() for k, c in crit.per_class.items() if k != minority]
        rest = torch.stack(others).mean(0)
        out[names[module]] = ((mine - rest) / (mine.abs() + rest.abs()).clamp_min(1e-12)).float()
    return out


# ====================================================================== class-conditional scoring
_COMBINES = ("max", "mean", "worst_class_weighted")


@CRITERIA.register
class ClassConditional(Criterion):
    """Any data-driven criterion computed per class and combined across classes (imbalance-aware pruning).

    Statistics pooled over a calibration set describe the channels that matter *on average*, and a
    channel that fires only on the rare class looks idle, constant or redundant there. Here the
    ``base`` criterion is calibrated once per class on that class's images of the (class-balanced)
    calibration batches; each class's scores are min-max normalised within the layer (so classes
    are comparable) and combined per channel by ``combine``:

    - ``max`` — a channel vital to one class survives even when every other class ignores it;
    - ``mean`` — the class-balanced average;
    - ``worst_class_weighted`` — weighted by the model's mean cross-entropy on each class's
      calibration images (the class the model serves worst weighs most).

    Options: ``base`` (a data-driven criterion), ``base_options`` (its options), ``combine``.
    Calibration labels are class indices ``(N,)`` or segmentation masks ``(N, H, W)``: a segmentation
    image counts for every class that appears in its mask (its loss weight: the mean cross-entropy
    over that class's pixels).
    """

    name = "class_conditional"
    data_driven = True

    def __init__(self, reduction: str = "mean", *, base: str = "beta_rank", base_options: dict[str, Any] | None = None,
                 combine: str = "max", **options: Any) -> None:
        super().__init__(reduction, **options)
        if base == self.name or base not in CRITERIA:
            choices = [n for n in CRITERIA.names() if n != self.name]
            raise ConfigError(f"criterion {self.name!r}: base: " + suggest(str(base), choices, "criterion"))
        if base_options is not None and not isinstance(base_options, dict):
            raise ConfigError(f"criterion {self.name!r}: base_options must be a mapping, "
                              f"got {type(base_options).__name__}")
        if combine not in _COMBINES:
            raise ConfigError(f"criterion {self.name!r}: combine: " + suggest(str(combine), _COMBINES, "rule"))
        self.base = base
        self.base_options = dict(base_options or {})
        self.combine = combine
        probe = create_criterion(base, reduction=reduction, **self.base_options)
        if not probe.data_driven:
            raise ConfigError(f"criterion {self.name!r}: base {base!r} is data-free (its scores do not depend on the "
                              "images), so per-class scores would all be equal; choose a data-driven one: "
                              + ", ".join(n for n in CRITERIA.names()
                                          if n != self.name and create_criterion(n).data_driven))
        self.targets = probe.targets  # type: ignore[misc]
        self.needs_grad = probe.needs_grad  # type: ignore[misc]
        self.per_class: dict[int, Criterion] = {}
        self.class_weights: dict[int, float] = {}

    def __repr__(self) -> str:
        return f"ClassConditional(base={self.base!r}, combine={self.combine!r}, reduction={self.reduction!r})"

    def reset(self) -> None:
        super().reset()
        self.per_class, self.class_weights = {}, {}

    def calibrate(self, model: nn.Module, batches: Iterable[Batch] | Callable[[], Iterable[Batch]], *,
                  loss_fn: LossFn | None = None, max_batches: int | None = None) -> None:
        """Split every batch by class and calibrate one ``base`` criterion per class on its images."""
        self.reset()
        if callable(batches) and not isinstance(batches, Iterable):
            batches = batches()
        by_class: dict[int, list[Batch]] = {}
        losses: dict[int, list[float]] = {}
        was_training = model.training
        model.eval()
        try:
            for x, y in _batches(batches, _device(model), max_batches):
                if not isinstance(y, torch.Tensor) or y.dim() not in (1, 3) or y.is_floating_point():
                    shape = None if not isinstance(y, torch.Tensor) else tuple(y.shape)
                    raise PruningError(f"criterion {self.name!r} needs class-index labels (N,) or masks (N, H, W) in "
                                       f"its calibration batches, got {shape}")
                if self.combine == "worst_class_weighted":
                    with torch.no_grad():
                        out = model(x)
                        logits = out[0] if isinstance(out, (tuple, list)) else out
                        ce = F.cross_entropy(logits.float(), y, reduction="none")
                for k in torch.unique(y).tolist():
                    # an image belongs to class k when its label is k — for a mask, when k appears in it
                    member = y == k if y.dim() == 1 else (y == k).flatten(1).any(1)
                    by_class.setdefault(int(k), []).append((x[member], y[member]))
                    if self.combine == "worst_class_weighted":  # per image, or per pixel of class k
                        losses.setdefault(int(k), []).extend(ce[y == k].tolist())
        finally:
            model.train(was_training)
        if len(by_class) < 2:
            raise PruningError(f"criterion {self.name!r}: the calibration batches hold {len(by_class)} class(es); "
                               "per-class scores need at least two (use class-balanced calibration)")
        for k in sorted(by_class):
            crit = create_criterion(self.base, reduction=self.reduction, **self.base_options)
            crit.calibrate(model, by_class[k], loss_fn=loss_fn)
            self.per_class[k] = crit
        if self.combine == "worst_class_weighted":
            mean_loss = {k: sum(v) / len(v) for k, v in losses.items()}
            total = sum(mean_loss.values())
            self.class_weights = ({k: v / total for k, v in mean_loss.items()} if total > 0
                                  else {k: 1.0 / len(mean_loss) for k in mean_loss})
        self._names = {m: n or "<model>" for n, m in model.named_modules()}
        self._state = {m: True for crit in self.per_class.values() for m in crit._state}
        self._channels = {m: _stats.out_channels(m) for m in self._state}
        log.info("criterion %s(%s, %s) calibrated per class: %s", self.name, self.base, self.combine,
                 {k: sum(int(b[0].shape[0]) for b in v) for k, v in sorted(by_class.items())})

    def class_scores(self, module: nn.Module) -> dict[int, torch.Tensor]:
        """Each class's scores of ``module``'s output channels, min-max normalised within the layer."""
        return {k: _stats.minmax(crit.layer_scores(module).double()) for k, crit in self.per_class.items()}

    def _compute(self, module: nn.Module) -> torch.Tensor:
        scores = self.class_scores(module)
        stacked = torch.stack([scores[k] for k in sorted(scores)])
        if self.combine == "max":
            return stacked.max(0).values
        if self.combine == "mean":
            return stacked.mean(0)
        weights = torch.tensor([self.class_weights[k] for k in sorted(scores)], dtype=stacked.dtype)
        return (weights[:, None] * stacked).sum(0)
