"""Box matching and COCO average precision for :mod:`medprune.metrics.detection`.

pycocotools' rules, reimplemented so AP can run once per bootstrap replicate: greedy matching in
descending score order (ties keep input order, IoU ties go to the later target), the top 100
detections per frame, 101-point interpolated precision. :func:`coco_average_precision` equals
torchmetrics' ``MeanAveragePrecision`` (pycocotools backend), which :func:`torchmetrics_ap` runs
for the point estimate; ``tests/test_metrics_detection.py`` checks the two agree to 1e-6.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from medprune.metrics.detection import DetectionPredictions

__all__ = ["COCO_IOU_THRESHOLDS", "ApTable", "ap_table", "box_iou", "greedy_match", "interpolated_ap", "replicate_ap",
           "score_order", "torchmetrics_ap"]

COCO_IOU_THRESHOLDS = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))
"""pycocotools' ``Params.iouThrs`` (torchmetrics' own default differs in the last float32 bits)."""
_COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # pycocotools' Params.recThrs
_COCO_MAX_DETECTIONS = (1, 10, 100)  # AP is read at the last
_TIE_FLOOR = 1 - 1e-10  # pycocotools: a match threshold of 1 still matches an IoU of 1 - 1e-10
# Replicates x true positives cells of one block in the bootstrap AP (float64: 32 MB).
_AP_BLOCK_CELLS = 1 << 22


# ----------------------------------------------------------------------------- matching


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``torchvision.ops.box_iou`` in float64, ``(len(a), len(b))``; 0 where a box has no area."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    import torch
    from torchvision.ops import box_iou

    with np.errstate(invalid="ignore"):
        iou = box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    return np.nan_to_num(iou, nan=0.0)  # two empty boxes: 0/0


def greedy_match(iou: np.ndarray, threshold: float) -> np.ndarray:
    """pycocotools' matching of score-sorted predictions (rows) to targets: target index or -1 per row."""
    n_pred, n_gt = iou.shape
    gt_of = np.full(n_pred, -1, dtype=np.int64)
    if n_pred == 0 or n_gt == 0:
        return gt_of
    floor = min(threshold, _TIE_FLOOR)
    taken = np.zeros(n_gt, dtype=bool)
    for d in np.flatnonzero(iou.max(axis=1) >= floor):
        row = np.where(taken, -1.0, iou[d])
        best = row.max()
        if best >= floor:
            g = n_gt - 1 - int(np.argmax(row[::-1] == best))  # the last of equal IoUs, as pycocotools
            taken[g] = True
            gt_of[d] = g
    return gt_of


def score_order(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-scores, kind="mergesort")  # descending, ties in input order (pycocotools)


# ----------------------------------------------------------------------------- COCO AP


@dataclass(frozen=True)
class ApTable:
    """Every kept prediction in pycocotools' global order with its match flag per IoU threshold.

    ``frame``: ``(D,)`` frame of each prediction; ``tp``: ``(T, D)`` matched at threshold ``t``;
    ``n_targets``: ``(N,)`` target boxes per frame.
    """

    frame: np.ndarray
    tp: np.ndarray
    n_targets: np.ndarray


def ap_table(predictions: DetectionPredictions, iou_thresholds: Sequence[float]) -> ApTable:
    """pycocotools' evaluateImg for all frames: top-100 by score per frame, greedy match per threshold."""
    max_det = _COCO_MAX_DETECTIONS[-1]
    frames, scores, flags = [], [], []
    for i in range(predictions.n_frames):
        order = score_order(predictions.scores[i])[:max_det]
        iou = box_iou(predictions.boxes[i][order], predictions.target_boxes[i])
        frames.append(np.full(len(order), i, dtype=np.int64))
        scores.append(predictions.scores[i][order])
        matched = [greedy_match(iou, t) >= 0 for t in iou_thresholds]
        flags.append(np.stack(matched).reshape(len(iou_thresholds), -1))
    score = np.concatenate(scores)
    order = score_order(score)  # pycocotools' accumulate: all frames' detections, stable by score
    return ApTable(
        frame=np.concatenate(frames)[order],
        tp=np.concatenate(flags, axis=1)[:, order],
        n_targets=np.asarray([len(b) for b in predictions.target_boxes], dtype=np.int64),
    )


