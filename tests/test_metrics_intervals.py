"""Honest intervals for small counts: Clopper–Pearson / Wilson, clustering, ci_method, small_sample."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binomtest

from medprune.errors import DataError
from medprune.metrics import (
    CI_METHODS,
    PER_CLASS_METRICS,
    SUMMARY_METRICS,
    ClassificationMetrics,
    classification_metrics,
    small_sample_notes,
)
from medprune.metrics import _bootstrap as bs
from medprune.metrics import _exact as ex

HS = ["healthy", "sick"]
SPLIT_NOTE = (
    "the split has 14 patients, fewer than 20: its intervals are wide and a difference between two models on it "
    "is weak evidence"
)


def _random_case(seed: int, n: int, k: int, n_patients: int, signal: float):
    """Same generator as tests/test_metrics_classification.py: labels constant per patient."""
    rng = np.random.default_rng(seed)
    pid = np.r_[np.arange(n_patients), rng.integers(0, n_patients, n - n_patients)]
    y = rng.integers(0, k, n_patients)[pid]
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += signal
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return y, probs, [f"p{i:04d}" for i in pid]


def _probs(correct: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Two-class probabilities predicting ``y`` where ``correct`` and the other class elsewhere."""
    pred = np.where(correct, y, 1 - y)
    return np.where(pred[:, None] == 1, [0.2, 0.8], [0.8, 0.2])


def _five_of_five(**kwargs) -> dict:
    """40 healthy images (38 right) and 5 sick images, all right; one image per unit."""
    y = np.r_[np.zeros(40, int), np.ones(5, int)]
    correct = np.r_[np.ones(38, bool), np.zeros(2, bool), np.ones(5, bool)]
    return classification_metrics(y, _probs(correct, y), HS, n_bootstrap=200, **kwargs)


# ----------------------------------------------------------------------------- the formulas


def test_hand_worked_clopper_pearson_and_wilson() -> None:
    lo, hi = ex.clopper_pearson(np.array([5.0, 0.0]), np.array([0.0, 10.0]), 0.95)
    # 5/5: lower end solves p**5 = 0.025; 0/10: upper end solves (1 - p)**10 = 0.025
    assert lo == pytest.approx([0.025 ** (1 / 5), 0.0], abs=1e-12) and hi == pytest.approx([1.0, 1 - 0.025 ** 0.1])
    assert np.round(lo, 4).tolist() == [0.4782, 0.0] and np.round(hi, 4).tolist() == [1.0, 0.3085]
    lo, hi = ex.wilson(np.array([5.0]), np.array([0.0]), 0.95)
    assert round(float(lo[0]), 4) == 0.5655 and hi[0] == 1.0
    # empty denominators stay undefined
    assert np.isnan(ex.clopper_pearson(np.array([0.0]), np.array([0.0]), 0.95)[0]).all()
    assert np.isnan(ex.wilson(np.array([0.0]), np.array([0.0]), 0.95)[1]).all()


@pytest.mark.parametrize(("x", "n"), [(0, 1), (1, 1), (3, 7), (9, 10), (17, 40), (0, 25), (120, 121)])
@pytest.mark.parametrize("level", [0.9, 0.95])
def test_intervals_match_scipy_binomtest(x: int, n: int, level: float) -> None:
    result = binomtest(x, n)
    for method, scipy_method in (("clopper_pearson", "exact"), ("wilson", "wilson")):
        lo, hi = ex.METHODS[method](np.array([float(x)]), np.array([float(n - x)]), level)
        expected = result.proportion_ci(confidence_level=level, method=scipy_method)
        assert [lo[0], hi[0]] == pytest.approx([expected.low, expected.high], abs=1e-10)


def test_effective_count_is_kish_and_never_exceeds_units() -> None:
    rng = np.random.default_rng(0)
    m = rng.integers(0, 6, size=(30, 4)).astype(float)
    m[:, 3] = np.where(m[:, 3] > 0, 3.0, 0.0)  # equal sizes in column 3
    units, n_eff = ex.effective_count(m)
    assert units.tolist() == (m > 0).sum(axis=0).tolist()
    assert n_eff == pytest.approx(m.sum(0) ** 2 / (m**2).sum(0))
    assert (n_eff <= units + 1e-12).all() and n_eff[3] == units[3]
    assert ex.effective_count(np.array([[8.0], [2.0]]))[1] == pytest.approx([100 / 68])
    assert np.isnan(ex.effective_count(np.zeros((3, 1)))[1]).all()


# ----------------------------------------------------------------------------- in metrics.json


