"""``degradation_aware``: a classifier told how degraded its image is (Endo, Tanaka & Okutomi 2020).

The classifier takes the degraded image and its degradation parameter ``q`` — the normalised severity
in [0, 1] of each degradation kind (JPEG quality, noise σ, blur σ; ``q_dim`` values) — and a small
estimation network (:class:`DegradationEstimator`) predicts ``q`` when it is unknown. Any registered
classification model is the backbone; ``injection`` picks how ``q`` enters it (:data:`INJECTIONS`):

* ``concat_fc`` — the pooled features joined to ``MLP(q)`` feed the wrapper's own linear head (the
  backbone's classifier is removed, so it counts in no parameter or MAC figure);
* ``channel`` — ``q`` as ``q_dim`` constant input planes behind the image (the backbone's first
  convolution takes ``C + q_dim`` channels);
* ``film`` — every backbone stage output (``stage_modules()``) is scaled and shifted,
  ``out · (1 + γ_s(q)) + β_s(q)``, with ``γ_s``, ``β_s`` linear in ``q`` and zero at the start (so the
  untrained model is the plain backbone);
* ``none`` — ``q`` is ignored: the baseline trained on degraded images alone (no estimator is built).

Inputs. The data pipeline packs ``q`` as ``q_dim`` constant planes behind the image, ``x`` of shape
``(N, C + q_dim, H, W)``, so trainer, pruning, quantisation and benchmarks move one tensor; the model
also takes ``model(image, q)`` (``(N, C, H, W)``, ``(N, q_dim)``: the ONNX deployment form, inputs
``image`` and ``q``) and ``model(image)`` (``q`` estimated). The channel count tells the forms apart.

Modes (``model.mode``, settable): ``oracle`` uses the given ``q`` (estimated when absent), ``blind``
always the estimate ``q̂``; ``none`` for injection ``none``. In train mode, when the true ``q`` is known
and there is an estimator, the forward returns ``(logits, aux_loss)`` with ``aux_loss =
estimator_weight · L1(q̂, q)``: the classifier learns with the true ``q`` (so the estimator's loss
reaches the estimator only), the estimator learns to predict it. In blind mode the classifier runs on
``q̂``, so its loss also reaches the estimator. In eval mode the forward returns the logits.

Pruning. Torch-Pruning traces :meth:`DegradationAware.trace_forward` (the deployed graph, without the
estimator's loss): FiLM's ``γ``/``β`` widths and the ``concat_fc`` head's input follow the pruned
channels (coupled through the multiply/add and the concatenation). In oracle mode the estimator is
not in that graph and stays unpruned; in blind mode it is pruned, except its ``q_dim`` outputs.

Example::

    model = create_model("degradation_aware", num_classes=2, in_chans=1, backbone="small_cnn",
                         injection="film", q_dim=3)
    logits = model.eval()(image, q)               # (N, 2); or model(torch.cat([image, planes], 1))
    model.mode = "blind"; model(image)             # q estimated
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

import torch
import torch.fx
from torch import nn

from medprune.errors import ConfigError
from medprune.models._registry import create_model, list_models, model_min_input_size, register_model
from medprune.models._width import check_common_args, init_weights
from medprune.models.cost import meta_forward
from medprune.registry import Registry, suggest

__all__ = ["DegradationAware", "DegradationEstimator", "Injection", "ConcatFC", "ChannelInjection", "FiLM",
           "NoInjection", "INJECTIONS", "MODES"]

#: Runtime modes of a model that takes q (injection ``none`` has mode ``"none"``).
MODES: tuple[str, ...] = ("oracle", "blind")

#: Arguments the wrapper passes to its backbone itself (``backbone_kwargs`` may not set them).
_SHARED = ("num_classes", "in_chans", "width", "pretrained", "drop_rate")


class DegradationEstimator(nn.Module):
    """Regresses ``q ∈ [0, 1]^q_dim`` from the image: three stride-2 conv-BN-ReLU layers (``width``,
    ``2·width``, ``4·width`` channels), global average pooling, linear, sigmoid.

    Any image size of at least 1 px runs (the convolutions are padded).
    """

    def __init__(self, in_chans: int, q_dim: int, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_chans
        for cout in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, q_dim)
        init_weights(self)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``q̂`` of shape ``(N, q_dim)``."""
        return torch.sigmoid(self.fc(torch.flatten(self.pool(self.features(image)), 1)))


