"""Segmentation metrics: hand-computed Dice/HD95, MONAI parity, empty-class rules, the patient bootstrap."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from medprune.errors import DataError
from medprune.metrics import (
    CI_METHODS,
    SEGMENTATION_PER_CLASS_METRICS,
    SEGMENTATION_SUMMARY_METRICS,
    SegmentationMetrics,
    per_image_scores,
    read_segmentation_predictions_csv,
    segmentation_metrics,
    segmentation_metrics_from_scores,
    small_sample_notes,
    write_segmentation_predictions_csv,
)

CLASSES = ["background", "tissue", "plaque"]
BG, TISSUE, PLAQUE = 0, 1, 2

# target / pred of the hand-computed 4x4 case:
# plaque: |T| = 4, |P| = 5, overlap 3 -> Dice 2*3/(4+5) = 2/3, sensitivity 3/4, PPV 3/5
# tissue: |T| = 3, |P| = 2, overlap 2 -> Dice 2*2/(3+2) = 4/5, sensitivity 2/3, PPV 1
# background: |T| = 9, |P| = 9, overlap 7 -> Dice 14/18 = 7/9
TARGET_4X4 = np.array([[0, 0, 2, 2], [0, 1, 2, 2], [0, 1, 1, 0], [0, 0, 0, 0]])
PRED_4X4 = np.array([[0, 0, 2, 2], [0, 1, 2, 0], [0, 1, 0, 2], [0, 0, 2, 0]])


def _one_hot(labels: np.ndarray, k: int = 3) -> torch.Tensor:
    return torch.from_numpy(labels)[:, None] == torch.arange(k).view(1, k, 1, 1)


def _assert_json_clean(result: dict) -> None:
    json.dumps(result, allow_nan=False)  # raises on NaN/inf anywhere


def _blob_case(seed: int, n_patients: int, per_patient: int, size: int = 24):
    """Phantom label maps: a tissue square and (in about half the images) a plaque square per image,
    predicted shifted by a patient-specific offset so patients differ in quality."""
    rng = np.random.default_rng(seed)
    n = n_patients * per_patient
    target = np.zeros((n, size, size), dtype=np.int64)
    pred = np.zeros_like(target)
    pids = []
    for i in range(n):
        p = i // per_patient
        pids.append(f"pt{p:02d}")
        y, x = rng.integers(2, size - 12, 2)
        target[i, y : y + 8, x : x + 8] = TISSUE
        shift = p % 4
        pred[i, y + shift : y + 8 + shift, x : x + 8] = TISSUE
        if rng.random() < 0.5:
            py, px = rng.integers(1, size - 5, 2)
            target[i, py : py + 3, px : px + 3] = PLAQUE
            if rng.random() < 0.8:
                pred[i, py : py + 3, px + (p % 2) : px + 3 + (p % 2)] = PLAQUE
    return pred, target, pids


# ----------------------------------------------------------------------------- closed forms


def test_dice_sensitivity_ppv_of_a_4x4_pair_by_hand() -> None:
    r = segmentation_metrics(PRED_4X4[None], TARGET_4X4[None], CLASSES, n_bootstrap=0)
    plaque, tissue = r["per_class"]["plaque"], r["per_class"]["tissue"]
    assert set(r["per_class"]) == {"tissue", "plaque"}  # background left out by default
    assert plaque["dice"] == pytest.approx(2 * 3 / (4 + 5), abs=1e-12)
    assert tissue["dice"] == pytest.approx(2 * 2 / (3 + 2), abs=1e-12)
    assert (plaque["sensitivity"], plaque["ppv"]) == (pytest.approx(3 / 4), pytest.approx(3 / 5))
    assert (tissue["sensitivity"], tissue["ppv"]) == (pytest.approx(2 / 3), pytest.approx(1.0))
    assert (plaque["support"], plaque["support_pixels"], tissue["support_pixels"]) == (1, 4, 3)
    assert r["mean_dice"] == pytest.approx((2 / 3 + 4 / 5) / 2, abs=1e-12)
    assert r["worst_class_dice"] == pytest.approx(2 / 3, abs=1e-12)
    assert r["ci"] == {} and r["ci_method"] == {}

    with_bg = segmentation_metrics(PRED_4X4[None], TARGET_4X4[None], CLASSES, n_bootstrap=0, include_background=True)
    assert with_bg["per_class"]["background"]["dice"] == pytest.approx(14 / 18, abs=1e-12)
    assert with_bg["mean_dice"] == pytest.approx((7 / 9 + 4 / 5 + 2 / 3) / 3, abs=1e-12)
    assert with_bg["worst_class_dice"] == pytest.approx(2 / 3, abs=1e-12)


def test_per_image_scores_match_monai_and_pixel_counts() -> None:
    pred, target, _ = _blob_case(seed=3, n_patients=3, per_patient=4)
    s = per_image_scores(pred, target, CLASSES)
    monai_dice = compute_dice(
        _one_hot(pred).double(), _one_hot(target).double(), include_background=True, ignore_empty=False
    ).numpy()
    both_empty = (s.tp + s.fp + s.fn) == 0
    np.testing.assert_allclose(s.dice[~both_empty], monai_dice[~both_empty], atol=0)
    assert np.isnan(s.dice[both_empty]).all() and (monai_dice[both_empty] == 1).all()
    defined = ~both_empty
    by_counts = 2 * s.tp[defined] / (2 * s.tp + s.fp + s.fn)[defined]
    np.testing.assert_allclose(s.dice[defined], by_counts, rtol=1e-12)
    for c in range(3):
        assert s.tp[:, c].tolist() == [int(((pred[i] == c) & (target[i] == c)).sum()) for i in range(len(pred))]
        assert s.fp[:, c].tolist() == [int(((pred[i] == c) & (target[i] != c)).sum()) for i in range(len(pred))]
        assert s.fn[:, c].tolist() == [int(((pred[i] != c) & (target[i] == c)).sum()) for i in range(len(pred))]
    both = (s.tp + s.fn > 0) & (s.tp + s.fp > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monai_hd = compute_hausdorff_distance(_one_hot(pred), _one_hot(target), include_background=True, percentile=95)
    np.testing.assert_allclose(s.hd[both], monai_hd.numpy()[both], rtol=1e-6)
    assert np.isnan(s.hd[~both]).all()


def _hd(pred: np.ndarray, target: np.ndarray, **kw) -> float:
    s = per_image_scores(pred[None], target[None], ["background", "lesion"], **kw)
    return float(s.hd[0, 1])


def test_hd95_of_simple_shapes_by_hand_and_equal_to_monai() -> None:
    target = np.zeros((16, 16), dtype=np.int64)
    pred = np.zeros_like(target)
    target[3, 2:12] = 1  # a 10-pixel line ...
    pred[7, 2:12] = 1  # ... and the same line 4 rows lower: every edge pixel is 4 away
    assert _hd(pred, target) == pytest.approx(4.0)
    # with (row, column) spacing (2, 0.5) the 4 rows between the lines are 8 units apart
    assert _hd(pred, target, spacing=(2.0, 0.5)) == pytest.approx(8.0)

    pred = target.copy()
    pred[13, 2] = 1  # the same line plus one stray pixel 10 rows away
    # pred -> target distances: ten 0s and one 10; 95th percentile (linear) at position 0.95 * 10 = 9.5
    # of the sorted 11 values -> halfway between 0 and 10 = 5; target -> pred: all 0.
    assert _hd(pred, target) == pytest.approx(5.0)
    assert _hd(pred, target, hd_percentile=100) == pytest.approx(10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI 1.6 warns about its own deprecated argument
        direct = compute_hausdorff_distance(_one_hot(pred[None], 2), _one_hot(target[None], 2), percentile=95)
    assert _hd(pred, target) == pytest.approx(float(direct[0, 0]))


# ----------------------------------------------------------------------------- empty-class rules


def _empty_rule_case() -> tuple[np.ndarray, np.ndarray]:
    target = np.zeros((4, 8, 8), dtype=np.int64)
    target[:, 0:2, 0:2] = TISSUE  # tissue everywhere, perfectly found: keeps the focus on plaque
    pred = target.copy()
    # image 0: plaque absent from both -> excluded from plaque's mean Dice
    # image 1: plaque predicted, absent from target -> Dice 0, a spurious image, 4 false-positive pixels
    pred[1, 4:6, 4:6] = PLAQUE
    # image 2: plaque missed -> Dice 0, a missed image, 6 false-negative pixels
    target[2, 5:7, 3:6] = PLAQUE
    # image 3: plaque found exactly -> Dice 1, HD95 0
    target[3, 4:7, 4:7] = PLAQUE
    pred[3, 4:7, 4:7] = PLAQUE
    return pred, target


def test_empty_class_rules() -> None:
    pred, target = _empty_rule_case()
    s = per_image_scores(pred, target, CLASSES)
    assert np.isnan(s.dice[0, PLAQUE]) and s.dice[1:, PLAQUE].tolist() == [0.0, 0.0, 1.0]
    assert np.isnan(s.hd[:3, PLAQUE]).all() and s.hd[3, PLAQUE] == 0.0
    # MONAI alone would score image 0 as 1 (ignore_empty=False) or image 1 as NaN (ignore_empty=True)
    assert compute_dice(_one_hot(pred), _one_hot(target), ignore_empty=False)[0, PLAQUE] == 1.0
    assert torch.isnan(compute_dice(_one_hot(pred), _one_hot(target), ignore_empty=True)[1, PLAQUE])

    r = segmentation_metrics(pred, target, CLASSES, n_bootstrap=0)
    plaque = r["per_class"]["plaque"]
    assert plaque["dice"] == pytest.approx(1 / 3)  # mean of 0 (spurious), 0 (missed), 1; image 0 excluded
    assert plaque["hd95"] == 0.0  # over the one image where both sides hold plaque
    assert plaque["sensitivity"] == pytest.approx(9 / (9 + 6))  # the missed image's pixels count
    assert plaque["ppv"] == pytest.approx(9 / (9 + 4))  # the spurious image's pixels count
    assert (plaque["support"], plaque["support_pixels"]) == (2, 15)
    assert (plaque["n_dice"], plaque["n_hd95"], plaque["n_missed"], plaque["n_spurious"]) == (3, 1, 1, 1)
    assert plaque["n_dice"] == plaque["n_hd95"] + plaque["n_missed"] + plaque["n_spurious"]
    assert r["per_class"]["tissue"]["dice"] == 1.0
    assert r["mean_dice"] == pytest.approx((1 + 1 / 3) / 2) and r["worst_class_dice"] == pytest.approx(1 / 3)


def test_a_class_nowhere_is_undefined_and_left_out_of_the_summaries() -> None:
    pred, target = _empty_rule_case()
    classes = [*CLASSES, "stent"]  # label 3 occurs nowhere
    r = segmentation_metrics(pred, target, classes, patient_ids=["a", "a", "b", "b"], n_bootstrap=50)
    stent = r["per_class"]["stent"]
    assert {m: stent[m] for m in SEGMENTATION_PER_CLASS_METRICS} == dict.fromkeys(SEGMENTATION_PER_CLASS_METRICS)
    assert stent["support"] == stent["n_dice"] == 0
    assert r["mean_dice"] == pytest.approx((1 + 1 / 3) / 2)  # stent does not count as 0 or 1
    assert r["ci"]["per_class.stent.dice"] is None and r["ci_method"]["per_class.stent.dice"] is None
    assert any("'stent' is in no image's target and never predicted" in n for n in r["small_sample"]["notes"])
    _assert_json_clean(r)


def test_result_is_json_clean_and_has_the_schema() -> None:
    pred, target, pids = _blob_case(seed=1, n_patients=5, per_patient=3)
    pred[0] = 0  # an image where everything is missed: HD95 undefined there
    r = segmentation_metrics(pred, target, CLASSES, patient_ids=pids, n_bootstrap=100)
    _assert_json_clean(r)
    top = {"n_samples", "n_patients", "classes", "per_class", "mean_dice", "worst_class_dice", "ci", "ci_method",
           "ci_level", "n_bootstrap", "bootstrap_unit", "small_sample", "patient", "include_background",
           "hd_percentile", "hd_spacing"}
    assert set(r) == top
    assert set(r["patient"]) == {"n_samples", "aggregation", "per_class", "mean_dice", "worst_class_dice", "ci",
                                 "ci_method", "small_sample"}
    keys = {f"per_class.{c}.{m}" for c in ("tissue", "plaque") for m in SEGMENTATION_PER_CLASS_METRICS}
    assert set(r["ci"]) == set(r["ci_method"]) == keys | set(SEGMENTATION_SUMMARY_METRICS)
    assert set(r["patient"]["ci"]) == set(r["ci"])
    assert set(r["ci_method"].values()) <= set(CI_METHODS)
    assert (r["n_samples"], r["n_patients"], r["bootstrap_unit"], r["patient"]["n_samples"]) == (15, 5, "patient", 5)
    assert set(r["small_sample"]) == {"min_class_support", "min_patients", "classes", "split", "notes"}
    assert small_sample_notes(r)  # the classification helper reads segmentation results too
    for lo, hi in (v for v in r["ci"].values() if v is not None):
        assert lo <= hi


def test_patient_level_scores_each_patient_once() -> None:
    pred, target = _empty_rule_case()
    # patient a: images 0 (plaque absent) and 1 (spurious); patient b: images 2 (missed) and 3 (exact)
    r = segmentation_metrics(pred, target, CLASSES, patient_ids=["a", "a", "b", "b"], n_bootstrap=0)
    plaque = r["patient"]["per_class"]["plaque"]
    assert plaque["dice"] == pytest.approx((0.0 + 0.5) / 2)  # a: mean(0); b: mean(0, 1)
    assert plaque["sensitivity"] == pytest.approx(9 / 15)  # only b has plaque: its pooled ratio
    assert plaque["ppv"] == pytest.approx((0 / 4 + 9 / 9) / 2)  # each patient's own pooled PPV, averaged
    assert (plaque["support"], plaque["n_dice"], plaque["n_spurious"], plaque["n_missed"]) == (1, 2, 1, 0)


# ----------------------------------------------------------------------------- the bootstrap


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    pred, target, pids = _blob_case(seed=2, n_patients=6, per_patient=3)
    a = segmentation_metrics(pred, target, CLASSES, patient_ids=pids, n_bootstrap=200, seed=7)
    scores = per_image_scores(pred, target, CLASSES, patient_ids=pids)
    b = segmentation_metrics_from_scores(scores, n_bootstrap=200, seed=7)
    c = segmentation_metrics_from_scores(scores, n_bootstrap=200, seed=8)
    assert a == b
    assert a["ci"]["mean_dice"] != c["ci"]["mean_dice"]


def test_images_of_one_patient_move_together() -> None:
    """2 patients x 5 images: one patient segmented well, one badly. Resampling patients sees either
    patient alone in many replicates; resampling the 10 images as if independent rarely does."""
    target = np.zeros((10, 12, 12), dtype=np.int64)
    target[:, 2:8, 2:8] = 1
    pred = np.zeros_like(target)
    rng = np.random.default_rng(0)
    for i in range(10):
        grow = int(rng.integers(0, 2))  # a little within-patient variation
        if i < 5:
            pred[i, 2 : 8 + grow, 2:8] = 1  # good
        else:
            pred[i, 2:4 + grow, 2:8] = 1  # poor
    classes = ["background", "lesion"]
    pids = ["good"] * 5 + ["poor"] * 5
    clustered = segmentation_metrics(pred, target, classes, patient_ids=pids, n_bootstrap=500)
    independent = segmentation_metrics(pred, target, classes, n_bootstrap=500)
    assert clustered["bootstrap_unit"] == "patient" and independent["bootstrap_unit"] == "sample"
    assert clustered["mean_dice"] == independent["mean_dice"]
    lo_c, hi_c = clustered["ci"]["per_class.lesion.dice"]
    lo_i, hi_i = independent["ci"]["per_class.lesion.dice"]
    assert hi_c - lo_c > 1.25 * (hi_i - lo_i)
    # with two patients the interval spans from the poor patient's own mean to the good one's
    s = per_image_scores(pred, target, classes)
    assert lo_c == pytest.approx(s.dice[5:, 1].mean()) and hi_c == pytest.approx(s.dice[:5, 1].mean())


def _naive_replicates(s, pids: list[str], draws: np.ndarray) -> dict[str, np.ndarray]:
    """Resample patients by concatenating the drawn patients' images and recomputing from scratch."""
    patients = sorted(set(pids))
    images_of = {p: [i for i, q in enumerate(pids) if q == p] for p in patients}
    out: dict[str, list] = {"dice": [], "hd95": [], "sensitivity": [], "ppv": [], "mean_dice": [], "p_dice": []}
    for row in draws:
        idx = np.concatenate([images_of[patients[j]] for j in row])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of nothing: undefined, NaN
            dice = np.nanmean(s.dice[idx][:, 1:], axis=0)
            out["dice"].append(dice)
            out["hd95"].append(np.nanmean(s.hd[idx][:, 1:], axis=0))
            tp, fp, fn = (x[idx][:, 1:].sum(axis=0) for x in (s.tp, s.fp, s.fn))
            out["sensitivity"].append(np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), np.nan))
            out["ppv"].append(np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), np.nan))
            out["mean_dice"].append(dice.mean())
            # patient level: one mean Dice per drawn patient, then the mean over drawn patients
            per_patient = [np.nanmean(s.dice[images_of[patients[j]]][:, 1:], axis=0) for j in row]
            out["p_dice"].append(np.nanmean(np.array(per_patient), axis=0))
    return {k: np.array(v) for k, v in out.items()}