def test_five_of_five_gets_clopper_pearson_not_one_one() -> None:
    r = _five_of_five()
    assert r["per_class"]["sick"]["sensitivity"] == 1.0
    lo, hi = r["ci"]["per_class.sick.sensitivity"]
    assert round(lo, 4) == 0.4782 and hi == 1.0
    assert r["ci_method"]["per_class.sick.sensitivity"] == "clopper_pearson"
    # 38/40 healthy: 40 units, not degenerate -> the bootstrap stays
    assert r["ci_method"]["per_class.healthy.sensitivity"] == "percentile_bootstrap"
    assert set(r["ci_method"]) == set(r["ci"]) and set(r["ci_method"].values()) <= set(CI_METHODS)
    wilson = _five_of_five(small_sample_method="wilson")
    assert round(wilson["ci"]["per_class.sick.sensitivity"][0], 4) == 0.5655
    assert wilson["ci_method"]["per_class.sick.sensitivity"] == "wilson"
    json.dumps(r, allow_nan=False)


def test_zero_of_ten_gets_exact_upper_bound() -> None:
    y = np.r_[np.zeros(40, int), np.ones(10, int)]
    r = classification_metrics(y, _probs(y == 0, y), HS, n_bootstrap=200)
    assert r["per_class"]["sick"]["sensitivity"] == 0.0
    lo, hi = r["ci"]["per_class.sick.sensitivity"]
    assert lo == 0.0 and round(hi, 4) == 0.3085
    assert r["ci_method"]["per_class.sick.sensitivity"] == "clopper_pearson"
    assert r["ci"]["per_class.sick.ppv"] is None and r["ci_method"]["per_class.sick.ppv"] is None  # never predicted


def test_large_case_keeps_bootstrap_bit_for_bit() -> None:
    y, probs, pids = _random_case(0, n=600, k=3, n_patients=150, signal=1.5)
    r = classification_metrics(y, probs, ["a", "b", "c"], patient_ids=pids, n_bootstrap=300, seed=0)
    # values computed by the code before Clopper–Pearson existed (same data, seed and B)
    before = {
        "accuracy": ([0.7692848740792163, 0.8291884318447427], [0.9066666666666666, 0.9866666666666667]),
        "balanced_accuracy": ([0.7708972412869214, 0.8305716939229418], [0.9066959874135332, 0.9885057471264368]),
        "worst_class_sensitivity": (
            [0.6927505394389835, 0.8070460942997888],
            [0.8264841137123745, 0.9785069444444444],
        ),
        "per_class.b.sensitivity": ([0.7766946051233621, 0.8796969331079448], [0.8484105824446267, 1.0]),
        "per_class.c.ppv": ([0.756647964700038, 0.890513812154696], [0.9361702127659575, 1.0]),
        "macro_auc": ([0.9081939703930132, 0.9398843534990751], [0.9693994443495579, 0.9989678660432469]),
    }
    assert set(r["ci_method"].values()) == {"percentile_bootstrap"}
    for key, (image, patient) in before.items():
        assert r["ci"][key] == image
        if r["patient"]["ci_method"][key] == "percentile_bootstrap":
            assert r["patient"]["ci"][key] == patient
    # at patient level class a is 48 of 48 right: its sensitivity and the two summaries built on
    # it change method; everything else keeps its old interval
    changed = {k for k, v in r["patient"]["ci_method"].items() if v != "percentile_bootstrap"}
    assert changed == {"per_class.a.sensitivity", "per_class.a.npv", "balanced_accuracy", "worst_class_sensitivity"}
    assert r["patient"]["per_class"]["a"]["sensitivity"] == 1.0


def test_clustered_images_get_a_wider_interval() -> None:
    y = np.r_[np.zeros(40, int), np.ones(10, int)]
    probs = _probs(np.ones(50, bool), y)
    healthy = [f"h{i}" for i in range(40)]
    clustered = classification_metrics(y, probs, HS, patient_ids=healthy + ["s1"] * 5 + ["s2"] * 5, n_bootstrap=200)
    independent = classification_metrics(y, probs, HS, patient_ids=healthy + [f"s{i}" for i in range(10)],
                                         n_bootstrap=200)
    uneven = classification_metrics(y, probs, HS, patient_ids=healthy + ["s1"] * 8 + ["s2"] * 2, n_bootstrap=200)
    key = "per_class.sick.sensitivity"
    # 10 of 10 right: 10 independent images -> 10 trials; 2 patients x 5 -> 2 trials; 8 + 2 -> 100/68
    assert independent["ci"][key] == pytest.approx([0.025**0.1, 1.0])
    assert clustered["ci"][key] == pytest.approx([0.025**0.5, 1.0])
    assert uneven["ci"][key] == pytest.approx([0.025 ** (68 / 100), 1.0])
    assert uneven["ci"][key][0] < clustered["ci"][key][0] < independent["ci"][key][0]
    assert clustered["patient"]["ci"][key] == pytest.approx([0.025**0.5, 1.0])  # 2 of 2 patients
    assert clustered["ci_method"][key] == clustered["patient"]["ci_method"][key] == "clopper_pearson"


