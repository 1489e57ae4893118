"""Inception V3, V4 and MV4 for breast thermography, built from timm's blocks with a width multiplier.

Three registered models (Al Husaini et al., Neural Comput. Appl. 2022 compare them on DMR-IR):

* ``inception_v3`` — timm's Inception-V3 layer for layer, every conv width × ``width``.
* ``inception_v4`` — timm's Inception-V4 layer for layer, every conv width × ``width``.
* ``inception_mv4`` — **our reconstruction** of Inception MV4; the paper's layer details could not
  be obtained. Confirmed: MV4 modifies V4, keeps "the number of features and the number of pixel
  positions" balanced so the cost stays the same across layers, and runs ~7 % faster than V4.
  Chosen by us: V4's layers with per-stage width multipliers ``stage_widths=(0.44, 0.7, 2.1)``
  that equalise channels × positions of the three stage outputs, at a level that puts total MACs
  7 % under V4's, and V4's block counts ``blocks=(4, 7, 3)``. Both are config keys; see
  :func:`inception_mv4` and :func:`medprune.models.stage_cost_table`.

The blocks are timm's own classes (``timm.models.inception_v3.InceptionA`` …,
``timm.models.inception_v4.InceptionA`` …) fed a :class:`~medprune.models._width.ScaledConv`
factory; the stems and heads are assembled here. V3's reduction blocks ``Mixed_6a``/``Mixed_7a``
are timm's with their max-pool held as a ``branch_pool`` module instead of timm's functional call,
so :func:`medprune.models.replace_pooling` can swap it (no weights: the state dict is timm's).
At ``width=1`` the parameter names and shapes
equal timm's, so ``pretrained=True`` loads timm's ImageNet weights into our module (timm adapts
the first conv to ``in_chans`` and drops the classifier when ``num_classes != 1000``).

Input sizes: the paper scale is 299 px; the smallest input is 75 px (every valid conv and stride-2
reduction still leaves ≥ 1 pixel), except ``inception_v3(aux_logits=True)`` in train mode, whose
auxiliary head needs the full 299 px (17 × 17 at ``Mixed_6e``). Each model carries
``default_input_size`` and ``min_input_size`` as ``(C, H, W)``.

Deviation from timm: with ``aux_logits=True`` our V3 returns ``(logits, aux_logits)`` in train
mode only and plain logits in eval mode (timm returns the pair in both modes), so evaluation,
tracing and export see one output.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from medprune.errors import CheckpointError, ConfigError
from medprune.models._registry import register_model
from medprune.models._width import ScaledConv, check_common_args, check_triple, init_weights, materialize

__all__ = ["InceptionV3", "InceptionV4", "MV4_STAGE_WIDTHS", "MV4_BLOCKS", "inception_v3", "inception_v4",
           "inception_mv4"]

logger = logging.getLogger(__name__)

PAPER_SIZE = 299
MIN_SIZE = 75
V4_BLOCKS = (4, 7, 3)

MV4_STAGE_WIDTHS = (0.44, 0.7, 2.1)
"""Default per-stage width multipliers of our MV4 reconstruction (stages A, B, C); see inception_mv4."""
MV4_BLOCKS = (4, 7, 3)
"""Default Inception-A/B/C block counts of our MV4 reconstruction (those of V4)."""


class _InceptionBase(nn.Module):
    """Shared head and bookkeeping: global average pool → dropout → linear classifier."""

    num_features: int
    classifier_name: str

    def _build_head(self, num_features: int, num_classes: int, drop_rate: float) -> None:
        self.num_features = num_features
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(drop_rate)
        setattr(self, self.classifier_name, nn.Linear(num_features, num_classes))

    def get_classifier(self) -> nn.Linear:
        """The final linear layer (``fc`` for V3, ``last_linear`` for V4/MV4, as in timm)."""
        return getattr(self, self.classifier_name)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, drop out and classify the final feature map; ``pre_logits`` stops before the linear."""
        x = self.head_drop(torch.flatten(self.global_pool(x), 1))
        return x if pre_logits else self.get_classifier()(x)


