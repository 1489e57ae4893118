"""Vectorised patient bootstrap of segmentation metrics.

Segmentation metrics come in two shapes, and both are sums over units (patients, or images when no
patient ids are known), so a replicate is one matrix product with the ``(B, P)`` multiplicity
matrix of :func:`medprune.metrics._bootstrap.draw_multiplicities` — no Python loop over replicates:

- **score means** (Dice, HD95; at patient level also sensitivity and PPV): the mean of the defined
  (non-``NaN``) per-item scores. With ``S[p, c]`` the sum of unit ``p``'s defined scores of class
  ``c`` and ``C[p, c]`` their number, replicate ``b`` has mean ``(M @ S)[b, c] / (M @ C)[b, c]`` —
  the weighted mean of the per-image scores with the multiplicities as weights.
- **pooled ratios** (pixel sensitivity and PPV at image level): ``sum TP / sum (TP + FN)`` over the
  split's pixels. With per-unit pixel sums, replicate ``b`` is ``(M @ TP)[b] / (M @ (TP + FN))[b]``;
  integer products, so the counts equal a loop that concatenates the drawn units' images.

:func:`evaluate_level` turns one level's per-item scores (images, or one aggregated row per
patient) into its section of metrics.json: point estimates (the replicate with every unit drawn
once, so point and replicates share one definition), bootstrap intervals, the closed-form
intervals of the pooled pixel proportions, and the ``small_sample`` notes. The rules are documented
in :mod:`medprune.metrics.segmentation`; the parts classification shares — the options, when a
closed form replaces the bootstrap, the split's note and the section's shape — come from
:mod:`medprune.metrics._common`, the resampling units, draw and :func:`safe_div
<medprune.metrics._bootstrap.safe_div>` from :mod:`medprune.metrics._bootstrap`.

Undefined values are ``NaN`` here and ``None`` in the sections :func:`evaluate_level` returns.
Everything in this module is private: the public API is in :mod:`medprune.metrics.segmentation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medprune.metrics import _bootstrap as bs
from medprune.metrics import _exact as ex
from medprune.metrics._common import (
    IntervalOptions,
    bootstrap_method,
    none_if_nan,
    plural,
    small_sample_section,
    use_closed_form,
)

__all__: list[str] = []

PER_CLASS_METRICS = ("dice", "hd95", "sensitivity", "ppv")
SUMMARY_METRICS = ("mean_dice", "worst_class_dice")
COUNT_KEYS = ("support", "support_pixels", "n_dice", "n_hd95", "n_missed", "n_spurious")


def per_unit_sums(values: np.ndarray, unit: np.ndarray, n_units: int) -> tuple[np.ndarray, np.ndarray]:
    """Each unit's sum and number of defined values: two ``(n_units, K)`` arrays.

    ``values`` is ``(N, K)`` with ``NaN`` where a score is undefined (excluded); ``unit`` maps each
    of the ``N`` items to its unit.
    """
    defined = ~np.isnan(values)
    sums = np.zeros((n_units, values.shape[1]))
    counts = np.zeros((n_units, values.shape[1]), dtype=np.int64)
    np.add.at(sums, unit, np.where(defined, values, 0.0))
    np.add.at(counts, unit, defined.astype(np.int64))
    return sums, counts


def per_unit_counts(counts: np.ndarray, unit: np.ndarray, n_units: int) -> np.ndarray:
    """Sum ``(N, K)`` int64 counts (pixels) over each unit's items: ``(n_units, K)`` int64."""
    out = np.zeros((n_units, counts.shape[1]), dtype=np.int64)
    np.add.at(out, unit, counts.astype(np.int64))
    return out


