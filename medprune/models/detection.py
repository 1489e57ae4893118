"""torchvision's Faster R-CNN for plaque detection: ``faster_rcnn``, six anchor sizes, two layouts.

Li et al. (MATEC 2019) detect IVOCT plaques with Faster R-CNN and six anchor scales, 12², 16²,
32², 64², 128² and 256² px: small plaques are the reason for the 12 and 16 px anchors. torchvision's
RPN head is shared by every feature map, so every map must carry the same number of anchors;
``layout`` picks one of the two ways to fit six sizes (DESIGN.md §5):

* ``one_map`` — all six sizes (× ``aspect_ratios``) on one feature map: the finest FPN output
  (stride 4, so the 12 px anchors are still three cells apart) — the paper's single-map detector;
* ``fpn6`` — a six-level FPN (strides 4 … 128: the backbone's four stages plus two max-pooled
  levels), one size per level, as torchvision's own FPN detectors place theirs.

The detector is torchvision's (:class:`torchvision.models.detection.FasterRCNN`: RPN, RoI
heads, losses, box coding and NMS are not re-implemented). Around it, :class:`PlaqueDetector`
makes it a model like every other medprune model:

* it takes a batch **tensor** ``(N, C, H, W)`` already normalised by the data layer, and does not
  resize it (resizing is ``data.image_size``'s job, so boxes stay in the frame's pixels and the
  exported ONNX model sees the frames the data set produced);
* in train mode ``model(images, targets)`` returns torchvision's loss dictionary; ``targets`` is
  the padded tensor the detection data set yields, ``(N, M, 5)`` rows ``[label, x0, y0, x1, y1]``
  with label ``-1`` for padding (frames without plaque have only padding: empty targets are valid);
* in eval mode ``model(images)`` returns a tensor ``(N, max_detections, 6)``, rows
  ``[x0, y0, x1, y1, score, label]`` sorted by score, zero rows after the last detection — one
  tensor, so evaluation, pruning calibration and ONNX export treat it like any other output.

Backbones (``backbone``):

* ``resnet50`` — torchvision's ResNet-50 + FPN (256 channels × ``width``) for GPUs: the stock
  ``fasterrcnn_resnet50_fpn`` architecture, built without weights (BatchNorm, not frozen);
* any timm model name (e.g. ``resnet18``) with ``features_only=True``: the small CPU backbone.
  For timm ResNets ``width`` scales every stage's channels (``channels``) and the stem — which,
  below width 1, is ResNet-D's deep stem (three 3×3 convs; timm keeps its plain 7×7 stem at 64
  channels whatever ``stem_width`` says) — so ``resnet18`` at ``width: 0.25`` (stem 16, stages
  16 … 128 channels) trains on 2 CPU cores.

``pretrained=True`` loads ImageNet weights for the backbone (timm or torchvision download them;
off by default, and the tests never use it).

Example::

    model = create_model("faster_rcnn", num_classes=2, in_chans=1, backbone="resnet18", width=0.25)
    model.eval()(torch.randn(2, 1, 96, 192)).shape          # (2, 100, 6)
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Literal, Sequence

import torch
from torch import nn

from medprune.errors import ConfigError
from medprune.models._registry import register_model

__all__ = ["PlaqueDetector", "ANCHOR_SIZES", "LAYOUTS", "targets_to_list", "detections_to_tensor"]

#: Li et al.'s six anchor sizes (px).
ANCHOR_SIZES: tuple[int, ...] = (12, 16, 32, 64, 128, 256)
#: How the anchor sizes are spread over feature maps.
LAYOUTS: tuple[str, ...] = ("one_map", "fpn6")
#: Backbone strides: stages 1-4 of a ResNet are strides 4 … 32; fpn6 adds two pooled levels.
_STAGES = 4


def _pooled_levels(extra: int) -> nn.Module:
    """A torchvision ``ExtraFPNBlock`` adding ``extra`` levels, each a stride-2 max-pool of the last one."""
    from torchvision.ops.feature_pyramid_network import ExtraFPNBlock

    class _PooledLevels(ExtraFPNBlock):
        def forward(self, results: list[torch.Tensor], x: list[torch.Tensor], names: list[str],
                    ) -> tuple[list[torch.Tensor], list[str]]:
            for k in range(extra):
                results.append(nn.functional.max_pool2d(results[-1], 1, 2, 0))
                names.append(f"pool{k}")
            return results, names

    return _PooledLevels()


class _TimmBody(nn.Module):
    """A timm ``features_only`` model returning its last four stages as an ordered dict."""

    def __init__(self, name: str, in_chans: int, width: float, pretrained: bool) -> None:
        super().__init__()
        import timm

        kwargs: dict[str, Any] = {}
        if width != 1.0:
            if not name.startswith("resnet"):
                raise ConfigError(f"model.kwargs.width: {width} scales timm ResNet backbones only; "
                                  f"'{name}' has its own width in its name (e.g. mobilenetv3_small_050)")
            # timm sizes only the deep stem by stem_width (its plain 7x7 stem keeps 64 channels whatever
            # is asked): at a width multiplier the stem is ResNet-D's three 3x3 convs, 64 x width wide
            kwargs = {"channels": tuple(max(4, int(round(c * width))) for c in (64, 128, 256, 512)),
                      "stem_type": "deep", "stem_width": max(2, int(round(32 * width)))}
        try:
            self.body = timm.create_model(name, features_only=True, pretrained=pretrained, in_chans=in_chans,
                                          **kwargs)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ConfigError(f"model.kwargs.backbone: timm cannot build '{name}' as a feature extractor ({exc})") from None
        n = len(self.body.feature_info.channels())
        if n < _STAGES:
            raise ConfigError(f"model.kwargs.backbone: '{name}' gives {n} feature stages; the detector needs {_STAGES}")
        self.indices = list(range(n - _STAGES, n))
        self.channels = [self.body.feature_info.channels()[i] for i in self.indices]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body(x)
        return OrderedDict((str(k), feats[i]) for k, i in enumerate(self.indices))


class _ResNet50Body(nn.Module):
    """torchvision's ResNet-50 (no weights unless asked) returning stages 1-4 as an ordered dict."""

    def __init__(self, in_chans: int, pretrained: bool) -> None:
        super().__init__()
        from torchvision.models import ResNet50_Weights, resnet50
        from torchvision.models._utils import IntermediateLayerGetter

        net = resnet50(weights=ResNet50_Weights.DEFAULT if pretrained else None)
        if in_chans != 3:
            old = net.conv1
            net.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
            if pretrained:  # grey input: the summed RGB filters see the same edges
                with torch.no_grad():
                    net.conv1.weight.copy_(old.weight.sum(dim=1, keepdim=True).repeat(1, in_chans, 1, 1) / in_chans)
        self.body = IntermediateLayerGetter(net, {f"layer{k + 1}": str(k) for k in range(_STAGES)})
        self.channels = [256, 512, 1024, 2048]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.body(x)


