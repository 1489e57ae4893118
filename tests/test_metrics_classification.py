"""Classification metrics: parity with scikit-learn, closed forms, and the patient bootstrap."""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from medprune.errors import DataError
from medprune.metrics import (
    PER_CLASS_METRICS,
    SUMMARY_METRICS,
    ClassificationMetrics,
    classification_metrics,
    read_predictions_csv,
    write_predictions_csv,
)
from medprune.metrics import _bootstrap as bs


def _random_case(seed: int, n: int, k: int, n_patients: int | None = None, signal: float = 1.0):
    """Labels, softmax probabilities with some signal, and patient ids (labels constant per patient)."""
    rng = np.random.default_rng(seed)
    if n_patients is None:
        y = rng.integers(0, k, n)
        pids = None
    else:
        pid = np.r_[np.arange(n_patients), rng.integers(0, n_patients, n - n_patients)]
        y = rng.integers(0, k, n_patients)[pid]
        pids = [f"p{i:04d}" for i in pid]
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += signal
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return y, probs, pids


def _classes(k: int) -> list[str]:
    return ["healthy", "sick", "other"][:k]


def _assert_json_clean(result: dict) -> None:
    json.dumps(result, allow_nan=False)  # raises on NaN/inf anywhere


# ----------------------------------------------------------------------------- parity with sklearn


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_point_metrics_match_sklearn(k: int, seed: int) -> None:
    y, probs, _ = _random_case(seed, n=150 + 37 * seed, k=k, signal=0.8)
    classes = _classes(k)
    r = classification_metrics(y, probs, classes, n_bootstrap=0)
    pred = probs.argmax(axis=1)
    labels = list(range(k))
    assert set(np.unique(pred)) == set(labels)  # every metric defined in this case

    recall = recall_score(y, pred, labels=labels, average=None)
    precision = precision_score(y, pred, labels=labels, average=None)
    f1 = f1_score(y, pred, labels=labels, average=None)
    for c, name in enumerate(classes):
        pc = r["per_class"][name]
        neg_true, neg_pred = y != c, pred != c
        assert pc["sensitivity"] == pytest.approx(recall[c], abs=1e-12)
        assert pc["ppv"] == pytest.approx(precision[c], abs=1e-12)
        assert pc["f1"] == pytest.approx(f1[c], abs=1e-12)
        assert pc["specificity"] == pytest.approx(recall_score(neg_true, neg_pred), abs=1e-12)
        assert pc["npv"] == pytest.approx(precision_score(neg_true, neg_pred), abs=1e-12)
        assert pc["auc"] == pytest.approx(roc_auc_score(y == c, probs[:, c]), abs=1e-12)
        assert pc["support"] == int((y == c).sum())
    assert r["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert r["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-12)
    assert r["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)
    assert r["worst_class_sensitivity"] == pytest.approx(recall.min(), abs=1e-12)
    expected_auc = roc_auc_score(y, probs[:, 1]) if k == 2 else roc_auc_score(y, probs, multi_class="ovr")
    assert r["macro_auc"] == pytest.approx(expected_auc, abs=1e-12)
    assert r["confusion_matrix"] == confusion_matrix(y, pred, labels=labels).tolist()
    assert r["n_samples"] == len(y) and r["n_patients"] == len(y) and r["bootstrap_unit"] == "sample"
    _assert_json_clean(r)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_auc_matches_sklearn_sample_weight(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k, n_units = 120, 3, 30
    y = rng.integers(0, k, n)
    scores = np.round(rng.random((n, k)), 1)  # coarse rounding: many ties
    unit = rng.integers(0, n_units, n)
    mult = bs.draw_multiplicities(n_units, 20, rng)
    auc = bs.replicate_auc(mult, unit, scores, y)
    for b in range(mult.shape[0]):
        w = mult[b, unit]
        for c in range(k):
            pos = y == c
            if w[pos].sum() == 0 or w[~pos].sum() == 0:
                assert np.isnan(auc[b, c])
            else:
                assert auc[b, c] == pytest.approx(roc_auc_score(pos, scores[:, c], sample_weight=w), abs=1e-12)


# ----------------------------------------------------------------------------- closed forms


def test_specificity_npv_hand_computed() -> None:
    y = np.array([0, 0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
    r = classification_metrics(y, probs, ["healthy", "sick"], n_bootstrap=0)
    sick = r["per_class"]["sick"]  # TP=1 FN=1 FP=1 TN=2
    assert sick["sensitivity"] == pytest.approx(1 / 2)
    assert sick["specificity"] == pytest.approx(2 / 3)
    assert sick["ppv"] == pytest.approx(1 / 2)
    assert sick["npv"] == pytest.approx(2 / 3)
    assert sick["f1"] == pytest.approx(1 / 2)
    assert sick["support"] == 2
    assert r["per_class"]["healthy"]["specificity"] == pytest.approx(1 / 2)
    assert r["confusion_matrix"] == [[2, 1], [1, 1]]


def test_undefined_values_are_none_without_warnings() -> None:
    # class "other" absent and never predicted; class "sick" present but never predicted
    y = np.array([0, 0, 0, 1, 1, 0])
    probs = np.array([[0.8, 0.1, 0.1]] * 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = classification_metrics(y, probs, ["healthy", "sick", "other"], n_bootstrap=200, seed=3)
    sick, other = r["per_class"]["sick"], r["per_class"]["other"]
    assert sick["ppv"] is None and sick["sensitivity"] == 0.0 and sick["f1"] == 0.0
    assert other["sensitivity"] is None and other["auc"] is None and other["f1"] is None and other["ppv"] is None
    assert other["support"] == 0 and other["specificity"] == 1.0
    assert r["ci"]["per_class.other.sensitivity"] is None and r["ci"]["per_class.sick.ppv"] is None
    # summaries use the classes for which the metric is defined, as scikit-learn does
    assert r["balanced_accuracy"] == pytest.approx(0.5)
    assert r["worst_class_sensitivity"] == 0.0
    _assert_json_clean(r)


def test_single_class_data_auc_is_none() -> None:
    y = np.zeros(5, dtype=int)
    probs = np.tile([0.7, 0.3], (5, 1))
    r = classification_metrics(y, probs, ["healthy", "sick"], n_bootstrap=50)
    assert r["macro_auc"] is None and r["ci"]["macro_auc"] is None
    assert r["accuracy"] == 1.0
    _assert_json_clean(r)


def test_ece_hand_computed() -> None:
    y = np.array([0, 0, 0, 1])
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.55, 0.45], [0.1, 0.9]])
    r = classification_metrics(y, probs, ["a", "b"], n_bootstrap=0, ece_bins=5)
    # bins (.8,1]: 2 right, conf .9 -> 2/4*.1; (.6,.8]: 1 wrong, conf .7 -> 1/4*.7;
    # (.4,.6]: 1 right, conf .55 -> 1/4*.45
    assert r["ece"] == pytest.approx(0.05 + 0.175 + 0.1125, abs=1e-12)


def test_ece_near_zero_when_calibrated() -> None:
    rng = np.random.default_rng(0)
    p1 = rng.random(20_000)
    y = (rng.random(20_000) < p1).astype(int)
    r = classification_metrics(y, np.c_[1 - p1, p1], ["a", "b"], n_bootstrap=0)
    assert r["ece"] < 0.02
    overconfident = np.clip(np.c_[1 - p1, p1] * 3 - 1, 0, None)
    overconfident /= overconfident.sum(axis=1, keepdims=True)
    assert classification_metrics(y, overconfident, ["a", "b"], n_bootstrap=0)["ece"] > 0.05


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_resamples_patients_not_images() -> None:
    # one patient: 100 images, all wrong; 99 patients: one image each, all right
    n_bad = 100
    y = np.ones(n_bad + 99, dtype=int)
    probs = np.r_[np.tile([0.9, 0.1], (n_bad, 1)), np.tile([0.1, 0.9], (99, 1))]
    pids = ["bad"] * n_bad + [f"good{i}" for i in range(99)]
    by_patient = classification_metrics(y, probs, ["healthy", "sick"], patient_ids=pids, n_bootstrap=1000)
    by_image = classification_metrics(y, probs, ["healthy", "sick"], n_bootstrap=1000)
    assert by_patient["bootstrap_unit"] == "patient" and by_image["bootstrap_unit"] == "sample"
    assert by_patient["n_patients"] == 100 and by_image["n_patients"] == n_bad + 99
    point = 99 / 199
    assert by_patient["accuracy"] == by_image["accuracy"] == pytest.approx(point)
    lo_p, hi_p = by_patient["ci"]["accuracy"]
    lo_i, hi_i = by_image["ci"]["accuracy"]
    assert lo_p <= point <= hi_p and lo_i <= point <= hi_i
    # image resampling sees ~199 independent coin flips: a narrow interval around 0.5
    assert hi_i - lo_i < 0.16
    # patient resampling: the bad patient is absent in ~37 % of replicates (accuracy 1.0) or drawn
    # several times (accuracy down to ~0.25), so the interval is several times wider
    assert hi_p - lo_p > 3 * (hi_i - lo_i)
    assert hi_p == pytest.approx(1.0) and lo_p < lo_i
    # at patient level each patient counts once: 99 of 100 right
    assert by_patient["patient"]["accuracy"] == pytest.approx(0.99)
    assert by_patient["patient"]["n_samples"] == 100


def test_bootstrap_is_seeded_and_local() -> None:
    y, probs, pids = _random_case(7, n=300, k=2, n_patients=60)
    kwargs = dict(patient_ids=pids, n_bootstrap=200)
    np.random.seed(123)
    a = classification_metrics(y, probs, ["h", "s"], seed=5, **kwargs)
    np.random.seed(999)  # the global RNG must not matter
    b = classification_metrics(y, probs, ["h", "s"], seed=5, **kwargs)
    c = classification_metrics(y, probs, ["h", "s"], seed=6, **kwargs)
    assert a == b
    assert a["ci"]["accuracy"] != c["ci"]["accuracy"]
    assert a["accuracy"] == c["accuracy"]


def test_ci_keys_levels_and_point_inside() -> None:
    y, probs, pids = _random_case(11, n=600, k=3, n_patients=150, signal=1.5)
    r = classification_metrics(y, probs, _classes(3), patient_ids=pids, n_bootstrap=300, ci=0.9)
    expected = set(SUMMARY_METRICS) | {f"per_class.{c}.{m}" for c in _classes(3) for m in PER_CLASS_METRICS}
    assert set(r["ci"]) == expected and set(r["patient"]["ci"]) == expected
    assert r["ci_level"] == 0.9 and r["n_bootstrap"] == 300
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "per_class.sick.sensitivity"):
        lo, hi = r["ci"][key]
        value = r[key] if "." not in key else r["per_class"]["sick"]["sensitivity"]
        assert lo <= value <= hi
    _assert_json_clean(r)


def test_ci_width_shrinks_with_more_patients() -> None:
    widths = []
    for n_patients in (40, 640):
        y, probs, pids = _random_case(3, n=5 * n_patients, k=2, n_patients=n_patients)
        lo, hi = classification_metrics(y, probs, ["h", "s"], patient_ids=pids, n_bootstrap=400)["ci"]["accuracy"]
        widths.append(hi - lo)
    assert widths[1] < 0.5 * widths[0]  # 16x the patients: ~4x narrower


def test_vectorised_confusion_equals_naive_loop() -> None:
    rng = np.random.default_rng(0)
    k, n_units, n_rep = 3, 7, 50
    unit = rng.integers(0, n_units, 40)
    y, pred = rng.integers(0, k, 40), rng.integers(0, k, 40)
    unit_cm = bs.per_unit_confusion(y, pred, unit, n_units, k)
    mult = bs.draw_multiplicities(n_units, n_rep, np.random.default_rng(42))
    vectorised = bs.replicate_confusion(mult, unit_cm, k)
    draws = np.random.default_rng(42).integers(0, n_units, size=(n_rep, n_units))
    for b in range(n_rep):
        images = np.concatenate([np.flatnonzero(unit == u) for u in draws[b]])
        naive = confusion_matrix(y[images], pred[images], labels=list(range(k)))
        assert np.array_equal(vectorised[b], naive)


def test_accuracy_and_ece_ci_equal_naive_bootstrap() -> None:
    y, probs, pids = _random_case(5, n=120, k=2, n_patients=25)
    # 25 patients is below the default exact_below=30, where accuracy would get a Clopper–Pearson
    # interval; exact_below=0 keeps the bootstrap this test checks against the naive loop.
    r = classification_metrics(
        y, probs, ["h", "s"], patient_ids=pids, n_bootstrap=100, seed=9, ece_bins=10, exact_below=0
    )
    assert r["ci_method"]["accuracy"] == r["ci_method"]["ece"] == "percentile_bootstrap"
    pid = np.asarray(pids)
    patients = np.unique(pid)
    draws = np.random.default_rng(9).integers(0, len(patients), size=(100, len(patients)))
    accs, eces = [], []
    for row in draws:
        images = np.concatenate([np.flatnonzero(pid == patients[u]) for u in row])
        pred, conf = probs[images].argmax(1), probs[images].max(1)
        correct = pred == y[images]
        accs.append(correct.mean())
        bins = np.clip(np.ceil(conf * 10).astype(int) - 1, 0, 9)
        eces.append(sum(abs(correct[bins == j].sum() - conf[bins == j].sum()) for j in range(10)) / len(images))
    assert r["ci"]["accuracy"] == pytest.approx(list(np.percentile(accs, [2.5, 97.5])), abs=1e-12)
    assert r["ci"]["ece"] == pytest.approx(list(np.percentile(eces, [2.5, 97.5])), abs=1e-12)


def test_n_bootstrap_zero_disables_intervals() -> None:
    y, probs, pids = _random_case(1, n=50, k=2, n_patients=10)
    r = classification_metrics(y, probs, ["h", "s"], patient_ids=pids, n_bootstrap=0)
    assert r["ci"] == {} and r["patient"]["ci"] == {} and r["n_bootstrap"] == 0


def test_bootstrap_speed_target() -> None:
    y, probs, pids = _random_case(0, n=2000, k=2, n_patients=400)
    start = time.process_time()  # CPU time, not wall time: a loaded machine cannot fail it
    classification_metrics(y, probs, ["h", "s"], patient_ids=pids, n_bootstrap=1000)
    assert time.process_time() - start < 10.0  # ~0.3 s measured on 2 cores; generous for CI noise


# ----------------------------------------------------------------------------- patient level


def _patient_case():
    probs = np.array(
        [
            [0.2, 0.8],
            [0.7, 0.3],
            [0.7, 0.3],  # patient A (sick): mean says healthy, max says sick
            [0.9, 0.1],  # patient B (healthy)
            [0.1, 0.9],
            [0.3, 0.7],  # patient C (sick)
        ]
    )
    y = np.array([1, 1, 1, 0, 1, 1])
    return y, probs, ["A", "A", "A", "B", "C", "C"]


def test_patient_aggregation_mean_vs_max() -> None:
    y, probs, pids = _patient_case()
    mean = classification_metrics(y, probs, ["healthy", "sick"], patient_ids=pids, n_bootstrap=0, ece_bins=10)
    mx = classification_metrics(
        y, probs, ["healthy", "sick"], patient_ids=pids, n_bootstrap=0, patient_aggregation="max", ece_bins=10
    )
    assert mean["patient"]["confusion_matrix"] == [[1, 0], [1, 1]]  # A: mean [.533, .467] -> healthy
    assert mx["patient"]["confusion_matrix"] == [[1, 0], [0, 2]]  # A: max [.7, .8] -> [.467, .533] -> sick
    assert mean["patient"]["per_class"]["sick"]["sensitivity"] == 0.5
    assert mx["patient"]["per_class"]["sick"]["sensitivity"] == 1.0
    assert mean["patient"]["aggregation"] == "mean" and mx["patient"]["aggregation"] == "max"
    # mean: A conf .5333 wrong (bin .5-.6], B conf .9 right, C conf .8 right (bin .7-.8]
    expected_mean_ece = (abs(0 - 1.6 / 3) + abs(1 - 0.9) + abs(1 - 0.8)) / 3
    assert mean["patient"]["ece"] == pytest.approx(expected_mean_ece, abs=1e-12)
    # max: A [.7,.8]/1.5 conf .5333 right, B .9 right, C [.3,.9]/1.2 conf .75 right
    expected_max_ece = (abs(1 - 0.8 / 1.5) + abs(1 - 0.9) + abs(1 - 0.75)) / 3
    assert mx["patient"]["ece"] == pytest.approx(expected_max_ece, abs=1e-12)
    assert mean["patient"]["n_samples"] == 3 and mean["n_patients"] == 3 and mean["n_samples"] == 6
    assert mean["confusion_matrix"] == mx["confusion_matrix"]  # image level unaffected


def test_mixed_label_patient_takes_majority() -> None:
    y = np.array([0, 1, 1, 0])
    probs = np.array([[0.6, 0.4], [0.4, 0.6], [0.3, 0.7], [0.8, 0.2]])
    r = classification_metrics(y, probs, ["h", "s"], patient_ids=["A", "A", "A", "B"], n_bootstrap=0)
    assert r["patient"]["n_mixed_label_patients"] == 1
    assert r["patient"]["per_class"]["s"]["support"] == 1 and r["patient"]["per_class"]["h"]["support"] == 1


# ----------------------------------------------------------------------------- accumulator and CSV


def test_accumulator_equals_one_shot() -> None:
    y, probs, pids = _random_case(2, n=230, k=3, n_patients=50)
    expected = classification_metrics(y, probs, _classes(3), patient_ids=pids, n_bootstrap=150, seed=4)
    metric = ClassificationMetrics(_classes(3), n_bootstrap=150, seed=4)
    for lo in range(0, 230, 64):
        sl = slice(lo, lo + 64)
        batch_probs = torch.from_numpy(probs[sl]) if lo % 128 == 0 else probs[sl]
        ids = range(lo, min(lo + 64, 230))
        metric.update(batch_probs, torch.from_numpy(y[sl]), patient_ids=pids[sl], sample_ids=ids)
    assert metric.n_samples == 230
    assert metric.predictions().sample_ids.tolist() == list(range(230))
    assert metric.aggregate() == expected
    metric.reset()
    metric.update(probs[:10], y[:10])
    assert metric.aggregate()["n_samples"] == 10


def test_accumulator_rejects_duplicates_and_mixed_ids() -> None:
    y, probs, pids = _random_case(2, n=20, k=2, n_patients=5)
    metric = ClassificationMetrics(["h", "s"], n_bootstrap=0)
    metric.update(probs[:10], y[:10], patient_ids=pids[:10], sample_ids=range(10))
    metric.update(probs[10:], y[10:], patient_ids=pids[10:], sample_ids=range(5, 15))
    with pytest.raises(DataError, match=r"seen more than once.*\[5, 6, 7, 8, 9\]|seen more than once"):
        metric.aggregate()
    with pytest.raises(DataError, match="batch 2: patient_ids must be given for every batch"):
        metric.update(probs[:2], y[:2], sample_ids=[100, 101])
    with pytest.raises(DataError, match="batch 2: probs: expected shape"):
        metric.update(probs[:2, :1], y[:2])
    with pytest.raises(DataError, match="no batches"):
        ClassificationMetrics(["h", "s"]).aggregate()


@pytest.mark.parametrize("sample_ids", [list(range(40)), [f"img_{i}" for i in range(40)]])
def test_predictions_csv_round_trip(tmp_path, sample_ids) -> None:
    y, probs, pids = _random_case(8, n=40, k=3, n_patients=12)
    paths = [f"data/img {i},x.png" for i in range(40)]  # spaces and commas survive quoting
    out = write_predictions_csv(tmp_path / "pred.csv", sample_ids, paths, pids, y, probs, _classes(3))
    header = out.read_text().splitlines()[0]
    assert header == "index,path,patient_id,label,pred,prob_healthy,prob_sick,prob_other"
    table = read_predictions_csv(out)
    assert table.classes == _classes(3)
    assert table.sample_ids.tolist() == sample_ids
    assert table.paths.tolist() == paths and table.patient_ids.tolist() == pids
    assert np.array_equal(table.y_true, y) and np.array_equal(table.probs, probs)  # exact floats
    assert np.array_equal(table.pred, probs.argmax(1))
    assert classification_metrics(table.y_true, table.probs, table.classes, patient_ids=table.patient_ids) == (
        classification_metrics(y, probs, _classes(3), patient_ids=pids)
    )
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temp file


def test_predictions_csv_errors(tmp_path) -> None:
    y, probs, _ = _random_case(8, n=5, k=2)
    with pytest.raises(DataError, match="paths: has 3 entries but there are 5"):
        write_predictions_csv(tmp_path / "p.csv", range(5), ["a"] * 3, None, y, probs, ["h", "s"])
    path = write_predictions_csv(tmp_path / "p.csv", range(5), None, None, y, probs, ["h", "s"])
    assert read_predictions_csv(path).patient_ids is None
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace(",h,", ",unknown,", 1).replace(",s,", ",unknown,", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"p\.csv: line 4: label 'unknown' is not one of the classes"):
        read_predictions_csv(path)
    with pytest.raises(DataError, match="not found"):
        read_predictions_csv(tmp_path / "missing.csv")


# ----------------------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(y_true=np.zeros(4, int)), "probs: has 5 rows but y_true has 4 labels"),
        (dict(probs=np.full((5, 3), 1 / 3)), r"probs: expected shape \(N, 2\) for classes \['h', 's'\], got \(5, 3\)"),
        (dict(y_true=np.array([0, 1, 2, 0, 1])), "label 2 at sample 2 is out of range for 2 classes"),
        (dict(y_true=np.array([0, 1, -1, 0, 1])), "label -1 at sample 2 is out of range"),
        (dict(y_true=np.array([0.0, 1.5, 0, 0, 1])), "y_true: expected integer class indices"),
        (dict(probs=np.array([[2.0, -1.0]] * 5)), "did you pass logits"),
        (dict(probs=np.array([[0.7, 0.7]] * 5)), "probs: row 0 sums to 1.4"),
        (dict(probs=np.array([[np.nan, 1.0]] * 5)), "probs: row 0 holds NaN"),
        (dict(patient_ids=["a", "b"]), "patient_ids: has 2 entries but there are 5 samples"),
        (dict(patient_ids=["a", None, "b", "c", "d"]), "patient_ids: sample 1 has no id"),
        (dict(classes=["h", "h"]), "duplicate class names"),
        (dict(patient_aggregation="maxx"), "did you mean 'max'"),
        (dict(ci=95), "ci: confidence level must lie strictly between 0 and 1"),
        (dict(n_bootstrap=-1), "n_bootstrap: must be an integer >= 0"),
    ],
)
def test_bad_inputs_raise_data_error(kwargs: dict, message: str) -> None:
    args = dict(y_true=np.array([0, 1, 1, 0, 1]), probs=np.tile([0.4, 0.6], (5, 1)), classes=["h", "s"])
    args.update(kwargs)
    y_true, probs, classes = args.pop("y_true"), args.pop("probs"), args.pop("classes")
    with pytest.raises(DataError, match=message):
        classification_metrics(y_true, probs, classes, **args)
