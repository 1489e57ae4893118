"""Per-class segmentation metrics with patient-level confidence intervals, on MONAI's metrics.

The segmentation counterpart of :mod:`medprune.metrics.classification`: per class, Dice, HD95,
pixel sensitivity and PPV with their support, the summaries ``mean_dice`` and ``worst_class_dice``
(the safety gate's metric for segmentation), and a confidence interval for each, with the method
that made it recorded in ``ci_method`` (names from
:data:`medprune.metrics.classification.CI_METHODS`). Dice and HD95 per image come from
``monai.metrics.compute_dice`` and ``monai.metrics.compute_hausdorff_distance``; pixel counts are
exact int64 counts.

Inputs are integer label maps ``(N, H, W)`` (or ``(N, 1, H, W)``) whose values index ``classes``;
label 0 is background by convention and is left out of the report unless
``include_background=True``. ``pred`` may also be ``(N, K, H, W)`` probabilities or logits, turned
into labels by arg-max over the class axis (ties go to the lower label).

**Edge cases — the rules.** For class ``c`` in image ``i`` (``T`` = target pixels of ``c``,
``P`` = predicted pixels of ``c``):

=====================  ===========  ===============  ==========================================
case                   Dice         HD95             counted in
=====================  ===========  ===============  ==========================================
``T`` and ``P`` hold   MONAI Dice   MONAI HD95       ``n_dice``, ``n_hd95``, ``support``
``T`` holds, ``P`` no  0            undefined        ``n_dice``, ``n_missed``, ``support``;
                                                     its pixels are false negatives
``T`` no, ``P`` holds  0            undefined        ``n_dice``, ``n_spurious``; its pixels are
                                                     false positives
neither                excluded     undefined        nothing
=====================  ===========  ===============  ==========================================

- Dice ``= 2|T∩P| / (|T| + |P|)`` (MONAI ``DiceMetric(include_background=True,
  reduction="none", ignore_empty=False)``). MONAI scores an image where the class is absent from
  both sides as 1 (``ignore_empty=False``) or ``NaN`` even when the class was wrongly predicted
  (``ignore_empty=True``); neither is what a reader expects, so we take MONAI's value with
  ``ignore_empty=False`` and exclude the both-empty images: "nothing to find, nothing found"
  would otherwise lift a class's mean by however many easy images the split happens to hold. A
  false alarm on an image without the class still scores 0 and pulls the mean down.
- HD95 is MONAI's symmetric percentile Hausdorff distance: the larger of the two directed
  ``hd_percentile``-th percentiles (linear interpolation) of the Euclidean distances between the
  masks' edge pixels, in pixels or in ``spacing`` units. When one side is empty MONAI returns
  ``inf``/``NaN``; we do not invent a distance (such as the image diagonal). The class's HD95 is
  the mean over the ``n_hd95`` images where both sides hold it, and the images that miss or
  invent the whole structure are counted in ``n_missed`` / ``n_spurious`` and weigh on
  sensitivity / PPV — read HD95 beside them: a model that misses every small lesion has a fine
  HD95. ``n_dice == n_hd95 + n_missed + n_spurious`` at image level. The key is ``hd95`` whatever
  ``hd_percentile`` is (recorded beside it); MONAI computes distances in float32.
- Sensitivity ``= sum TP / sum (TP + FN)`` and PPV ``= sum TP / sum (TP + FP)`` over every pixel
  of the split (pooled, so a large lesion weighs more than a small one).
- ``support``: images whose target holds the class; ``support_pixels``: its target pixels.
- ``mean_dice`` / ``worst_class_dice``: mean / minimum of the reported classes' Dice, over the
  classes whose Dice is defined (a class neither present nor predicted anywhere is left out).
- Undefined values (no image to average, 0/0) are ``None`` — never ``NaN`` or ``inf``.

**Patient level.** The ``patient`` section scores each patient once: its Dice and HD95 are the
mean of its defined image scores, its sensitivity and PPV are its own pooled pixel ratios; the
section's per-class values are means over patients (each patient weighs the same, however many
images or pixels it brings), and its counts count patients (``n_missed``: patients with the class
in their target and no pixel of it predicted in any image).

**Intervals.** Percentile bootstrap over **patients** (images without patient ids): every image
of a drawn patient enters the replicate with the patient's multiplicity, the same replicates for
both levels, vectorised as in :mod:`medprune.metrics._segmentation_bootstrap`. A zero-width
bootstrap interval is marked ``"percentile_bootstrap_degenerate"``. The image-level pixel
sensitivity and PPV are proportions, but pixels are not independent trials — the pixels of one
patient err together (a shifted boundary, a missed lesion) — so when their denominator holds fewer than
``exact_below`` units or the bootstrap degenerates (zero width, none, or a point estimate of
exactly 0 or 1), they get a Clopper–Pearson (or Wilson) interval computed on the **effective
count of units**, never of pixels: ``n_eff = (sum m_u)**2 / sum m_u**2`` with ``m_u`` the pixels of
unit ``u`` in the denominator — the number of patients when each brings equally many pixels,
fewer when one brings most (:mod:`medprune.metrics._exact`). This assumes the worst case (a
patient's pixels all right or all wrong), so these intervals are wide: honest for a handful of
patients, conservative beyond. ``exact_below=0`` keeps the bootstrap except where it degenerates.
Dice, HD95 and patient-level values are means of bounded scores, not proportions: bootstrap only.

metrics.json (segmentation)::

    {"n_samples": 40, "n_patients": 8, "classes": ["background", "tissue", "plaque"],
     "include_background": false, "hd_percentile": 95.0, "hd_spacing": null,
     "per_class": {"plaque": {"dice": 0.71, "hd95": 4.2, "sensitivity": 0.68, "ppv": 0.77,
                              "support": 22, "support_pixels": 5310, "n_dice": 25, "n_hd95": 19,
                              "n_missed": 3, "n_spurious": 3}, "tissue": {...}},
     "mean_dice": 0.80, "worst_class_dice": 0.71,
     "ci": {"per_class.plaque.dice": [0.62, 0.79], "per_class.plaque.sensitivity": [0.31, 0.93],
            "mean_dice": [0.75, 0.84], "worst_class_dice": [0.62, 0.79], ...},
     "ci_method": {"per_class.plaque.dice": "percentile_bootstrap",
                   "per_class.plaque.sensitivity": "clopper_pearson", ...},
     "small_sample": {"min_class_support": 10, "min_patients": 20, "classes": {"plaque": 22},
                      "split": true, "notes": ["'plaque' is in 22 images from 6 patients: ..."]},
     "ci_level": 0.95, "n_bootstrap": 1000, "bootstrap_unit": "patient",
     "patient": {"n_samples": 8, "aggregation": "mean", "per_class": {...}, "mean_dice": ...,
                 "worst_class_dice": ..., "ci": {...}, "ci_method": {...}, "small_sample": {...}}}

Example::

    result = segmentation_metrics(pred, target, ["background", "tissue", "plaque"], patient_ids=pids)
    result["worst_class_dice"], result["ci"]["per_class.plaque.dice"]
    small_sample_notes(result)   # the classification helper reads this section too

    metric = SegmentationMetrics(["background", "tissue", "plaque"])
    for batch in loader:
        metric.update(model(batch.x), batch.y, patient_ids=batch.patient_ids, sample_ids=batch.index)
    result = metric.aggregate()
    write_segmentation_predictions_csv(run_dir / "predictions.csv", metric.predictions())
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np

from medprune._io import atomic_write
from medprune.errors import DataError
from medprune.metrics import _bootstrap as bs
from medprune.metrics import _segmentation_bootstrap as sb
from medprune.metrics._common import (
    check_classes,
    check_ids,
    check_interval_options,
    check_unique_ids,
    none_if_nan,
    to_numpy,
)
from medprune.metrics.predictions import as_sample_ids

if TYPE_CHECKING:
    import torch

__all__ = [
    "segmentation_metrics",
    "segmentation_metrics_from_scores",
    "per_image_scores",
    "SegmentationMetrics",
    "SegmentationScores",
    "write_segmentation_predictions_csv",
    "read_segmentation_predictions_csv",
    "SEGMENTATION_PER_CLASS_METRICS",
    "SEGMENTATION_SUMMARY_METRICS",
]

logger = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, "torch.Tensor"]

SEGMENTATION_PER_CLASS_METRICS = sb.PER_CLASS_METRICS
"""Keys of each ``per_class`` entry that get a confidence interval (the counts do not)."""

SEGMENTATION_SUMMARY_METRICS = sb.SUMMARY_METRICS
"""Top-level scalar metrics, each with a confidence interval."""

# One-hot masks are built for this many cells at a time (as float64 for Dice: 32 MB), whatever N, K, H, W are.
_ONE_HOT_CELLS = 1 << 22
# MONAI 1.6's Hausdorff distance passes its own deprecated argument to get_mask_edges.
_MONAI_NOISE = ".*always_return_as_numpy.*"


# ----------------------------------------------------------------------------- validation


_TOO_FEW_CLASSES = "need a name for every label value, background (0) included; got {names!r}"


def _check_hd_percentile(hd_percentile: Any) -> float:
    if isinstance(hd_percentile, bool) or not isinstance(hd_percentile, (int, float)) or not (
        0.0 < float(hd_percentile) <= 100.0
    ):
        raise DataError(
            f"hd_percentile: must lie in (0, 100] (95 for HD95, 100 for the full Hausdorff), got {hd_percentile!r}"
        )
    return float(hd_percentile)


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in np.unravel_index(int(np.flatnonzero(mask.ravel())[0]), mask.shape))


def _as_labels(a: np.ndarray, name: str, k: int, classes: list[str]) -> np.ndarray:
    """Integer labels in ``0..k-1`` from an ``(N, H, W)`` array, or a :class:`DataError`."""
    if a.dtype == bool:
        a = a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        if not np.issubdtype(a.dtype, np.floating):
            raise DataError(f"{name}: expected integer label values, got dtype {a.dtype}")
        bad = ~np.isfinite(a) | (a != np.round(np.nan_to_num(a)))
        if bad.any():
            i, y, x = _first_bad(bad)
            raise DataError(
                f"{name}: expected integer label values, got {float(a[i, y, x])!r} at image {i}, pixel ({y}, {x}) "
                f"(dtype {a.dtype}); pass probabilities as (N, {k}, H, W) to pred, not to {name}"
            )
    bad = (a < 0) | (a >= k)
    if bad.any():
        i, y, x = _first_bad(bad)
        n_images = int(bad.reshape(bad.shape[0], -1).any(axis=1).sum())
        raise DataError(
            f"{name}: label {a[i, y, x].item()!r} at image {i}, pixel ({y}, {x}) is out of range for {k} classes "
            f"{classes} (valid: 0..{k - 1}); {n_images} image(s) affected"
        )
    return a.astype(np.int64, copy=False)


def _check_target(target: Any, k: int, classes: list[str]) -> np.ndarray:
    a = to_numpy(target)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        raise DataError(f"target: expected label maps of shape (N, H, W) or (N, 1, H, W), got {tuple(a.shape)}")
    return _as_labels(a, "target", k, classes)


def _check_pred(pred: Any, k: int, classes: list[str]) -> np.ndarray:
    """Label maps from ``pred``: ``(N, H, W)``/``(N, 1, H, W)`` labels or ``(N, K, H, W)`` scores (arg-max)."""
    shape = tuple(pred.shape) if hasattr(pred, "shape") else np.shape(pred)
    if len(shape) == 4 and shape[1] == k:
        if hasattr(pred, "detach"):  # arg-max where the tensor lives; only the labels move to the CPU
            scores = pred.detach()
            if scores.dtype.is_floating_point and not bool(scores.isfinite().all()):
                i = int((~scores.isfinite()).flatten(1).any(dim=1).nonzero()[0, 0])
                raise DataError(f"pred: scores of image {i} hold NaN or inf")
            return _as_labels(scores.float().argmax(dim=1).cpu().numpy(), "pred", k, classes)
        a = np.asarray(pred)
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise DataError(f"pred: expected numeric scores, got dtype {a.dtype}")
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            i = int((~np.isfinite(a)).reshape(a.shape[0], -1).any(axis=1).nonzero()[0][0])
            raise DataError(f"pred: scores of image {i} hold NaN or inf")
        return a.argmax(axis=1).astype(np.int64)
    if len(shape) == 4 and shape[1] != 1:
        raise DataError(
            f"pred: (N, C, H, W) scores need one channel per class: got {shape[1]} channels for {k} classes {classes}"
        )
    a = to_numpy(pred)
    if a.ndim == 4:
        a = a[:, 0]
    if a.ndim != 3:
        raise DataError(
            f"pred: expected label maps (N, H, W) or (N, 1, H, W), or scores (N, {k}, H, W); got {tuple(a.shape)}"
        )
    return _as_labels(a, "pred", k, classes)


def _check_spacing(spacing: Any, n: int) -> np.ndarray | None:
    """``None`` (pixel units) or an ``(n, 2)`` float array of (row, column) spacings."""
    if spacing is None:
        return None
    a = np.asarray(to_numpy(spacing) if hasattr(spacing, "detach") else spacing)
    if not (np.issubdtype(a.dtype, np.number)) or a.dtype == bool:
        raise DataError(f"spacing: expected numbers, got {spacing!r}")
    a = a.astype(np.float64)
    if a.ndim == 0:
        a = np.full((n, 2), float(a))
    elif a.shape == (2,):
        a = np.tile(a, (n, 1))
    elif a.shape != (n, 2):
        raise DataError(
            f"spacing: expected a number, a (row, column) pair or one pair per image ({n}, 2); got shape {a.shape}"
        )
    if not (np.isfinite(a).all() and (a > 0).all()):
        i = int(np.flatnonzero(~(np.isfinite(a) & (a > 0)).all(axis=1))[0])
        raise DataError(f"spacing: must be positive and finite, got {a[i].tolist()} for image {i}")
    return a


# ----------------------------------------------------------------------------- per-image scores


@dataclass(frozen=True)
class SegmentationScores:
    """Per-image scores of every class (background included): the segmentation "predictions file".

    Arrays are ``(N, K)`` over images and ``classes``. ``dice``: MONAI Dice, ``NaN`` where the
    class is absent from both prediction and target; ``hd``: MONAI percentile Hausdorff distance
    (``hd_percentile``) in pixels or ``spacing`` units, ``NaN`` unless both sides hold the class;
    ``tp``/``fp``/``fn``: int64 pixel counts. ``sample_ids``: int64 when every id is an integer,
    else str; ``patient_ids``/``paths``: str arrays or ``None``; ``spacing``: ``(N, 2)`` or ``None``
    (pixels). Small enough to keep for a whole split — a few numbers per image, not its masks.
    """

    sample_ids: np.ndarray
    patient_ids: np.ndarray | None
    classes: list[str]
    dice: np.ndarray
    hd: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    hd_percentile: float = 95.0
    spacing: np.ndarray | None = None
    paths: np.ndarray | None = None

    @property
    def n_samples(self) -> int:
        """Number of images."""
        return int(self.dice.shape[0])

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per image: ``index``, ``patient_id``, ``path`` and per class
        ``{dice, hd95, tp, fp, fn}`` (``None`` where undefined)."""
        out = []
        for i in range(self.n_samples):
            row: dict[str, Any] = {
                "index": np.asarray(self.sample_ids[i]).item(),
                "patient_id": None if self.patient_ids is None else str(self.patient_ids[i]),
                "path": None if self.paths is None else str(self.paths[i]),
                "classes": {
                    name: {
                        "dice": none_if_nan(self.dice[i, c]),
                        "hd95": none_if_nan(self.hd[i, c]),
                        "tp": int(self.tp[i, c]),
                        "fp": int(self.fp[i, c]),
                        "fn": int(self.fn[i, c]),
                    }
                    for c, name in enumerate(self.classes)
                },
            }
            out.append(row)
        return out

    @classmethod
    def concat(cls, parts: Sequence[SegmentationScores]) -> SegmentationScores:
        """Join batches scored with the same classes, percentile and units."""
        if not parts:
            raise DataError("scores: nothing to join")
        first = parts[0]
        for j, part in enumerate(parts[1:], start=1):
            if part.classes != first.classes or part.hd_percentile != first.hd_percentile:
                raise DataError(f"scores[{j}]: classes or hd_percentile differ from the first batch's")

        def cat(name: str) -> np.ndarray | None:
            values = [getattr(p, name) for p in parts]
            if all(v is None for v in values):
                return None
            if any(v is None for v in values):
                raise DataError(f"scores: {name} must be given for every batch or for none")
            return np.concatenate(values)

        ids = cat("sample_ids")
        return cls(
            sample_ids=as_sample_ids(ids),  # type: ignore[arg-type]
            patient_ids=cat("patient_ids"),
            classes=list(first.classes),
            dice=cat("dice"),  # type: ignore[arg-type]
            hd=cat("hd"),  # type: ignore[arg-type]
            tp=cat("tp"),  # type: ignore[arg-type]
            fp=cat("fp"),  # type: ignore[arg-type]
            fn=cat("fn"),  # type: ignore[arg-type]
            hd_percentile=first.hd_percentile,
            spacing=cat("spacing"),
            paths=cat("paths"),
        )