def _percentile(values: np.ndarray) -> list[float]:
    defined = values[~np.isnan(values)]
    return [float(v) for v in np.percentile(defined, [2.5, 97.5])]


def test_vectorised_bootstrap_equals_a_naive_loop() -> None:
    pred, target, _ = _blob_case(seed=4, n_patients=4, per_patient=4)
    pids = ["p0"] * 2 + ["p1"] * 5 + ["p2"] * 6 + ["p3"] * 3  # uneven patients
    n_boot, seed = 60, 11
    scores = per_image_scores(pred, target, CLASSES, patient_ids=pids)
    r = segmentation_metrics_from_scores(scores, n_bootstrap=n_boot, seed=seed, exact_below=0)
    draws = np.random.default_rng(seed).integers(0, 4, size=(n_boot, 4))  # the draw the bootstrap makes
    naive = _naive_replicates(scores, pids, draws)
    for r_idx, name in enumerate(("tissue", "plaque")):
        for m in ("dice", "hd95", "sensitivity", "ppv"):
            if (r["ci_method"][f"per_class.{name}.{m}"] or "").startswith("percentile_bootstrap"):
                assert r["ci"][f"per_class.{name}.{m}"] == pytest.approx(_percentile(naive[m][:, r_idx]), abs=1e-9)
        assert r["patient"]["ci"][f"per_class.{name}.dice"] == pytest.approx(
            _percentile(naive["p_dice"][:, r_idx]), abs=1e-9
        )
    assert r["ci"]["mean_dice"] == pytest.approx(_percentile(naive["mean_dice"]), abs=1e-9)