def test_patient_section_has_ci_method_for_every_interval() -> None:
    y, probs, pids = _random_case(3, n=200, k=3, n_patients=40, signal=1.0)
    r = classification_metrics(y, probs, ["a", "b", "c"], patient_ids=pids, n_bootstrap=100)
    expected = set(SUMMARY_METRICS) | {f"per_class.{c}.{m}" for c in "abc" for m in PER_CLASS_METRICS}
    for section in (r, r["patient"]):
        assert set(section["ci_method"]) == set(section["ci"]) == expected
        for key, method in section["ci_method"].items():
            assert (method is None) == (section["ci"][key] is None) and method in (*CI_METHODS, None)
    # ~13 patients per class: every per-class sensitivity is a small count at both levels
    for c in "abc":
        assert r["patient"]["ci_method"][f"per_class.{c}.sensitivity"] == "clopper_pearson"
        assert r["ci_method"][f"per_class.{c}.sensitivity"] == "clopper_pearson"
        assert r["ci_method"][f"per_class.{c}.f1"] in ("percentile_bootstrap", "percentile_bootstrap_degenerate")


def test_summaries_derive_from_per_class_intervals_and_degenerate_is_marked() -> None:
    r = _five_of_five()
    healthy, sick = r["ci"]["per_class.healthy.sensitivity"], r["ci"]["per_class.sick.sensitivity"]
    assert r["ci"]["worst_class_sensitivity"] == [min(healthy[0], sick[0]), min(healthy[1], sick[1])]
    assert r["ci"]["balanced_accuracy"] == pytest.approx([(healthy[0] + sick[0]) / 2, (healthy[1] + sick[1]) / 2])
    assert r["ci_method"]["worst_class_sensitivity"] == r["ci_method"]["balanced_accuracy"] == "clopper_pearson"
    # perfectly separated scores: every replicate's AUC and F1 is 1, an interval of zero width
    y = np.r_[np.zeros(40, int), np.ones(5, int)]
    perfect = classification_metrics(y, _probs(np.ones(45, bool), y), HS, n_bootstrap=200)
    assert perfect["ci"]["macro_auc"] == perfect["ci"]["per_class.sick.f1"] == [1.0, 1.0]
    for key in ("macro_auc", "macro_f1", "per_class.sick.auc", "per_class.sick.f1"):
        assert perfect["ci_method"][key] == "percentile_bootstrap_degenerate"
    assert perfect["ci_method"]["accuracy"] == "clopper_pearson"  # 45 of 45: degenerate proportion


def test_exact_below_threshold_switches_small_counts() -> None:
    # 28 patients, one image each, 21 right: not degenerate, so only the count decides
    y = np.ones(28, int)
    correct = np.arange(28) < 21
    probs = _probs(correct, y)
    small = classification_metrics(y, probs, HS, n_bootstrap=200)
    off = classification_metrics(y, probs, HS, n_bootstrap=200, exact_below=0)
    assert small["ci_method"]["accuracy"] == "clopper_pearson"
    assert off["ci_method"]["accuracy"] == "percentile_bootstrap"
    expected = binomtest(21, 28).proportion_ci(method="exact")
    assert small["ci"]["accuracy"] == pytest.approx([expected.low, expected.high], abs=1e-12)


def test_new_interval_covers_where_the_bootstrap_does_not() -> None:
    # 300 data sets: 8 sick images each right with p = 0.9 (and 8 healthy, all right)
    p_true, n_sick, n_sets, n_boot = 0.9, 8, 300, 200
    rng = np.random.default_rng(2024)
    y = np.r_[np.zeros(8, int), np.ones(n_sick, int)]
    covered_new = covered_old = 0
    for i in range(n_sets):
        correct = np.r_[np.ones(8, bool), rng.random(n_sick) < p_true]
        r = classification_metrics(y, _probs(correct, y), HS, n_bootstrap=n_boot, seed=i)
        lo, hi = r["ci"]["per_class.sick.sensitivity"]
        covered_new += lo <= p_true <= hi
        # the percentile bootstrap as it was: same draws, sensitivity of the sick images drawn
        mult = bs.draw_multiplicities(16, n_boot, np.random.default_rng(i))[:, 8:]
        sens = (mult @ correct[8:]) / np.maximum(mult.sum(axis=1), 1)
        old = bs.percentile_interval(np.where(mult.sum(axis=1) > 0, sens, np.nan), 0.95, 0.1)
        covered_old += old[0] <= p_true <= old[1]
    # measured with this seed: 0.99 and 0.62
    assert covered_new / n_sets >= 0.93
    assert covered_old / n_sets <= 0.65  # 8 of 8 right (p = 0.43) always gives [1, 1]