def _score_images(
    pred: np.ndarray, target: np.ndarray, k: int, hd_percentile: float, spacing: np.ndarray | None,
    with_hd: bool = True,
) -> tuple[np.ndarray, ...]:
    """Dice, HD and pixel counts ``(N, K)`` of label maps ``(N, H, W)``, in chunks of images.

    ``with_hd=False`` leaves HD undefined (``NaN``): it costs ~10 ms per image and class, which
    a per-epoch validation that selects by Dice does not need."""
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance

    n, h, w = target.shape
    dice = np.full((n, k), np.nan)
    hd = np.full((n, k), np.nan)
    cm = np.zeros((n, k, k), dtype=np.int64)  # rows = target label, columns = predicted label
    labels = torch.arange(k).view(1, k, 1, 1)
    chunk = max(1, _ONE_HOT_CELLS // max(1, k * h * w))
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        t, p = target[lo:hi], pred[lo:hi]
        flat = (np.arange(hi - lo)[:, None, None] * k + t) * k + p
        cm[lo:hi] = np.bincount(flat.ravel(), minlength=(hi - lo) * k * k).reshape(hi - lo, k, k)
        t_oh = torch.from_numpy(t)[:, None] == labels
        p_oh = torch.from_numpy(p)[:, None] == labels
        # float64 masks make MONAI compute in float64: Dice equals 2TP / (2TP + FP + FN) to rounding
        dice[lo:hi] = compute_dice(p_oh.double(), t_oh.double(), include_background=True, ignore_empty=False).numpy()
        both = t_oh.flatten(2).any(dim=2) & p_oh.flatten(2).any(dim=2)
        img, cls = (v.numpy() for v in both.nonzero(as_tuple=True))
        if img.size and with_hd:
            pair_spacing = None if spacing is None else [s.tolist() for s in spacing[lo + img]]
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_MONAI_NOISE, category=FutureWarning)
                dist = compute_hausdorff_distance(
                    p_oh[img, cls][:, None],
                    t_oh[img, cls][:, None],
                    include_background=True,
                    percentile=hd_percentile,
                    spacing=pair_spacing,
                )
            hd[lo + img, cls] = dist[:, 0].double().numpy()
    tp = np.diagonal(cm, axis1=1, axis2=2).copy()
    fn = cm.sum(axis=2) - tp
    fp = cm.sum(axis=1) - tp
    dice[(tp + fp + fn) == 0] = np.nan  # absent from both sides: excluded, not MONAI's 1
    return dice, hd, tp, fp, fn


