"""Vectorised bootstrap machinery of the metrics.

The bootstrap resamples *units* (patients, or single images when no patient ids are known) with
replacement. A replicate is fully described by a multiplicity matrix ``M`` of shape ``(B, P)``:
``M[b, p]`` is how often unit ``p`` was drawn in replicate ``b``, and every image of that unit
enters the replicate with that multiplicity. Because confusion matrices and ECE bins are sums over
images, each unit's contribution is precomputed once (its *sufficient statistics*) and a replicate
is the weighted sum ``M @ stats`` — one matrix product for all replicates instead of a Python loop.

Shared by both metric families: the units (:func:`resampling_units`), the draw
(:func:`draw_multiplicities`, :func:`draw_replicates`), :func:`safe_div`,
:func:`summary_over_classes` and :func:`percentile_interval`; segmentation's own sums are in
:mod:`medprune.metrics._segmentation_bootstrap`. The rest is classification's: confusion matrices,
ECE bins and AUC.

AUC is not a sum over units, so it is computed per replicate from the Mann–Whitney form with
integer weights (ties count one half), which is the area sklearn's ``roc_auc_score`` integrates
with ``sample_weight``.

:func:`proportion_counts` gives the successes and trials behind each proportion (per replicate or
per unit), from which :mod:`medprune.metrics._exact` builds small-sample intervals.

Undefined values (0/0, an AUC with one class missing) are ``NaN`` here; the public layer turns
them into ``None``. Everything in this module is private: the public API is in
:mod:`medprune.metrics.classification` and :mod:`medprune.metrics.segmentation`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__: list[str] = []

# Per-class metrics derived from the one-vs-rest counts of a confusion matrix, in output order.
PER_CLASS_FROM_CM = ("sensitivity", "specificity", "ppv", "npv", "f1")

# Upper bound on the number of float64 cells of one (replicates x images) weight block in the AUC
# computation; keeps memory near 32 MB whatever N and B are.
_AUC_BLOCK_CELLS = 1 << 22


def draw_multiplicities(n_units: int, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n_bootstrap`` resamples of ``n_units`` units with replacement.

    Returns the ``(n_bootstrap, n_units)`` int64 multiplicity matrix. The draw is
    ``rng.integers(0, n_units, size=(n_bootstrap, n_units))`` counted per row, so a naive loop
    using the same draws sees exactly the same replicates.
    """
    draws = rng.integers(0, n_units, size=(n_bootstrap, n_units))
    offsets = (np.arange(n_bootstrap, dtype=np.int64) * n_units)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=n_bootstrap * n_units)
    return counts.reshape(n_bootstrap, n_units).astype(np.int64, copy=False)


def resampling_units(patient_ids: np.ndarray | None, n: int) -> tuple[np.ndarray, int, str]:
    """The unit of each of ``n`` items: ``(unit index per item, number of units, unit name)``.

    With patient ids the units are the patients, numbered in sorted order of their ids
    (``"patient"``); without, each item is its own unit (``"sample"``).
    """
    if patient_ids is None:
        return np.arange(n), n, "sample"
    _, unit = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    unit = unit.reshape(-1).astype(np.int64)
    return unit, int(unit.max()) + 1, "patient"


def draw_replicates(n_units: int, n_bootstrap: int, seed: int) -> np.ndarray | None:
    """:func:`draw_multiplicities` from a local ``default_rng(seed)``; ``None`` when ``n_bootstrap`` is 0."""
    if n_bootstrap <= 0:
        return None
    return draw_multiplicities(n_units, int(n_bootstrap), np.random.default_rng(seed))


def safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with ``NaN`` where ``den == 0`` and no floating-point warnings."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def per_unit_confusion(y: np.ndarray, pred: np.ndarray, unit: np.ndarray, n_units: int, k: int) -> np.ndarray:
    """Each unit's confusion-matrix contribution, flattened: ``(n_units, k * k)`` int64.

    Row-major flattening: cell ``t * k + q`` counts images of true class ``t`` predicted ``q``.
    """
    flat = unit.astype(np.int64) * (k * k) + y.astype(np.int64) * k + pred.astype(np.int64)
    return np.bincount(flat, minlength=n_units * k * k).reshape(n_units, k * k)