def test_pixel_proportions_get_an_exact_interval_on_patients_not_pixels() -> None:
    """Plaque never predicted in 3 patients (4 images each, equal plaque area): sensitivity 0 of
    3 * 4 * 9 pixels, but the evidence is 3 patients: Clopper-Pearson 0 of 3 -> [0, 1 - 0.025**(1/3)]."""
    target = np.zeros((12, 10, 10), dtype=np.int64)
    target[:, 2:5, 2:5] = PLAQUE
    target[:, 6:9, 6:9] = TISSUE
    pred = np.where(target == TISSUE, TISSUE, 0)
    pids = [f"p{i // 4}" for i in range(12)]
    scores = per_image_scores(pred, target, CLASSES, patient_ids=pids)
    r = segmentation_metrics_from_scores(scores, n_bootstrap=100)
    assert r["per_class"]["plaque"]["sensitivity"] == 0.0
    assert r["ci_method"]["per_class.plaque.sensitivity"] == "clopper_pearson"
    assert r["ci"]["per_class.plaque.sensitivity"] == pytest.approx([0.0, 1 - 0.025 ** (1 / 3)], abs=1e-9)
    assert r["ci"]["per_class.plaque.ppv"] is None  # never predicted: no PPV, no interval
    assert r["ci_method"]["per_class.tissue.dice"] == "percentile_bootstrap_degenerate"  # perfect everywhere
    assert r["ci_method"]["per_class.tissue.sensitivity"] == "clopper_pearson"  # 1 of 1: degenerate bootstrap
    wilson = segmentation_metrics_from_scores(scores, n_bootstrap=100, small_sample_method="wilson")
    assert wilson["ci_method"]["per_class.plaque.sensitivity"] == "wilson"