class _Backbone(nn.Module):
    """Body + torchvision ``FeaturePyramidNetwork``; ``out_channels`` as torchvision's detectors expect."""

    def __init__(self, body: nn.Module, out_channels: int, layout: str) -> None:
        super().__init__()
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork

        self.body = body
        self.out_channels = out_channels
        self.layout = layout
        extra = _pooled_levels(2) if layout == "fpn6" else None
        self.fpn = FeaturePyramidNetwork(list(body.channels), out_channels, extra_blocks=extra)
        if layout == "one_map":
            # Only the finest output is used: the coarser levels' 3x3 output convs would be computed and
            # thrown away, and — unreached by any output — left unpruned while their inputs are pruned.
            for k in range(1, len(self.fpn.layer_blocks)):
                self.fpn.layer_blocks[k] = nn.Identity()

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        levels = self.fpn(self.body(x))
        if self.layout == "one_map":
            return OrderedDict([("0", levels["0"])])
        return levels

    def level_names(self) -> list[str]:
        return ["0"] if self.layout == "one_map" else [str(k) for k in range(_STAGES)] + ["pool0", "pool1"]


def _identity_transform(size_divisible: int) -> nn.Module:
    """torchvision's ``GeneralizedRCNNTransform`` without its resize and normalisation (the data layer did both)."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    class _NoResize(GeneralizedRCNNTransform):
        def resize(self, image: torch.Tensor, target: Any = None) -> tuple[torch.Tensor, Any]:
            return image, target

        def normalize(self, image: torch.Tensor) -> torch.Tensor:
            return image

        def postprocess(self, result: Any, image_shapes: Any, original_image_sizes: Any) -> Any:
            return result  # no resize: boxes are already in the input's pixels

    return _NoResize(min_size=1, max_size=1, image_mean=[0.0], image_std=[1.0], size_divisible=size_divisible)


def targets_to_list(targets: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Padded targets ``(N, M, 5)`` (``[label, x0, y0, x1, y1]``, label ``-1`` = padding) → torchvision's list of dicts."""
    out = []
    for t in targets:
        keep = t[:, 0] >= 0
        out.append({"boxes": t[keep, 1:5].float(), "labels": t[keep, 0].long()})
    return out


