"""Plaque detection metrics on polar IVOCT frames, with pullback-level confidence intervals.

The detection counterpart of :mod:`medprune.metrics.segmentation`: COCO AP from torchmetrics, the
recall / precision / IoU / total score of the two-stage IVOCT paper (DESIGN.md §5) measured on
boxes and on angular arcs, recall by plaque size, and a percentile bootstrap interval for each,
resampling **pullbacks** (the patients of IVOCT).

**Inputs.** Per frame, torchvision-style dicts: predictions ``{"boxes": (K, 4), "scores": (K,),
"labels": (K,)}`` and targets ``{"boxes": (M, 4), "labels": (M,)}`` (numpy or torch, any device),
boxes ``(x0, y0, x1, y1)`` in polar pixel edges (:mod:`medprune.data.polar`: ``x`` = column =
angle·W/360, ``y`` = row = depth), plus each frame's width ``W`` in columns. A plaque arc that
crosses the 360°→0° seam is two boxes split at the seam. ``labels`` are kept (and written to the
predictions file) but every label ``>= 1`` is plaque: matching is class-agnostic, and AP is
torchmetrics' ``average="micro"``, which pools every label into one class. ``labels`` may be left
out (all 1).

**Per frame**, at ``score_threshold`` (predictions with ``score >= score_threshold`` count):

- *boxes*: predictions in descending score order are matched greedily, each to the still
  unmatched target box of highest IoU (``torchvision.ops.box_iou``) if that IoU is
  ``>= match_iou`` — pycocotools' rule, ties to the later target as there. ``recall`` = matched
  targets / targets; ``precision`` = matched predictions / predictions; ``iou`` = mean IoU of
  the matched pairs, **0 when the frame holds boxes but none matched** (a frame whose plaque is
  missed, or whose only prediction is a false alarm, scores IoU 0, as a segmentation's Dice does).
- *intervals*: each box becomes the arc of its columns (:func:`~medprune.data.polar.box_to_interval`);
  a frame's predicted arcs ``P`` and target arcs ``G`` are merged (seam halves join). In degrees:
  ``interval_recall = |P∩G| / |G|``, ``interval_precision = |P∩G| / |P|``,
  ``interval_iou = |P∩G| / |P∪G|``.

**Empty frames — the rules.**

===========================  ==========  ===========  ==========  ===============================
frame                        recall      precision    IoU         why
===========================  ==========  ===========  ==========  ===============================
plaque and predictions       computed    computed     computed
plaque, no prediction        0           excluded     0           a miss: counted twice over
no plaque, predictions       excluded    0            0           a false alarm
neither                      excluded    excluded     excluded    counted in ``counts`` only
===========================  ==========  ===========  ==========  ===============================

``recall`` is averaged over the frames with plaque, ``precision`` over the frames with
predictions, ``iou`` over the frames with either (the same for the ``interval_`` metrics, where
"has" means covers some angle; a zero-width predicted box covers none). A frame with neither is
left out rather than scored 1: "nothing to find, nothing found" would lift every mean by however
many plaque-free frames the split holds — the reason segmentation leaves such images out of Dice
too. How often a model stays silent where it should, and speaks where it should not, is in
``counts`` (``n_frames_empty``, ``n_frames_false_alarm``, ``n_frames_missed``).

**Data set.** ``recall``, ``precision``, ``iou`` (and the ``interval_`` three) are those
frame means; ``total = (recall + precision + iou) / 3`` of the means (``None`` when one is
undefined). That mean is *our reading* of the CCCV2017 total score: Li et al. (MATEC 2019) report
recall 0.94, precision 0.885, IoU 0.913 and total 0.913 — their mean is 0.9127 and matches, their
F1-based combinations do not (DESIGN.md §5, *inferred*). ``ap50`` and ``map`` (COCO AP at IoU
0.5 and averaged over 0.50:0.05:0.95) come from ``torchmetrics.detection.MeanAveragePrecision``
(``box_format="xyxy"``, pycocotools backend, pycocotools' own IoU and recall thresholds, 100
detections per frame, area "all"), over **every** prediction — AP needs no score threshold.

**Plaque size.** A plaque is one merged target arc of a frame (the two seam halves of an arc are
one plaque; two touching or overlapping arcs also become one), its size its angular width in
degrees. ``per_size`` buckets plaques by ``size_edges`` (default small < 30° <= medium < 90° <=
large) and reports, per bucket, ``recall``: the share of its plaques *detected*, i.e. overlapped
by one merged predicted arc (at ``score_threshold``) with interval IoU ``>= size_iou`` (0.5). At
IoU above 0.5 two disjoint plaques cannot share one arc, so no one-to-one matching is needed.
The ``small_sample`` section flags plaque when fewer than ``min_class_support`` pullbacks hold it,
notes each bucket with fewer plaques than that, and the split when it has fewer than
``min_patients`` pullbacks (segmentation's wording and shape).

**Intervals.** Percentile bootstrap over pullbacks (``bootstrap_unit: "patient"``; single frames,
``"sample"``, when no pullback ids are given): every frame of a drawn pullback enters the
replicate with the pullback's multiplicity, the same replicates for every metric. The frame
means are weighted sums (one matrix product for all replicates, as in segmentation). AP is not:
per replicate it is recomputed by :func:`coco_average_precision`'s own implementation of
pycocotools' algorithm from each prediction's match flags (computed once), with the
multiplicities as weights — torchmetrics per replicate would take minutes. The point estimates
use torchmetrics; the tests check both give the same AP. ``ci_method`` says
``percentile_bootstrap`` (or ``..._degenerate`` for a zero-width interval).

**Quick mode** (``quick=True``; per-epoch validation, the safety gate): no arcs, no ``per_size``
(``interval_*`` are ``None``), and AP from the own implementation instead of torchmetrics.

metrics.json (detection)::

    {"n_samples": 120, "n_patients": 12, "n_frames": 120, "n_pullbacks": 12,
     "score_threshold": 0.5, "match_iou": 0.5, "size_iou": 0.5, "quick": false,
     "ap_backend": "torchmetrics/pycocotools",
     "ap50": 0.83, "map": 0.51, "recall": 0.90, "precision": 0.86, "iou": 0.74, "total": 0.83,
     "interval_recall": 0.88, "interval_precision": 0.85, "interval_iou": 0.76, "interval_total": 0.83,
     "per_size": {"small": {"min_deg": 0.0, "max_deg": 30.0, "recall": 0.6, "n_plaques": 10,
                            "n_detected": 6}, "medium": {...}, "large": {...}},
     "counts": {"n_target_boxes": 80, "n_detections": 77, "n_matched": 70, "n_plaques": 64,
                "n_frames_with_plaque": 60, "n_frames_with_detections": 58, "n_frames_empty": 50,
                "n_frames_missed": 4, "n_frames_false_alarm": 2},
     "ci": {"ap50": [0.74, 0.90], "total": [0.78, 0.87], "per_size.small.recall": [0.3, 0.9], ...},
     "ci_method": {"ap50": "percentile_bootstrap", ...},
     "ci_level": 0.95, "n_bootstrap": 1000, "bootstrap_unit": "patient",
     "small_sample": {"min_class_support": 10, "min_patients": 20, "classes": {}, "split": true,
                      "notes": ["the split has 12 patients, fewer than 20: ..."]}}

``n_samples``/``n_patients`` are the names every metrics.json carries (the report and the CLI
read them); ``n_frames``/``n_pullbacks`` say the same in IVOCT words. Undefined values are
``None``, never ``NaN``.

Example::

    metric = DetectionMetrics(width=504, n_bootstrap=1000)
    for batch in loader:
        metric.update(model(batch.images), batch.targets, sample_ids=batch.index,
                      patient_ids=batch.pullbacks)
    result = metric.aggregate()
    write_detection_predictions(run_dir / "predictions.json", metric.predictions())
    detection_metrics_from_predictions(read_detection_predictions(run_dir / "predictions.json"),
                                       score_threshold=0.7)   # re-scored without the model
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from medprune._io import atomic_write_json, read_json
from medprune.data.polar import (
    box_to_interval,
    coverage_overlap,
    interval_iou,
    interval_length,
    merge_intervals,
)
from medprune.errors import DataError
from medprune.metrics import _bootstrap as bs
from medprune.metrics import _segmentation_bootstrap as sb
from medprune.metrics._common import (
    bootstrap_method,
    check_ids,
    check_interval_options,
    check_unique_ids,
    none_if_nan,
    plural,
    small_sample_section,
    to_numpy,
)
from medprune.metrics._detection_ap import (COCO_IOU_THRESHOLDS, ap_table, box_iou, greedy_match,
                                             replicate_ap, score_order, torchmetrics_ap)
from medprune.metrics.predictions import as_sample_ids

if TYPE_CHECKING:
    import torch

__all__ = [
    "DETECTION_METRICS",
    "QUICK_DETECTION_METRICS",
    "COCO_IOU_THRESHOLDS",
    "DETECTION_PREDICTIONS_FORMAT",
    "DetectionPredictions",
    "FrameScores",
    "DetectionMetrics",
    "detection_predictions",
    "match_detections",
    "per_frame_scores",
    "coco_average_precision",
    "detection_metrics",
    "detection_metrics_from_predictions",
    "write_detection_predictions",
    "read_detection_predictions",
]

logger = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, "torch.Tensor", Sequence[Any]]

_BOX_METRICS = ("recall", "precision", "iou")
_INTERVAL_METRICS = ("interval_recall", "interval_precision", "interval_iou")
QUICK_DETECTION_METRICS = ("ap50", "map", *_BOX_METRICS, "total")
"""Headline keys of a quick evaluation, each with a confidence interval."""
DETECTION_METRICS = (*QUICK_DETECTION_METRICS, *_INTERVAL_METRICS, "interval_total")
"""Headline keys of a full evaluation, each with a confidence interval (``per_size`` has its own)."""

DETECTION_PREDICTIONS_FORMAT = "medprune.detection_predictions/1"


# ----------------------------------------------------------------------------- inputs


def _where(name: str, i: int, sample_id: Any) -> str:
    return f"{name}[{i}]" + ("" if sample_id is None else f" (sample {sample_id})")


def _as_float(value: Any, where: str, field: str, ndim: int) -> np.ndarray:
    a = to_numpy(value)
    if a.size == 0:
        return np.zeros((0, 4) if ndim == 2 else (0,), dtype=np.float64)
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise DataError(f"{where}: {field} must be numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if ndim == 2 and (a.ndim != 2 or a.shape[1] != 4):
        raise DataError(f"{where}: {field} must have shape (K, 4) as x0, y0, x1, y1; got {tuple(a.shape)}")
    if ndim == 1 and a.ndim != 1:
        raise DataError(f"{where}: {field} must have shape (K,), got {tuple(a.shape)}")
    bad = ~np.isfinite(a)
    if bad.any():
        j = int(np.flatnonzero(bad.any(axis=1) if ndim == 2 else bad)[0])
        thing = f"box {j} {tuple(a[j].tolist())}" if ndim == 2 else f"score {j} ({a[j]})"
        raise DataError(f"{where}: {thing} is not a finite number (NaN or inf)")
    return a


def _check_boxes(boxes: np.ndarray, width: int, where: str, strict: bool) -> None:
    """Refuse inverted boxes, boxes outside the frame's columns and (``strict``, targets) empty ones."""
    x0, y0, x1, y1 = boxes.T
    checks = [
        (x1 < x0, "has x1 < x0 (expected x0, y0, x1, y1)"),
        (y1 < y0, "has y1 < y0 (expected x0, y0, x1, y1)"),
        ((x0 < 0) | (x1 > width), f"lies outside the frame's columns [0, {width}]"),
    ]
    if strict:
        checks.append(((x1 <= x0) | (y1 <= y0), "is empty (a target box needs x1 > x0 and y1 > y0)"))
    for bad, problem in checks:
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise DataError(f"{where}: box {j} {tuple(boxes[j].tolist())} {problem}")