def test_exact_below_switches_between_exact_and_bootstrap() -> None:
    pred, target, pids = _blob_case(seed=5, n_patients=6, per_patient=2)
    scores = per_image_scores(pred, target, CLASSES, patient_ids=pids)
    small = segmentation_metrics_from_scores(scores, n_bootstrap=200)
    boot = segmentation_metrics_from_scores(scores, n_bootstrap=200, exact_below=0)
    key = "per_class.tissue.sensitivity"
    assert small["ci_method"][key] == "clopper_pearson"  # 6 patients < 30
    assert boot["ci_method"][key] == "percentile_bootstrap"
    assert small["ci"][key][1] - small["ci"][key][0] > boot["ci"][key][1] - boot["ci"][key][0]
    assert small["ci"]["per_class.tissue.dice"] == boot["ci"]["per_class.tissue.dice"]  # Dice: bootstrap only


# ----------------------------------------------------------------------------- accumulator and file


def test_accumulator_equals_the_one_shot_function() -> None:
    pred, target, pids = _blob_case(seed=6, n_patients=5, per_patient=3)
    one_shot = segmentation_metrics(pred, target, CLASSES, patient_ids=pids, n_bootstrap=100, seed=3)
    metric = SegmentationMetrics(CLASSES, n_bootstrap=100, seed=3)
    probs = torch.nn.functional.one_hot(torch.from_numpy(pred), 3).permute(0, 3, 1, 2).float() * 0.8 + 0.1
    for lo, hi in ((0, 4), (4, 5), (5, 15)):  # uneven batches, softmax-like scores for pred
        metric.update(probs[lo:hi], torch.from_numpy(target[lo:hi]), patient_ids=pids[lo:hi])
    assert metric.n_samples == 15
    assert metric.aggregate() == one_shot
    assert metric.predictions().sample_ids.tolist() == list(range(15))
    metric.reset()
    with pytest.raises(DataError, match="no batches accumulated"):
        metric.aggregate()