def detections_to_tensor(detections: Sequence[dict[str, torch.Tensor]], k: int) -> torch.Tensor:
    """torchvision's detections → ``(N, k, 6)`` rows ``[x0, y0, x1, y1, score, label]``, zero-padded."""
    rows = []
    for d in detections:
        r = torch.cat([d["boxes"], d["scores"][:, None], d["labels"][:, None].to(d["boxes"].dtype)], dim=1)[:k]
        pad = r.new_zeros((k - r.shape[0], 6))
        rows.append(torch.cat([r, pad], dim=0))
    return torch.stack(rows)


class PlaqueDetector(nn.Module):
    """torchvision Faster R-CNN on tensors: losses in train mode, a padded detection tensor in eval mode.

    ``detector`` is the torchvision model; see the module docstring for inputs and outputs.
    """

    #: The ONNX graph takes this many frames: traced, torchvision's list-of-images interface unrolls
    #: the batch, so the export is for one frame at a time (the export reads this, not the class name).
    export_batch = 1
    #: How many proposals survive NMS depends on the image: MACs are counted on a real (seeded) input.
    data_dependent_shapes = True

    def __init__(self, detector: nn.Module, max_detections: int) -> None:
        super().__init__()
        self.detector = detector
        self.max_detections = int(max_detections)

    def trace_forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Train-mode forward with one synthetic box per image (the middle half of the frame), so the
        losses reach the RPN behind the FPN and the RoI heads: what pruning traces and self-checks."""
        self.train()
        images = images if images.shape[0] > 1 else torch.cat([images, images])  # BatchNorm needs two
        h, w = images.shape[-2:]
        targets = images.new_tensor([[1.0, 0.25 * w, 0.25 * h, 0.75 * w, 0.75 * h]]).expand(images.shape[0], 1, 5)
        return self(images, targets)

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> Any:
        if self.training:
            if targets is None:
                raise ValueError("PlaqueDetector in train mode needs targets (N, M, 5); call model.eval() to detect")
            return self.detector(list(images), targets_to_list(targets))
        return detections_to_tensor(self.detector(list(images)), self.max_detections)


def _check_arguments(kwargs: dict[str, Any]) -> None:
    """Refuse arguments the detector cannot be built with — at config load (the registry's ``check``),
    before a two-stage run spends minutes on stage 1, and again when it is built."""
    layout, anchor_sizes, width = kwargs["layout"], kwargs["anchor_sizes"], kwargs["width"]
    drop_rate, num_classes = kwargs["drop_rate"], kwargs["num_classes"]
    if layout not in LAYOUTS:
        raise ConfigError(f"model.kwargs.layout: must be one of {list(LAYOUTS)}, got {layout!r}")
    sizes = [int(s) for s in anchor_sizes]
    if not sizes or any(s <= 0 for s in sizes):
        raise ConfigError(f"model.kwargs.anchor_sizes: positive pixel sizes, got {list(anchor_sizes)}")
    levels = _STAGES + 2 if layout == "fpn6" else 1
    if layout == "fpn6" and len(sizes) != levels:
        raise ConfigError(f"model.kwargs.anchor_sizes: layout fpn6 puts one size on each of its {levels} levels; "
                          f"got {len(sizes)} sizes (use layout one_map for any number)")
    if not 0 < width <= 4:
        raise ConfigError(f"model.kwargs.width: must be in (0, 4], got {width}")
    if width != 1.0 and not str(kwargs["backbone"]).startswith("resnet"):
        raise ConfigError(f"model.kwargs.width: {width} scales ResNet backbones only; '{kwargs['backbone']}' has its "
                          "own width in its name (e.g. mobilenetv3_small_050)")
    if drop_rate:
        raise ConfigError(f"model.kwargs.drop_rate: Faster R-CNN has no dropout; got {drop_rate}")
    if num_classes < 2:
        raise ConfigError(f"model: num_classes counts the background and must be >= 2, got {num_classes}")


def _min_size(kwargs: dict[str, Any]) -> tuple[int, int]:
    # four stride-2 stages and (fpn6) two more pooled levels; 32 px keeps the coarsest stage at 1 cell
    return (32, 32)


@register_model("faster_rcnn", min_input_size=_min_size, task="detection", check=_check_arguments)
def faster_rcnn(num_classes: int = 2, in_chans: int = 1, width: float = 1.0, pretrained: bool = False,
                drop_rate: float = 0.0, backbone: str = "resnet50", layout: Literal["one_map", "fpn6"] = "one_map",
                anchor_sizes: Sequence[int] = ANCHOR_SIZES, aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                fpn_channels: int = 256, representation_size: int = 1024, max_detections: int = 100,
                score_thresh: float = 0.05, nms_thresh: float = 0.5, rpn_pre_nms_top_n: int = 1000,
                rpn_post_nms_top_n: int = 1000, rpn_batch_size_per_image: int = 256,
                box_batch_size_per_image: int = 512) -> nn.Module:
    """torchvision Faster R-CNN with Li et al.'s six anchor sizes (see the module docstring).

    ``num_classes`` counts the background (``data.classes: [background, plaque]`` → 2);
    ``fpn_channels`` and ``representation_size`` (the box head's MLP) are scaled by ``width``;
    ``rpn_*_top_n`` are the proposals kept per image before/after NMS (train and test alike);
    ``max_detections`` is the length of the eval output.
    """
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    _check_arguments(locals())
    sizes = [int(s) for s in anchor_sizes]
    levels = _STAGES + 2 if layout == "fpn6" else 1
    if backbone == "resnet50":
        body: nn.Module = _ResNet50Body(in_chans, pretrained)
    else:
        body = _TimmBody(backbone, in_chans, width, pretrained)
    channels = max(8, int(round(fpn_channels * width)))
    net = _Backbone(body, channels, layout)
    ratios = tuple(float(r) for r in aspect_ratios)
    if layout == "one_map":
        anchors = AnchorGenerator((tuple(sizes),), (ratios,))
    else:
        anchors = AnchorGenerator(tuple((s,) for s in sizes), (ratios,) * levels)
    pool = MultiScaleRoIAlign(featmap_names=net.level_names(), output_size=7, sampling_ratio=2)
    detector = FasterRCNN(
        net, num_classes=num_classes, rpn_anchor_generator=anchors, box_roi_pool=pool,
        rpn_pre_nms_top_n_train=rpn_pre_nms_top_n, rpn_pre_nms_top_n_test=rpn_pre_nms_top_n,
        rpn_post_nms_top_n_train=rpn_post_nms_top_n, rpn_post_nms_top_n_test=rpn_post_nms_top_n,
        rpn_batch_size_per_image=rpn_batch_size_per_image, box_batch_size_per_image=box_batch_size_per_image,
        box_detections_per_img=max_detections, box_score_thresh=score_thresh, box_nms_thresh=nms_thresh)
    rep = max(16, int(round(representation_size * width)))
    if rep != 1024:
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

        detector.roi_heads.box_head = TwoMLPHead(channels * 7 * 7, rep)
        detector.roi_heads.box_predictor = FastRCNNPredictor(rep, num_classes)
    detector.transform = _identity_transform(32)
    model = PlaqueDetector(detector, max_detections)
    model.default_input_size = (in_chans, 256, 512)
    model.min_input_size = (in_chans, *_min_size({}))
    model.input_multiple = 1  # torchvision's transform pads to a multiple of 32 at the bottom/right; boxes keep their place
    return model
