"""``small_cnn``: a plain VGG-style baseline for quick experiments and edge devices.

Four stages of (conv 3×3 → BN → ReLU) × 2 then 2×2 max-pool, global average pooling, dropout and a
linear classifier. It is the model a clinical team tries first on a new data set (minutes on a
CPU), and the fast model of medprune's own tests. Widths are ``(32, 64, 128, 256) × width``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medprune.models._registry import register_model
from medprune.models._width import check_common_args, init_weights, scale_channels

__all__ = ["SmallCNN", "small_cnn"]


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class SmallCNN(nn.Module):
    """VGG-style stages ``widths`` (each two 3×3 convs and a 2×2 max-pool), GAP, linear head."""

    #: The attribute holding the final linear layer (as the Inception models' ``classifier_name``).
    classifier_name = "fc"

    def __init__(self, num_classes: int = 2, in_chans: int = 3, widths: Sequence[int] = (32, 64, 128, 256),
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        cin = in_chans
        for cout in widths:
            stages.append(nn.Sequential(_conv_bn_relu(cin, cout), _conv_bn_relu(cout, cout), nn.MaxPool2d(2)))
            cin = cout
        self.features = nn.Sequential(*stages)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(cin, num_classes)
        self.num_features = cin
        self.default_input_size = (in_chans, 96, 96)
        self.min_input_size = (in_chans, 2 ** len(widths), 2 ** len(widths))
        init_weights(self)

    def stage_modules(self) -> dict[str, list[str]]:
        """Stage name → child modules, for :func:`medprune.models.stage_cost_table`."""
        return {f"stage{i + 1}": [f"features.{i}"] for i in range(len(self.features))}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps before pooling."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, drop out and classify the final feature map; ``pre_logits`` stops before the linear."""
        x = self.dropout(torch.flatten(self.global_pool(x), 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("small_cnn", min_input_size=(16, 16))  # four stride-2 stages
def small_cnn(num_classes: int = 2, in_chans: int = 3, width: float = 1.0, pretrained: bool = False,
              drop_rate: float = 0.0, channel_divisor: int = 1) -> SmallCNN:
    """A small VGG-style CNN (1.2 M parameters at width 1); no pretrained weights exist."""
    check_common_args("small_cnn", num_classes, in_chans, width, drop_rate, channel_divisor)
    if pretrained:
        from medprune.errors import ConfigError

        raise ConfigError("model 'small_cnn': no pretrained weights exist; set pretrained: false")
    widths = [scale_channels(c, width, channel_divisor) for c in (32, 64, 128, 256)]
    return SmallCNN(num_classes=num_classes, in_chans=in_chans, widths=widths, drop_rate=drop_rate)