class Injection(nn.Module):
    """How ``q`` enters the classifier: a strategy holding its own layers.

    ``prepare(backbone)`` adapts a freshly built backbone (and creates the strategy's layers);
    ``forward(backbone, image, q)`` gives the logits. ``backbone_in_chans`` is the channel count the
    backbone is built for; ``uses_q`` says whether the strategy reads ``q`` at all.
    """

    name: ClassVar[str] = ""
    uses_q: ClassVar[bool] = True

    def __init__(self, q_dim: int, num_classes: int, q_hidden: int) -> None:
        super().__init__()
        self.q_dim = q_dim
        self.num_classes = num_classes
        self.q_hidden = q_hidden

    @classmethod
    def backbone_in_chans(cls, in_chans: int, q_dim: int) -> int:
        """Input channels of the backbone for images of ``in_chans`` channels."""
        return in_chans

    def prepare(self, backbone: nn.Module) -> None:
        """Adapt the backbone and build this strategy's layers (none by default)."""

    def forward(self, backbone: nn.Module, image: torch.Tensor, q: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


INJECTIONS = Registry("injection")
"""Name → :class:`Injection` class: ``concat_fc``, ``channel``, ``film``, ``none``."""


def _static(size: Any) -> int:
    """A tensor size as a Python int, also while ``torch.jit`` traces (the ONNX exporter), where sizes are
    traced tensors: the sizes read here (channel counts, and the batch only to validate) never vary within
    one graph, so the tracer's warning about taking them as constants does not apply."""
    if isinstance(size, int):
        return size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return int(size)


def _logits(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return backbone.forward_head(backbone.forward_features(x))


@INJECTIONS.register
class NoInjection(Injection):
    """``none``: the backbone alone; ``q`` is ignored."""

    name = "none"
    uses_q = False

    def forward(self, backbone: nn.Module, image: torch.Tensor, q: torch.Tensor | None) -> torch.Tensor:
        return _logits(backbone, image)


@INJECTIONS.register
class ChannelInjection(Injection):
    """``channel``: ``q`` as ``q_dim`` constant planes behind the image, into a ``C + q_dim`` channel backbone."""

    name = "channel"

    @classmethod
    def backbone_in_chans(cls, in_chans: int, q_dim: int) -> int:
        return in_chans + q_dim

    def prepare(self, backbone: nn.Module) -> None:
        # The first convolution's weights on the q planes start at zero, so the untrained model is the
        # plain backbone and learns to use q (as FiLM's zero start). Random weights there add to every
        # first-layer map a per-image offset as large as q itself: on the thermography phantom the
        # classifier then stayed at chance in 3 of 3 seeds (benchmarks/degradation_compare.py).
        first = next((m for m in backbone.modules() if isinstance(m, nn.Conv2d)), None)
        if first is None or first.in_channels <= self.q_dim:
            raise ConfigError(f"model.kwargs.injection: channel needs a backbone whose first layer is a convolution "
                              f"taking the image and q's {self.q_dim} plane(s); {type(backbone).__name__} has none")
        with torch.no_grad():
            first.weight[:, first.in_channels - self.q_dim:] = 0.0

    def forward(self, backbone: nn.Module, image: torch.Tensor, q: torch.Tensor | None) -> torch.Tensor:
        planes = q[:, :, None, None].expand(-1, -1, image.shape[2], image.shape[3])
        return _logits(backbone, torch.cat([image, planes.to(image.dtype)], dim=1))


@INJECTIONS.register
class ConcatFC(Injection):
    """``concat_fc``: ``Linear(cat(pooled features, ReLU(Linear(q))))``; the backbone's classifier is removed."""

    name = "concat_fc"

    def prepare(self, backbone: nn.Module) -> None:
        # The backbone's classifier would be dead weight in every parameter and pruning figure.
        setattr(backbone, backbone.classifier_name, nn.Identity())
        self.q_mlp = nn.Sequential(nn.Linear(self.q_dim, self.q_hidden), nn.ReLU())
        self.head = nn.Linear(int(backbone.num_features) + self.q_hidden, self.num_classes)
        init_weights(self)

    def forward(self, backbone: nn.Module, image: torch.Tensor, q: torch.Tensor | None) -> torch.Tensor:
        pooled = backbone.forward_head(backbone.forward_features(image), pre_logits=True)
        return self.head(torch.cat([pooled, self.q_mlp(q.to(pooled.dtype))], dim=1))


@INJECTIONS.register
class FiLM(Injection):
    """``film``: each stage output becomes ``out · (1 + γ_s(q)) + β_s(q)`` (γ, β linear, zero at the start).

    The stage outputs are those of the last module of each entry of the backbone's ``stage_modules()``.
    The scale and shift are applied by forward hooks registered on those modules for the duration of
    one forward and removed after it: the model holds no hooks at rest (a ``copy.deepcopy`` has
    nothing bound to the original; torch.fx, Torch-Pruning's autograd trace and the ONNX exporter see
    the multiply and add). A stage output that does not run exactly once is an error, so a FiLM the
    trace missed cannot go unnoticed.
    """

    name = "film"

    def prepare(self, backbone: nn.Module) -> None:
        #: stage name → qualified name (in the backbone) of the module producing the stage output
        self.points = {stage: names[-1] for stage, names in backbone.stage_modules().items()}
        channels: dict[str, int] = {}

        def record(stage: str) -> Any:
            def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
                channels[stage] = int(output.shape[1])
            return hook

        meta_forward(backbone, tuple(backbone.min_input_size),
                     [(backbone.get_submodule(name), record(stage)) for stage, name in self.points.items()])
        self.gamma = nn.ModuleDict({s: nn.Linear(self.q_dim, channels[s]) for s in self.points})
        self.beta = nn.ModuleDict({s: nn.Linear(self.q_dim, channels[s]) for s in self.points})
        for layer in (*self.gamma.values(), *self.beta.values()):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, backbone: nn.Module, image: torch.Tensor, q: torch.Tensor | None) -> torch.Tensor:
        fired: list[str] = []

        def modulate(stage: str) -> Any:
            def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
                fired.append(stage)
                scale = self.gamma[stage](q)[:, :, None, None]
                shift = self.beta[stage](q)[:, :, None, None]
                return output * (1 + scale) + shift
            return hook

        handles = [backbone.get_submodule(name).register_forward_hook(modulate(stage))
                   for stage, name in self.points.items()]
        try:
            features = backbone.forward_features(image)
        finally:
            for handle in handles:
                handle.remove()
        if sorted(fired) != sorted(self.points):
            raise RuntimeError(f"FiLM: each stage output must run once per forward; ran {sorted(fired)} of "
                               f"{sorted(self.points)} (a module called twice, or one the tracer did not enter: "
                               "torch.fx does not run hooks of plain torch.nn layers)")
        return backbone.forward_head(features)


class DegradationAware(nn.Module):
    """A backbone classifier given the degradation parameter ``q``; see the module docstring.

    Args:
        backbone: a registry classification model built for ``injection.backbone_in_chans(in_chans)``
            channels (it needs ``forward_features``, ``forward_head(x, pre_logits)``, ``num_features``,
            ``stage_modules()`` and ``classifier_name``).
        injection: the strategy (its ``prepare`` is called here).
        in_chans: image channels ``C``.
        estimator: predicts ``q`` from the image, or ``None``.
        mode: ``oracle`` or ``blind`` (``none`` for injection ``none``).
        estimator_weight: weight of the estimator's L1 loss.
    """

    def __init__(self, backbone: nn.Module, injection: Injection, in_chans: int, *,
                 estimator: DegradationEstimator | None = None, mode: str = "oracle",
                 estimator_weight: float = 1.0) -> None:
        super().__init__()
        self.backbone = backbone
        injection.prepare(backbone)
        self.injection = injection
        self.estimator = estimator
        self.in_chans = int(in_chans)
        self.q_dim = injection.q_dim
        self.estimator_weight = float(estimator_weight)
        self.mode = mode
        self.num_features = int(backbone.num_features)
        _, h, w = backbone.min_input_size
        self.min_input_size = (self.in_chans, int(h), int(w))
        _, h, w = backbone.default_input_size
        self.default_input_size = (self.in_chans, int(h), int(w))

    @property
    def mode(self) -> str:
        """``oracle`` (the given ``q``), ``blind`` (always ``q̂``) or ``none`` (injection ``none``).

        Setting it also records it in ``medprune_spec``, so a saved model reloads in the same mode.
        """
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if not self.injection.uses_q:
            if value not in ("none", "oracle"):
                raise ConfigError(f"model.kwargs.mode: injection {self.injection.name!r} ignores q, so the mode is "
                                  f"'none'; got {value!r}")
            value = "none"
        elif value not in MODES:
            raise ConfigError(f"model.kwargs.mode: {suggest(str(value), list(MODES), 'mode')}")
        elif value == "blind" and self.estimator is None:
            raise ConfigError("model.kwargs.mode: blind mode uses the estimator; set model.kwargs.estimator: true")
        self._mode = value
        spec = getattr(self, "medprune_spec", None)
        if isinstance(spec, dict) and self.injection.uses_q:
            self.medprune_spec = {**spec, "kwargs": {**spec.get("kwargs", {}), "mode": value}}

    @property
    def input_names(self) -> tuple[str, ...]:
        """Names of the deployed graph's inputs: ``("image", "q")`` in oracle mode, else ``("image",)``."""
        return ("image", "q") if self.mode == "oracle" else ("image",)

    def stage_modules(self) -> dict[str, list[str]]:
        """The backbone's stages (module names prefixed with ``backbone.``), for the cost tables."""
        return {stage: [f"backbone.{n}" for n in names] for stage, names in self.backbone.stage_modules().items()}

    def split_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(image, q)`` of a packed batch ``(N, C + q_dim, H, W)``; ``(x, None)`` for an image ``(N, C, H, W)``."""
        channels = _static(x.shape[1])
        if channels == self.in_chans + self.q_dim:
            return x[:, :self.in_chans], x[:, self.in_chans:, 0, 0]
        if channels == self.in_chans:
            return x, None
        raise ValueError(f"degradation_aware: expected an image of {self.in_chans} channels or a packed batch of "
                         f"{self.in_chans} + {self.q_dim} (q planes) channels, got shape {tuple(x.shape)}")

    def export_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The tensors for :attr:`input_names` from a batch: ``(image, q)`` or ``(image,)``.

        The graph's inputs do not depend on the batch's form: an image-only batch given to an oracle
        model gets the estimator's ``q̂`` as its ``q`` (as the forward would use it).
        """
        image, q = self.split_inputs(x)
        if "q" not in self.input_names:
            return (image,)
        if q is None:
            with torch.no_grad():
                q = self.estimate(image)
        return image, q

    def estimate(self, image: torch.Tensor) -> torch.Tensor:
        """``q̂`` for ``image`` ``(N, C, H, W)``."""
        if self.estimator is None:
            raise ValueError(f"degradation_aware: injection {self.injection.name!r} needs q, but the input carries "
                             "none and the model has no estimator; pass model(image, q) or a packed batch, or build "
                             "it with estimator: true")
        return self.estimator(image)

    def trace_forward(self, example_inputs: torch.Tensor | tuple[torch.Tensor, ...],
                      ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The train-mode forward pruning traces and self-checks: the logits, and ``q̂`` where they use it.

        The estimator's loss is left out. In oracle mode (``q`` given) the estimator is reached only
        through that loss, and neither the deployed graph nor the eval-mode calibration of data-driven
        criteria runs it, so it stays out of the trace and unpruned. Where the logits use ``q̂`` (blind
        mode, or no ``q`` given) the estimator is traced and pruned, and ``q̂`` is an output, so its
        ``q_dim`` values — one per degradation kind — are never pruned.
        """
        self.train()
        inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        if inputs[0].shape[0] == 1:  # BatchNorm in train mode needs two samples
            inputs = tuple(torch.cat([t, t]) for t in inputs)
        logits, q_hat, _ = self._run(*inputs, learn=False)
        # q̂ leaves through a node of its own: the sigmoid node also feeds the injection's layers, and
        # Torch-Pruning protects a layer only when a path from it reaches an output without another layer.
        return logits if q_hat is None else (logits, q_hat.clone())

    def forward(self, x: torch.Tensor, q: torch.Tensor | None = None,
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(N, num_classes)``; ``(logits, aux_loss)`` in train mode when the true ``q`` is known."""
        logits, q_hat, q_true = self._run(x, q, learn=self.training)
        if self.training and q_hat is not None and q_true is not None:
            return logits, self.estimator_weight * nn.functional.l1_loss(q_hat, q_true.to(q_hat.dtype))
        return logits

    def _run(self, x: torch.Tensor, q: torch.Tensor | None = None, *, learn: bool,
             ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(logits, q̂ or None, true q or None)``; ``learn`` computes ``q̂`` for the estimator's loss too."""
        if isinstance(x, torch.fx.Proxy):
            # torch.fx traces without shapes, so it cannot tell the input forms apart: it traces the
            # image-only form (q estimated); the slice keeps the graph usable on packed batches.
            image, q_true = x[:, :self.in_chans], None
        else:
            image, packed = self.split_inputs(x)
            if q is not None and packed is not None:
                raise ValueError("degradation_aware: q given twice (as planes of a packed batch and as an argument)")
            q_true = packed if q is None else q
            if q_true is not None and tuple(map(_static, q_true.shape)) != (_static(image.shape[0]), self.q_dim):
                raise ValueError(f"degradation_aware: q must have shape (N, q_dim) = ({image.shape[0]}, {self.q_dim}), "
                                 f"got {tuple(q_true.shape)}")
        uses_q = self.injection.uses_q
        estimated = uses_q and (self.mode == "blind" or q_true is None)
        learn = learn and self.estimator is not None and q_true is not None
        q_hat = self.estimate(image) if estimated or learn else None
        logits = self.injection(self.backbone, image, (q_hat if estimated else q_true) if uses_q else None)
        return logits, q_hat, q_true


def _backbone_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments the backbone is built with."""
    in_chans = INJECTIONS.get(kwargs["injection"]).backbone_in_chans(kwargs["in_chans"], kwargs["q_dim"])
    return {**dict(kwargs["backbone_kwargs"] or {}), "num_classes": kwargs["num_classes"], "in_chans": in_chans,
            "width": kwargs["width"], "pretrained": kwargs["pretrained"], "drop_rate": kwargs["drop_rate"]}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_arguments(kwargs: dict[str, Any]) -> None:
    """Refuse arguments the model cannot be built with, naming ``model.kwargs.<key>`` (run at config load)."""
    check_common_args("degradation_aware", kwargs["num_classes"], kwargs["in_chans"], kwargs["width"],
                      kwargs["drop_rate"], 1)
    backbone = kwargs["backbone"]
    choices = [n for n in list_models("classification") if n != "degradation_aware"]
    if backbone not in choices:
        why = "" if backbone != "degradation_aware" else " (it cannot wrap itself)"
        raise ConfigError(f"model.kwargs.backbone: {suggest(str(backbone), choices, 'classification backbone')}{why}")
    if kwargs["injection"] not in INJECTIONS:
        hint = suggest(str(kwargs["injection"]), INJECTIONS.names(), "injection")
        raise ConfigError(f"model.kwargs.injection: {hint}")
    q_dim = kwargs["q_dim"]
    if not _is_int(q_dim) or q_dim < 1:
        raise ConfigError(f"model.kwargs.q_dim: must be an integer >= 1 (one value per degradation kind), "
                          f"got {q_dim!r}")
    for key in ("estimator_width", "q_hidden"):
        if not _is_int(kwargs[key]) or kwargs[key] < 1:
            raise ConfigError(f"model.kwargs.{key}: must be an integer >= 1, got {kwargs[key]!r}")
    if not isinstance(kwargs["estimator"], bool):
        raise ConfigError(f"model.kwargs.estimator: must be true or false, got {kwargs['estimator']!r}")
    weight = kwargs["estimator_weight"]
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (math.isfinite(weight) and weight >= 0):
        raise ConfigError(f"model.kwargs.estimator_weight: must be a number >= 0, got {weight!r}")
    uses_q = INJECTIONS.get(kwargs["injection"]).uses_q
    mode = kwargs["mode"]
    if not uses_q and mode not in ("oracle", "none"):
        raise ConfigError(f"model.kwargs.mode: injection {kwargs['injection']!r} ignores q, so there is no mode "
                          f"to choose; got {mode!r}")
    if uses_q and mode not in MODES:
        raise ConfigError(f"model.kwargs.mode: {suggest(str(mode), list(MODES), 'mode')}")
    if mode == "blind" and not kwargs["estimator"]:
        raise ConfigError("model.kwargs.mode: blind mode uses the estimator; set model.kwargs.estimator: true")
    extra = kwargs["backbone_kwargs"]
    if extra is not None and not isinstance(extra, dict):
        raise ConfigError(f"model.kwargs.backbone_kwargs: must be a mapping, got {type(extra).__name__}")
    for key in _SHARED:
        if key in (extra or {}):
            raise ConfigError(f"model.kwargs.backbone_kwargs.{key}: degradation_aware passes it to the backbone "
                              f"itself; set model.kwargs.{key} (or data) instead")
    if (extra or {}).get("aux_logits"):
        raise ConfigError("model.kwargs.backbone_kwargs.aux_logits: the auxiliary head would never run (the "
                          "wrapper uses the backbone's features and head); remove it")
    try:
        model_min_input_size(backbone, **_backbone_kwargs(kwargs))
    except ConfigError as exc:
        raise ConfigError(f"model.kwargs.backbone_kwargs: backbone {backbone!r}: {exc}") from None


def _min_size(kwargs: dict[str, Any]) -> tuple[int, int]:
    # the estimator runs on any size, so the backbone sets the limit
    return model_min_input_size(kwargs["backbone"], **_backbone_kwargs(kwargs))


@register_model("degradation_aware", min_input_size=_min_size, check=_check_arguments)
def degradation_aware(num_classes: int = 2, in_chans: int = 3, width: float = 1.0, pretrained: bool = False,
                      drop_rate: float = 0.0, backbone: str = "small_cnn",
                      backbone_kwargs: dict[str, Any] | None = None,
                      injection: str = "film", q_dim: int = 1, mode: str = "oracle", estimator: bool = True,
                      estimator_width: int = 16, estimator_weight: float = 1.0, q_hidden: int = 16) -> DegradationAware:
    """A degradation-aware classifier around the registry model ``backbone`` (see the module docstring).

    ``in_chans`` counts the image channels (``q`` adds ``q_dim`` planes in packed batches);
    ``width``, ``pretrained`` and ``drop_rate`` go to the backbone, ``backbone_kwargs`` its other
    arguments. ``injection`` is one of :data:`INJECTIONS`; ``estimator`` builds the q estimator
    (``estimator_width`` channels in its first layer; none for injection ``none``), whose L1 loss
    is weighted by ``estimator_weight``; ``q_hidden`` is the width of ``concat_fc``'s MLP(q).
    """
    arguments = dict(locals())
    _check_arguments(arguments)
    strategy = INJECTIONS.get(injection)(q_dim, num_classes, q_hidden)
    net = create_model(backbone, **_backbone_kwargs(arguments))
    vars(net).pop("medprune_spec", None)  # the wrapper's spec describes the whole model
    q_estimator = DegradationEstimator(in_chans, q_dim, estimator_width) if estimator and strategy.uses_q else None
    return DegradationAware(net, strategy, in_chans, estimator=q_estimator, mode=mode,
                            estimator_weight=estimator_weight)
