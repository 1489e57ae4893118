"""MONAI's 2-D U-Nets for segmentation: ``basic_unet`` and ``unet``.

Both are MONAI's own classes (``monai.networks.nets.BasicUNet`` / ``UNet``), built 2-D with
``in_chans`` input channels and ``num_classes`` output channels; they return logits
``(N, num_classes, H, W)`` at the input's ``H, W``. MONAI is imported inside the constructors, so
importing :mod:`medprune.models` (and validating a config) stays light.

* ``basic_unet`` — ``BasicUNet`` with MONAI's defaults: features ``(32, 32, 64, 128, 256, 32) × width``,
  two 3×3 conv → InstanceNorm(affine) → Dropout → LeakyReLU(0.1, in place) per level, 2×2 max-pool
  down, transposed-conv up, skips concatenated. Any size from 32 px works, odd ones too: MONAI
  pads an upsampled map by one replicated row/column where an odd size was halved.
* ``unet`` — ``UNet`` with channels ``(16, 32, 64, 128, 256) × width``, strides ``(2, 2, 2, 2)`` and
  ``num_res_units`` residual units per level (default 2): stride-2 3×3 convolutions down, stride-2
  transposed convolutions up, residual additions inside the units and concatenated skips. A
  stride-2 convolution gives ⌈n/2⌉ rows and the transposed one exactly twice its input, so a skip
  only lines up when every level halves evenly: ``H`` and ``W`` must be multiples of 16
  (``input_multiple``; the config refuses others, naming ``data.image_size``). Other sizes either
  fail or — 31 px, say — silently return logits of another size (32 px).

Smallest input: 32 × 32 for both. Four halvings leave 1/16 of each side at the bottom level, and
InstanceNorm needs more than one value per channel to normalise (``ValueError`` on a 1 × 1 map,
in eval mode too, since it never uses running statistics): 16 × 32 still runs, 16 × 16 or
31 × 31 does not, so the per-side minimum is 32.

Two deviations from MONAI's ``UNet`` defaults, both so that every registered criterion and the
pruning engine apply (they are not options — the defaults would not prune):

* **InstanceNorm with affine parameters** (MONAI's ``Norm.INSTANCE`` has none; nnU-Net's and
  ``BasicUNet``'s have them). The per-channel scale γ is what ``bn_scale``, ``bn_expectation`` and
  ``taylor`` read for a normalisation layer; a norm without it gives them nothing to score.
* **Channel-wise PReLU** (one slope per channel, He et al. 2015's form) instead of one slope shared
  by the whole layer. Torch-Pruning 1.6.1 on torch 2.x sees a shared PReLU's weight through a
  reshape node and cannot tell the channel count of the concatenated skips: ``build_dependency``
  crashes (``TypeError: unsupported operand ... 'int' and 'NoneType'``, as for DESIGN.md §4 gap 1).
  Every slope starts at MONAI's 0.25, so a freshly built model computes the same function as
  MONAI's; the slopes are pruned with their channels.

Neither model has pretrained weights (``pretrained=True`` raises :class:`~medprune.errors.ConfigError`).
Example::

    model = create_model("unet", num_classes=3, in_chans=1, width=0.5)
    model(torch.randn(2, 1, 64, 64)).shape      # (2, 3, 64, 64)
"""

from __future__ import annotations

from torch import nn

from medprune.errors import ConfigError
from medprune.models._registry import register_model
from medprune.models._width import check_common_args, scale_channels

__all__ = ["basic_unet", "unet", "BASIC_UNET_FEATURES", "UNET_CHANNELS"]

#: MONAI ``BasicUNet``'s default features: five encoder levels, then the width after the last upsampling.
BASIC_UNET_FEATURES = (32, 32, 64, 128, 256, 32)
#: ``UNet`` channels per level (MONAI's tutorial setting); each level but the last halves H and W.
UNET_CHANNELS = (16, 32, 64, 128, 256)

_DEFAULT_SIZE = 256
_MIN_SIZE = 32  # four halvings leave 2 × 2 for the bottom InstanceNorm (1 × 1 cannot be normalised)
_UNET_MULTIPLE = 2 ** (len(UNET_CHANNELS) - 1)


def _no_pretrained(model: str, pretrained: bool) -> None:
    if pretrained:
        raise ConfigError(f"model {model!r}: no pretrained weights exist (MONAI ships none for it); "
                          "set pretrained: false")