def _as_labels(value: Any, n: int, where: str) -> np.ndarray:
    if value is None:
        return np.ones(n, dtype=np.int64)
    a = to_numpy(value)
    if a.size == 0 and n == 0:
        return np.zeros(0, dtype=np.int64)
    if a.shape != (n,):
        raise DataError(f"{where}: labels must have one entry per box ({n}), got shape {tuple(a.shape)}")
    if not np.issubdtype(a.dtype, np.number) or (a != np.round(a)).any() or (a < 1).any():
        raise DataError(f"{where}: labels must be integers >= 1 (0 is torchvision's background), got {a.tolist()}")
    return a.astype(np.int64)


def _check_width(width: Any, where: str) -> int:
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise DataError(f"{where}: frame width must be a positive number of columns, got {width!r}")
    return int(width)


def _frame(item: Any, width: int, where: str, predicted: bool) -> tuple[np.ndarray, ...]:
    """``(boxes, scores, labels)`` of one prediction dict, or ``(boxes, labels)`` of one target dict."""
    if not isinstance(item, Mapping):
        wanted = "'boxes' and 'scores'" if predicted else "'boxes'"
        raise DataError(f"{where}: expected a dict with {wanted} (torchvision style), got {type(item).__name__}")
    keys = ("boxes", "scores") if predicted else ("boxes",)
    missing = [k for k in keys if k not in item]
    if missing:
        raise DataError(f"{where}: missing key {missing[0]!r} (has {sorted(item)})")
    boxes = _as_float(item["boxes"], where, "boxes", 2)
    _check_boxes(boxes, width, where, strict=not predicted)
    labels = _as_labels(item.get("labels"), len(boxes), where)
    if not predicted:
        return boxes, labels
    scores = _as_float(item["scores"], where, "scores", 1)
    if len(scores) != len(boxes):
        raise DataError(f"{where}: {len(boxes)} boxes but {len(scores)} scores")
    return boxes, scores, labels