def per_image_scores(
    pred: ArrayLike,
    target: ArrayLike,
    classes: Sequence[str],
    *,
    patient_ids: Sequence[str] | None = None,
    sample_ids: Sequence[int | str] | None = None,
    hd_percentile: float = 95.0,
    spacing: float | Sequence[float] | np.ndarray | None = None,
    with_hd: bool = True,
) -> SegmentationScores:
    """Dice, HD95 and pixel counts of every image and class (the rules in the module docstring).

    ``with_hd=False`` skips the Hausdorff distances (``hd`` stays undefined): a quick score for
    per-epoch validation and the safety gate, which select by Dice.

    Args:
        pred: ``(N, H, W)`` or ``(N, 1, H, W)`` integer labels, or ``(N, K, H, W)`` probabilities
            or logits (arg-max over the class axis); numpy or torch (any device).
        target: ``(N, H, W)`` or ``(N, 1, H, W)`` integer labels.
        classes: one name per label value ``0..K-1``; label 0 is background by convention.
        patient_ids: one id per image, or ``None``.
        sample_ids: one unique id per image (dataset indices); default ``0..N-1``.
        hd_percentile: percentile of the Hausdorff distance (95: HD95; 100: the full distance).
        spacing: pixel size for HD, in (row, column) order — a number, a pair, or ``(N, 2)`` per
            image; ``None`` measures in pixels.

    Raises:
        DataError: naming the argument — shapes that disagree, labels outside ``0..K-1``,
            non-integer labels, scores with the wrong number of channels or NaN, bad ids.
    """
    names = check_classes(classes, _TOO_FEW_CLASSES)
    percentile = _check_hd_percentile(hd_percentile)
    k = len(names)
    t = _check_target(target, k, names)
    p = _check_pred(pred, k, names)
    if p.shape[0] != t.shape[0]:
        raise DataError(f"pred: has {p.shape[0]} images but target has {t.shape[0]}")
    if p.shape != t.shape:
        raise DataError(f"pred: label maps of shape {p.shape[1:]} do not match target's {t.shape[1:]}")
    n = t.shape[0]
    if n == 0:
        raise DataError("target: no images to evaluate")
    pids = None if patient_ids is None else check_ids(patient_ids, n, "patient_ids", item="image").astype(str)
    if sample_ids is None:
        sids = np.arange(n, dtype=np.int64)
    else:
        sids = as_sample_ids(check_ids(sample_ids, n, "sample_ids", item="image"))
        check_unique_ids(sids, item="image")
    sp = _check_spacing(spacing, n)
    start = time.perf_counter()
    dice, hd, tp, fp, fn = _score_images(p, t, k, percentile, sp, with_hd)
    logger.debug("per_image_scores: N=%d K=%d %s in %.3f s", n, k, t.shape[1:], time.perf_counter() - start)
    return SegmentationScores(
        sample_ids=sids, patient_ids=pids, classes=names, dice=dice, hd=hd, tp=tp, fp=fp, fn=fn,
        hd_percentile=percentile, spacing=sp,
    )