def test_small_sample_flags_minority_and_split() -> None:
    # 3 sick images from 2 patients, 36 healthy images from 12 patients
    y = np.r_[np.zeros(36, int), np.ones(3, int)]
    pids = [f"h{i // 3}" for i in range(36)] + ["s1", "s1", "s2"]
    r = classification_metrics(y, _probs(np.ones(39, bool), y), HS, patient_ids=pids, n_bootstrap=0)
    assert r["ci"] == {} and r["ci_method"] == {}  # the section does not need intervals
    assert r["small_sample"] == {
        "min_class_support": 10,
        "min_patients": 20,
        "classes": {"sick": 3},
        "split": True,
        "notes": [
            "'sick' has 3 images from 2 patients: one error moves its sensitivity by 0.33, "
            "one patient's images by up to 0.67",
            SPLIT_NOTE,
        ],
    }
    assert r["patient"]["small_sample"]["classes"] == {"sick": 2}
    patient_note = "'sick' has 2 patients: one error moves its patient-level sensitivity by 0.50"
    assert r["patient"]["small_sample"]["notes"] == [patient_note, SPLIT_NOTE]
    assert small_sample_notes(r) == [*r["small_sample"]["notes"], patient_note]
    assert small_sample_notes(r, level="patient") == [patient_note, SPLIT_NOTE]
    relaxed = classification_metrics(
        y, _probs(np.ones(39, bool), y), HS, patient_ids=pids, n_bootstrap=0, min_class_support=2, min_patients=14
    )
    assert relaxed["small_sample"]["classes"] == {} and relaxed["small_sample"]["split"] is False
    assert small_sample_notes(relaxed) == []
    json.dumps(r, allow_nan=False)


def test_small_sample_without_patient_ids_and_absent_class() -> None:
    y = np.r_[np.zeros(12, int), np.ones(3, int)]
    r = classification_metrics(y, _probs(np.ones(15, bool), y), ["healthy", "sick", "other"][:2], n_bootstrap=0)
    assert r["small_sample"]["notes"] == [
        "'sick' has 3 images: one error moves its sensitivity by 0.33",
        "the split has 15 images (no patient ids), fewer than 20: its intervals are wide and a difference "
        "between two models on it is weak evidence",
    ]
    three = classification_metrics(y, np.c_[_probs(np.ones(15, bool), y), np.zeros(15)], ["h", "s", "o"],
                                   n_bootstrap=0, min_patients=0)
    assert three["small_sample"]["classes"] == {"s": 3, "o": 0}
    assert "'o' has no images: its sensitivity, F1 and AUC are undefined" in three["small_sample"]["notes"]


def test_accumulator_passes_the_new_options() -> None:
    y, probs, pids = _random_case(2, n=120, k=2, n_patients=24, signal=1.0)
    kwargs = dict(n_bootstrap=100, seed=1, exact_below=25, small_sample_method="wilson", min_class_support=15,
                  min_patients=30)
    metric = ClassificationMetrics(HS, **kwargs)
    metric.update(probs, y, patient_ids=pids)
    result = metric.aggregate()
    assert result == classification_metrics(y, probs, HS, patient_ids=pids, **kwargs)
    assert result["small_sample"]["min_patients"] == 30 and "wilson" in result["ci_method"].values()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(exact_below=-1), "exact_below: must be an integer >= 0"),
        (dict(exact_below=2.5), "exact_below: must be an integer >= 0"),
        (dict(min_class_support=True), "min_class_support: must be an integer >= 0"),
        (dict(min_patients=-3), "min_patients: must be an integer >= 0"),
        (dict(small_sample_method="wilsom"), "unknown interval method 'wilsom'; did you mean 'wilson'"),
    ],
)
def test_bad_small_sample_options_raise(kwargs: dict, message: str) -> None:
    y = np.array([0, 1, 1, 0, 1])
    with pytest.raises(DataError, match=message):
        classification_metrics(y, _probs(np.ones(5, bool), y), HS, **kwargs)
    with pytest.raises(DataError, match=message):
        ClassificationMetrics(HS, **kwargs)


def test_small_sample_notes_errors() -> None:
    r = _five_of_five()
    with pytest.raises(DataError, match="did you mean 'image'"):
        small_sample_notes(r, level="imag")  # type: ignore[arg-type]
    old = {k: v for k, v in r.items() if k != "small_sample"}
    with pytest.raises(DataError, match="no 'small_sample' section; these metrics predate it"):
        small_sample_notes(old)
    old_patient = {**r, "patient": {k: v for k, v in r["patient"].items() if k != "small_sample"}}
    with pytest.raises(DataError, match="no 'patient.small_sample' section"):
        small_sample_notes(old_patient, level="patient")
