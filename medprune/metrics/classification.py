"""Per-class classification metrics with patient-level confidence intervals.

A clinical ML engineer answers for the sensitivity of the minority ("sick", "plaque") class, not
for mean accuracy, and for how sure that number is. This module computes, per class and one-vs-rest,
sensitivity, specificity, PPV, NPV, F1, ROC AUC and support, the summaries (accuracy, balanced
accuracy, macro F1, worst-class sensitivity, macro AUC), the confusion matrix and the expected
calibration error — and a confidence interval for every one of them, with the method that made
it recorded beside it (``ci_method``).

**Percentile bootstrap** (``"percentile_bootstrap"``), the default for every metric. It
resamples **patients**, not images: images of one patient are correlated (DMR-IR has ~20 frames
per patient), so resampling images would make intervals far too narrow. The same patients drawn
for a replicate are used for the image-level and the patient-level section.

**Small counts.** The percentile bootstrap cannot produce an error the data does not hold — a
class with 5 of 5 right gets ``[1, 1]`` — and it under-covers when few units carry a number.
So a *proportion* (per-class sensitivity, specificity, PPV, NPV; accuracy) gets a closed-form
interval instead — Clopper–Pearson (``"clopper_pearson"``, default, coverage guaranteed) or
Wilson (``"wilson"``), chosen by ``small_sample_method`` — when its denominator holds fewer than
``exact_below`` units (patients, or images without patient ids) or its bootstrap interval
degenerates (zero width, no interval, or a point estimate of exactly 0 or 1). The closed form is
computed on an **effective count** that respects clustering: with ``m_i`` images of patient
``i`` in the denominator, ``n_eff = (sum m_i)**2 / sum m_i**2`` trials and ``p_hat * n_eff``
successes — the number of patients when each brings equally many images, never more. This is
the count of a design in which a patient's images are all right or all wrong, the worst case,
so the interval is conservative (derivation in :mod:`medprune.metrics._exact`). At patient level
and without patient ids each image is its own unit and ``n_eff`` is the plain count.

Balanced accuracy and worst-class sensitivity are the mean and the minimum of per-class
sensitivities. When any of those got a closed-form interval, theirs is derived from the per-class
intervals — mean (or min) of the lower ends to mean (or min) of the upper ends, which holds the
summary whenever each per-class interval holds its class — and recorded under the closed-form
method's name. F1, AUC, macro means and ECE keep the bootstrap; when its interval has zero width
it is marked ``"percentile_bootstrap_degenerate"`` so a reader does not mistake it for certainty.

**Too small to judge.** ``small_sample`` lists classes with fewer than ``min_class_support``
units and flags a split with fewer than ``min_patients`` units, with one sentence each that the
report and the safety gate can show (:func:`small_sample_notes`).

Undefined values (0/0, an AUC with a class missing) are ``None`` in the result — never ``NaN`` —
so the dict serialises to valid JSON (``metrics.json``, schema in DESIGN.md §2).

Example::

    result = classification_metrics(y_true, probs, ["healthy", "sick"], patient_ids=pids)
    result["per_class"]["sick"]["sensitivity"], result["ci"]["per_class.sick.sensitivity"]
    result["ci_method"]["per_class.sick.sensitivity"]   # "clopper_pearson" for few sick patients
    small_sample_notes(result)   # ["'sick' has 5 images from 2 patients: ...", ...]

    metric = ClassificationMetrics(["healthy", "sick"])
    for batch in loader:
        metric.update(model(batch.x).softmax(1), batch.y, patient_ids=batch.patient_ids)
    result = metric.aggregate()
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np

from medprune.errors import DataError
from medprune.metrics import _bootstrap as bs
from medprune.metrics import _exact as ex
from medprune.metrics._common import (
    IntervalOptions,
    bootstrap_method,
    check_classes,
    check_ids,
    check_int_option,
    check_interval_options,
    check_unique_ids,
    none_if_nan,
    plural,
    small_sample_section,
    to_numpy,
    use_closed_form,
)
from medprune.metrics.predictions import Predictions, as_sample_ids
from medprune.registry import suggest

if TYPE_CHECKING:
    import torch

__all__ = [
    "classification_metrics",
    "ClassificationMetrics",
    "small_sample_notes",
    "PER_CLASS_METRICS",
    "SUMMARY_METRICS",
    "CI_METHODS",
]

logger = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, "torch.Tensor", Sequence[float], Sequence[int]]

PER_CLASS_METRICS = ("sensitivity", "specificity", "ppv", "npv", "f1", "auc")
"""Keys of each ``per_class`` entry that get a confidence interval (``support`` does not)."""

SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "worst_class_sensitivity", "macro_auc", "ece")
"""Top-level scalar metrics, each with a confidence interval."""

CI_METHODS = ("percentile_bootstrap", "percentile_bootstrap_degenerate", "clopper_pearson", "wilson")
"""Values of ``ci_method``: how each interval in ``ci`` was made (``None`` where ``ci`` is ``None``)."""

_AGGREGATIONS = ("mean", "max")
_PROPORTIONS = ("sensitivity", "specificity", "ppv", "npv")  # per-class metrics that are x / n
_NOTE_LEVELS = ("image", "patient", "all")
# Softmax in float32 sums to 1 within ~1e-6; 1e-3 only tolerates rounding in stored CSVs.
_ROW_SUM_TOL = 1e-3


# ----------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class _Options(IntervalOptions):
    """The validated evaluation options every level shares: the interval ones plus ECE's bins."""

    ece_bins: int