def test_accumulator_rejects_inconsistent_batches() -> None:
    pred, target, pids = _blob_case(seed=6, n_patients=2, per_patient=2)
    metric = SegmentationMetrics(CLASSES)
    metric.update(pred[:2], target[:2], patient_ids=pids[:2], sample_ids=[0, 1])
    with pytest.raises(DataError, match="batch 1: patient_ids must be given for every batch or for none"):
        metric.update(pred[2:], target[2:], sample_ids=[2, 3])
    with pytest.raises(DataError, match=r"batch 1: target: label 7 at image 0"):
        metric.update(pred[2:], np.full_like(target[2:], 7), patient_ids=pids[2:], sample_ids=[2, 3])
    with pytest.raises(DataError, match="batch 1: spacing must be given for every batch or for none"):
        metric.update(pred[2:], target[2:], patient_ids=pids[2:], sample_ids=[2, 3], spacing=0.5)
    metric.update(pred[2:], target[2:], patient_ids=pids[2:], sample_ids=[1, 3])  # padding duplicate
    with pytest.raises(DataError, match="sample_ids: 1 image"):
        metric.aggregate()


def test_predictions_csv_round_trip(tmp_path: Path) -> None:
    pred, target, pids = _blob_case(seed=8, n_patients=4, per_patient=2)
    scores = per_image_scores(pred, target, CLASSES, patient_ids=pids, spacing=(0.5, 0.25), sample_ids=range(10, 18))
    files = [f"f{i}.npy" for i in range(8)]
    path = write_segmentation_predictions_csv(tmp_path / "predictions.csv", scores, paths=files)
    header = path.read_text().splitlines()[0]
    assert header.startswith("index,path,patient_id,spacing,dice_background,hd95_background,tp_background")
    back = read_segmentation_predictions_csv(path)
    assert back.classes == CLASSES and back.hd_percentile == 95.0
    assert back.sample_ids.tolist() == list(range(10, 18)) and back.paths.tolist()[0] == "f0.npy"
    for field in ("dice", "hd", "tp", "fp", "fn", "spacing"):
        np.testing.assert_array_equal(getattr(back, field), getattr(scores, field))
    kw = {"n_bootstrap": 50, "include_background": True}
    assert segmentation_metrics_from_scores(back, **kw) == segmentation_metrics_from_scores(scores, **kw)
    assert segmentation_metrics_from_scores(back)["hd_spacing"] == [0.5, 0.25]
    rows = back.rows()
    assert rows[0]["patient_id"] == "pt00" and set(rows[0]["classes"]["plaque"]) == {"dice", "hd95", "tp", "fp", "fn"}
    json.dumps(rows, allow_nan=False)

    bad = tmp_path / "bad.csv"
    bad.write_text(header + "\n" + "0,,p,," + ",".join(["x"] * 15) + "\n")
    with pytest.raises(DataError, match=r"bad\.csv: line 2: scores and spacing must be numbers"):
        read_segmentation_predictions_csv(bad)
    bad.write_text("index,path,patient\n")
    with pytest.raises(DataError, match=r"bad\.csv: header must start with index, path, patient_id, spacing"):
        read_segmentation_predictions_csv(bad)