# ----------------------------------------------------------------------------- evaluation


def _check_scores(scores: SegmentationScores) -> None:
    if not isinstance(scores, SegmentationScores):
        raise DataError(f"scores: expected SegmentationScores (from per_image_scores), got {type(scores).__name__}")
    names = check_classes(scores.classes, _TOO_FEW_CLASSES)
    n, k = scores.n_samples, len(names)
    if n == 0:
        raise DataError("scores: no images to evaluate")
    for field in ("dice", "hd", "tp", "fp", "fn"):
        a = getattr(scores, field)
        if np.shape(a) != (n, k):
            raise DataError(f"scores.{field}: expected shape ({n}, {k}) for classes {names}, got {np.shape(a)}")
    for field in ("tp", "fp", "fn"):
        if (np.asarray(getattr(scores, field)) < 0).any():
            raise DataError(f"scores.{field}: pixel counts must be >= 0")
    for field in ("sample_ids", "patient_ids"):
        a = getattr(scores, field)
        if a is not None and len(a) != n:
            raise DataError(f"scores.{field}: has {len(a)} entries but there are {n} images")
    if scores.patient_ids is not None:
        missing = np.flatnonzero(np.asarray(scores.patient_ids).astype(str) == "")
        if missing.size:
            raise DataError(f"scores.patient_ids: image {int(missing[0])} has no patient id ({missing.size} affected)")


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise DataError(f"{name}: must be true or false, got {value!r}")
    return bool(value)


