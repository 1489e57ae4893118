"""Detection metrics: hand-worked frames (boxes and wrap-around arcs), empty-frame rules, AP parity
with torchmetrics, the pullback bootstrap, plaque-size buckets, the predictions file, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchmetrics.detection import MeanAveragePrecision

from medprune.errors import DataError
from medprune.metrics import _bootstrap as bs
from medprune.metrics.detection import (
    COCO_IOU_THRESHOLDS,
    DETECTION_METRICS,
    QUICK_DETECTION_METRICS,
    DetectionMetrics,
    coco_average_precision,
    detection_metrics,
    detection_metrics_from_predictions,
    detection_predictions,
    match_detections,
    per_frame_scores,
    read_detection_predictions,
    write_detection_predictions,
)

W = 360  # one column per degree: box x = angle


def _box(a0: float, a1: float, y0: float = 0.0, y1: float = 10.0) -> list[float]:
    return [a0, y0, a1, y1]


def _pred(boxes: list, scores: list) -> dict:
    return {"boxes": np.asarray(boxes, dtype=float).reshape(-1, 4), "scores": np.asarray(scores, dtype=float),
            "labels": np.ones(len(scores), dtype=np.int64)}


def _target(boxes: list) -> dict:
    return {"boxes": np.asarray(boxes, dtype=float).reshape(-1, 4), "labels": np.ones(len(boxes), dtype=np.int64)}


def _tm_ap(preds: list, targets: list) -> tuple[float, float]:
    """torchmetrics' (map, map_50) with pycocotools' own IoU and recall thresholds, labels pooled."""
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", iou_thresholds=list(COCO_IOU_THRESHOLDS),
                                  rec_thresholds=np.linspace(0.0, 1.0, 101).tolist(), average="micro",
                                  backend="pycocotools")
    metric.warn_on_many_detections = False
    metric.update([{k: torch.as_tensor(v) for k, v in p.items()} for p in preds],
                  [{k: torch.as_tensor(v) for k, v in t.items()} for t in targets])
    out = metric.compute()
    return float(out["map"]), float(out["map_50"])


def _random_case(seed: int, n_frames: int = 40, n_pullbacks: int = 8, ties: bool = False, crowded: bool = False):
    """Frames with 0-3 targets, 0-2 jittered detections of each, false alarms, some frames without
    predictions; ``ties`` rounds scores to 0.1; ``crowded`` puts 120 detections in frame 0."""
    rng = np.random.default_rng(seed)
    width = 100
    preds, targets = [], []
    for i in range(n_frames):
        gt = []
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            x0, y0 = rng.uniform(0, width - 25), rng.uniform(0, 50)
            gt.append([x0, y0, x0 + rng.uniform(5, 25), y0 + rng.uniform(5, 30)])
        boxes = []
        for g in gt:
            for _ in range(rng.integers(0, 3)):
                boxes.append(np.asarray(g) + rng.normal(0, 2.5, 4))
        for _ in range(rng.integers(0, 3)):
            x0, y0 = rng.uniform(0, width - 25), rng.uniform(0, 50)
            boxes.append([x0, y0, x0 + rng.uniform(5, 25), y0 + rng.uniform(5, 30)])
        if crowded and i == 0:
            for _ in range(120):
                boxes.append(np.asarray(gt[0] if gt else [10, 10, 30, 30]) + rng.normal(0, 4, 4))
        if rng.uniform() < 0.15:
            boxes = []
        b = np.asarray(boxes, dtype=float).reshape(-1, 4)
        b[:, [0, 2]] = np.clip(np.sort(b[:, [0, 2]], axis=1), 0, width)
        b[:, [1, 3]] = np.sort(b[:, [1, 3]], axis=1)
        scores = rng.uniform(0.05, 1.0, len(b))
        if ties:
            scores = np.round(scores, 1)
        preds.append(_pred(b, scores))
        targets.append(_target(gt))
    owners = np.r_[np.arange(n_pullbacks), rng.integers(0, n_pullbacks, n_frames - n_pullbacks)]
    pids = [f"PB{int(p):02d}" for p in owners]
    return preds, targets, width, pids


# ----------------------------------------------------------------------------- hand-worked frames


# Targets at 0-10, 100-120 and 200-210 degrees (rows 0-10). Predictions:
#   p1 0-10 rows 0-8 (score .9): IoU with A = 80/100 = 0.8
#   p2 100-115 (score .8):       IoU with B = 150/200 = 0.75
#   p3 300-310 (score .7):       a false alarm
#   p4 200-210 (score .3):       below the 0.5 threshold (would hit C exactly)
# Boxes: recall 2/3, precision 2/3, IoU (0.8 + 0.75)/2 = 0.775
#        total = (2/3 + 2/3 + 0.775)/3 = (160/120 + 93/120)/3 = 253/360 = 0.70278
# Arcs:  |G| = 10 + 20 + 10 = 40, |P| = 10 + 15 + 10 = 35, |P∩G| = 10 + 15 = 25, |P∪G| = 50
#        recall 25/40, precision 25/35, IoU 25/50; total = (5/8 + 5/7 + 1/2)/3 = 103/168 = 0.61310
HAND_PRED = _pred([_box(0, 10, 0, 8), _box(100, 115), _box(300, 310), _box(200, 210)], [0.9, 0.8, 0.7, 0.3])
HAND_TARGET = _target([_box(0, 10), _box(100, 120), _box(200, 210)])


def test_total_score_on_a_hand_worked_frame():
    result = detection_metrics([HAND_PRED], [HAND_TARGET], W, n_bootstrap=0)
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["iou"] == pytest.approx(0.775)
    assert result["total"] == pytest.approx(253 / 360)
    assert result["interval_recall"] == pytest.approx(25 / 40)
    assert result["interval_precision"] == pytest.approx(25 / 35)
    assert result["interval_iou"] == pytest.approx(0.5)
    assert result["interval_total"] == pytest.approx(103 / 168)
    assert result["counts"] == {"n_target_boxes": 3, "n_detections": 3, "n_matched": 2, "n_plaques": 3,
                                "n_frames_with_plaque": 1, "n_frames_with_detections": 1, "n_frames_empty": 0,
                                "n_frames_missed": 0, "n_frames_false_alarm": 0}
    # at threshold 0.25, p4 counts too: recall 1, precision 3/4, IoU (0.8 + 0.75 + 1)/3 = 0.85
    low = detection_metrics([HAND_PRED], [HAND_TARGET], W, n_bootstrap=0, score_threshold=0.25)
    assert (low["recall"], low["precision"], low["iou"]) == pytest.approx((1.0, 0.75, 0.85))
    assert low["total"] == pytest.approx((1 + 0.75 + 0.85) / 3)


def test_the_total_is_our_reading_of_the_cccv2017_score():
    # Li et al.: recall 0.94, precision 0.885, IoU 0.913 -> total 0.913 (their mean rounds to it; F1 does not)
    assert round((0.94 + 0.885 + 0.913) / 3, 3) == 0.913
    assert round(2 * 0.94 * 0.885 / (0.94 + 0.885), 3) != 0.913


def test_wrap_around_arc_against_a_prediction_from_zero():
    # target arc 350-20 degrees: two boxes split at the seam; prediction 0-30 degrees.
    # Arcs: |G| = 30, |P| = 30, |P∩G| = 20 (0-20), |P∪G| = 40 -> recall 2/3, precision 2/3, IoU 1/2,
    #       total (2/3 + 2/3 + 1/2)/3 = 11/18
    # Boxes: the prediction hits the 0-20 half (IoU 20/30); the 350-360 half is missed ->
    #        recall 1/2, precision 1, IoU 2/3, total (1/2 + 1 + 2/3)/3 = 13/18
    pred, target = _pred([_box(0, 30)], [0.9]), _target([_box(350, 360), _box(0, 20)])
    result = detection_metrics([pred], [target], W, n_bootstrap=0)
    assert (result["interval_recall"], result["interval_precision"], result["interval_iou"]) == pytest.approx(
        (2 / 3, 2 / 3, 0.5))
    assert result["interval_total"] == pytest.approx(11 / 18)
    assert (result["recall"], result["precision"], result["iou"]) == pytest.approx((0.5, 1.0, 2 / 3))
    assert result["total"] == pytest.approx(13 / 18)
    # one 30-degree plaque (medium: 30 <= 30 < 90), detected at interval IoU exactly 0.5
    assert result["per_size"]["medium"] == {"min_deg": 30.0, "max_deg": 90.0, "recall": 1.0, "n_plaques": 1,
                                            "n_detected": 1}
    assert result["counts"]["n_plaques"] == 1 and result["counts"]["n_target_boxes"] == 2


def test_both_sides_wrapping_match_half_by_half():
    # target 350-20, prediction 345-10 (boxes 345-360 and 0-10):
    # arcs |P∩G| = 10 + 10 = 20, |P∪G| = 35 + 30 - 20... prediction is 25 degrees: |P∪G| = 30 + 25 - 20 = 35
    # boxes: 345-360 vs 350-360 IoU 10/15 = 2/3; 0-10 vs 0-20 IoU 10/20 = 1/2 (>= 0.5 matches)
    pred = _pred([_box(345, 360), _box(0, 10)], [0.9, 0.8])
    target = _target([_box(350, 360), _box(0, 20)])
    fs = per_frame_scores(detection_predictions([pred], [target], W))
    assert (fs.recall[0], fs.precision[0], fs.iou[0]) == pytest.approx((1.0, 1.0, (2 / 3 + 1 / 2) / 2))
    assert (fs.interval_recall[0], fs.interval_precision[0], fs.interval_iou[0]) == pytest.approx(
        (20 / 30, 20 / 25, 20 / 35))


# ----------------------------------------------------------------------------- box matching


def test_matching_takes_predictions_by_score():
    gt_of, iou = match_detections([[0, 0, 10, 10], [0, 0, 9, 10]], [0.6, 0.9], [[0, 0, 10, 10]])
    assert gt_of.tolist() == [-1, 0]  # the higher score takes the target although its IoU is lower
    assert iou.tolist() == pytest.approx([0.0, 0.9])


def test_matching_is_greedy_not_optimal():
    # a (score .9) overlaps T1 with IoU 70/130 = 0.538 and T2 with 80/120 = 0.667 -> takes T2;
    # b (score .8) would fit T2 (IoU 9/11) but it is taken, and T1 is only 40/160 = 0.25 -> unmatched
    gt_of, iou = match_detections([[3, 0, 13, 10], [6, 0, 16, 10]], [0.9, 0.8], [[0, 0, 10, 10], [5, 0, 15, 10]])
    assert gt_of.tolist() == [1, -1]
    assert iou[0] == pytest.approx(80 / 120)


def test_matching_at_exactly_the_threshold_and_ties_to_the_later_target():
    gt_of, iou = match_detections([[0, 0, 10, 10]], [0.5], [[0, 0, 20, 10]])  # IoU 100/200 = 0.5
    assert gt_of.tolist() == [0] and iou.tolist() == [0.5]
    gt_of, _ = match_detections([[0, 0, 10, 10]], [0.5], [[0, 0, 20.5, 10]])  # IoU 0.488
    assert gt_of.tolist() == [-1]
    # equal IoU 80/160 = 0.5 with both targets: pycocotools keeps the later one
    gt_of, _ = match_detections([[4, 0, 16, 10]], [0.5], [[0, 0, 12, 10], [8, 0, 20, 10]])
    assert gt_of.tolist() == [1]


# ----------------------------------------------------------------------------- empty frames


def test_empty_frame_conventions():
    frames = [
        (_pred([], []), _target([_box(0, 20)])),  # plaque missed: recall 0, precision excluded, IoU 0
        (_pred([_box(40, 60)], [0.9]), _target([])),  # false alarm: recall excluded, precision 0, IoU 0
        (_pred([], []), _target([])),  # neither: excluded everywhere
        (_pred([_box(100, 130)], [0.9]), _target([_box(100, 130)])),  # perfect: 1, 1, 1
        (_pred([_box(200, 220)], [0.2]), _target([])),  # below the threshold: counts as no prediction
    ]
    preds, targets = [f[0] for f in frames], [f[1] for f in frames]
    fs = per_frame_scores(detection_predictions(preds, targets, W))
    np.testing.assert_array_equal(fs.recall, [0, np.nan, np.nan, 1, np.nan])
    np.testing.assert_array_equal(fs.precision, [np.nan, 0, np.nan, 1, np.nan])
    np.testing.assert_array_equal(fs.iou, [0, 0, np.nan, 1, np.nan])
    np.testing.assert_array_equal(fs.interval_iou, [0, 0, np.nan, 1, np.nan])
    result = detection_metrics(preds, targets, W, n_bootstrap=0)
    # recall over frames 0, 3; precision over 1, 3; IoU over 0, 1, 3: total (1/2 + 1/2 + 1/3)/3 = 4/9
    for prefix in ("", "interval_"):
        assert result[prefix + "recall"] == pytest.approx(0.5)
        assert result[prefix + "precision"] == pytest.approx(0.5)
        assert result[prefix + "iou"] == pytest.approx(1 / 3)
        assert result[prefix + "total"] == pytest.approx(4 / 9)
    counts = result["counts"]
    assert (counts["n_frames_empty"], counts["n_frames_missed"], counts["n_frames_false_alarm"]) == (2, 1, 1)


def test_undefined_metrics_are_none_not_nan():
    no_predictions = detection_metrics([_pred([], [])] * 2, [_target([_box(0, 20)]), _target([])], W,
                                       n_bootstrap=20)
    assert no_predictions["precision"] is None and no_predictions["total"] is None
    assert no_predictions["recall"] == 0.0 and no_predictions["ap50"] == 0.0
    no_plaque = detection_metrics([_pred([_box(0, 20)], [0.9])], [_target([])], W, n_bootstrap=20)
    assert no_plaque["ap50"] is None and no_plaque["map"] is None and no_plaque["recall"] is None
    assert no_plaque["ci"]["ap50"] is None and no_plaque["ci_method"]["ap50"] is None
    assert no_plaque["small_sample"]["classes"] == {"plaque": 0}
    json.dumps(no_plaque, allow_nan=False)


# ----------------------------------------------------------------------------- AP parity


@pytest.mark.parametrize(("seed", "ties", "crowded"), [(0, False, False), (1, True, False), (2, True, True),
                                                       (3, False, True), (4, True, False)])
def test_own_coco_ap_equals_torchmetrics(seed, ties, crowded):
    preds, targets, width, _ = _random_case(seed, ties=ties, crowded=crowded)
    tm_map, tm_ap50 = _tm_ap(preds, targets)
    predictions = detection_predictions(preds, targets, width)
    assert coco_average_precision(predictions) == pytest.approx(tm_ap50, abs=1e-6)
    assert coco_average_precision(predictions, COCO_IOU_THRESHOLDS) == pytest.approx(tm_map, abs=1e-6)
    assert 0.05 < tm_ap50 < 0.95  # a case where the curve matters, not a trivial 0 or 1


def test_point_estimate_is_torchmetrics_and_quick_mode_agrees():
    preds, targets, width, pids = _random_case(7, ties=True)
    tm_map, tm_ap50 = _tm_ap(preds, targets)
    full = detection_metrics(preds, targets, width, patient_ids=pids, n_bootstrap=0)
    quick = detection_metrics(preds, targets, width, patient_ids=pids, n_bootstrap=0, quick=True)
    assert (full["ap50"], full["map"]) == (tm_ap50, tm_map)
    assert full["ap_backend"] == "torchmetrics/pycocotools"
    assert quick["ap50"] == pytest.approx(tm_ap50, abs=1e-6) and quick["map"] == pytest.approx(tm_map, abs=1e-6)
    assert all(quick[k] == full[k] for k in ("recall", "precision", "iou", "total"))
    assert all(quick[k] is None for k in DETECTION_METRICS if k not in QUICK_DETECTION_METRICS)
    assert quick["per_size"] == {} and quick["counts"]["n_plaques"] is None and quick["quick"] is True


def test_a_bootstrap_replicate_equals_torchmetrics_on_the_resampled_frames():
    preds, targets, width, pids = _random_case(5, n_frames=30, n_pullbacks=6)
    result = detection_metrics(preds, targets, width, patient_ids=pids, n_bootstrap=1, seed=11, quick=True)
    units = np.unique(pids)
    mult = bs.draw_replicates(len(units), 1, 11)[0]  # the same draw: one replicate
    drawn = [i for u, count in zip(units, mult) for _ in range(count) for i, p in enumerate(pids) if p == u]
    assert len(set(drawn)) < len(drawn)  # some pullback drawn twice
    tm_map, tm_ap50 = _tm_ap([preds[i] for i in drawn], [targets[i] for i in drawn])
    assert result["ci"]["ap50"] == pytest.approx([tm_ap50, tm_ap50], abs=1e-6)
    assert result["ci"]["map"] == pytest.approx([tm_map, tm_map], abs=1e-6)
    fs = per_frame_scores(detection_predictions(preds, targets, width))
    assert result["ci"]["recall"][0] == pytest.approx(np.nanmean(fs.recall[drawn]))


# ----------------------------------------------------------------------------- bootstrap


def test_intervals_contain_the_point_and_are_reproducible():
    preds, targets, width, pids = _random_case(3, n_frames=60, n_pullbacks=12)
    first = detection_metrics(preds, targets, width, patient_ids=pids, n_bootstrap=200, seed=4)
    again = detection_metrics(preds, targets, width, patient_ids=pids, n_bootstrap=200, seed=4)
    other = detection_metrics(preds, targets, width, patient_ids=pids, n_bootstrap=200, seed=5)
    assert first == again
    assert first["ci"] != other["ci"]
    assert first["bootstrap_unit"] == "patient" and first["n_pullbacks"] == 12 and first["n_frames"] == 60
    for key in DETECTION_METRICS:
        low, high = first["ci"][key]
        assert low - 1e-6 <= first[key] <= high + 1e-6, key
        assert high > low, key
        assert first["ci_method"][key] == "percentile_bootstrap"
    for name, row in first["per_size"].items():
        interval = first["ci"][f"per_size.{name}.recall"]
        assert (interval is None) == (row["recall"] is None)
    assert first["small_sample"]["split"] is True  # 12 pullbacks < 20
    assert any("12 patients" in note for note in first["small_sample"]["notes"])
    json.dumps(first, allow_nan=False)


def test_without_pullback_ids_frames_are_resampled():
    preds, targets, width, _ = _random_case(6, n_frames=12)
    result = detection_metrics(preds, targets, width, n_bootstrap=50)
    assert result["bootstrap_unit"] == "sample" and result["n_pullbacks"] == 12


# ----------------------------------------------------------------------------- plaque sizes


def test_per_size_buckets_by_the_merged_arc():
    frames = [
        # 10 deg detected (IoU 1); 29 deg missed; 30 deg detected (IoU 25/30)
        (_pred([_box(0, 10), _box(205, 230)], [0.9, 0.9]), _target([_box(0, 10), _box(100, 129), _box(200, 230)])),
        # 89 deg, prediction 40 of it: IoU 40/89 = 0.45 -> missed; 90 deg detected
        (_pred([_box(10, 50), _box(180, 270)], [0.9, 0.9]), _target([_box(10, 99), _box(180, 270)])),
        # one 40-degree plaque across the seam (two boxes), predicted 345-15: IoU 30/40 -> detected
        (_pred([_box(345, 360), _box(0, 15)], [0.9, 0.9]), _target([_box(340, 360), _box(0, 20)])),
        # 200 deg, prediction 60-250: IoU 190/200 -> detected
        (_pred([_box(60, 250)], [0.9]), _target([_box(50, 250)])),
    ]
    preds, targets = [f[0] for f in frames], [f[1] for f in frames]
    result = detection_metrics(preds, targets, W, n_bootstrap=30)
    sizes = {name: (row["n_plaques"], row["n_detected"]) for name, row in result["per_size"].items()}
    assert sizes == {"small": (2, 1), "medium": (3, 2), "large": (2, 2)}  # the seam plaque counts once
    assert result["per_size"]["medium"]["recall"] == pytest.approx(2 / 3)
    assert result["counts"]["n_plaques"] == 7 and result["counts"]["n_target_boxes"] == 8
    assert set(result["ci"]) >= {"per_size.small.recall", "per_size.medium.recall", "per_size.large.recall"}
    custom = detection_metrics(preds, targets, W, n_bootstrap=0, size_edges=[45], size_names=["narrow", "wide"])
    assert custom["per_size"]["narrow"] == {"min_deg": 0.0, "max_deg": 45.0, "recall": 0.75, "n_plaques": 4,
                                            "n_detected": 3}
    assert custom["per_size"]["wide"]["recall"] == pytest.approx(2 / 3)
    three = detection_metrics(preds, targets, W, n_bootstrap=0, size_edges=[20, 45, 100])
    assert {name: row["n_plaques"] for name, row in three["per_size"].items()} == {
        "<20": 1, "20-45": 3, "45-100": 2, ">=100": 1}
    strict = detection_metrics(preds, targets, W, n_bootstrap=0, size_iou=0.9)  # 30-deg (0.83), seam (0.75) missed
    assert strict["per_size"]["medium"]["n_detected"] == 0


# ----------------------------------------------------------------------------- accumulator and file


def test_accumulator_equals_one_call_and_takes_torch_tensors():
    preds, targets, width, pids = _random_case(8, n_frames=20, n_pullbacks=5)
    metric = DetectionMetrics(width=width, n_bootstrap=50, seed=2)
    for lo in range(0, 20, 8):
        batch_preds = [{k: torch.as_tensor(v, dtype=torch.float32 if k != "labels" else torch.int64)
                        for k, v in p.items()} for p in preds[lo:lo + 8]]
        metric.update(batch_preds, targets[lo:lo + 8], sample_ids=list(range(lo, min(lo + 8, 20))),
                      patient_ids=pids[lo:lo + 8])
    assert metric.n_frames == 20
    float32 = [{k: np.asarray(torch.as_tensor(v, dtype=torch.float32), dtype=float) if k != "labels" else v
                for k, v in p.items()} for p in preds]
    assert metric.aggregate() == detection_metrics(float32, targets, width, patient_ids=pids, n_bootstrap=50, seed=2)
    with pytest.raises(DataError, match="seen more than once"):
        metric.update(preds[:1], targets[:1], sample_ids=[3], patient_ids=pids[:1])
        metric.predictions()
    with pytest.raises(DataError, match="batch 4: patient_ids must be given for every batch or for none"):
        metric.update(preds[:1], targets[:1], sample_ids=[99])


def test_predictions_file_round_trip(tmp_path):
    preds, targets, width, pids = _random_case(9, n_frames=15, n_pullbacks=4, ties=True)
    ids = [f"{p}/f{i:03d}" for i, p in enumerate(pids)]
    predictions = detection_predictions(preds, targets, width, sample_ids=ids, patient_ids=pids)
    path = write_detection_predictions(tmp_path / "predictions.json", predictions,
                                       paths=[f"frames/{i}.png" for i in ids])
    back = read_detection_predictions(path)
    assert back.sample_ids.tolist() == ids and back.patient_ids.tolist() == pids
    assert back.paths.tolist() == [f"frames/{i}.png" for i in ids]
    for name in ("boxes", "scores", "labels", "target_boxes", "target_labels"):
        for a, b in zip(getattr(predictions, name), getattr(back, name)):
            np.testing.assert_array_equal(a, b)
    options = {"n_bootstrap": 40, "seed": 1, "score_threshold": 0.4}
    assert detection_metrics_from_predictions(back, **options) == detection_metrics_from_predictions(
        predictions, **options)
    (tmp_path / "other.json").write_text(json.dumps({"format": "medprune.ivoct_boxes/1", "frames": []}))
    with pytest.raises(DataError, match="other.json: not a detection predictions file"):
        read_detection_predictions(tmp_path / "other.json")
    data = json.loads(path.read_text())
    data["frames"][2]["scores"][0] = None
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"bad.json: preds\[2\] \(sample PB02/f002\): scores must be numbers"):
        read_detection_predictions(tmp_path / "bad.json")
    with pytest.raises(DataError, match="missing.json: detection predictions file not found"):
        read_detection_predictions(tmp_path / "missing.json")


# ----------------------------------------------------------------------------- bad inputs


def _ok() -> tuple[list, list]:
    return [_pred([_box(0, 10)], [0.9]), _pred([_box(20, 30), _box(40, 50)], [0.5, 0.4])], \
        [_target([_box(0, 10)]), _target([_box(20, 30)])]


def _with(index: int, key: str, value, target: bool = False):
    preds, targets = _ok()
    (targets if target else preds)[index][key] = value
    return preds, targets


@pytest.mark.parametrize(("inputs", "message"), [
    (_with(1, "boxes", [[30, 0, 20, 10], [40, 0, 50, 10]]), r"preds\[1\]: box 0 \(30.0, 0.0, 20.0, 10.0\) has x1 < x0"),
    (_with(1, "scores", [0.5, float("nan")]), r"preds\[1\]: score 1 \(nan\) is not a finite number"),
    (_with(1, "scores", [0.5]), r"preds\[1\]: 2 boxes but 1 scores"),
    (_with(0, "boxes", [[350, 0, 370, 10]]), r"preds\[0\]: box 0 .* lies outside the frame's columns \[0, 360\]"),
    (_with(0, "boxes", [[5, 0, 5, 10]], target=True), r"targets\[0\]: box 0 .* is empty"),
    (_with(0, "labels", [0], target=True), r"targets\[0\]: labels must be integers >= 1"),
    (_with(0, "boxes", [[0, 0, 10]]), r"preds\[0\]: boxes must have shape \(K, 4\)"),
    ((_ok()[0][:1], _ok()[1]), "preds: has 1 frames but targets has 2"),
])
def test_bad_inputs_name_the_frame_and_box(inputs, message):
    preds, targets = inputs
    with pytest.raises(DataError, match=message):
        detection_metrics(preds, targets, W, n_bootstrap=0)


def test_bad_ids_widths_and_options_name_the_key():
    preds, targets = _ok()
    with pytest.raises(DataError, match=r"preds\[1\] \(sample b\): box 0"):
        bad = _with(1, "boxes", [[30, 0, 20, 10], [40, 0, 50, 10]])[0]
        detection_metrics(bad, targets, W, sample_ids=["a", "b"], n_bootstrap=0)
    with pytest.raises(DataError, match="patient_ids: has 1 entries but there are 2 frames"):
        detection_metrics(preds, targets, W, patient_ids=["PB1"])
    with pytest.raises(DataError, match=r"widths\[1\]: frame width must be a positive number"):
        detection_metrics(preds, targets, [W, 0])
    with pytest.raises(DataError, match="size_edges: expected increasing angles"):
        detection_metrics(preds, targets, W, size_edges=[90, 30])
    with pytest.raises(DataError, match="size_names: 2 edges make 3 buckets, got 2 names"):
        detection_metrics(preds, targets, W, size_names=["a", "b"])
    with pytest.raises(DataError, match="match_iou: an IoU threshold must lie in"):
        DetectionMetrics(width=W, match_iou=1.5)
    with pytest.raises(DataError, match="quick: must be true or false"):
        DetectionMetrics(width=W, quick="yes")
    with pytest.raises(DataError, match="batch 0: no frame width"):
        DetectionMetrics().update(preds, targets)
    with pytest.raises(DataError, match=r"batch 0: preds\[1\]: 2 boxes but 1 scores"):
        DetectionMetrics(width=W).update(_with(1, "scores", [0.5])[0], targets)
