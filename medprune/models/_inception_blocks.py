"""timm's Inception blocks, and the two V3 reductions whose max-pool we need as a module.

Kept apart from :mod:`medprune.models.inception` so that importing the model registry (to
validate a config, list the models) does not import timm and, through it, torchvision: the
models import this module when one is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["timm_v3", "timm_v4", "ReductionB", "ReductionD"]

# ``timm.models.inception_v3`` the attribute is timm's entry-point function; we want the module
timm_v3 = importlib.import_module("timm.models.inception_v3")
timm_v4 = importlib.import_module("timm.models.inception_v4")


class ReductionB(timm_v3.InceptionB):
    """timm's Inception-V3 ``InceptionB`` (``Mixed_6a``) with its 3×3/2 max-pool as a module.

    timm pools with ``F.max_pool2d`` inside ``forward``; as a module (``branch_pool``, no weights, so
    the state dict is timm's) the pool can be swapped by :func:`medprune.models.replace_pooling`.
    """

    def __init__(self, in_channels: int, conv_block: Callable[..., nn.Module]) -> None:
        super().__init__(in_channels, conv_block=conv_block)
        self.branch_pool = nn.MaxPool2d(kernel_size=3, stride=2)

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [self.branch3x3(x), branch3x3dbl, self.branch_pool(x)]


class ReductionD(timm_v3.InceptionD):
    """timm's Inception-V3 ``InceptionD`` (``Mixed_7a``) with its 3×3/2 max-pool as a module (see ReductionB)."""

    def __init__(self, in_channels: int, conv_block: Callable[..., nn.Module]) -> None:
        super().__init__(in_channels, conv_block=conv_block)
        self.branch_pool = nn.MaxPool2d(kernel_size=3, stride=2)

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return [branch3x3, branch7x7x3, self.branch_pool(x)]