def segmentation_metrics_from_scores(
    scores: SegmentationScores,
    *,
    include_background: bool = False,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    min_defined_fraction: float = 0.1,
    exact_below: int = 30,
    small_sample_method: Literal["clopper_pearson", "wilson"] = "clopper_pearson",
    min_class_support: int = 10,
    min_patients: int = 20,
) -> dict[str, Any]:
    """metrics.json from per-image scores (from :func:`per_image_scores`, the accumulator, or a CSV).

    Same options and result as :func:`segmentation_metrics`; this is the half after the images
    have been scored, so a predictions file can be re-evaluated (another seed, background
    included) without the masks.
    """
    _check_scores(scores)
    _check_bool("include_background", include_background)
    opts = check_interval_options(
        n_bootstrap, ci, min_defined_fraction, exact_below, small_sample_method, min_class_support, min_patients
    )
    names = list(scores.classes)
    reported = list(range(0 if include_background else 1, len(names)))
    report_names = [names[c] for c in reported]
    n = scores.n_samples
    unit, n_units, unit_name = bs.resampling_units(scores.patient_ids, n)

    dice, hd = (np.asarray(a, dtype=np.float64)[:, reported] for a in (scores.dice, scores.hd))
    hd = np.where(np.isinf(hd), np.nan, hd)
    tp, fp, fn = (np.asarray(a, dtype=np.int64)[:, reported] for a in (scores.tp, scores.fp, scores.fn))
    start = time.perf_counter()
    mult = bs.draw_replicates(n_units, n_bootstrap, seed)
    image = sb.evaluate_level(
        report_names, sb.Level(dice, hd, tp, fp, fn, unit, n_units), mult, opts, unit_name, patient_level=False
    )
    ps = sb.patient_scores(dice, hd, tp, fp, fn, unit, n_units)
    patient_level = sb.Level(
        ps.dice, ps.hd, ps.tp, ps.fp, ps.fn, np.arange(n_units), n_units, sensitivity=ps.sensitivity, ppv=ps.ppv
    )
    patient = sb.evaluate_level(report_names, patient_level, mult, opts, unit_name, patient_level=True)
    logger.debug(
        "segmentation_metrics: N=%d P=%d K=%d B=%d in %.3f s", n, n_units, len(names), n_bootstrap,
        time.perf_counter() - start,
    )
    return {
        "n_samples": n,
        "n_patients": n_units,
        "classes": names,
        "include_background": bool(include_background),
        "hd_percentile": float(scores.hd_percentile),
        "hd_spacing": _spacing_summary(scores.spacing),
        **image,
        "ci_level": opts.level,
        "n_bootstrap": int(n_bootstrap),
        "bootstrap_unit": unit_name,
        "patient": {"n_samples": n_units, "aggregation": "mean", **patient},
    }


