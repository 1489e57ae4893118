"""Width-multiplied convolutions for timm's Inception blocks, and the checks shared by our models.

timm's Inception blocks (``timm.models.inception_v3`` / ``inception_v4``) take a ``conv_block``
factory but hard-code the channel counts they pass to it. :class:`ScaledConv` is such a factory:
it multiplies every ``out_channels`` by a width and *ignores* the nominal ``in_channels``, because
after scaling those no longer add up (a max-pool branch passes its input straight through, so e.g.
V4's ``Mixed4a`` sees ``s(64) + s(96)`` channels, which need not equal ``s(160)``). The convolution is an
``nn.LazyConv2d`` and :func:`materialize` runs one dry forward on zeros at construction, after which
every lazy module has become a plain ``nn.Conv2d`` (no lazy modules or hooks remain, so torch.fx,
Torch-Pruning and ONNX export see an ordinary network).

:class:`ConvBnAct` keeps timm's parameter names (``conv.weight``, ``bn.*``), so at width 1 a
timm state dict loads into our models unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Callable

import torch
from torch import nn

from medprune.errors import ConfigError

__all__ = ["scale_channels", "ConvBnAct", "ScaledConv", "materialize", "init_weights", "check_common_args",
           "check_triple"]


def scale_channels(channels: int, width: float, divisor: int = 1) -> int:
    """``channels × width`` rounded half-up to a multiple of ``divisor`` (at least ``divisor``).

    ``scale_channels(48, 0.125) == 6``; ``scale_channels(48, 0.3, divisor=8) == 16``.
    """
    return max(divisor, int(channels * width / divisor + 0.5) * divisor)


class ConvBnAct(nn.Module):
    """Conv (no bias) → BatchNorm (eps 1e-3, as timm's Inceptions) → ReLU.

    The input width is inferred on the first forward (lazy); the ReLU is not in-place so forward
    hooks on ``bn`` (feature-map based importance criteria) see the pre-activation values.
    """

    def __init__(self, out_channels: int, kernel_size: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.conv = nn.LazyConv2d(out_channels, kernel_size, stride=stride, padding=padding, bias=False,
                                  device=device, dtype=dtype)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3, device=device, dtype=dtype)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class ScaledConv:
    """``conv_block`` factory for timm's Inception blocks that scales every output width.

    Called by the blocks as ``conv_block(in_channels, out_channels, kernel_size=..., stride=...,
    padding=..., device=..., dtype=...)``; ``in_channels`` is ignored (inferred lazily) and
    ``out_channels`` becomes :meth:`channels` of it. The default padding is 0, as in timm's
    Inception models (which override ``ConvNormAct``'s "same"-like default the same way).
    """

    def __init__(self, width: float, divisor: int = 1) -> None:
        self.width = width
        self.divisor = divisor

    def channels(self, nominal: int) -> int:
        """The width this factory gives a conv whose paper width is ``nominal``."""
        return scale_channels(nominal, self.width, self.divisor)

    def __call__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int = 1, padding: int | tuple[int, int] = 0, device: Any = None,
                 dtype: Any = None) -> ConvBnAct:
        del in_channels  # inferred on the dry run, see module docstring
        return ConvBnAct(self.channels(out_channels), kernel_size, stride=stride, padding=padding,
                         device=device, dtype=dtype)


def materialize(module: nn.Module, in_chans: int, size: int,
                forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Run ``module`` (or ``forward``, a method of it) once on zeros ``(1, in_chans, size, size)``.

    This fixes the input width of every lazy layer on the way. Eval mode and ``no_grad``: BatchNorm running statistics stay untouched and no random numbers
    are drawn by the input, so construction stays deterministic under a fixed seed. Returns the
    output (its shape tells the caller the feature width). Works on the meta device too.
    """
    was_training = module.training
    module.eval()
    with torch.no_grad():
        out = (forward or module)(torch.zeros(1, in_chans, size, size))
    module.train(was_training)
    return out


def init_weights(module: nn.Module) -> None:
    """Our initialisation for all Inception variants (timm's V3 and V4 differ from each other).

    Convs: Kaiming normal (fan-out, ReLU) — scale-aware, so it suits every width; BatchNorm: 1, 0;
    Linear: N(0, 0.01²), bias 0, so initial logits are near zero.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_common_args(model: str, num_classes: Any, in_chans: Any, width: Any, drop_rate: Any,
                      channel_divisor: Any) -> None:
    """Raise :class:`ConfigError` naming the argument if a shared constructor argument is invalid."""
    if not _is_int(num_classes) or num_classes < 1:
        raise ConfigError(f"model {model!r}: num_classes must be an integer >= 1, got {num_classes!r}")
    if not _is_int(in_chans) or in_chans < 1:
        raise ConfigError(f"model {model!r}: in_chans must be an integer >= 1 (1 grayscale, 3 colour), "
                          f"got {in_chans!r}")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not (width > 0 and math.isfinite(width)):
        raise ConfigError(f"model {model!r}: width must be a number > 0 (1.0 = paper width), got {width!r}")
    if isinstance(drop_rate, bool) or not isinstance(drop_rate, (int, float)) or not 0 <= drop_rate < 1:
        raise ConfigError(f"model {model!r}: drop_rate must be in [0, 1), got {drop_rate!r}")
    if not _is_int(channel_divisor) or channel_divisor < 1:
        raise ConfigError(f"model {model!r}: channel_divisor must be an integer >= 1, got {channel_divisor!r}")


def check_triple(model: str, key: str, value: Any, kind: type, minimum: float, strict: bool) -> tuple[Any, ...]:
    """Validate a 3-element per-stage setting (``stage_widths``, ``blocks``) and return it as a tuple."""
    bound = f"> {minimum}" if strict else f">= {minimum}"
    noun = "integers" if kind is int else "numbers"
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 3
    if ok:
        for v in value:
            good_type = _is_int(v) if kind is int else isinstance(v, (int, float)) and not isinstance(v, bool)
            if not good_type or not math.isfinite(v) or (v <= minimum if strict else v < minimum):
                ok = False
    if not ok:
        raise ConfigError(f"model {model!r}: {key} must be 3 {noun} {bound} (one per stage A, B, C), "
                          f"got {value!r}")
    return tuple(kind(v) for v in value)
