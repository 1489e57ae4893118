"""CIFAR-style residual networks for the block-pruning experiments (BPCP, SFP, Beta-Rank).

Two registered models, both for 32-px inputs and three stages of residual blocks:

* ``resnet56_cifar`` — He et al. (CVPR 2016) ResNet-56: conv 3×3 (16) → BN → ReLU, three stages of
  9 basic blocks (16, 32, 64 channels; the first block of stages 2 and 3 has stride 2), global
  average pooling, linear. 0.86 M parameters and 126 M MACs at 32 px with 10 classes. Deviation
  from the paper: a downsampling block's shortcut is a 1×1 convolution + BN ("option B"); the
  paper's CIFAR ResNets used zero-padding identity shortcuts ("option A"). Option B is what
  Torch-Pruning can prune (a parameter-free channel padding has no weights to group) and is the
  common re-implementation; it adds 2.6 k parameters and 0.26 M MACs.
* ``preresnet56_v2`` — the pre-activation bottleneck ResNet-v2 that BPCP (Huang & Wang 2020) prunes,
  layer for layer as in their released code: conv 3×3 (16), three stages of 6 bottlenecks
  (BN → ReLU → 1×1 → BN → ReLU → 3×3 (stride) → BN → ReLU → 1×1, expansion 4, so stage outputs
  64, 128, 256), a 1×1 convolution *without* BN as the shortcut of each stage's first block, a
  final BN → ReLU, global average pooling, linear. 0.59 M parameters and 87.2 M MACs at 32 px
  with 10 classes. DESIGN.md quotes 0.56 M for BPCP's network; every parameter of the
  architecture in their released code counts 0.59 M (0.58 M in convolutions alone), so that figure
  follows some other counting convention — the MACs (87 M) agree.

Block removal. Both constructors take ``keep_blocks`` (per stage, per block: build it or not) and
``blocks_per_stage``, so a block-pruned network is rebuilt from its registry name and kwargs. A
removed block is simply not built; the kept blocks keep the *index they had in the full network*
as their name (``stage2.7`` stays ``stage2.7`` after ``stage2.3`` is removed), so state-dict keys
of a shortened model equal those of the full one and weights move across by name. The first block
of a stage that changes width or stride cannot be removed (``ConfigError`` names it):
``stage2.0``/``stage3.0`` of ``resnet56_cifar`` and ``stage1.0``–``stage3.0`` of
``preresnet56_v2``. BPCP's released code gates those blocks too and keeps only their 1×1
projection when they go; we keep such blocks whole. Every stage of ``resnet56_cifar`` except the
first keeps at least that block; stage 1 may lose all nine (the stem then feeds stage 2).

Gates. Every residual block computes ``out = F(x) + shortcut(x)`` (post-activation blocks then
apply their ReLU). Setting ``block.gate`` to a scalar tensor makes it ``gate · F(x) + shortcut(x)``;
:mod:`medprune.compress.bpcp` sets it while it learns which blocks to drop. With ``gate = None`` (the
default) the forward is the plain network, so tracing and export see no gate.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from medprune.errors import ConfigError
from medprune.models._registry import register_model
from medprune.models._width import check_common_args, init_weights, scale_channels

__all__ = ["BasicBlock", "PreActBottleneck", "CifarResNet", "PreActResNet", "resnet56_cifar", "preresnet56_v2"]

STAGES = 3


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Post-activation basic block: ``relu(gate · bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    The shortcut is the identity, or a strided 1×1 conv + BN where width or stride change.
    ``gate`` (``None`` or a scalar tensor) scales the residual branch; see the module docstring.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = nn.ReLU()
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        self.act2 = nn.ReLU()
        self.gate: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        if self.gate is not None:
            out = self.gate * out
        return self.act2(out + self.shortcut(x))


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck: ``gate · conv3(relu(bn3(conv2(relu(bn2(conv1(relu(bn1(x))))))))) + shortcut(x)``.

    ``conv2`` (3×3) carries the stride; the shortcut is the identity, or a strided 1×1 conv (no BN,
    as in BPCP's ResNet-v2) where width or stride change.
    """

    def __init__(self, cin: int, mid: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.act1 = nn.ReLU()
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.act2 = nn.ReLU()
        self.conv2 = _conv3x3(mid, mid, stride)
        self.bn3 = nn.BatchNorm2d(mid)
        self.act3 = nn.ReLU()
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
        self.gate: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.act1(self.bn1(x)))
        out = self.conv2(self.act2(self.bn2(out)))
        out = self.conv3(self.act3(self.bn3(out)))
        if self.gate is not None:
            out = self.gate * out
        return out + self.shortcut(x)