def _check_options(
    n_bootstrap: int,
    ci: float,
    patient_aggregation: str,
    ece_bins: int,
    min_defined_fraction: float,
    exact_below: int,
    small_sample_method: str,
    min_class_support: int,
    min_patients: int,
) -> _Options:
    shared = check_interval_options(
        n_bootstrap, ci, min_defined_fraction, exact_below, small_sample_method, min_class_support, min_patients
    )
    if patient_aggregation not in _AGGREGATIONS:
        raise DataError("patient_aggregation: " + suggest(str(patient_aggregation), _AGGREGATIONS, "aggregation"))
    return _Options(ece_bins=check_int_option("ece_bins", ece_bins, 1), **vars(shared))


def _check_labels(y_true: Any, k: int, classes: list[str]) -> np.ndarray:
    y = to_numpy(y_true)
    if y.ndim != 1:
        raise DataError(f"y_true: expected a 1-D array of class indices, got shape {tuple(y.shape)}")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise DataError(f"y_true: expected integer class indices, got dtype {y.dtype}")
        y = y.astype(np.int64)
    bad = np.flatnonzero((y < 0) | (y >= k))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"y_true: label {int(y[i])} at sample {i} is out of range for {k} classes {classes} "
            f"(valid: 0..{k - 1}); {bad.size} sample(s) affected"
        )
    return y.astype(np.int64, copy=False)


def _check_probs(probs: Any, n: int, k: int, classes: list[str]) -> np.ndarray:
    p = to_numpy(probs)
    if p.ndim != 2 or p.shape[1] != k:
        raise DataError(f"probs: expected shape (N, {k}) for classes {classes}, got {tuple(p.shape)}")
    if p.shape[0] != n:
        raise DataError(f"probs: has {p.shape[0]} rows but y_true has {n} labels")
    if not np.issubdtype(p.dtype, np.number):
        raise DataError(f"probs: expected numbers, got dtype {p.dtype}")
    p = p.astype(np.float64)
    if not np.all(np.isfinite(p)):
        i = int(np.flatnonzero(~np.isfinite(p).all(axis=1))[0])
        raise DataError(f"probs: row {i} holds NaN or inf: {p[i].tolist()}")
    if np.any(p < 0):
        i = int(np.flatnonzero((p < 0).any(axis=1))[0])
        raise DataError(f"probs: row {i} has negative values {p[i].tolist()}; did you pass logits? apply softmax first")
    sums = p.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > _ROW_SUM_TOL)
    if off.size:
        i = int(off[0])
        raise DataError(
            f"probs: row {i} sums to {sums[i]:.6g}, not 1 ({off.size} row(s) affected); "
            "did you pass logits? apply softmax first"
        )
    return p


# ----------------------------------------------------------------------------- evaluation