class InceptionV3(_InceptionBase):
    """timm's Inception-V3 with every conv width multiplied by ``width`` (module names as timm's).

    With ``aux_logits`` the auxiliary classifier on ``Mixed_6e`` runs in train mode only and the
    forward returns ``(logits, aux_logits)`` there; it needs 299-px inputs.
    """

    classifier_name = "fc"
    _STAGES = {
        "stem": ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Pool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                 "Pool2"),
        "mixed_5": ("Mixed_5b", "Mixed_5c", "Mixed_5d"),
        "mixed_6": ("Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"),
        "mixed_7": ("Mixed_7a", "Mixed_7b", "Mixed_7c"),
    }
    _PRE_AUX = (*_STAGES["stem"], *_STAGES["mixed_5"], *_STAGES["mixed_6"])

    def __init__(self, num_classes: int = 2, in_chans: int = 3, width: float = 1.0, aux_logits: bool = False,
                 drop_rate: float = 0.0, channel_divisor: int = 1) -> None:
        super().__init__()
        conv = ScaledConv(width, channel_divisor)
        self.num_classes = num_classes
        self.Conv2d_1a_3x3 = conv(in_chans, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = conv(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = conv(32, 64, kernel_size=3, padding=1)
        self.Pool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = conv(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = conv(80, 192, kernel_size=3)
        self.Pool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        # nominal in_channels below are ignored by ScaledConv; they document the paper widths
        from medprune.models._inception_blocks import ReductionB, ReductionD, timm_v3

        self.Mixed_5b = timm_v3.InceptionA(192, pool_features=32, conv_block=conv)
        self.Mixed_5c = timm_v3.InceptionA(256, pool_features=64, conv_block=conv)
        self.Mixed_5d = timm_v3.InceptionA(288, pool_features=64, conv_block=conv)
        self.Mixed_6a = ReductionB(288, conv_block=conv)
        self.Mixed_6b = timm_v3.InceptionC(768, channels_7x7=128, conv_block=conv)
        self.Mixed_6c = timm_v3.InceptionC(768, channels_7x7=160, conv_block=conv)
        self.Mixed_6d = timm_v3.InceptionC(768, channels_7x7=160, conv_block=conv)
        self.Mixed_6e = timm_v3.InceptionC(768, channels_7x7=192, conv_block=conv)
        self.AuxLogits: nn.Module | None = None
        if aux_logits:
            self.AuxLogits = timm_v3.InceptionAux(768, num_classes, conv_block=conv)
            self.AuxLogits.fc = nn.Linear(conv.channels(768), num_classes)  # timm hard-codes 768 inputs
        self.Mixed_7a = ReductionD(768, conv_block=conv)
        self.Mixed_7b = timm_v3.InceptionE(1280, conv_block=conv)
        self.Mixed_7c = timm_v3.InceptionE(2048, conv_block=conv)

        mid = materialize(self, in_chans, MIN_SIZE, self._pre_aux)
        if self.AuxLogits is not None:
            materialize(self.AuxLogits, mid.shape[1], 17)  # the aux head needs a 17×17 map
        features = materialize(self, in_chans, MIN_SIZE, self.forward_features)
        self._build_head(features.shape[1], num_classes, drop_rate)
        init_weights(self)
        self.default_input_size = (in_chans, PAPER_SIZE, PAPER_SIZE)
        self.min_input_size = (in_chans, PAPER_SIZE if aux_logits else MIN_SIZE,
                               PAPER_SIZE if aux_logits else MIN_SIZE)

    def stage_modules(self) -> dict[str, list[str]]:
        """Stage name → child modules: the stem and the 35×35, 17×17 and 8×8 Inception groups."""
        return {stage: list(names) for stage, names in self._STAGES.items()}

    def _pre_aux(self, x: torch.Tensor) -> torch.Tensor:
        for name in self._PRE_AUX:
            x = getattr(self, name)(x)
        return x

    def _post_aux(self, x: torch.Tensor) -> torch.Tensor:
        for name in self._STAGES["mixed_7"]:
            x = getattr(self, name)(x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final feature map (``N × num_features × 8 × 8`` at 299 px), without the aux head."""
        return self._post_aux(self._pre_aux(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(N, num_classes)``; ``(logits, aux_logits)`` in train mode when ``aux_logits``."""
        x = self._pre_aux(x)
        aux = self.AuxLogits(x) if self.AuxLogits is not None and self.training else None
        logits = self.forward_head(self._post_aux(x))
        return logits if aux is None else (logits, aux)


class InceptionV4(_InceptionBase):
    """timm's Inception-V4 with a global and a per-stage width multiplier and variable block counts.

    ``features`` is an ``nn.Sequential`` laid out as timm's: stem (3 convs, Mixed3a/4a/5a), then
    ``blocks[0]`` Inception-A, Reduction-A, ``blocks[1]`` Inception-B, Reduction-B, ``blocks[2]``
    Inception-C. Stage ``i`` (A, B, C; each reduction belongs to the stage it leads into) uses
    width ``width × stage_widths[i]``; the stem uses ``width``. With the defaults this is exactly
    timm's ``inception_v4``.
    """

    classifier_name = "last_linear"

    def __init__(self, num_classes: int = 2, in_chans: int = 3, width: float = 1.0,
                 stage_widths: Sequence[float] = (1.0, 1.0, 1.0), blocks: Sequence[int] = V4_BLOCKS,
                 drop_rate: float = 0.0, channel_divisor: int = 1) -> None:
        super().__init__()
        stem = ScaledConv(width, channel_divisor)
        conv_a, conv_b, conv_c = (ScaledConv(width * w, channel_divisor) for w in stage_widths)
        self.num_classes = num_classes
        self.blocks = tuple(blocks)
        from medprune.models._inception_blocks import timm_v4

        layers: list[nn.Module] = [
            stem(in_chans, 32, kernel_size=3, stride=2),
            stem(32, 32, kernel_size=3),
            stem(32, 64, kernel_size=3, padding=1),
            timm_v4.Mixed3a(stem),
            timm_v4.Mixed4a(stem),
            timm_v4.Mixed5a(stem),
            *(timm_v4.InceptionA(conv_a) for _ in range(blocks[0])),
            timm_v4.ReductionA(conv_b),
            *(timm_v4.InceptionB(conv_b) for _ in range(blocks[1])),
            timm_v4.ReductionB(conv_c),
            *(timm_v4.InceptionC(conv_c) for _ in range(blocks[2])),
        ]
        self.features = nn.Sequential(*layers)
        features = materialize(self.features, in_chans, MIN_SIZE)
        self._build_head(features.shape[1], num_classes, drop_rate)
        init_weights(self)
        self.default_input_size = (in_chans, PAPER_SIZE, PAPER_SIZE)
        self.min_input_size = (in_chans, MIN_SIZE, MIN_SIZE)

    def stage_modules(self) -> dict[str, list[str]]:
        """Stage name → ``features.<i>`` modules: stem (35×35), Inception-A, -B, -C (35, 17, 8 px)."""
        a, b, c = self.blocks
        bounds = {"stem": (0, 6), "inception_a": (6, 6 + a), "inception_b": (6 + a, 7 + a + b),
                  "inception_c": (7 + a + b, 8 + a + b + c)}
        return {stage: [f"features.{i}" for i in range(lo, hi)] for stage, (lo, hi) in bounds.items()}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final feature map (``N × num_features × 8 × 8`` at 299 px)."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)``."""
        return self.forward_head(self.forward_features(x))


def _load_timm_weights(model: nn.Module, timm_name: str, **timm_kwargs: object) -> None:
    """Copy timm's pretrained ImageNet weights for ``timm_name`` into ``model`` (width 1 only)."""
    import timm

    try:
        source = timm.create_model(timm_name, pretrained=True, **timm_kwargs)
    except (OSError, RuntimeError, ValueError) as exc:  # offline hub, missing cache, corrupt file
        raise CheckpointError(
            f"model {timm_name!r}: could not load timm's pretrained weights ({type(exc).__name__}: {exc}). "
            "They are downloaded from the Hugging Face hub on first use: connect once or copy the timm "
            "cache (HF_HOME) to this machine, or set model.pretrained: false to train from scratch"
        ) from exc
    try:
        model.load_state_dict(source.state_dict(), strict=True)
    except RuntimeError as exc:  # shapes differ from timm's, e.g. channel_divisor changed a width
        raise ConfigError(f"model {timm_name!r}: timm's pretrained weights do not fit this configuration "
                          f"(use channel_divisor: 1 with pretrained weights): {exc}") from None
    logger.info("loaded timm pretrained weights for %s", timm_name)


def _check_pretrained(model: str, pretrained: bool, width: float) -> None:
    if pretrained and width != 1.0:
        raise ConfigError(f"model {model!r}: pretrained weights exist only for width 1.0 (timm's ImageNet "
                          f"weights), got width={width}; set pretrained: false or width: 1.0")


@register_model("inception_v3", min_input_size=lambda kw: (PAPER_SIZE, PAPER_SIZE) if kw.get("aux_logits")
                else (MIN_SIZE, MIN_SIZE))
def inception_v3(num_classes: int = 2, in_chans: int = 3, width: float = 1.0, pretrained: bool = False,
                 drop_rate: float = 0.0, aux_logits: bool = False, channel_divisor: int = 1) -> InceptionV3:
    """Inception-V3 (timm's layers) with every conv width × ``width``.

    ``aux_logits`` adds timm's auxiliary classifier: train-mode forwards then return
    ``(logits, aux_logits)`` and need 299-px inputs. ``channel_divisor`` rounds every scaled width
    to a multiple (e.g. 8 or 16 for faster inference kernels). ``pretrained`` loads timm's ImageNet
    weights (width 1.0 only; downloads on first use).
    """
    check_common_args("inception_v3", num_classes, in_chans, width, drop_rate, channel_divisor)
    _check_pretrained("inception_v3", pretrained, width)
    model = InceptionV3(num_classes=num_classes, in_chans=in_chans, width=width, aux_logits=aux_logits,
                        drop_rate=drop_rate, channel_divisor=channel_divisor)
    if pretrained:
        _load_timm_weights(model, "inception_v3", num_classes=num_classes, in_chans=in_chans,
                           aux_logits=aux_logits)
    return model


@register_model("inception_v4", min_input_size=(MIN_SIZE, MIN_SIZE))
def inception_v4(num_classes: int = 2, in_chans: int = 3, width: float = 1.0, pretrained: bool = False,
                 drop_rate: float = 0.0, channel_divisor: int = 1) -> InceptionV4:
    """Inception-V4 (timm's layers) with every conv width × ``width``.

    ``channel_divisor`` rounds every scaled width to a multiple; ``pretrained`` loads timm's
    ImageNet weights (``inception_v4.tf_in1k``; width 1.0 only; downloads on first use).
    """
    check_common_args("inception_v4", num_classes, in_chans, width, drop_rate, channel_divisor)
    _check_pretrained("inception_v4", pretrained, width)
    model = InceptionV4(num_classes=num_classes, in_chans=in_chans, width=width, drop_rate=drop_rate,
                        channel_divisor=channel_divisor)
    if pretrained:
        _load_timm_weights(model, "inception_v4", num_classes=num_classes, in_chans=in_chans)
    return model


@register_model("inception_mv4", min_input_size=(MIN_SIZE, MIN_SIZE))
def inception_mv4(num_classes: int = 2, in_chans: int = 3, width: float = 1.0, pretrained: bool = False,
                  drop_rate: float = 0.0, stage_widths: Sequence[float] = MV4_STAGE_WIDTHS,
                  blocks: Sequence[int] = MV4_BLOCKS, channel_divisor: int = 1) -> InceptionV4:
    """Inception MV4 — OUR RECONSTRUCTION; the paper's layer details could not be obtained.

    *Confirmed* (Al Husaini et al., 2022): MV4 modifies Inception-V4; it "keeps the computational
    cost the same across layers by making the number of features and the number of pixel positions
    equal"; it classifies about 7 % faster than V4.

    *Chosen by us*: V4's stem, Inception-A/B/C blocks and Reduction-A/B are kept; each stage's conv
    widths are multiplied by ``stage_widths`` (on top of ``width``; each reduction belongs to the
    stage it leads into) so that channels × pixel positions of the three stage outputs is equal.
    V4 at 299 px has 384 × 35² = 470 400, 1024 × 17² = 295 936 and 1536 × 8² = 98 304; the
    defaults ``(0.44, 0.7, 2.1)`` give 168 × 35² = 205 800, 717 × 17² = 207 213 and
    3228 × 8² = 206 592 (max/min 1.007). The common level is the one free choice left: we set it
    so the total MACs are 7 % below V4's (11.43 G vs 12.25 G at 299 px), matching the reported
    speed-up under the rough assumption that time follows MACs (it does not exactly; DESIGN §4.7).
    ``blocks`` keeps V4's (4, 7, 3). Moving channels to the 8 × 8 stage makes MV4 larger than V4:
    82.1 M parameters vs 42.7 M at width 1 (1000 classes).

    Both are ordinary config keys (``model.kwargs.stage_widths``, ``model.kwargs.blocks``): change
    them freely; :func:`medprune.models.stage_cost_table` reports the resulting balance. No
    pretrained weights exist for MV4, so ``pretrained=True`` raises ``ConfigError``.
    """
    check_common_args("inception_mv4", num_classes, in_chans, width, drop_rate, channel_divisor)
    stage_widths = check_triple("inception_mv4", "stage_widths", stage_widths, float, 0.0, strict=True)
    blocks = check_triple("inception_mv4", "blocks", blocks, int, 0, strict=False)
    if pretrained:
        raise ConfigError("model 'inception_mv4': no pretrained weights exist for our MV4 reconstruction; "
                          "set pretrained: false, or use inception_v4 to start from timm's ImageNet weights")
    return InceptionV4(num_classes=num_classes, in_chans=in_chans, width=width, stage_widths=stage_widths,
                       blocks=blocks, drop_rate=drop_rate, channel_divisor=channel_divisor)