def _spacing_summary(spacing: np.ndarray | None) -> list[float] | str | None:
    """``None`` (pixels), the common (row, column) spacing, or ``"per_image"`` when it varies."""
    if spacing is None:
        return None
    if np.isnan(spacing).any():
        return "unknown" if np.isnan(spacing).all() else "per_image"
    if (spacing == spacing[0]).all():
        return [float(v) for v in spacing[0]]
    return "per_image"


def segmentation_metrics(
    pred: ArrayLike,
    target: ArrayLike,
    classes: Sequence[str],
    *,
    patient_ids: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    include_background: bool = False,
    hd_percentile: float = 95.0,
    spacing: float | Sequence[float] | np.ndarray | None = None,
    min_class_support: int = 10,
    min_patients: int = 20,
    exact_below: int = 30,
    small_sample_method: Literal["clopper_pearson", "wilson"] = "clopper_pearson",
    min_defined_fraction: float = 0.1,
) -> dict[str, Any]:
    """Per-class Dice, HD95, pixel sensitivity and PPV with patient-level intervals (metrics.json).

    Args:
        pred: ``(N, H, W)`` / ``(N, 1, H, W)`` integer labels, or ``(N, K, H, W)`` probabilities
            or logits (arg-max); numpy or torch.
        target: ``(N, H, W)`` / ``(N, 1, H, W)`` integer labels.
        classes: one name per label value ``0..K-1`` (label 0: background).
        patient_ids: one id per image; intervals then resample patients and the ``patient``
            section scores each patient once. Without ids each image is its own patient and
            ``bootstrap_unit`` says ``"sample"``.
        n_bootstrap: bootstrap replicates; 0 disables intervals (``ci == ci_method == {}``).
        ci: confidence level of every interval.
        seed: seed of the local ``numpy.random.default_rng`` drawing the replicates.
        include_background: report label 0 as a class too (and count it in the summaries).
        hd_percentile: percentile of the Hausdorff distance reported as ``hd95``.
        spacing: pixel size (row, column) for HD — number, pair or ``(N, 2)``; ``None``: pixels.
        min_class_support: ``small_sample`` flags classes present in fewer units than this.
        min_patients: ``small_sample`` flags the split when it has fewer units than this.
        exact_below: pixel sensitivity/PPV whose denominator spans fewer units than this get a
            ``small_sample_method`` interval on the effective unit count (module docstring).
        small_sample_method: ``"clopper_pearson"`` (exact, conservative) or ``"wilson"``.
        min_defined_fraction: an interval is ``None`` when the metric is defined in fewer than
            this share of replicates.

    Returns:
        The JSON-ready dict documented in the module docstring; undefined values are ``None``.

    Raises:
        DataError: naming the argument on bad shapes, labels, scores, ids or options.
    """
    check_interval_options(
        n_bootstrap, ci, min_defined_fraction, exact_below, small_sample_method, min_class_support, min_patients
    )
    _check_bool("include_background", include_background)
    scores = per_image_scores(
        pred, target, classes, patient_ids=patient_ids, hd_percentile=hd_percentile, spacing=spacing
    )
    return segmentation_metrics_from_scores(
        scores,
        include_background=include_background,
        n_bootstrap=n_bootstrap,
        ci=ci,
        seed=seed,
        min_defined_fraction=min_defined_fraction,
        exact_below=exact_below,
        small_sample_method=small_sample_method,
        min_class_support=min_class_support,
        min_patients=min_patients,
    )


# ----------------------------------------------------------------------------- accumulator