def replicate_means(mult: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Weighted mean score of every replicate and class, ``(B, K)``; ``NaN`` where nothing is defined."""
    weights = mult.astype(np.float64)
    return bs.safe_div(weights @ sums, weights @ counts.astype(np.float64))


def replicate_ratio(mult: np.ndarray, numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Pooled ratio of every replicate and class, ``(B, K)``, from per-unit integer sums."""
    m = mult.astype(np.int64)
    return bs.safe_div(m @ numerator.astype(np.int64), m @ denominator.astype(np.int64))


@dataclass(frozen=True)
class PatientScores:
    """One aggregated row per patient, ``(P, K)`` arrays.

    ``dice`` and ``hd``: the mean of the patient's defined image scores (``NaN`` when none is
    defined); ``tp``, ``fp``, ``fn``: the patient's pixel counts summed over its images;
    ``sensitivity`` and ``ppv``: the patient's pooled pixel ratios (``NaN`` for an empty
    denominator).
    """

    dice: np.ndarray
    hd: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    sensitivity: np.ndarray
    ppv: np.ndarray


def patient_scores(
    dice: np.ndarray, hd: np.ndarray, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, unit: np.ndarray, n_units: int
) -> PatientScores:
    """Aggregate per-image scores into one row per patient (see :class:`PatientScores`)."""
    dice_sum, dice_n = per_unit_sums(dice, unit, n_units)
    hd_sum, hd_n = per_unit_sums(hd, unit, n_units)
    p_tp, p_fp, p_fn = (per_unit_counts(x, unit, n_units) for x in (tp, fp, fn))
    return PatientScores(
        dice=bs.safe_div(dice_sum, dice_n),
        hd=bs.safe_div(hd_sum, hd_n),
        tp=p_tp,
        fp=p_fp,
        fn=p_fn,
        sensitivity=bs.safe_div(p_tp, p_tp + p_fn),
        ppv=bs.safe_div(p_tp, p_tp + p_fp),
    )


# ----------------------------------------------------------------------------- one level


@dataclass(frozen=True)
class Level:
    """What one level (images or patients) evaluates, over its items' reported classes ``(n, R)``."""

    dice: np.ndarray
    hd: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    unit: np.ndarray
    n_units: int
    sensitivity: np.ndarray | None = None  # per-item scores at patient level; pooled at image level
    ppv: np.ndarray | None = None


def _small_sample(
    names: list[str], lv: Level, n_samples: int, unit_name: str, patient_level: bool, opts: IntervalOptions
) -> dict[str, Any]:
    """The ``small_sample`` section: this module's class notes, the rest as classification's.

    A class is flagged when fewer than ``min_class_support`` units (patients when ids are known,
    else images) hold it in their target; the split when it has fewer than ``min_patients`` units.
    """
    present = (lv.tp + lv.fn) > 0
    support = present.sum(axis=0)
    class_units = (per_unit_counts(present, lv.unit, lv.n_units) > 0).sum(axis=0)
    dice_units = per_unit_counts(~np.isnan(lv.dice), lv.unit, lv.n_units)
    n_dice, max_unit_dice = dice_units.sum(axis=0), dice_units.max(axis=0)
    by_patient = patient_level and unit_name == "patient"
    what = "patient" if by_patient else "image"
    with_patients = unit_name == "patient" and not patient_level
    flagged: dict[str, int] = {}
    notes: list[str] = []
    for r, name in enumerate(names):
        if class_units[r] >= opts.min_class_support:
            continue
        s = int(support[r])
        flagged[name] = s
        if s == 0:
            if n_dice[r] == 0:
                notes.append(f"'{name}' is in no {what}'s target and never predicted: its metrics are undefined")
            else:
                notes.append(
                    f"'{name}' is in no {what}'s target: its sensitivity is undefined and its Dice only counts "
                    f"the {plural(int(n_dice[r]), what)} where it was predicted"
                )
            continue
        held = plural(s, what) + (f" from {plural(int(class_units[r]), 'patient')}" if with_patients else "")
        note = f"'{name}' is in {held}: one {what} moves its {'patient-level ' if by_patient else ''}"
        note += f"mean Dice by up to {1 / n_dice[r]:.2f}"
        if with_patients and max_unit_dice[r] > 1:
            note += f", one patient's images by up to {max_unit_dice[r] / n_dice[r]:.2f}"
        notes.append(note)
    return small_sample_section(flagged, notes, lv.n_units, n_samples, unit_name, opts)


def evaluate_level(
    names: list[str], lv: Level, mult: np.ndarray | None, opts: IntervalOptions, unit_name: str, patient_level: bool
) -> dict[str, Any]:
    """Point estimates and intervals of one level; the point is the replicate with every unit once."""
    means = {"dice": lv.dice, "hd95": lv.hd}
    pooled: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if lv.sensitivity is not None and lv.ppv is not None:
        means.update(sensitivity=lv.sensitivity, ppv=lv.ppv)
    else:
        tp_u = per_unit_counts(lv.tp, lv.unit, lv.n_units)
        pooled["sensitivity"] = (tp_u, tp_u + per_unit_counts(lv.fn, lv.unit, lv.n_units))
        pooled["ppv"] = (tp_u, tp_u + per_unit_counts(lv.fp, lv.unit, lv.n_units))
    sums = {m: per_unit_sums(v, lv.unit, lv.n_units) for m, v in means.items()}

    def per_class(m: np.ndarray) -> dict[str, np.ndarray]:
        out = {name: replicate_means(m, *s) for name, s in sums.items()}
        out.update({name: replicate_ratio(m, num, den) for name, (num, den) in pooled.items()})
        return out

    point = per_class(np.ones((1, lv.n_units), dtype=np.int64))
    dice_mask = ~np.isnan(point["dice"][0])

    def summaries(v: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            "mean_dice": bs.summary_over_classes(v["dice"], dice_mask, "mean"),
            "worst_class_dice": bs.summary_over_classes(v["dice"], dice_mask, "min"),
        }

    point_summary = summaries(point)
    target_has, pred_has = (lv.tp + lv.fn) > 0, (lv.tp + lv.fp) > 0
    counts = {
        "support": target_has.sum(axis=0),
        "support_pixels": (lv.tp + lv.fn).sum(axis=0),
        "n_dice": (~np.isnan(lv.dice)).sum(axis=0),
        "n_hd95": (~np.isnan(lv.hd)).sum(axis=0),
        "n_missed": (target_has & ~pred_has).sum(axis=0),
        "n_spurious": (~target_has & pred_has).sum(axis=0),
    }
    result: dict[str, Any] = {
        "per_class": {
            name: {
                **{m: none_if_nan(point[m][0, r]) for m in PER_CLASS_METRICS},
                **{c: int(counts[c][r]) for c in COUNT_KEYS},
            }
            for r, name in enumerate(names)
        },
        **{m: none_if_nan(point_summary[m][0]) for m in SUMMARY_METRICS},
        "ci": {},
        "ci_method": {},
        "small_sample": _small_sample(names, lv, int(lv.dice.shape[0]), unit_name, patient_level, opts),
    }
    if mult is None:
        return result

    reps = per_class(mult)
    rep_summary = summaries(reps)
    ci: dict[str, list[float] | None] = {}
    method: dict[str, str | None] = {}
    for r, name in enumerate(names):
        for m in PER_CLASS_METRICS:
            key = f"per_class.{name}.{m}"
            ci[key] = bs.percentile_interval(reps[m][:, r], opts.level, opts.min_defined_fraction)
            method[key] = bootstrap_method(ci[key])
    for m in SUMMARY_METRICS:
        ci[m] = bs.percentile_interval(rep_summary[m], opts.level, opts.min_defined_fraction)
        method[m] = bootstrap_method(ci[m])
    for m, (num_u, den_u) in pooled.items():
        _closed_form(names, m, num_u, den_u, ci, method, opts)
    result["ci"], result["ci_method"] = ci, method
    return result


def _closed_form(
    names: list[str],
    metric: str,
    num_u: np.ndarray,
    den_u: np.ndarray,
    ci: dict[str, list[float] | None],
    method: dict[str, str | None],
    opts: IntervalOptions,
) -> None:
    """Replace a pooled pixel proportion's bootstrap interval by a closed form on its effective unit count.

    Applies when fewer than ``exact_below`` units hold a pixel of the denominator, or the bootstrap
    degenerates (no interval, zero width, or a point estimate of exactly 0 or 1): the rule of
    :func:`medprune.metrics._common.use_closed_form`, which classification follows too.
    """
    successes, trials = num_u.sum(axis=0).astype(np.float64), den_u.sum(axis=0).astype(np.float64)
    units, n_eff = ex.effective_count(den_u)
    low, high = ex.effective_interval(successes, trials, n_eff, opts.level, opts.small_sample_method)
    for r, name in enumerate(names):
        if np.isnan(low[r]):
            continue  # empty denominator: undefined, no interval of any kind
        key = f"per_class.{name}.{metric}"
        if use_closed_form(ci[key], successes[r] in (0.0, trials[r]), units[r], opts.exact_below):
            ci[key], method[key] = [float(low[r]), float(high[r])], opts.small_sample_method