@dataclass(frozen=True)
class DetectionPredictions:
    """Every frame's predictions and targets: the detection "predictions file".

    Per frame ``i``: ``boxes[i]`` ``(K, 4)``, ``scores[i]`` ``(K,)`` and ``labels[i]`` ``(K,)``
    (all the model's predictions, not only those above a threshold: AP needs them),
    ``target_boxes[i]`` ``(M, 4)`` and ``target_labels[i]`` ``(M,)``; ``widths`` ``(N,)`` frame
    widths in columns. ``sample_ids``: int64 when every id is an integer, else str;
    ``patient_ids`` (pullbacks) and ``paths``: str arrays or ``None``. Build it with
    :func:`detection_predictions` (which validates) or :class:`DetectionMetrics`.
    """

    sample_ids: np.ndarray
    patient_ids: np.ndarray | None
    widths: np.ndarray
    boxes: tuple[np.ndarray, ...]
    scores: tuple[np.ndarray, ...]
    labels: tuple[np.ndarray, ...]
    target_boxes: tuple[np.ndarray, ...]
    target_labels: tuple[np.ndarray, ...]
    paths: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return len(self.boxes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"format", "box_format", "frames": [...]}``; floats keep full precision."""
        frames = []
        for i in range(self.n_frames):
            frames.append({
                "index": np.asarray(self.sample_ids[i]).item(),
                "patient_id": None if self.patient_ids is None else str(self.patient_ids[i]),
                "path": None if self.paths is None else str(self.paths[i]),
                "width": int(self.widths[i]),
                "boxes": self.boxes[i].tolist(),
                "scores": self.scores[i].tolist(),
                "labels": self.labels[i].tolist(),
                "target_boxes": self.target_boxes[i].tolist(),
                "target_labels": self.target_labels[i].tolist(),
            })
        return {
            "format": DETECTION_PREDICTIONS_FORMAT,
            "box_format": "x0,y0,x1,y1 polar pixel edges; x = column (angle * width / 360), y = row (depth)",
            "frames": frames,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "predictions") -> DetectionPredictions:
        """Parse :meth:`to_dict`'s output, validating every frame; errors name ``where`` and the frame."""
        if not isinstance(data, Mapping) or data.get("format") != DETECTION_PREDICTIONS_FORMAT or not isinstance(
            data.get("frames"), list
        ):
            raise DataError(f"{where}: not a detection predictions file (expected format "
                            f"{DETECTION_PREDICTIONS_FORMAT!r} with a 'frames' list)")
        frames = data["frames"]
        keys = ("index", "patient_id", "path", "width", "boxes", "scores", "target_boxes")
        for i, frame in enumerate(frames):
            if not isinstance(frame, Mapping) or any(k not in frame for k in keys):
                raise DataError(f"{where}: frame record {i} must hold {', '.join(keys)}")
        preds = [{"boxes": f["boxes"], "scores": f["scores"], "labels": f.get("labels")} for f in frames]
        targets = [{"boxes": f["target_boxes"], "labels": f.get("target_labels")} for f in frames]

        def optional(key: str) -> list[Any] | None:
            values = [f[key] for f in frames]
            return None if all(v is None for v in values) else values

        try:
            return detection_predictions(
                preds, targets, [f["width"] for f in frames], sample_ids=[f["index"] for f in frames],
                patient_ids=optional("patient_id"), paths=optional("path"),
            )
        except DataError as err:
            raise DataError(f"{where}: {err}") from None

    @classmethod
    def concat(cls, parts: Sequence[DetectionPredictions]) -> DetectionPredictions:
        """Join batches; patient ids and paths must be given for every batch or for none."""
        if not parts:
            raise DataError("predictions: nothing to join")

        def cat(name: str) -> np.ndarray | None:
            values = [getattr(p, name) for p in parts]
            if all(v is None for v in values):
                return None
            if any(v is None for v in values):
                raise DataError(f"predictions: {name} must be given for every batch or for none")
            return np.concatenate(values)

        def joined(name: str) -> tuple[np.ndarray, ...]:
            return tuple(a for p in parts for a in getattr(p, name))

        return cls(
            sample_ids=as_sample_ids(cat("sample_ids")),  # type: ignore[arg-type]
            patient_ids=cat("patient_ids"),
            widths=cat("widths"),  # type: ignore[arg-type]
            boxes=joined("boxes"), scores=joined("scores"), labels=joined("labels"),
            target_boxes=joined("target_boxes"), target_labels=joined("target_labels"),
            paths=cat("paths"),
        )