class SegmentationMetrics:
    """Accumulate batches, then compute :func:`segmentation_metrics` — MONAI-style.

    ``update`` scores each image at once (Dice, HD95, pixel counts) and keeps only those numbers,
    never the masks, so memory grows by a few numbers per image. Patient ids and sample ids must be
    given for every batch or for none; sample ids must be unique across batches (a padded
    distributed sampler's duplicates raise rather than count twice).

    Example::

        metric = SegmentationMetrics(["background", "plaque"], n_bootstrap=1000)
        metric.update(logits, labels, patient_ids=pids, sample_ids=idx)
        result = metric.aggregate()
        write_segmentation_predictions_csv(path, metric.predictions())
    """

    def __init__(
        self,
        classes: Sequence[str],
        *,
        n_bootstrap: int = 1000,
        ci: float = 0.95,
        seed: int = 0,
        include_background: bool = False,
        hd_percentile: float = 95.0,
        spacing: float | Sequence[float] | None = None,
        min_class_support: int = 10,
        min_patients: int = 20,
        exact_below: int = 30,
        small_sample_method: Literal["clopper_pearson", "wilson"] = "clopper_pearson",
        min_defined_fraction: float = 0.1,
        with_hd: bool = True,
    ) -> None:
        self.classes = check_classes(classes, _TOO_FEW_CLASSES)
        self.with_hd = _check_bool("with_hd", with_hd)
        check_interval_options(
            n_bootstrap, ci, min_defined_fraction, exact_below, small_sample_method, min_class_support, min_patients
        )
        _check_bool("include_background", include_background)
        self.hd_percentile = _check_hd_percentile(hd_percentile)
        _check_spacing(spacing, 1)
        self.spacing = spacing
        self._options = {
            "include_background": bool(include_background),
            "n_bootstrap": int(n_bootstrap),
            "ci": float(ci),
            "seed": seed,
            "min_defined_fraction": float(min_defined_fraction),
            "exact_below": int(exact_below),
            "small_sample_method": small_sample_method,
            "min_class_support": int(min_class_support),
            "min_patients": int(min_patients),
        }
        self.reset()

    def reset(self) -> None:
        """Forget every accumulated batch."""
        self._parts: list[SegmentationScores] = []
        self._with_patients: bool | None = None
        self._with_samples: bool | None = None

    @property
    def n_samples(self) -> int:
        """Number of images accumulated so far."""
        return int(sum(part.n_samples for part in self._parts))

    def update(
        self,
        pred: ArrayLike,
        target: ArrayLike,
        patient_ids: Sequence[str] | None = None,
        sample_ids: Sequence[int | str] | None = None,
        spacing: float | Sequence[float] | np.ndarray | None = None,
    ) -> None:
        """Score one batch: ``pred`` labels or ``(B, K, H, W)`` scores, ``target`` labels.

        ``spacing`` overrides the constructor's for this batch (e.g. ``(B, 2)`` from DICOM headers).
        """
        batch = len(self._parts)
        if batch > 0 and (patient_ids is not None) != self._with_patients:
            raise DataError(f"batch {batch}: patient_ids must be given for every batch or for none")
        if batch > 0 and (sample_ids is not None) != self._with_samples:
            raise DataError(f"batch {batch}: sample_ids must be given for every batch or for none")
        try:
            part = per_image_scores(
                pred,
                target,
                self.classes,
                patient_ids=patient_ids,
                sample_ids=sample_ids,
                hd_percentile=self.hd_percentile,
                with_hd=self.with_hd,
                spacing=self.spacing if spacing is None else spacing,
            )
        except DataError as err:
            raise DataError(f"batch {batch}: {err}") from None
        if batch > 0 and (part.spacing is None) != (self._parts[0].spacing is None):
            raise DataError(f"batch {batch}: spacing must be given for every batch or for none (pixels and mm mix)")
        if sample_ids is None:
            part = replace(part, sample_ids=part.sample_ids + self.n_samples)
        self._parts.append(part)
        self._with_patients = patient_ids is not None
        self._with_samples = sample_ids is not None

    def predictions(self) -> SegmentationScores:
        """The per-image scores so far, e.g. for :func:`write_segmentation_predictions_csv`."""
        if not self._parts:
            raise DataError("SegmentationMetrics: no batches accumulated; call update() first")
        scores = SegmentationScores.concat(self._parts)
        check_unique_ids(scores.sample_ids, item="image")
        return scores

    def aggregate(self) -> dict[str, Any]:
        """Metrics over every accumulated batch; same result as :func:`segmentation_metrics`."""
        return segmentation_metrics_from_scores(self.predictions(), **self._options)


# ----------------------------------------------------------------------------- predictions file

_FIXED_COLUMNS = ("index", "path", "patient_id", "spacing")
_PER_CLASS_COLUMNS = ("dice", "hd", "tp", "fp", "fn")


def _hd_prefix(percentile: float) -> str:
    return f"hd{percentile:g}"


def _cell(x: float) -> str:
    return "" if math.isnan(x) or math.isinf(x) else repr(float(x))


def write_segmentation_predictions_csv(
    path: str | os.PathLike[str], scores: SegmentationScores, *, paths: Sequence[str] | None = None
) -> Path:
    """Write one row per image to ``path`` atomically; return the path.

    Columns: ``index, path, patient_id, spacing`` then per class ``dice_<c>, hd95_<c>, tp_<c>,
    fp_<c>, fn_<c>`` (the HD column is named after the percentile: ``hd99_<c>`` for 99).
    Undefined Dice/HD cells are empty; ``spacing`` is "row col" or empty (pixels). Floats are
    written with ``repr`` precision, so :func:`read_segmentation_predictions_csv` round-trips exactly.
    """
    _check_scores(scores)
    n = scores.n_samples
    path_col = scores.paths if paths is None else check_ids(paths, n, "paths", item="image")
    prefix = _hd_prefix(scores.hd_percentile)
    header = list(_FIXED_COLUMNS)
    for name in scores.classes:
        header += [f"dice_{name}", f"{prefix}_{name}", f"tp_{name}", f"fp_{name}", f"fn_{name}"]

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            for i in range(n):
                row = [
                    str(scores.sample_ids[i]),
                    "" if path_col is None else str(path_col[i]),
                    "" if scores.patient_ids is None else str(scores.patient_ids[i]),
                    "" if scores.spacing is None else " ".join(repr(float(v)) for v in scores.spacing[i]),
                ]
                for c in range(len(scores.classes)):
                    row += [_cell(scores.dice[i, c]), _cell(scores.hd[i, c])]
                    row += [str(int(scores.tp[i, c])), str(int(scores.fp[i, c])), str(int(scores.fn[i, c]))]
                writer.writerow(row)

    return atomic_write(path, write)