def replicate_confusion(mult: np.ndarray, unit_cm: np.ndarray, k: int) -> np.ndarray:
    """Confusion matrices of all replicates, ``(B, k, k)`` int64, as ``mult @ unit_cm``.

    Integer matrix product, so the result equals a loop that concatenates the drawn units' images
    and counts them — exactly, not approximately.
    """
    return (mult.astype(np.int64) @ unit_cm.astype(np.int64)).reshape(-1, k, k)


def metrics_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """One-vs-rest per-class metrics and accuracy from a stack of confusion matrices.

    ``cm`` is ``(B, k, k)`` (rows = true class). Returns arrays of shape ``(B, k)`` for the names
    in :data:`PER_CLASS_FROM_CM` plus ``support`` and ``(B,)`` for ``accuracy``; undefined
    ratios are ``NaN``.
    """
    cm = cm.astype(np.float64)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    true_n = cm.sum(axis=2)
    pred_n = cm.sum(axis=1)
    total = cm.sum(axis=(1, 2))
    fn = true_n - tp
    fp = pred_n - tp
    tn = total[:, None] - tp - fn - fp
    return {
        "sensitivity": safe_div(tp, tp + fn),
        "specificity": safe_div(tn, tn + fp),
        "ppv": safe_div(tp, tp + fp),
        "npv": safe_div(tn, tn + fn),
        "f1": safe_div(2 * tp, 2 * tp + fp + fn),
        "support": true_n,
        "accuracy": safe_div(tp.sum(axis=1), total),
    }