def detection_predictions(
    preds: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    widths: int | Sequence[int] | np.ndarray,
    *,
    sample_ids: Sequence[int | str] | np.ndarray | None = None,
    patient_ids: Sequence[str] | np.ndarray | None = None,
    paths: Sequence[str] | None = None,
) -> DetectionPredictions:
    """Validate per-frame prediction and target dicts into a :class:`DetectionPredictions`.

    Args:
        preds: one dict per frame, ``boxes`` ``(K, 4)`` xyxy, ``scores`` ``(K,)``, optional
            ``labels`` ``(K,)`` (integers >= 1; default 1) — numpy or torch (any device).
        targets: one dict per frame, ``boxes`` ``(M, 4)`` and optional ``labels``.
        widths: frame width in columns, one for all frames or one per frame.
        sample_ids: one unique id per frame (dataset indices); default ``0..N-1``.
        patient_ids: the pullback of each frame, or ``None`` (then frames are resampled).
        paths: each frame's file, recorded in the predictions file.

    Raises:
        DataError: naming the frame (``preds[3] (sample 17)``), the box and the problem —
            mismatched lengths, inverted boxes (x1 < x0), boxes outside ``[0, W]``, empty target
            boxes, NaN/inf boxes or scores, labels < 1, bad ids or widths.
    """
    if isinstance(preds, Mapping) or isinstance(targets, Mapping):
        raise DataError("preds/targets: expected a list of per-frame dicts (torchvision style), got a single dict")
    preds, targets = list(preds), list(targets)
    n = len(targets)
    if len(preds) != n:
        raise DataError(f"preds: has {len(preds)} frames but targets has {n}")
    if n == 0:
        raise DataError("targets: no frames to evaluate")
    if isinstance(widths, (int, np.integer)) and not isinstance(widths, bool):
        w = np.full(n, _check_width(widths, "widths"), dtype=np.int64)
    else:
        values = to_numpy(widths).reshape(-1).tolist()
        if len(values) != n:
            raise DataError(f"widths: has {len(values)} entries but there are {n} frames")
        w = np.asarray([_check_width(v, f"widths[{i}]") for i, v in enumerate(values)], dtype=np.int64)
    if sample_ids is None:
        sids = np.arange(n, dtype=np.int64)
        shown: list[Any] = [None] * n
    else:
        sids = as_sample_ids(check_ids(sample_ids, n, "sample_ids", item="frame"))
        check_unique_ids(sids, item="frame")
        shown = sids.tolist()
    pids = None if patient_ids is None else check_ids(patient_ids, n, "patient_ids", item="frame").astype(str)
    path_col = None if paths is None else check_ids(paths, n, "paths", item="frame").astype(str)
    pred_parts = [_frame(p, int(w[i]), _where("preds", i, shown[i]), True) for i, p in enumerate(preds)]
    target_parts = [_frame(t, int(w[i]), _where("targets", i, shown[i]), False) for i, t in enumerate(targets)]
    return DetectionPredictions(
        sample_ids=sids, patient_ids=pids, widths=w,
        boxes=tuple(p[0] for p in pred_parts), scores=tuple(p[1] for p in pred_parts),
        labels=tuple(p[2] for p in pred_parts),
        target_boxes=tuple(t[0] for t in target_parts), target_labels=tuple(t[1] for t in target_parts),
        paths=path_col,
    )