def _is_flag(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, int) and value in (0, 1))


def _check_blocks(model: str, blocks_per_stage: Any, keep_blocks: Any,
                  fixed: set[tuple[int, int]]) -> list[list[bool]]:
    """Validate ``blocks_per_stage`` and ``keep_blocks``; return the full keep mask (3 × n booleans)."""
    if isinstance(blocks_per_stage, bool) or not isinstance(blocks_per_stage, int) or blocks_per_stage < 1:
        raise ConfigError(f"model {model!r}: blocks_per_stage must be an integer >= 1, got {blocks_per_stage!r}")
    n = blocks_per_stage
    if keep_blocks is None:
        return [[True] * n for _ in range(STAGES)]
    ok = (isinstance(keep_blocks, Sequence) and not isinstance(keep_blocks, str) and len(keep_blocks) == STAGES
          and all(isinstance(s, Sequence) and not isinstance(s, str) and len(s) == n and all(map(_is_flag, s))
                  for s in keep_blocks))
    if not ok:
        raise ConfigError(f"model {model!r}: keep_blocks must be {STAGES} lists of {n} booleans (one list per "
                          f"stage, one flag per block; blocks_per_stage={n}), got {keep_blocks!r}")
    mask = [[bool(flag) for flag in stage] for stage in keep_blocks]
    for s, i in sorted(fixed):
        if not mask[s][i]:
            raise ConfigError(f"model {model!r}: keep_blocks[{s}][{i}] removes block stage{s + 1}.{i}, which "
                              "changes the width or stride of its stage and cannot be removed; set it to true")
    return mask