def _aggregate_patients(
    y: np.ndarray, probs: np.ndarray, unit: np.ndarray, n_units: int, how: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """Patient-level labels and probabilities.

    Probabilities: per-class mean or max over the patient's images, renormalised to sum 1.
    Label: the most frequent image label; ties go to the lower class index. Returns
    ``(y_patient, probs_patient, n_mixed_label_patients)``.
    """
    k = probs.shape[1]
    label_counts = np.zeros((n_units, k), dtype=np.int64)
    np.add.at(label_counts, (unit, y), 1)
    y_pat = label_counts.argmax(axis=1)
    n_mixed = int(((label_counts > 0).sum(axis=1) > 1).sum())
    if how == "mean":
        sums = np.zeros((n_units, k))
        np.add.at(sums, unit, probs)
        agg = sums / label_counts.sum(axis=1, keepdims=True)
    else:
        agg = np.zeros((n_units, k))
        np.maximum.at(agg, unit, probs)
    agg = agg / agg.sum(axis=1, keepdims=True)
    return y_pat, agg, n_mixed


def _proportion_keys(classes: list[str]) -> list[tuple[str, str, int | None]]:
    """``(ci key, metric, class index)`` of every proportion, in one fixed order."""
    keys: list[tuple[str, str, int | None]] = [("accuracy", "accuracy", None)]
    keys += [(f"per_class.{name}.{m}", m, c) for m in _PROPORTIONS for c, name in enumerate(classes)]
    return keys


def _closed_form_intervals(
    unit_cm: np.ndarray, classes: list[str], opts: _Options
) -> dict[str, tuple[bool, int, list[float] | None]]:
    """Closed-form interval of every proportion on its effective count.

    Returns ``{ci key: (point is 0 or 1, contributing units, [low, high] or None)}``; the interval
    is ``None`` for an empty denominator. All proportions go through one vectorised call.
    """
    k = len(classes)
    per_unit = bs.proportion_counts(unit_cm.reshape(-1, k, k))
    keys = _proportion_keys(classes)
    successes, trials, units, n_eff = (np.empty(len(keys)) for _ in range(4))
    for i, (_, metric, c) in enumerate(keys):
        unit_x, unit_n = per_unit[metric]
        if c is not None:
            unit_x, unit_n = unit_x[:, c], unit_n[:, c]
        successes[i], trials[i] = unit_x.sum(), unit_n.sum()
        units[i], n_eff[i] = ex.effective_count(unit_n)
    low, high = ex.effective_interval(successes, trials, n_eff, opts.level, opts.small_sample_method)
    at_bound = (successes == 0) | (successes == trials)
    out = {}
    for i, (key, _, _) in enumerate(keys):
        interval = None if np.isnan(low[i]) else [float(low[i]), float(high[i])]
        out[key] = (bool(at_bound[i]), int(units[i]), interval)
    return out


def _choose_intervals(
    boot: dict[str, list[float] | None],
    closed: dict[str, tuple[bool, int, list[float] | None]],
    sensitivity_classes: list[str],
    opts: _Options,
) -> tuple[dict[str, list[float] | None], dict[str, str | None]]:
    """Pick each key's interval and name its method (rules in the module docstring)."""
    ci: dict[str, list[float] | None] = {}
    method: dict[str, str | None] = {}
    for key, interval in boot.items():
        if key in closed:
            at_bound, units, exact = closed[key]
            if exact is not None and use_closed_form(interval, at_bound, units, opts.exact_below):
                ci[key], method[key] = exact, opts.small_sample_method
                continue
        ci[key], method[key] = interval, bootstrap_method(interval)

    parts = [f"per_class.{name}.sensitivity" for name in sensitivity_classes]
    exact_parts = any(method[key] == opts.small_sample_method for key in parts)
    if parts and exact_parts and all(ci[key] is not None for key in parts):
        lows = np.array([ci[key][0] for key in parts])  # type: ignore[index]
        highs = np.array([ci[key][1] for key in parts])  # type: ignore[index]
        for key, agg in (("balanced_accuracy", np.mean), ("worst_class_sensitivity", np.min)):
            ci[key], method[key] = [float(agg(lows)), float(agg(highs))], opts.small_sample_method
    return ci, method


def _small_sample(
    classes: list[str],
    support: np.ndarray,
    class_units: np.ndarray,
    max_unit_images: np.ndarray,
    n_units: int,
    n_samples: int,
    unit_name: str,
    patient_level: bool,
    opts: _Options,
) -> dict[str, Any]:
    """The ``small_sample`` section of one level.

    A class is flagged when fewer than ``min_class_support`` units hold it — patients when ids
    are known, since one patient's images are one piece of evidence, else images — and the split
    when it has fewer than ``min_patients`` units.
    """
    flagged: dict[str, int] = {}
    notes: list[str] = []
    by_patient = patient_level and unit_name == "patient"  # without ids a "patient" is one image
    what = "patient" if by_patient else "image"
    for c, name in enumerate(classes):
        if class_units[c] >= opts.min_class_support:
            continue
        s = int(support[c])
        flagged[name] = s
        if s == 0:
            notes.append(f"'{name}' has no {what}s: its sensitivity, F1 and AUC are undefined")
            continue
        held = plural(s, what)
        if unit_name == "patient" and not patient_level:
            held += f" from {plural(int(class_units[c]), 'patient')}"
        note = f"'{name}' has {held}: one error moves its {'patient-level ' if by_patient else ''}"
        note += f"sensitivity by {1 / s:.2f}"
        if unit_name == "patient" and not patient_level and max_unit_images[c] > 1:
            note += f", one patient's images by up to {max_unit_images[c] / s:.2f}"
        notes.append(note)
    return small_sample_section(flagged, notes, n_units, n_samples, unit_name, opts)


def _evaluate_level(
    y: np.ndarray,
    probs: np.ndarray,
    unit: np.ndarray,
    n_units: int,
    classes: list[str],
    mult: np.ndarray | None,
    opts: _Options,
    unit_name: str,
    patient_level: bool,
) -> dict[str, Any]:
    """Point estimates (and intervals when ``mult`` is given) for one level: images or patients.

    Point estimates use the same code path as the replicates with every unit drawn once, so the
    two can never disagree on a definition.
    """
    k = len(classes)
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    unit_cm = bs.per_unit_confusion(y, pred, unit, n_units, k)
    ece_stats = bs.per_unit_ece(conf, pred == y, unit, n_units, opts.ece_bins)

    def compute(m: np.ndarray) -> dict[str, np.ndarray]:
        cm = bs.replicate_confusion(m, unit_cm, k)
        out = bs.metrics_from_confusion(cm)
        out["auc"] = bs.replicate_auc(m, unit, probs, y)
        out["ece"] = bs.replicate_ece(m, ece_stats)
        out["confusion_matrix"] = cm
        return out

    point = compute(np.ones((1, n_units), dtype=np.int64))
    # Summaries average over the classes for which the metric is defined on the full data.
    masks = {name: ~np.isnan(point[name][0]) for name in ("sensitivity", "f1", "auc")}

    def summaries(v: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            "accuracy": v["accuracy"],
            "balanced_accuracy": bs.summary_over_classes(v["sensitivity"], masks["sensitivity"], "mean"),
            "macro_f1": bs.summary_over_classes(v["f1"], masks["f1"], "mean"),
            "worst_class_sensitivity": bs.summary_over_classes(v["sensitivity"], masks["sensitivity"], "min"),
            "macro_auc": bs.summary_over_classes(v["auc"], masks["auc"], "mean"),
            "ece": v["ece"],
        }

    point_summary = summaries(point)
    unit_true = unit_cm.reshape(n_units, k, k).sum(axis=2)  # each unit's images per true class
    result: dict[str, Any] = {
        "per_class": {
            name: {
                **{m: none_if_nan(point[m][0, c]) for m in PER_CLASS_METRICS},
                "support": int(point["support"][0, c]),
            }
            for c, name in enumerate(classes)
        },
        **{m: none_if_nan(point_summary[m][0]) for m in SUMMARY_METRICS if m != "ece"},
        "confusion_matrix": point["confusion_matrix"][0].astype(int).tolist(),
        "ece": none_if_nan(point_summary["ece"][0]),
        "ci": {},
        "ci_method": {},
        "small_sample": _small_sample(
            classes,
            support=point["support"][0],
            class_units=(unit_true > 0).sum(axis=0),
            max_unit_images=unit_true.max(axis=0),
            n_units=n_units,
            n_samples=int(y.shape[0]),
            unit_name=unit_name,
            patient_level=patient_level,
            opts=opts,
        ),
    }
    if mult is None:
        return result

    reps = compute(mult)
    rep_summary = summaries(reps)
    boot: dict[str, list[float] | None] = {
        m: bs.percentile_interval(rep_summary[m], opts.level, opts.min_defined_fraction) for m in SUMMARY_METRICS
    }
    for c, name in enumerate(classes):
        for m in PER_CLASS_METRICS:
            boot[f"per_class.{name}.{m}"] = bs.percentile_interval(reps[m][:, c], opts.level, opts.min_defined_fraction)
    closed = _closed_form_intervals(unit_cm, classes, opts)
    sensitivity_classes = [name for c, name in enumerate(classes) if masks["sensitivity"][c]]
    result["ci"], result["ci_method"] = _choose_intervals(boot, closed, sensitivity_classes, opts)
    return result


def classification_metrics(
    y_true: ArrayLike,
    probs: ArrayLike,
    classes: Sequence[str],
    *,
    patient_ids: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    patient_aggregation: Literal["mean", "max"] = "mean",
    ece_bins: int = 15,
    min_defined_fraction: float = 0.1,
    exact_below: int = 30,
    small_sample_method: Literal["clopper_pearson", "wilson"] = "clopper_pearson",
    min_class_support: int = 10,
    min_patients: int = 20,
) -> dict[str, Any]:
    """Per-class metrics, summaries, confusion matrix, ECE and confidence intervals (metrics.json).

    Args:
        y_true: ``(N,)`` integer class indices into ``classes``.
        probs: ``(N, K)`` class probabilities, rows summing to 1 (apply softmax to logits first);
            the prediction is the arg-max.
        classes: the ``K`` class names, in the column order of ``probs``.
        patient_ids: one id per image. Intervals then resample patients and a ``patient`` section
            evaluates one aggregated prediction per patient. Without ids each image is its own
            patient and ``bootstrap_unit`` says ``"sample"``.
        n_bootstrap: number of bootstrap replicates; 0 disables intervals (``ci == {}`` and
            ``ci_method == {}``), closed-form ones included.
        ci: confidence level of every interval.
        seed: seed of the local ``numpy.random.default_rng`` drawing the replicates.
        patient_aggregation: how a patient's image probabilities are combined, per class:
            ``"mean"`` or ``"max"`` (then renormalised to sum 1).
        ece_bins: number of equal-width confidence bins of the expected calibration error.
        min_defined_fraction: an interval is ``None`` when the metric is defined in fewer than
            this share of replicates (replicates where it is undefined are dropped).
        exact_below: a proportion whose denominator holds fewer than this many units (patients,
            or images without patient ids) gets a ``small_sample_method`` interval on its
            effective count instead of the bootstrap one; so does any proportion whose bootstrap
            interval degenerates. 0 keeps the bootstrap except where it degenerates.
        small_sample_method: ``"clopper_pearson"`` (exact, coverage guaranteed, conservative) or
            ``"wilson"`` (score interval, shorter, coverage near nominal on average).
        min_class_support: ``small_sample`` flags classes held by fewer units than this.
        min_patients: ``small_sample`` flags the split when it has fewer units than this.

    Returns:
        A JSON-ready dict: ``n_samples``, ``n_patients``, ``classes``, ``per_class`` (sensitivity,
        specificity, ppv, npv, f1, auc, support per class), ``accuracy``, ``balanced_accuracy``,
        ``macro_f1``, ``worst_class_sensitivity``, ``macro_auc``, ``confusion_matrix`` (rows =
        true class), ``ece``, ``ci`` (``{"accuracy": [lo, hi], "per_class.sick.sensitivity":
        [lo, hi], ...}``), ``ci_method`` (the same keys, each one of :data:`CI_METHODS`, ``None``
        where the interval is ``None``), ``small_sample`` (``{"min_class_support": 10,
        "min_patients": 20, "classes": {"sick": 5}, "split": true, "notes": [...]}``: flagged
        classes with their support), ``ci_level``, ``n_bootstrap``, ``bootstrap_unit`` and
        ``patient`` (the same keys at patient level, counted in patients, plus
        ``n_mixed_label_patients`` and ``aggregation``). Undefined values are ``None``. Summaries
        over classes (balanced accuracy, macro F1, worst-class sensitivity, macro AUC) use the
        classes for which the metric is defined.

    Raises:
        DataError: on mismatched lengths, ``probs`` not ``(N, len(classes))`` or not
            probabilities, labels out of range, missing patient ids or bad options.
    """
    names = check_classes(classes)
    opts = _check_options(
        n_bootstrap, ci, patient_aggregation, ece_bins, min_defined_fraction, exact_below, small_sample_method,
        min_class_support, min_patients,
    )
    k = len(names)
    y = _check_labels(y_true, k, names)
    n = y.shape[0]
    if n == 0:
        raise DataError("y_true: no samples to evaluate")
    p = _check_probs(probs, n, k, names)
    ids = None if patient_ids is None else check_ids(patient_ids, n, "patient_ids")
    unit, n_units, unit_name = bs.resampling_units(ids, n)

    start = time.perf_counter()
    mult = bs.draw_replicates(n_units, n_bootstrap, seed)
    image = _evaluate_level(y, p, unit, n_units, names, mult, opts, unit_name, patient_level=False)

    y_pat, p_pat, n_mixed = _aggregate_patients(y, p, unit, n_units, patient_aggregation)
    if n_mixed:
        logger.warning("%d of %d patients have images of different labels; patient label = majority", n_mixed, n_units)
    patient_unit = np.arange(n_units)
    patient = _evaluate_level(y_pat, p_pat, patient_unit, n_units, names, mult, opts, unit_name, patient_level=True)
    logger.debug(
        "classification_metrics: N=%d P=%d K=%d B=%d in %.3f s", n, n_units, k, n_bootstrap, time.perf_counter() - start
    )

    return {
        "n_samples": n,
        "n_patients": n_units,
        "classes": names,
        **image,
        "ci_level": opts.level,
        "n_bootstrap": int(n_bootstrap),
        "bootstrap_unit": unit_name,
        "patient": {
            "n_samples": n_units,
            "n_mixed_label_patients": n_mixed,
            "aggregation": patient_aggregation,
            **patient,
        },
    }


def small_sample_notes(
    metrics: Mapping[str, Any], level: Literal["image", "patient", "all"] = "all"
) -> list[str]:
    """The "too small to judge" sentences of a :func:`classification_metrics` result.

    ``level="all"`` gives the image-level notes, then the patient-level ones not already said
    (the split's note is the same at both levels). Empty when nothing is too small.

    Example::

        for note in small_sample_notes(json.loads(Path("metrics.json").read_text())):
            logger.warning(note)   # 'sick' has 5 images from 2 patients: one error moves ...

    Raises:
        DataError: on an unknown ``level``, or when the dict has no ``small_sample`` section
            (written before it existed: evaluate again).
    """
    if level not in _NOTE_LEVELS:
        raise DataError("level: " + suggest(str(level), _NOTE_LEVELS, "level"))
    sections = []
    if level in ("image", "all"):
        sections.append(("small_sample", metrics))
    if level in ("patient", "all"):
        if "patient" not in metrics:
            raise DataError("metrics: no 'patient' section; is this a classification_metrics result?")
        sections.append(("patient.small_sample", metrics["patient"]))
    notes: list[str] = []
    for path, section in sections:
        if "small_sample" not in section:
            raise DataError(f"metrics: no '{path}' section; these metrics predate it — evaluate the model again")
        notes += [note for note in section["small_sample"]["notes"] if note not in notes]
    return notes


# ----------------------------------------------------------------------------- accumulator


class ClassificationMetrics:
    """Accumulate predictions batch by batch, then compute :func:`classification_metrics`.

    MONAI-style: ``update`` per batch, ``aggregate`` once, ``reset`` to start again. Inputs are
    validated per batch so a bad batch fails where it happens. Patient ids must be given for
    every batch or for none; sample ids, when given, must be unique across batches — duplicates
    (e.g. from a padded distributed sampler) raise rather than being counted twice.

    Example::

        metric = ClassificationMetrics(["healthy", "sick"], n_bootstrap=1000)
        metric.update(probs, labels, patient_ids=pids, sample_ids=idx)
        result = metric.aggregate()
    """

    def __init__(
        self,
        classes: Sequence[str],
        *,
        n_bootstrap: int = 1000,
        ci: float = 0.95,
        seed: int = 0,
        patient_aggregation: Literal["mean", "max"] = "mean",
        ece_bins: int = 15,
        min_defined_fraction: float = 0.1,
        exact_below: int = 30,
        small_sample_method: Literal["clopper_pearson", "wilson"] = "clopper_pearson",
        min_class_support: int = 10,
        min_patients: int = 20,
    ) -> None:
        self.classes = check_classes(classes)
        _check_options(
            n_bootstrap, ci, patient_aggregation, ece_bins, min_defined_fraction, exact_below, small_sample_method,
            min_class_support, min_patients,
        )
        self.n_bootstrap = int(n_bootstrap)
        self.ci = float(ci)
        self.seed = seed
        self.patient_aggregation = patient_aggregation
        self.ece_bins = int(ece_bins)
        self.min_defined_fraction = min_defined_fraction
        self.exact_below = int(exact_below)
        self.small_sample_method = small_sample_method
        self.min_class_support = int(min_class_support)
        self.min_patients = int(min_patients)
        self.reset()

    def reset(self) -> None:
        """Forget every accumulated batch."""
        self._probs: list[np.ndarray] = []
        self._y: list[np.ndarray] = []
        self._patients: list[np.ndarray] = []
        self._samples: list[np.ndarray] = []
        self._n_batches = 0

    @property
    def n_samples(self) -> int:
        """Number of samples accumulated so far."""
        return int(sum(len(y) for y in self._y))

    def update(
        self,
        probs: ArrayLike,
        y_true: ArrayLike,
        patient_ids: Sequence[str] | None = None,
        sample_ids: Sequence[str | int] | None = None,
    ) -> None:
        """Add one batch: ``probs`` ``(B, K)`` probabilities and ``y_true`` ``(B,)`` labels."""
        batch = self._n_batches
        k = len(self.classes)
        try:
            y = _check_labels(y_true, k, self.classes)
            p = _check_probs(probs, y.shape[0], k, self.classes)
            pids = None if patient_ids is None else check_ids(patient_ids, y.shape[0], "patient_ids")
            sids = None if sample_ids is None else check_ids(sample_ids, y.shape[0], "sample_ids")
        except DataError as err:
            raise DataError(f"batch {batch}: {err}") from None
        if batch > 0 and (pids is None) != (not self._patients):
            raise DataError(f"batch {batch}: patient_ids must be given for every batch or for none")
        if batch > 0 and (sids is None) != (not self._samples):
            raise DataError(f"batch {batch}: sample_ids must be given for every batch or for none")
        self._y.append(y)
        self._probs.append(p)
        if pids is not None:
            self._patients.append(pids)
        if sids is not None:
            self._samples.append(sids)
        self._n_batches += 1

    def predictions(self) -> Predictions:
        """The accumulated predictions, e.g. to write with :func:`write_predictions_csv`."""
        if not self._y:
            raise DataError("ClassificationMetrics: no batches accumulated; call update() first")
        n = self.n_samples
        sample_ids = as_sample_ids(np.concatenate(self._samples)) if self._samples else np.arange(n)
        if self._samples:
            check_unique_ids(sample_ids)
        return Predictions(
            sample_ids=sample_ids,
            paths=None,
            patient_ids=np.concatenate(self._patients) if self._patients else None,
            y_true=np.concatenate(self._y),
            probs=np.concatenate(self._probs),
            classes=list(self.classes),
        )

    def aggregate(self) -> dict[str, Any]:
        """Metrics over every accumulated batch; same result as :func:`classification_metrics`."""
        pred = self.predictions()
        return classification_metrics(
            pred.y_true,
            pred.probs,
            self.classes,
            patient_ids=None if pred.patient_ids is None else list(pred.patient_ids),
            n_bootstrap=self.n_bootstrap,
            ci=self.ci,
            seed=self.seed,
            patient_aggregation=self.patient_aggregation,
            ece_bins=self.ece_bins,
            min_defined_fraction=self.min_defined_fraction,
            exact_below=self.exact_below,
            small_sample_method=self.small_sample_method,  # type: ignore[arg-type]
            min_class_support=self.min_class_support,
            min_patients=self.min_patients,
        )