# ----------------------------------------------------------------------------- bad input


_Z = np.zeros((2, 4, 4), dtype=np.int64)  # two blank 4x4 label maps


@pytest.mark.parametrize(
    ("pred", "target", "kwargs", "message"),
    [
        (_Z, np.zeros((3, 4, 4), int), {}, "pred: has 2 images but target has 3"),
        (np.zeros((2, 4, 5), int), _Z, {}, r"pred: label maps of shape \(4, 5\) do not match target's \(4, 4\)"),
        (_Z, np.zeros((2, 4), int), {}, r"target: expected label maps of shape \(N, H, W\)"),
        (_Z, _Z + 3, {}, r"target: label 3 at image 0, pixel \(0, 0\) is out of range for 3 classes .* 2 image"),
        (_Z - 1, _Z, {}, r"pred: label -1 at image 0"),
        (_Z, np.full((2, 4, 4), 0.5), {}, r"target: expected integer label values, got 0.5 at image 0"),
        (_Z, np.full((2, 4, 4), "a"), {}, r"target: expected integer label values, got dtype"),
        (np.zeros((2, 4, 4, 4)), _Z, {}, r"pred: \(N, C, H, W\) scores need one channel per class: got 4"),
        (np.full((2, 3, 4, 4), np.nan), _Z, {}, "pred: scores of image 0 hold NaN or inf"),
        (_Z, _Z, {"patient_ids": ["a"]}, "patient_ids: has 1 entries but there are 2 images"),
        (_Z, _Z, {"patient_ids": ["a", ""]}, "patient_ids: image 1 has no id"),
        (_Z, _Z, {"spacing": (1.0, -1.0)}, "spacing: must be positive"),
        (_Z, _Z, {"spacing": (1.0, 1.0, 1.0)}, r"spacing: expected a number, a \(row, column\) pair"),
        (_Z, _Z, {"hd_percentile": 0}, r"hd_percentile: must lie in \(0, 100\]"),
        (_Z, _Z, {"n_bootstrap": -1}, "n_bootstrap: must be an integer >= 0"),
        (_Z, _Z, {"ci": 95}, "ci: confidence level must lie strictly between 0 and 1"),
        (_Z, _Z, {"small_sample_method": "clopper"}, "small_sample_method: .* did you mean 'clopper_pearson'"),
        (_Z, _Z, {"include_background": "yes"}, "include_background: must be true or false"),
        (_Z[:0], _Z[:0], {}, "target: no images to evaluate"),
    ],
)
def test_bad_input_names_the_argument(pred, target, kwargs, message) -> None:
    with pytest.raises(DataError, match=message):
        segmentation_metrics(pred, target, CLASSES, **{"n_bootstrap": 0, **kwargs})