class _ResidualNet(nn.Module):
    """Shared bookkeeping: stages named ``stage1..3`` holding blocks named by their full-network index."""

    registry_name = ""
    #: The attribute holding the final linear layer (as the Inception models' ``classifier_name``).
    classifier_name = "fc"
    stage1: nn.Sequential
    stage2: nn.Sequential
    stage3: nn.Sequential

    def _init_common(self, in_chans: int, keep_blocks: list[list[bool]], fixed: set[tuple[int, int]]) -> None:
        self.keep_blocks = keep_blocks
        self.fixed_blocks = frozenset(fixed)
        self.default_input_size = (in_chans, 32, 32)
        # 3×3 convs are padded and strides round up, so even a 1×1 image runs (and a 0×0 one cannot)
        self.min_input_size = (in_chans, 1, 1)

    @staticmethod
    def _stage(blocks: Iterable[tuple[int, nn.Module]]) -> nn.Sequential:
        return nn.Sequential(OrderedDict((str(i), block) for i, block in blocks))

    def _build_stages(self, cin: int, outs: Sequence[int], mask: list[list[bool]],
                      make_block: Callable[[int, int, int, int], nn.Module]) -> int:
        """Create ``stage1..3`` from the kept blocks of ``mask``; returns the last stage's width.

        ``make_block(stage, in_channels, out_channels, stride)``; the first block of stages 2–3
        downsamples (stride 2).
        """
        for s, cout in enumerate(outs):
            blocks = []
            for i, keep in enumerate(mask[s]):
                if keep:
                    blocks.append((i, make_block(s, cin if i == 0 else cout, cout, 2 if (i == 0 and s > 0) else 1)))
            setattr(self, f"stage{s + 1}", self._stage(blocks))
            cin = cout
        return cin

    def stages(self) -> list[nn.Sequential]:
        """The three stages, in order."""
        return [self.stage1, self.stage2, self.stage3]

    def residual_blocks(self) -> list[tuple[str, nn.Module]]:
        """``(qualified name, block)`` of every block that may be removed, in forward order.

        Shape-changing first blocks are left out: they always stay.
        """
        return [(f"stage{s + 1}.{name}", block) for s, stage in enumerate(self.stages())
                for name, block in stage.named_children() if (s, int(name)) not in self.fixed_blocks]

    def keep_blocks_without(self, removed: Iterable[str]) -> list[list[bool]]:
        """This model's ``keep_blocks`` mask with the blocks named in ``removed`` set to ``False`` as well.

        ``create_model(name, **{**kwargs, "keep_blocks": mask})`` then builds the shortened network.
        """
        removable = dict(self.residual_blocks())
        mask = [list(stage) for stage in self.keep_blocks]
        for name in removed:
            if name not in removable:
                raise ConfigError(f"{type(self).__name__}: {name!r} is not a removable residual block; "
                                  f"removable: {', '.join(removable) or '(none)'}")
            stage, index = name.removeprefix("stage").split(".")
            mask[int(stage) - 1][int(index)] = False
        return mask

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, drop out and classify the final feature map; ``pre_logits`` stops before the linear."""
        x = self.head_drop(torch.flatten(self.global_pool(x), 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class CifarResNet(_ResidualNet):
    """He et al.'s CIFAR ResNet (6n + 2 layers) with basic blocks and 1×1-conv projection shortcuts."""

    registry_name = "resnet56_cifar"

    def __init__(self, num_classes: int = 10, in_chans: int = 3, widths: Sequence[int] = (16, 16, 32, 64),
                 blocks_per_stage: int = 9, keep_blocks: list[list[bool]] | None = None,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        stem, *stage_widths = widths
        fixed = {(s, 0) for s in range(STAGES)
                 if s > 0 or stage_widths[0] != stem}  # stride 2 at stages 2 and 3; a width change anywhere
        mask = _check_blocks(self.registry_name, blocks_per_stage, keep_blocks, fixed)
        self.conv1 = _conv3x3(in_chans, stem)
        self.bn1 = nn.BatchNorm2d(stem)
        self.act = nn.ReLU()
        cin = self._build_stages(stem, stage_widths, mask,
                                 lambda s, block_in, cout, stride: BasicBlock(block_in, cout, stride=stride))
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(cin, num_classes)
        self.num_features = cin
        self._init_common(in_chans, mask, fixed)
        init_weights(self)

    def stage_modules(self) -> dict[str, list[str]]:
        """Stage name → child modules, for :func:`medprune.models.stage_cost_table`."""
        return {"stem": ["conv1", "bn1", "act"], "stage1": ["stage1"], "stage2": ["stage2"], "stage3": ["stage3"]}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps before pooling."""
        x = self.act(self.bn1(self.conv1(x)))
        return self.stage3(self.stage2(self.stage1(x)))


class PreActResNet(_ResidualNet):
    """Pre-activation bottleneck ResNet-v2 (9n + 2 layers) as pruned by BPCP."""

    registry_name = "preresnet56_v2"
    expansion = 4

    def __init__(self, num_classes: int = 10, in_chans: int = 3, stem: int = 16,
                 mids: Sequence[int] = (16, 32, 64), outs: Sequence[int] = (64, 128, 256),
                 blocks_per_stage: int = 6, keep_blocks: list[list[bool]] | None = None,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        fixed = {(s, 0) for s in range(STAGES) if s > 0 or outs[0] != stem}
        mask = _check_blocks(self.registry_name, blocks_per_stage, keep_blocks, fixed)
        self.conv1 = _conv3x3(in_chans, stem)
        cin = self._build_stages(
            stem, outs, mask,
            lambda s, block_in, cout, stride: PreActBottleneck(block_in, mids[s], cout, stride=stride))
        self.norm = nn.BatchNorm2d(cin)
        self.act = nn.ReLU()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(cin, num_classes)
        self.num_features = cin
        self._init_common(in_chans, mask, fixed)
        init_weights(self)

    def stage_modules(self) -> dict[str, list[str]]:
        """Stage name → child modules, for :func:`medprune.models.stage_cost_table`."""
        return {"stem": ["conv1"], "stage1": ["stage1"], "stage2": ["stage2"], "stage3": ["stage3", "norm", "act"]}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps before pooling (after the final BN → ReLU)."""
        x = self.stage3(self.stage2(self.stage1(self.conv1(x))))
        return self.act(self.norm(x))


def _no_pretrained(model: str, pretrained: bool) -> None:
    if pretrained:
        raise ConfigError(f"model {model!r}: no pretrained weights exist; set pretrained: false")


@register_model("resnet56_cifar", min_input_size=(1, 1))
def resnet56_cifar(num_classes: int = 2, in_chans: int = 3, width: float = 1.0, pretrained: bool = False,
                   drop_rate: float = 0.0, channel_divisor: int = 1, blocks_per_stage: int = 9,
                   keep_blocks: list[list[bool]] | None = None) -> CifarResNet:
    """He et al.'s CIFAR ResNet-56 with projection shortcuts (0.86 M parameters, 126 M MACs at 32 px).

    ``blocks_per_stage`` gives other depths (3 → ResNet-20, 18 → ResNet-110); ``keep_blocks``
    builds a block-pruned network (see the module docstring). Example::

        model = create_model("resnet56_cifar", num_classes=10, keep_blocks=[[True] * 9, [True] * 9,
                             [True] * 8 + [False]])   # stage3.8 removed
    """
    check_common_args("resnet56_cifar", num_classes, in_chans, width, drop_rate, channel_divisor)
    _no_pretrained("resnet56_cifar", pretrained)
    widths = [scale_channels(c, width, channel_divisor) for c in (16, 16, 32, 64)]
    return CifarResNet(num_classes=num_classes, in_chans=in_chans, widths=widths, blocks_per_stage=blocks_per_stage,
                       keep_blocks=keep_blocks, drop_rate=drop_rate)


@register_model("preresnet56_v2", min_input_size=(1, 1))
def preresnet56_v2(num_classes: int = 2, in_chans: int = 3, width: float = 1.0, pretrained: bool = False,
                   drop_rate: float = 0.0, channel_divisor: int = 1, blocks_per_stage: int = 6,
                   keep_blocks: list[list[bool]] | None = None) -> PreActResNet:
    """BPCP's pre-activation bottleneck ResNet-v2-56 (0.59 M parameters, 87 M MACs at 32 px).

    ``blocks_per_stage`` gives other depths (18 → ResNet-v2-164); ``keep_blocks`` builds a
    block-pruned network (see the module docstring).
    """
    check_common_args("preresnet56_v2", num_classes, in_chans, width, drop_rate, channel_divisor)
    _no_pretrained("preresnet56_v2", pretrained)
    mids = [scale_channels(c, width, channel_divisor) for c in (16, 32, 64)]
    outs = [scale_channels(c * PreActResNet.expansion, width, channel_divisor) for c in (16, 32, 64)]
    return PreActResNet(num_classes=num_classes, in_chans=in_chans, stem=scale_channels(16, width, channel_divisor),
                        mids=mids, outs=outs, blocks_per_stage=blocks_per_stage, keep_blocks=keep_blocks,
                        drop_rate=drop_rate)
