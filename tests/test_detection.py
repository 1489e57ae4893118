"""The detection pieces: Faster R-CNN with six anchor sizes, the boxes data set, the task, two stages in one model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medprune.data import DetectionDataset, ReaderOptions, build_augmentation, load_box_records, read_manifest
from medprune.data.phantom_ivoct import make_ivoct_phantom
from medprune.data.polar import polar_to_cartesian
from medprune.errors import ConfigError, DataError
from medprune.models import create_model, list_models, model_task
from medprune.models.detection import detections_to_tensor, targets_to_list
from medprune.models.two_stage import TwoStageDetector
from medprune.tasks import create_task

TINY = dict(num_classes=2, in_chans=1, backbone="resnet18", width=0.125, fpn_channels=128, representation_size=256,
            rpn_pre_nms_top_n=50, rpn_post_nms_top_n=20, box_batch_size_per_image=16, max_detections=5)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("ivoct")
    manifest = make_ivoct_phantom(root, patients=4, frames=4, size=(48, 96), seed=0)
    return manifest, read_manifest(manifest), load_box_records(root / "boxes.json")


def _targets() -> torch.Tensor:
    t = torch.full((2, 3, 5), -1.0)
    t[0, 0] = torch.tensor([1.0, 10, 8, 30, 20])
    t[0, 1] = torch.tensor([1.0, 60, 5, 64, 12])  # a 4 px-wide plaque: the 12 px anchors' business
    return t  # frame 1 has no plaque: an empty target


@pytest.mark.parametrize("layout, per_location", [("one_map", [18]), ("fpn6", [3] * 6)])
def test_faster_rcnn_layouts_place_six_anchor_sizes(layout, per_location) -> None:
    torch.manual_seed(0)
    model = create_model("faster_rcnn", layout=layout, **TINY)
    assert model_task("faster_rcnn") == "detection" and "faster_rcnn" in list_models("detection")
    gen = model.detector.rpn.anchor_generator
    assert gen.num_anchors_per_location() == per_location
    assert sorted({s for level in gen.sizes for s in level}) == [12, 16, 32, 64, 128, 256]
    model.train()
    losses = model(torch.randn(2, 1, 64, 128), _targets())
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.detector.backbone.fpn.layer_blocks[0][0].weight.grad is not None
    model.eval()
    out = model(torch.randn(3, 1, 64, 128))
    assert out.shape == (3, 5, 6)
    scores = out[..., 4]
    assert torch.all(scores[:, :-1] >= scores[:, 1:])  # sorted by score, zero rows last


def test_faster_rcnn_refuses_bad_layouts_and_trains_only_with_targets() -> None:
    with pytest.raises(ConfigError, match="fpn6 puts one size on each of its 6 levels"):
        create_model("faster_rcnn", layout="fpn6", anchor_sizes=[12, 32, 64], **{k: v for k, v in TINY.items()})
    with pytest.raises(ConfigError, match="layout"):
        create_model("faster_rcnn", layout="pyramid", **TINY)
    with pytest.raises(ConfigError, match="width"):
        create_model("faster_rcnn", **{**TINY, "backbone": "mobilenetv3_small_050"})
    model = create_model("faster_rcnn", **TINY).train()
    with pytest.raises(ValueError, match="needs targets"):
        model(torch.randn(2, 1, 64, 64))


def test_padded_targets_and_detections_round_trip() -> None:
    listed = targets_to_list(_targets())
    assert listed[0]["boxes"].tolist() == [[10, 8, 30, 20], [60, 5, 64, 12]] and listed[0]["labels"].tolist() == [1, 1]
    assert listed[1]["boxes"].shape == (0, 4)
    dets = [{"boxes": torch.tensor([[1.0, 2, 3, 4]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])},
            {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}]
    out = detections_to_tensor(dets, 2)
    assert out.tolist() == [[[1, 2, 3, 4, 0.8999999761581421, 1], [0] * 6], [[0] * 6, [0] * 6]]


def test_dataset_scales_boxes_and_moves_them_with_a_flip(phantom) -> None:
    _, samples, records = phantom
    plain = DetectionDataset(samples, ["background", "plaque"], (24, 48), "gray", ReaderOptions(), boxes=records,
                             label_classes=["normal", "plaque"], max_boxes=6)
    i = next(k for k, r in enumerate(plain.records) if r.boxes)
    original = np.asarray(plain.records[i].boxes, dtype=np.float32)
    image, target, index = plain[i]
    assert image.shape == (1, 24, 48) and target.shape == (6, 5) and index == i
    n = len(original)
    assert np.allclose(target[:n, 1:].numpy(), original / 2.0, atol=1e-4)  # 48x96 frames at 24x48
    assert (target[:n, 0] == 1).all() and (target[n:, 0] == -1).all()
    flipped = DetectionDataset(samples, ["background", "plaque"], (24, 48), "gray", ReaderOptions(),
                               augmentation=build_augmentation([{"name": "HorizontalFlip", "p": 1.0}], boxes=True),
                               boxes=records, label_classes=["normal", "plaque"], max_boxes=6)
    _, moved, _ = flipped[i]
    expected = original / 2.0
    mirrored = np.stack([48 - expected[:, 2], expected[:, 1], 48 - expected[:, 0], expected[:, 3]], axis=1)
    got = moved[:n, 1:].numpy()
    assert np.allclose(got[np.lexsort(got.T[::-1])], mirrored[np.lexsort(mirrored.T[::-1])], atol=1e-3)
    empty = next(k for k, r in enumerate(plain.records) if not r.boxes)
    assert (plain[empty][1][:, 0] == -1).all()  # a frame without plaque: empty target


def test_dataset_names_the_frame_without_a_record_or_with_too_many_boxes(phantom) -> None:
    _, samples, records = phantom
    missing = dict(records)
    first = next(iter(missing))
    del missing[first]
    with pytest.raises(DataError, match=r"\(row 1\): no record in the boxes file"):
        DetectionDataset(samples, ["background", "plaque"], (24, 48), "gray", boxes=missing,
                         label_classes=["normal", "plaque"])
    busiest = max(len(r.boxes) for r in records.values())
    with pytest.raises(DataError, match="more than task_options.max_boxes"):
        DetectionDataset(samples, ["background", "plaque"], (24, 48), "gray", boxes=records,
                         label_classes=["normal", "plaque"], max_boxes=busiest - 1)
    with pytest.raises(ConfigError, match="background and one object class"):
        DetectionDataset(samples, ["background", "calcium", "lipid"], (24, 48), "gray", boxes=records,
                         label_classes=["normal", "plaque"])


def test_task_sums_the_losses_and_merges_ranks_in_item_order() -> None:
    task = create_task("detection", ["background", "plaque"])
    assert task.gate_metric == "recall" and task.default_selection in task.selection_metrics
    losses = {"a": torch.tensor(0.5), "b": torch.tensor(0.25)}
    assert float(task.loss(losses, torch.zeros(1))) == 0.75
    with pytest.raises(TypeError, match="loss dictionary"):
        task.loss(torch.zeros(2, 3), torch.zeros(1))
    out = torch.zeros(2, 3, 6)
    out[0, 0] = torch.tensor([1.0, 2, 3, 4, 0.9, 1])
    ev1, ev2 = task.evaluator(), task.evaluator()
    ev2.update(out, _targets(), torch.tensor([3, 1]))
    ev1.update(out[:1], _targets()[:1], torch.tensor([2]))
    merged = ev1.merge([ev1.state(), ev2.state()])
    assert merged.indices.tolist() == [1, 2, 3]
    frames = merged.payload
    assert [len(d) for d in frames.detections] == [0, 1, 1] and [len(t) for t in frames.targets] == [0, 2, 2]
    with pytest.raises(ConfigError, match="weighted_loss does not apply"):
        task.class_weights(None)


class _HalfForeground(torch.nn.Module):
    """A 'segmenter' calling the left half of every frame foreground (P(background) 0.1) and the right half background."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        logits = torch.zeros(n, 3, h, w)
        logits[:, 0, :, : w // 2] = -3.0  # softmax → P(bg) ≈ 0.024
        logits[:, 0, :, w // 2:] = 3.0    # P(bg) ≈ 0.91
        return logits


def test_two_stage_model_removes_the_background_then_detects() -> None:
    seen = {}

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen["x"] = x.clone()
            return torch.zeros(x.shape[0], 4, 6)

    model = TwoStageDetector(_HalfForeground(), Probe(), threshold=0.5, channels=1, mean1=0.2, std1=0.2, mean2=0.1,
                             std2=0.5)
    frame = torch.full((1, 1, 4, 8), 0.3)  # raw grey 0.3*0.2+0.2 = 0.26
    assert model(frame).shape == (1, 4, 6)
    cleaned = seen["x"] * 0.5 + 0.1  # back to grey levels
    assert torch.allclose(cleaned[..., :4], torch.full((1, 1, 4, 4), round(0.26 * 255) / 255), atol=1e-6)
    assert torch.allclose(cleaned[..., 4:], torch.zeros(1, 1, 4, 4), atol=1e-6)


def test_polar_to_cartesian_puts_angles_and_depths_where_they_belong() -> None:
    frame = np.zeros((4, 4), dtype=np.uint8)
    frame[:, 0] = 10   # 0-90°: lower right quadrant on screen (clockwise from 3 o'clock)
    frame[:, 2] = 30   # 180-270°: upper left
    frame[3, 1] = 99   # deepest row, 90-180°: the rim of the lower left quadrant
    out = polar_to_cartesian(frame, size=8)
    assert out.shape == (8, 8)
    assert out[5, 5] == 10 and out[2, 2] == 30
    assert out[7, 1] == 0 and out[6, 1] == 99  # beyond the deepest row: 0; on it: the rim


def test_width_scales_the_timm_stem_and_macs_count_every_roi() -> None:
    from medprune.models.cost import count_macs

    model = create_model("faster_rcnn", **TINY).eval()
    body = model.detector.backbone.body.body
    stem = [m for m in body.modules() if isinstance(m, torch.nn.Conv2d)][:3]
    assert [c.out_channels for c in stem] == [4, 4, 8]  # 64 x 0.125 after the deep stem's three convs
    rois = []
    model.detector.roi_heads.box_head.fc6.register_forward_hook(lambda m, a, o: rois.append(a[0].shape[0]))
    macs = count_macs(model, (1, 64, 128))
    fc6 = model.detector.roi_heads.box_head.fc6
    assert rois and rois[0] > 1  # several proposals reach the box head of one frame
    assert macs["detector.roi_heads.box_head.fc6"] == rois[0] * fc6.in_features * fc6.out_features


def test_a_detector_config_the_model_cannot_build_is_refused_at_load(tmp_path) -> None:
    """Before a two-stage run spends minutes on stage 1: the file and the key are named at load."""
    from medprune.config import config_from_dict

    data = {"task": "detection",
            "data": {"stage1": None, "phantom": {"kind": "ivoct", "patients": 4, "size": [48, 96]},
                     "classes": ["background", "plaque"], "label_classes": ["normal", "plaque"],
                     "image_size": [48, 96], "channels": "gray"},
            "model": {"name": "faster_rcnn", "kwargs": {"backbone": "resnet18", "layout": "fpn6",
                                                       "anchor_sizes": [12, 32, 64]}}}
    with pytest.raises(ConfigError, match=r"^x\.yaml: model\.kwargs\.anchor_sizes: layout fpn6 puts one size"):
        config_from_dict(data, "x.yaml")
    data["model"]["kwargs"] = {"backbone": "mobilenetv3_small_050", "width": 0.5}
    with pytest.raises(ConfigError, match=r"^x\.yaml: model\.kwargs\.width: 0\.5 scales ResNet backbones only"):
        config_from_dict(data, "x.yaml")