def test_bad_classes_and_torch_inputs() -> None:
    with pytest.raises(DataError, match="classes: need a name for every label value"):
        segmentation_metrics(np.zeros((1, 4, 4), int), np.zeros((1, 4, 4), int), ["lesion"])
    with pytest.raises(DataError, match=r"classes: duplicate class names \['a'\]"):
        segmentation_metrics(np.zeros((1, 4, 4), int), np.zeros((1, 4, 4), int), ["a", "a"])
    # torch tensors, (N, 1, H, W) label maps and logits give the same result as numpy labels
    logits = torch.log(_one_hot(PRED_4X4[None]).float() * 0.9 + 0.05)
    a = segmentation_metrics(logits, torch.from_numpy(TARGET_4X4[None, None]), CLASSES, n_bootstrap=0)
    b = segmentation_metrics(PRED_4X4[None, None], TARGET_4X4[None], CLASSES, n_bootstrap=0)
    assert a == b


def test_no_monai_warnings_reach_the_user_and_other_percentiles_round_trip(tmp_path: Path) -> None:
    pred, target = _empty_rule_case()  # empty classes: MONAI alone warns "is all 0, ... nan/inf distance"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = per_image_scores(pred, target, CLASSES, hd_percentile=99, spacing=np.full((4, 2), 0.5))
    assert [str(w.message) for w in caught] == []
    path = write_segmentation_predictions_csv(tmp_path / "p.csv", scores)
    assert "hd99_plaque" in path.read_text().splitlines()[0]
    back = read_segmentation_predictions_csv(path)
    assert back.hd_percentile == 99.0 and segmentation_metrics_from_scores(back, n_bootstrap=0)["hd_percentile"] == 99