def interpolated_ap(tp: np.ndarray, fp: np.ndarray, n_gt: np.ndarray) -> np.ndarray:
    """COCO 101-point interpolated AP of each row; ``NaN`` where there is no target.

    ``tp``/``fp``: ``(B, K)`` cumulative weights of true and false positives at each true positive
    (pycocotools evaluates every prediction, but its interpolated precision is only ever read at
    true positives: recall rises nowhere else, and a false positive never raises the precision
    envelope above the true positive before it).
    """
    out = np.full(tp.shape[0], np.nan)
    rows = np.flatnonzero(n_gt > 0)
    if rows.size == 0:
        return out
    if tp.shape[1] == 0:
        out[rows] = 0.0
        return out
    recall = tp[rows] / n_gt[rows, None]
    precision = tp[rows] / (fp[rows] + tp[rows] + np.spacing(1))
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    last = tp.shape[1] - 1
    for j, b in enumerate(rows):
        idx = np.searchsorted(recall[j], _COCO_RECALL_THRESHOLDS, side="left")
        out[b] = np.where(idx <= last, envelope[j, np.minimum(idx, last)], 0.0).mean()
    return out


def replicate_ap(table: ApTable, mult: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """AP ``(B, T)`` of each replicate and IoU threshold from unit multiplicities ``mult`` ``(B, P)``.

    ``unit`` ``(N,)`` is each frame's unit. A unit drawn twice brings each of its predictions and
    targets twice: the weighted counts equal pycocotools run on the concatenated replicate (up to
    the order of equal scores from different frames, which pycocotools leaves to frame order).
    Per threshold, the false positives of each unit are counted between consecutive true
    positives once (a sparse ``(K, P)`` table), so a replicate costs a product with its ``(P,)``
    multiplicities, not a pass over every prediction.
    """
    from scipy import sparse

    mult = np.asarray(mult, dtype=np.float64)
    n_rep, n_units = mult.shape
    n_gt = mult @ np.bincount(unit, weights=table.n_targets, minlength=n_units)
    det_unit = unit[table.frame]
    out = np.full((n_rep, table.tp.shape[0]), np.nan)
    for t, is_tp in enumerate(table.tp):
        at = np.flatnonzero(is_tp)
        fp_at = np.flatnonzero(~is_tp)
        rank = np.searchsorted(at, fp_at)  # the first true positive each false positive precedes
        keep = rank < at.size
        counts = sparse.csr_matrix((np.ones(int(keep.sum())), (rank[keep], det_unit[fp_at[keep]])),
                                   shape=(at.size, n_units))
        block = max(1, _AP_BLOCK_CELLS // max(1, at.size))
        for lo in range(0, n_rep, block):
            m = mult[lo : lo + block]
            tp = np.cumsum(m[:, det_unit[at]], axis=1)
            fp = np.cumsum(np.asarray(counts @ m.T).T, axis=1)
            out[lo : lo + block, t] = interpolated_ap(tp, fp, n_gt[lo : lo + block])
    return out


def torchmetrics_ap(predictions: DetectionPredictions) -> tuple[float | None, float | None]:
    """``(map, map_50)`` from ``torchmetrics.detection.MeanAveragePrecision``; ``None`` for its -1."""
    import torch
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(
        box_format="xyxy", iou_type="bbox", iou_thresholds=list(COCO_IOU_THRESHOLDS),
        rec_thresholds=_COCO_RECALL_THRESHOLDS.tolist(), max_detection_thresholds=list(_COCO_MAX_DETECTIONS),
        average="micro", backend="pycocotools",
    )
    preds = [{"boxes": torch.from_numpy(b), "scores": torch.from_numpy(s), "labels": torch.from_numpy(lab)}
             for b, s, lab in zip(predictions.boxes, predictions.scores, predictions.labels, strict=True)]
    targets = [{"boxes": torch.from_numpy(b), "labels": torch.from_numpy(lab)}
               for b, lab in zip(predictions.target_boxes, predictions.target_labels, strict=True)]
    with warnings.catch_warnings():
        # more than 100 detections in a frame: pycocotools keeps the top 100, as documented
        warnings.filterwarnings("ignore", message=".*more than 100 detections.*")
        metric.update(preds, targets)
        result = metric.compute()

    def value(key: str) -> float | None:
        v = float(result[key])
        return None if v < 0 else v

    return value("map"), value("map_50")