def match_detections(
    boxes: ArrayLike, scores: ArrayLike, target_boxes: ArrayLike, iou_threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of one frame's predictions to its targets, pycocotools' rule.

    Predictions are taken in descending score order (ties in input order); each is matched to the
    still unmatched target of highest IoU, if that IoU is ``>= iou_threshold`` (ties go to the
    later target). Returns, **in the input order of the predictions**, the matched target index
    (-1: unmatched) and the IoU of the match (0 when unmatched).

    Example::

        match_detections([[0, 0, 10, 10], [0, 0, 9, 10]], [0.6, 0.9], [[0, 0, 10, 10]])
        # (array([-1, 0]), array([0. , 0.9]))  the higher score takes the target
    """
    b = _as_float(boxes, "boxes", "boxes", 2)
    s = _as_float(scores, "scores", "scores", 1)
    t = _as_float(target_boxes, "target_boxes", "boxes", 2)
    if len(s) != len(b):
        raise DataError(f"match_detections: {len(b)} boxes but {len(s)} scores")
    order = score_order(s)
    iou = box_iou(b[order], t)
    gt_sorted = greedy_match(iou, float(iou_threshold))
    gt_of = np.full(len(b), -1, dtype=np.int64)
    gt_of[order] = gt_sorted
    matched_iou = np.zeros(len(b))
    hit = gt_sorted >= 0
    matched_iou[order[hit]] = iou[np.flatnonzero(hit), gt_sorted[hit]]
    return gt_of, matched_iou


# ----------------------------------------------------------------------------- per-frame scores


@dataclass(frozen=True)
class FrameScores:
    """Each frame's scores at one score threshold (the rules in the module docstring).

    ``(N,)`` arrays over frames; ``NaN`` where a value is undefined (excluded from its mean) or
    not computed (``interval_*`` in quick mode). ``n_targets``, ``n_detections`` (at the
    threshold), ``n_matched``: box counts. Plaques (merged target arcs) are rows of the ``plaque_``
    arrays: their frame, width in degrees and whether a predicted arc overlaps them with interval
    IoU ``>= size_iou`` (empty in quick mode).
    """

    recall: np.ndarray
    precision: np.ndarray
    iou: np.ndarray
    interval_recall: np.ndarray
    interval_precision: np.ndarray
    interval_iou: np.ndarray
    n_targets: np.ndarray
    n_detections: np.ndarray
    n_matched: np.ndarray
    plaque_frame: np.ndarray
    plaque_degrees: np.ndarray
    plaque_detected: np.ndarray

    def values(self, names: Sequence[str]) -> np.ndarray:
        """The named per-frame metrics as columns of an ``(N, len(names))`` array."""
        return np.stack([getattr(self, name) for name in names], axis=1)


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def _arcs(boxes: np.ndarray, width: int) -> list[tuple[float, float]]:
    """Merged arcs of boxes; zero-width (predicted) boxes cover no angle."""
    return merge_intervals([box_to_interval(b, width) for b in boxes if b[2] > b[0]])


def per_frame_scores(
    predictions: DetectionPredictions,
    *,
    score_threshold: float = 0.5,
    match_iou: float = 0.5,
    size_iou: float = 0.5,
    with_intervals: bool = True,
) -> FrameScores:
    """Box and arc recall, precision and IoU of every frame at ``score_threshold``.

    ``with_intervals=False`` skips the arcs (``interval_*`` stay ``NaN``, no plaques): the quick
    mode's per-frame half.
    """
    _check_predictions(predictions)
    thr = _check_fraction("score_threshold", score_threshold, unit=False)
    m_iou = _check_fraction("match_iou", match_iou)
    s_iou = _check_fraction("size_iou", size_iou)
    n = predictions.n_frames
    box = np.full((n, 3), np.nan)
    arc = np.full((n, 3), np.nan)
    counts = np.zeros((n, 3), dtype=np.int64)
    plaques: list[tuple[int, float, bool]] = []
    for i in range(n):
        keep = predictions.scores[i] >= thr
        pb = predictions.boxes[i][keep][score_order(predictions.scores[i][keep])]
        gb = predictions.target_boxes[i]
        iou = box_iou(pb, gb)
        gt_of = greedy_match(iou, m_iou)
        hit = gt_of >= 0
        k, m, matched = len(pb), len(gb), int(hit.sum())
        counts[i] = (m, k, matched)
        box[i] = (
            _ratio(matched, m),
            _ratio(matched, k),
            (iou[np.flatnonzero(hit), gt_of[hit]].mean() if matched else 0.0) if k or m else math.nan,
        )
        if not with_intervals:
            continue
        width = int(predictions.widths[i])
        pred_arcs, gt_arcs = _arcs(pb, width), _arcs(gb, width)
        p_deg = sum(interval_length(a) for a in pred_arcs)
        g_deg = sum(interval_length(a) for a in gt_arcs)
        overlap = coverage_overlap(pred_arcs, gt_arcs)
        arc[i] = (_ratio(overlap, g_deg), _ratio(overlap, p_deg), _ratio(overlap, p_deg + g_deg - overlap))
        for g in gt_arcs:
            plaques.append((i, interval_length(g), any(interval_iou(g, p) >= s_iou for p in pred_arcs)))
    table = np.asarray(plaques, dtype=np.float64).reshape(-1, 3)
    return FrameScores(
        recall=box[:, 0], precision=box[:, 1], iou=box[:, 2],
        interval_recall=arc[:, 0], interval_precision=arc[:, 1], interval_iou=arc[:, 2],
        n_targets=counts[:, 0], n_detections=counts[:, 1], n_matched=counts[:, 2],
        plaque_frame=table[:, 0].astype(np.int64), plaque_degrees=table[:, 1], plaque_detected=table[:, 2] > 0,
    )


def coco_average_precision(
    predictions: DetectionPredictions, iou_thresholds: Sequence[float] = (0.5,)
) -> float | None:
    """COCO AP (101-point interpolated, 100 detections per frame, area "all", class-agnostic),
    averaged over ``iou_thresholds``: ``(0.5,)`` is AP50, :data:`COCO_IOU_THRESHOLDS` is mAP.

    Our implementation of pycocotools' ``evaluate``/``accumulate``, equal to torchmetrics'
    ``map_50``/``map`` on the same predictions (tested to 1e-6); fast enough to run once per
    bootstrap replicate. ``None`` when no frame has a target (pycocotools' -1).
    """
    _check_predictions(predictions)
    thresholds = [_check_fraction("iou_thresholds", t) for t in iou_thresholds]
    if not thresholds:
        raise DataError("iou_thresholds: give at least one IoU threshold, e.g. (0.5,)")
    n = predictions.n_frames
    ap = replicate_ap(ap_table(predictions, thresholds), np.ones((1, n)), np.arange(n))
    return none_if_nan(ap[0].mean())


# ----------------------------------------------------------------------------- evaluation


def _check_fraction(name: str, value: Any, unit: bool = True) -> float:
    """A finite number; ``unit``: in [0, 1] (an IoU)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(
        float(value)
    ):
        raise DataError(f"{name}: expected a number, got {value!r}")
    if unit and not 0.0 <= float(value) <= 1.0:
        raise DataError(f"{name}: an IoU threshold must lie in [0, 1], got {value!r}")
    return float(value)


def _check_predictions(predictions: Any) -> None:
    if not isinstance(predictions, DetectionPredictions):
        raise DataError(
            f"predictions: expected DetectionPredictions (from detection_predictions or DetectionMetrics), "
            f"got {type(predictions).__name__}"
        )
    if predictions.n_frames == 0:
        raise DataError("predictions: no frames to evaluate")


@dataclass(frozen=True)
class _SizeBuckets:
    names: tuple[str, ...]
    edges: tuple[float, ...]

    @classmethod
    def build(cls, edges: Sequence[float], names: Sequence[str] | None) -> _SizeBuckets:
        if isinstance(edges, (str, bytes)) or not isinstance(edges, Sequence):
            raise DataError(f"size_edges: expected a list of angles in degrees, e.g. [30, 90]; got {edges!r}")
        e = tuple(_check_fraction("size_edges", v, unit=False) for v in edges)
        if any(not 0.0 < v < 360.0 for v in e) or any(b <= a for a, b in zip(e, e[1:])):
            raise DataError(f"size_edges: expected increasing angles in (0, 360) degrees, got {list(edges)}")
        if names is None and len(e) == 2:
            names = ("small", "medium", "large")
        elif names is None:  # the ranges: "<30", "30-90", ">=90"; one bucket without edges
            inner = [f"{a:g}-{b:g}" for a, b in zip(e, e[1:])]
            names = [f"<{e[0]:g}", *inner, f">={e[-1]:g}"] if e else ["all"]
        n = [names] if isinstance(names, str) else list(names)
        if len(n) != len(e) + 1:
            raise DataError(f"size_names: {len(e)} edges make {len(e) + 1} buckets, got {len(n)} names {n}")
        if any(not isinstance(v, str) or not v for v in n) or len(set(n)) != len(n):
            raise DataError(f"size_names: expected distinct non-empty names, got {n}")
        return cls(tuple(n), e)

    def bounds(self, j: int) -> tuple[float, float]:
        lows = (0.0, *self.edges)
        highs = (*self.edges, 360.0)
        return lows[j], highs[j]

    def index(self, degrees: np.ndarray) -> np.ndarray:
        """Bucket of each width: ``edges[j-1] <= deg < edges[j]``."""
        return np.searchsorted(np.asarray(self.edges), degrees, side="right")


def _small_sample(
    fs: FrameScores, unit: np.ndarray, n_units: int, unit_name: str, buckets: _SizeBuckets | None, opts: Any
) -> dict[str, Any]:
    """Flags plaque when fewer than ``min_class_support`` units hold it; notes sparse size buckets."""
    with_plaque = fs.n_targets > 0
    units_with = int(np.unique(unit[with_plaque]).size)
    flagged: dict[str, int] = {}
    notes: list[str] = []
    n_with = int(with_plaque.sum())
    if units_with < opts.min_class_support:
        flagged["plaque"] = n_with
        if n_with == 0:
            notes.append("no frame holds plaque: recall, AP and every size's recall are undefined")
        else:
            source = f" from {plural(units_with, 'pullback')}" if unit_name == "patient" else ""
            notes.append(f"plaque is in {plural(n_with, 'frame')}{source}: one frame moves the mean recall by up to "
                         f"{1 / n_with:.2f}")
    if buckets is not None:
        sizes = buckets.index(fs.plaque_degrees)
        for j, name in enumerate(buckets.names):
            count = int((sizes == j).sum())
            if count >= opts.min_class_support:
                continue
            low, high = buckets.bounds(j)
            span = f"({low:g}-{high:g} degrees)"
            if count == 0:
                notes.append(f"no '{name}' plaques {span} in the split: their recall is undefined")
            else:
                notes.append(f"{plural(count, repr(name) + ' plaque')} {span} in the split: one plaque moves the "
                             f"'{name}' recall by {1 / count:.2f}")
    return small_sample_section(flagged, notes, n_units, fs.recall.size, unit_name, opts)


#: The evaluation options and their defaults (:func:`detection_metrics_from_predictions` documents them).
_DEFAULTS: dict[str, Any] = {
    "score_threshold": 0.5, "match_iou": 0.5, "size_iou": 0.5, "size_edges": (30.0, 90.0), "size_names": None,
    "quick": False, "n_bootstrap": 1000, "ci": 0.95, "seed": 0, "min_class_support": 10, "min_patients": 20,
    "min_defined_fraction": 0.1,
}


@dataclass(frozen=True)
class _Options:
    """The evaluation options, validated once (errors name the option)."""

    score_threshold: float
    match_iou: float
    size_iou: float
    buckets: _SizeBuckets
    quick: bool
    n_bootstrap: int
    seed: int
    interval: Any  # medprune.metrics._common.IntervalOptions

    @classmethod
    def build(cls, **options: Any) -> _Options:
        """Validate ``options`` (those of :func:`detection_metrics_from_predictions`; defaults fill the rest)."""
        unknown = sorted(set(options) - set(_DEFAULTS))
        if unknown:
            raise DataError(f"unknown option {unknown[0]!r}; accepted: {', '.join(_DEFAULTS)}")
        o = {**_DEFAULTS, **options}
        score_threshold, match_iou, size_iou, quick = o["score_threshold"], o["match_iou"], o["size_iou"], o["quick"]
        size_edges, size_names, n_bootstrap, ci, seed = (o["size_edges"], o["size_names"], o["n_bootstrap"], o["ci"],
                                                         o["seed"])
        min_class_support, min_patients, min_defined_fraction = (o["min_class_support"], o["min_patients"],
                                                                 o["min_defined_fraction"])
        if not isinstance(quick, (bool, np.bool_)):
            raise DataError(f"quick: must be true or false, got {quick!r}")
        interval = check_interval_options(n_bootstrap, ci, min_defined_fraction, 0, "clopper_pearson",
                                          min_class_support, min_patients)
        return cls(
            score_threshold=_check_fraction("score_threshold", score_threshold, unit=False),
            match_iou=_check_fraction("match_iou", match_iou),
            size_iou=_check_fraction("size_iou", size_iou),
            buckets=_SizeBuckets.build(size_edges, size_names),
            quick=bool(quick),
            n_bootstrap=int(n_bootstrap),
            seed=seed,
            interval=interval,
        )


def detection_metrics_from_predictions(
    predictions: DetectionPredictions,
    *,
    score_threshold: float = 0.5,
    match_iou: float = 0.5,
    size_iou: float = 0.5,
    size_edges: Sequence[float] = (30.0, 90.0),
    size_names: Sequence[str] | None = None,
    quick: bool = False,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    min_class_support: int = 10,
    min_patients: int = 20,
    min_defined_fraction: float = 0.1,
) -> dict[str, Any]:
    """metrics.json from a :class:`DetectionPredictions` (built, accumulated, or read from a file).

    Args:
        predictions: every frame's predictions and targets.
        score_threshold: predictions scoring at least this count for recall/precision/IoU and
            the arcs (AP uses all of them).
        match_iou: box IoU at which a prediction matches a target.
        size_iou: interval IoU at which a predicted arc detects a plaque (``per_size``).
        size_edges, size_names: the plaque size buckets in degrees (default < 30, 30–90, >= 90) and
            their names (default small/medium/large for two edges, else "<30", "30-90", ">=90"...).
        quick: no arcs and no ``per_size`` (``interval_*`` are ``None``); AP from
            :func:`coco_average_precision` instead of torchmetrics.
        n_bootstrap: bootstrap replicates; 0 disables intervals (``ci == ci_method == {}``).
        ci: confidence level of every interval.
        seed: seed of the local ``numpy.random.default_rng`` drawing the replicates.
        min_class_support: ``small_sample`` flags plaque when fewer pullbacks hold it, and size
            buckets with fewer plaques.
        min_patients: ``small_sample`` flags the split when it has fewer pullbacks.
        min_defined_fraction: an interval is ``None`` when the metric is defined in fewer than
            this share of replicates.

    Returns:
        The JSON-ready dict documented in the module docstring.

    Raises:
        DataError: naming the option or input at fault.
    """
    opts = _Options.build(score_threshold=score_threshold, match_iou=match_iou, size_iou=size_iou,
                          size_edges=size_edges, size_names=size_names, quick=quick, n_bootstrap=n_bootstrap, ci=ci,
                          seed=seed, min_class_support=min_class_support, min_patients=min_patients,
                          min_defined_fraction=min_defined_fraction)
    return _evaluate(predictions, opts)


def _evaluate(predictions: DetectionPredictions, opts: _Options) -> dict[str, Any]:
    _check_predictions(predictions)
    start = time.perf_counter()
    fs = per_frame_scores(predictions, score_threshold=opts.score_threshold, match_iou=opts.match_iou,
                          size_iou=opts.size_iou, with_intervals=not opts.quick)
    n = predictions.n_frames
    unit, n_units, unit_name = bs.resampling_units(predictions.patient_ids, n)
    mult = bs.draw_replicates(n_units, opts.n_bootstrap, opts.seed)
    names = [*_BOX_METRICS, *_INTERVAL_METRICS]
    sums = sb.per_unit_sums(fs.values(names), unit, n_units)
    table = ap_table(predictions, COCO_IOU_THRESHOLDS)

    def headline(m: np.ndarray) -> dict[str, np.ndarray]:
        means = sb.replicate_means(m, *sums)
        ap = replicate_ap(table, m, unit)
        out = {"ap50": ap[:, 0], "map": ap.mean(axis=1)}
        out.update({name: means[:, j] for j, name in enumerate(names)})
        out["total"] = means[:, :3].mean(axis=1)
        out["interval_total"] = means[:, 3:].mean(axis=1)
        return out

    # the point estimate is the replicate with every pullback once: one definition for both
    point = headline(np.ones((1, n_units), dtype=np.int64))
    keys = QUICK_DETECTION_METRICS if opts.quick else DETECTION_METRICS
    result: dict[str, Any] = {
        "n_samples": n, "n_patients": n_units, "n_frames": n, "n_pullbacks": n_units,
        "score_threshold": opts.score_threshold, "match_iou": opts.match_iou, "size_iou": opts.size_iou,
        "quick": opts.quick,
        "ap_backend": "medprune (pycocotools algorithm)" if opts.quick else "torchmetrics/pycocotools",
        **{key: none_if_nan(point[key][0]) if key in keys else None for key in DETECTION_METRICS},
    }
    if not opts.quick:
        tm_map, tm_ap50 = torchmetrics_ap(predictions)
        for key, value in (("map", tm_map), ("ap50", tm_ap50)):
            own = result[key]
            if (value is None) != (own is None) or (value is not None and abs(value - own) > 1e-5):
                logger.warning("detection %s: torchmetrics gives %s, medprune's COCO AP %s; reporting torchmetrics'",
                               key, value, own)
            result[key] = value

    buckets = opts.buckets
    which = buckets.index(fs.plaque_degrees)
    plaque_values = np.where(which[:, None] == np.arange(len(buckets.names)), fs.plaque_detected[:, None], np.nan)
    result["per_size"] = {}
    if not opts.quick:
        for j, name in enumerate(buckets.names):
            low, high = buckets.bounds(j)
            count, hits = int((which == j).sum()), int(fs.plaque_detected[which == j].sum())
            result["per_size"][name] = {"min_deg": low, "max_deg": high, "recall": hits / count if count else None,
                                        "n_plaques": count, "n_detected": hits}
    detections, targets = fs.n_detections > 0, fs.n_targets > 0
    result["counts"] = {
        "n_target_boxes": int(fs.n_targets.sum()),
        "n_detections": int(fs.n_detections.sum()),
        "n_matched": int(fs.n_matched.sum()),
        "n_plaques": None if opts.quick else int(fs.plaque_frame.size),
        "n_frames_with_plaque": int(targets.sum()),
        "n_frames_with_detections": int(detections.sum()),
        "n_frames_empty": int((~targets & ~detections).sum()),
        "n_frames_missed": int((targets & ~detections).sum()),
        "n_frames_false_alarm": int((~targets & detections).sum()),
    }

    intervals: dict[str, list[float] | None] = {}
    level, min_defined = opts.interval.level, opts.interval.min_defined_fraction
    if mult is not None:
        reps = headline(mult)
        for key in keys:
            intervals[key] = bs.percentile_interval(reps[key], level, min_defined)
        if not opts.quick:
            size_reps = sb.replicate_means(mult, *sb.per_unit_sums(plaque_values, unit[fs.plaque_frame], n_units))
            for j, name in enumerate(buckets.names):
                intervals[f"per_size.{name}.recall"] = bs.percentile_interval(size_reps[:, j], level, min_defined)
    result["ci"] = intervals
    result["ci_method"] = {key: bootstrap_method(value) for key, value in intervals.items()}
    result["ci_level"] = level
    result["n_bootstrap"] = opts.n_bootstrap
    result["bootstrap_unit"] = unit_name
    result["small_sample"] = _small_sample(fs, unit, n_units, unit_name, None if opts.quick else buckets,
                                           opts.interval)
    logger.debug("detection_metrics: N=%d P=%d B=%d quick=%s in %.3f s", n, n_units, opts.n_bootstrap, opts.quick,
                 time.perf_counter() - start)
    return result


def detection_metrics(
    preds: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    widths: int | Sequence[int] | np.ndarray,
    *,
    sample_ids: Sequence[int | str] | np.ndarray | None = None,
    patient_ids: Sequence[str] | np.ndarray | None = None,
    **options: Any,
) -> dict[str, Any]:
    """metrics.json of per-frame prediction/target dicts: :func:`detection_predictions` (inputs,
    ``widths``, ids) then :func:`detection_metrics_from_predictions` (``options``: its keyword
    options, checked the same way; an unknown one raises :class:`~medprune.errors.DataError`).

    Example::

        result = detection_metrics(preds, targets, 504, patient_ids=pullbacks, n_bootstrap=1000)
        result["total"], result["ci"]["ap50"], result["per_size"]["small"]["recall"]
    """
    opts = _Options.build(**options)
    return _evaluate(detection_predictions(preds, targets, widths, sample_ids=sample_ids, patient_ids=patient_ids),
                     opts)


# ----------------------------------------------------------------------------- accumulator


class DetectionMetrics:
    """Accumulate batches, then compute :func:`detection_metrics_from_predictions` — MONAI-style.

    ``update`` validates each batch and keeps its boxes and scores on the CPU (a few numbers per
    prediction; AP needs them all). Patient ids and sample ids must be given for every batch or
    for none; sample ids must be unique across batches (a padded distributed sampler's duplicates
    raise rather than count twice). ``width`` is the frames' width in columns unless a batch
    gives its own ``widths``; the other options are :func:`detection_metrics_from_predictions`'s,
    checked here, at construction.

    Example::

        metric = DetectionMetrics(width=504, n_bootstrap=0, quick=True)
        metric.update(model(images), targets, sample_ids=idx, patient_ids=pullbacks)
        result = metric.aggregate()
    """

    def __init__(
        self,
        *,
        width: int | None = None,
        **options: Any,
    ) -> None:
        self.width = None if width is None else _check_width(width, "width")
        self._options = _Options.build(**options)
        self.reset()

    def reset(self) -> None:
        """Forget every accumulated batch."""
        self._parts: list[DetectionPredictions] = []
        self._with_patients: bool | None = None
        self._with_samples: bool | None = None

    @property
    def n_frames(self) -> int:
        """Number of frames accumulated so far."""
        return int(sum(part.n_frames for part in self._parts))

    def update(
        self,
        preds: Sequence[Mapping[str, Any]],
        targets: Sequence[Mapping[str, Any]],
        sample_ids: Sequence[int | str] | np.ndarray | None = None,
        patient_ids: Sequence[str] | np.ndarray | None = None,
        widths: int | Sequence[int] | np.ndarray | None = None,
    ) -> None:
        """Add one batch of per-frame prediction and target dicts (torchvision style)."""
        batch = len(self._parts)
        if batch > 0 and (patient_ids is not None) != self._with_patients:
            raise DataError(f"batch {batch}: patient_ids must be given for every batch or for none")
        if batch > 0 and (sample_ids is not None) != self._with_samples:
            raise DataError(f"batch {batch}: sample_ids must be given for every batch or for none")
        if widths is None and self.width is None:
            raise DataError(f"batch {batch}: no frame width; give DetectionMetrics(width=...) or update(widths=...)")
        try:
            part = detection_predictions(preds, targets, self.width if widths is None else widths,
                                         sample_ids=sample_ids, patient_ids=patient_ids)
        except DataError as err:
            raise DataError(f"batch {batch}: {err}") from None
        if sample_ids is None:
            part = replace(part, sample_ids=part.sample_ids + self.n_frames)
        self._parts.append(part)
        self._with_patients = patient_ids is not None
        self._with_samples = sample_ids is not None

    def predictions(self) -> DetectionPredictions:
        """Everything accumulated so far, e.g. for :func:`write_detection_predictions`."""
        if not self._parts:
            raise DataError("DetectionMetrics: no batches accumulated; call update() first")
        predictions = DetectionPredictions.concat(self._parts)
        check_unique_ids(predictions.sample_ids, item="frame")
        return predictions

    def aggregate(self) -> dict[str, Any]:
        """Metrics over every accumulated batch; same result as :func:`detection_metrics`."""
        return _evaluate(self.predictions(), self._options)


# ----------------------------------------------------------------------------- predictions file


def write_detection_predictions(
    path: str | os.PathLike[str], predictions: DetectionPredictions, *, paths: Sequence[str] | None = None
) -> Path:
    """Write every frame's boxes, scores and targets as JSON, atomically; return the path.

    ``{"format": "medprune.detection_predictions/1", "box_format": ..., "frames": [{"index",
    "patient_id", "path", "width", "boxes", "scores", "labels", "target_boxes",
    "target_labels"}, ...]}``. Floats keep full precision, so :func:`read_detection_predictions`
    gives back exactly the same metrics. ``paths`` (one per frame) overrides the recorded paths.
    """
    _check_predictions(predictions)
    if paths is not None:
        column = check_ids(paths, predictions.n_frames, "paths", item="frame").astype(str)
        predictions = replace(predictions, paths=column)
    return atomic_write_json(path, predictions.to_dict())


def read_detection_predictions(path: str | os.PathLike[str]) -> DetectionPredictions:
    """Read a file written by :func:`write_detection_predictions`; errors name the file and frame."""
    source = Path(path)
    data = read_json(source, "detection predictions file")
    return DetectionPredictions.from_dict(data, where=str(source))