def _stamp(model: nn.Module, in_chans: int, multiple: int) -> nn.Module:
    model.default_input_size = (in_chans, _DEFAULT_SIZE, _DEFAULT_SIZE)
    model.min_input_size = (in_chans, _MIN_SIZE, _MIN_SIZE)
    model.input_multiple = multiple
    return model


@register_model("basic_unet", min_input_size=(_MIN_SIZE, _MIN_SIZE), task="segmentation")
def basic_unet(num_classes: int = 2, in_chans: int = 3, width: float = 1.0, pretrained: bool = False,
               drop_rate: float = 0.0, channel_divisor: int = 1) -> nn.Module:
    """MONAI ``BasicUNet`` (2-D; 1.98 M parameters at width 1 with 1 input channel and 2 classes).

    ``drop_rate`` is the dropout after every normalisation. Widths are MONAI's default features
    ``(32, 32, 64, 128, 256, 32)`` scaled by ``width`` and rounded to ``channel_divisor``.
    """
    check_common_args("basic_unet", num_classes, in_chans, width, drop_rate, channel_divisor)
    _no_pretrained("basic_unet", pretrained)
    features = tuple(scale_channels(c, width, channel_divisor) for c in BASIC_UNET_FEATURES)
    if min(features[2:5]) < 2:  # each upsampling halves its input width: one channel would leave none
        raise ConfigError(f"model 'basic_unet': width {width} leaves {min(features[2:5])} channel(s) in a decoder "
                          f"level (features {list(features)}); every level from the third needs at least 2, "
                          f"so use width >= {2 / 64:g}")
    from monai.networks.nets import BasicUNet

    model = BasicUNet(spatial_dims=2, in_channels=in_chans, out_channels=num_classes, features=features,
                      dropout=float(drop_rate))
    return _stamp(model, in_chans, 1)


def _channelwise_prelu(model: nn.Module) -> None:
    """Give every shared-slope PReLU of MONAI's ``Convolution`` blocks one slope per channel (same start)."""
    from monai.networks.blocks import Convolution

    for block in model.modules():
        act = getattr(getattr(block, "adn", None), "A", None)
        if isinstance(block, Convolution) and isinstance(act, nn.PReLU) and act.num_parameters == 1:
            slope = float(act.weight.detach().reshape(-1)[0])
            block.adn.A = nn.PReLU(block.out_channels, init=slope).to(act.weight.device, act.weight.dtype)


@register_model("unet", min_input_size=(_MIN_SIZE, _MIN_SIZE), input_multiple=_UNET_MULTIPLE,
                task="segmentation")
def unet(num_classes: int = 2, in_chans: int = 3, width: float = 1.0, pretrained: bool = False,
         drop_rate: float = 0.0, channel_divisor: int = 1, num_res_units: int = 2) -> nn.Module:
    """MONAI ``UNet`` (2-D, residual units; 1.63 M parameters at width 1 with 1 input channel and 2 classes).

    Channels ``(16, 32, 64, 128, 256) × width``, strides ``(2, 2, 2, 2)``, ``num_res_units`` residual
    units per level (0: plain convolutions), affine InstanceNorm and channel-wise PReLU (see the
    module docstring), dropout ``drop_rate`` after every normalisation. ``H`` and ``W`` must be
    multiples of 16.
    """
    check_common_args("unet", num_classes, in_chans, width, drop_rate, channel_divisor)
    if isinstance(num_res_units, bool) or not isinstance(num_res_units, int) or num_res_units < 0:
        raise ConfigError(f"model 'unet': num_res_units must be an integer >= 0 (MONAI's default for this model: 2), "
                          f"got {num_res_units!r}")
    _no_pretrained("unet", pretrained)
    from monai.networks.nets import UNet

    channels = tuple(scale_channels(c, width, channel_divisor) for c in UNET_CHANNELS)
    model = UNet(spatial_dims=2, in_channels=in_chans, out_channels=num_classes, channels=channels,
                 strides=(2,) * (len(channels) - 1), num_res_units=num_res_units,
                 norm=("instance", {"affine": True}), dropout=float(drop_rate))
    _channelwise_prelu(model)
    return _stamp(model, in_chans, _UNET_MULTIPLE)