def _parse_header(source: Path, header: list[str]) -> tuple[list[str], float]:
    if tuple(header[: len(_FIXED_COLUMNS)]) != _FIXED_COLUMNS:
        raise DataError(f"{source}: header must start with {', '.join(_FIXED_COLUMNS)}, got {header[:4]}")
    rest = header[len(_FIXED_COLUMNS) :]
    if len(rest) < 2 * len(_PER_CLASS_COLUMNS) or len(rest) % len(_PER_CLASS_COLUMNS):
        raise DataError(
            f"{source}: expected dice_<c>, hd95_<c>, tp_<c>, fp_<c>, fn_<c> for 2 or more classes, got {rest}"
        )
    classes: list[str] = []
    percentiles = set()
    for j in range(0, len(rest), len(_PER_CLASS_COLUMNS)):
        dice_col, hd_col, *count_cols = rest[j : j + len(_PER_CLASS_COLUMNS)]
        name = dice_col[len("dice_") :]
        if not dice_col.startswith("dice_") or not name:
            raise DataError(f"{source}: column {dice_col!r} should be dice_<class>")
        hd_head = hd_col[: -(len(name) + 1)] if hd_col.endswith("_" + name) else ""
        try:
            percentiles.add(float(hd_head[2:]) if hd_head.startswith("hd") else float("nan"))
        except ValueError:
            percentiles.add(float("nan"))
        if any(math.isnan(p) for p in percentiles):
            raise DataError(f"{source}: column {hd_col!r} should be hd95_{name} (hd<percentile>_<class>)")
        if count_cols != [f"tp_{name}", f"fp_{name}", f"fn_{name}"]:
            raise DataError(f"{source}: columns {count_cols} should be tp_{name}, fp_{name}, fn_{name}")
        classes.append(name)
    if len(percentiles) != 1:
        raise DataError(f"{source}: HD columns use different percentiles {sorted(percentiles)}")
    return classes, percentiles.pop()


def read_segmentation_predictions_csv(path: str | os.PathLike[str]) -> SegmentationScores:
    """Read a file written by :func:`write_segmentation_predictions_csv` back into scores.

    Raises :class:`DataError` naming the file and line on a missing column or a bad cell.
    """
    source = Path(path)
    if not source.is_file():
        raise DataError(f"{source}: segmentation predictions file not found")
    with open(source, encoding="utf-8", newline="") as fh:
        rows = [row for row in csv.reader(fh) if row]
    if not rows:
        raise DataError(f"{source}: empty file, expected a header {', '.join(_FIXED_COLUMNS)}, dice_<class>...")
    classes, percentile = _parse_header(source, rows[0])
    k, width = len(classes), len(rows[0])
    ids, paths, patients, spacing = [], [], [], []
    values = np.full((len(rows) - 1, k, len(_PER_CLASS_COLUMNS)), np.nan)
    for i, row in enumerate(rows[1:]):
        line = i + 2
        if len(row) != width:
            raise DataError(f"{source}: line {line}: {len(row)} fields, expected {width}")
        ids.append(row[0])
        paths.append(row[1])
        patients.append(row[2])
        try:
            spacing.append([float(v) for v in row[3].split()] if row[3] else [math.nan, math.nan])
            cells = np.array([float(v) if v != "" else math.nan for v in row[len(_FIXED_COLUMNS) :]])
        except ValueError:
            raise DataError(f"{source}: line {line}: scores and spacing must be numbers, got {row[3:]}") from None
        if len(spacing[-1]) != 2:
            raise DataError(f"{source}: line {line}: spacing must be 'row col', got {row[3]!r}")
        cells = cells.reshape(k, len(_PER_CLASS_COLUMNS))
        counts = cells[:, 2:]
        if np.isnan(counts).any() or (counts < 0).any() or (counts != np.round(counts)).any():
            raise DataError(f"{source}: line {line}: tp/fp/fn must be whole numbers >= 0, got {counts.tolist()}")
        values[i] = cells

    def optional(col: list[str]) -> np.ndarray | None:
        return None if all(v == "" for v in col) else np.asarray(col, dtype=str)

    sp = np.asarray(spacing, dtype=np.float64).reshape(-1, 2)
    return SegmentationScores(
        sample_ids=as_sample_ids(ids),
        patient_ids=optional(patients),
        classes=classes,
        dice=values[:, :, 0],
        hd=values[:, :, 1],
        tp=values[:, :, 2].astype(np.int64),
        fp=values[:, :, 3].astype(np.int64),
        fn=values[:, :, 4].astype(np.int64),
        hd_percentile=percentile,
        spacing=None if np.isnan(sp).all() else sp,
        paths=optional(paths),
    )