def proportion_counts(cm: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``(successes, trials)`` of every metric that is a proportion, from a stack of confusion matrices.

    ``cm`` is ``(U, k, k)`` (rows = true class): the ``U`` replicates, or the per-unit
    contributions reshaped. Keys are ``sensitivity``, ``specificity``, ``ppv``, ``npv`` (arrays of
    shape ``(U, k)``) and ``accuracy`` (``(U,)``); each ratio equals the value
    :func:`metrics_from_confusion` reports.
    """
    cm = cm.astype(np.float64)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    true_n = cm.sum(axis=2)
    pred_n = cm.sum(axis=1)
    total = cm.sum(axis=(1, 2))
    tn = total[:, None] - true_n - pred_n + tp
    return {
        "sensitivity": (tp, true_n),
        "specificity": (tn, total[:, None] - true_n),
        "ppv": (tp, pred_n),
        "npv": (tn, total[:, None] - pred_n),
        "accuracy": (tp.sum(axis=1), total),
    }


@dataclass(frozen=True)
class EceStats:
    """Per-unit sufficient statistics of the expected calibration error.

    ``count[p, j]``: images of unit ``p`` whose top-label confidence falls in bin ``j``;
    ``conf_sum`` and ``correct_sum``: the sums of confidence and of correctness over those images.
    """

    count: np.ndarray
    conf_sum: np.ndarray
    correct_sum: np.ndarray


def confidence_bins(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index of each confidence for ``n_bins`` equal-width bins ``(lo, hi]`` on ``[0, 1]``.

    Right-closed bins as in torchmetrics; a confidence of exactly 0 goes to the first bin.
    """
    inner_edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    return np.searchsorted(inner_edges, conf, side="left").astype(np.int64)


def per_unit_ece(conf: np.ndarray, correct: np.ndarray, unit: np.ndarray, n_units: int, n_bins: int) -> EceStats:
    """Accumulate each unit's ECE bin counts and sums (see :class:`EceStats`)."""
    flat = unit.astype(np.int64) * n_bins + confidence_bins(conf, n_bins)
    size = n_units * n_bins
    shape = (n_units, n_bins)
    return EceStats(
        count=np.bincount(flat, minlength=size).reshape(shape).astype(np.int64),
        conf_sum=np.bincount(flat, weights=conf, minlength=size).reshape(shape),
        correct_sum=np.bincount(flat, weights=correct.astype(np.float64), minlength=size).reshape(shape),
    )


def replicate_ece(mult: np.ndarray, stats: EceStats) -> np.ndarray:
    """ECE of every replicate, ``(B,)``.

    Uses ``sum_j (n_j / N) * |acc_j - conf_j| == sum_j |correct_sum_j - conf_sum_j| / N``, so only
    the weighted bin sums are needed.
    """
    weights = mult.astype(np.float64)
    n = weights @ stats.count.sum(axis=1).astype(np.float64)
    gap = np.abs(weights @ stats.correct_sum - weights @ stats.conf_sum).sum(axis=1)
    return safe_div(gap, n)


def replicate_auc(mult: np.ndarray, unit: np.ndarray, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """One-vs-rest ROC AUC of every class in every replicate, ``(B, k)``; ``NaN`` where undefined.

    Image ``i`` carries weight ``mult[b, unit[i]]``. For class ``c`` the images are sorted by
    score and grouped into tied levels; with ``P_l``/``N_l`` the positive/negative weight at level
    ``l``, ``AUC = sum_l P_l * (N_below_l + N_l / 2) / (sum P * sum N)``. Replicates are processed
    in blocks so memory stays bounded for large ``N * B``.
    """
    n_rep = mult.shape[0]
    n, k = scores.shape
    out = np.full((n_rep, k), np.nan)
    block = max(1, _AUC_BLOCK_CELLS // max(n, 1))
    weights_all = mult.astype(np.float64)
    for c in range(k):
        order = np.argsort(scores[:, c], kind="stable")
        s_sorted = scores[order, c]
        starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
        pos_sorted = (y[order] == c).astype(np.float64)
        if pos_sorted.all() or not pos_sorted.any():
            continue  # one class only in the whole data: undefined in every replicate
        unit_sorted = unit[order]
        for lo in range(0, n_rep, block):
            w = weights_all[lo : lo + block][:, unit_sorted]
            w_pos = w * pos_sorted
            g_pos = np.add.reduceat(w_pos, starts, axis=1)
            g_neg = np.add.reduceat(w - w_pos, starts, axis=1)
            neg_below = np.cumsum(g_neg, axis=1) - g_neg
            num = (g_pos * (neg_below + 0.5 * g_neg)).sum(axis=1)
            den = g_pos.sum(axis=1) * g_neg.sum(axis=1)
            out[lo : lo + block, c] = safe_div(num, den)
    return out


def summary_over_classes(values: np.ndarray, mask: np.ndarray, how: str) -> np.ndarray:
    """Mean or min over the classes in ``mask`` of a ``(B, k)`` array; ``NaN`` propagates.

    ``mask`` holds the classes for which the metric is defined on the full data. A replicate in
    which one of them is undefined (e.g. the minority class was not drawn) is undefined for the
    summary too, rather than silently averaging over fewer classes — it would measure something
    else than the point estimate.
    """
    if not mask.any():
        return np.full(values.shape[0], np.nan)
    selected = values[:, mask]
    return selected.mean(axis=1) if how == "mean" else selected.min(axis=1)


def percentile_interval(values: np.ndarray, level: float, min_defined_fraction: float) -> list[float] | None:
    """Percentile bootstrap interval of the defined (non-``NaN``) replicate values.

    Returns ``None`` when fewer than ``min_defined_fraction`` of the replicates are defined, so a
    metric that is almost never estimable gets no interval instead of a misleading one.
    """
    defined = values[~np.isnan(values)]
    if defined.size == 0 or defined.size < min_defined_fraction * values.size:
        return None
    alpha = (1.0 - level) / 2.0
    low, high = np.percentile(defined, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return [float(low), float(high)]
