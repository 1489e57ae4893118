"""Object detection: plaque boxes per frame; AP, per-frame recall/precision/IoU/total with pullback intervals.

- **Samples**: manifest rows plus a boxes file (``data.boxes``, default ``boxes.json`` beside the
  manifest: :mod:`medprune.data.detection`); frames without plaque have empty targets. The
  frame-level ``label`` (``data.label_classes``, e.g. ``normal``/``plaque``) is what class-balanced
  sampling and pruning calibration balance over — frames with and without plaque.
- **Model**: a detector returning torchvision's loss dictionary in train mode and a padded
  ``(N, K, 6)`` detection tensor in eval mode (:class:`medprune.models.detection.PlaqueDetector`);
  the task hands the targets to the model's forward (:meth:`DetectionTask.forward`).
- **Loss**: the sum of torchvision's four Faster R-CNN losses (RPN objectness and box regression,
  RoI classification and box regression). ``optim.class_balance: weighted_loss`` does not apply
  (torchvision's losses take no class weights; its samplers already balance positives and
  negatives); use ``balanced_sampler``.
- **Metrics**: :mod:`medprune.metrics.detection` — AP@0.5 and COCO mAP (torchmetrics), per-frame
  recall, precision, IoU and total on boxes and on angular intervals, recall per plaque size, with
  pullback-level bootstrap intervals; the per-frame detections go to ``predictions.json``.
- **Safety gate / early stopping**: validation recall at the score threshold (a compressed
  detector that misses plaques fails; one that adds false positives shows in precision).
- **Calibration**: the score threshold is swept on validation after training; the one with the best
  total score is what ``medprune predict`` applies (``calibration.json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medprune.tasks.base import TASKS, Evaluation, Evaluator, MetricSpec, Task
from medprune.tasks.classification import first_output

__all__ = ["DetectionTask", "DetectionFrames", "draw_boxes"]

#: Box colours in overlays: ground truth, detections.
_TRUTH, _DETECTED = np.array([0.17, 0.63, 0.17]), np.array([1.0, 0.5, 0.05])


class DetectionFrames:
    """Per-frame detections and targets of an evaluation, in item order.

    ``detections[i]``: ``(k, 6)`` rows ``[x0, y0, x1, y1, score, label]`` (score > 0);
    ``targets[i]``: ``(m, 5)`` rows ``[label, x0, y0, x1, y1]``.
    """

    def __init__(self, indices: np.ndarray, detections: list[np.ndarray], targets: list[np.ndarray]) -> None:
        self.indices = indices
        self.detections = detections
        self.targets = targets


def _dicts(frames: DetectionFrames) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """The frames as the per-frame prediction and target dicts :mod:`medprune.metrics.detection` takes."""
    preds = [{"boxes": d[:, :4], "scores": d[:, 4], "labels": d[:, 5].astype(np.int64)} for d in frames.detections]
    targets = [{"boxes": t[:, 1:5], "labels": t[:, 0].astype(np.int64)} for t in frames.targets]
    return preds, targets


def _detections(output: torch.Tensor) -> list[np.ndarray]:
    out = first_output(output).detach().float().cpu().numpy()
    return [rows[rows[:, 4] > 0] for rows in out]


class _DetectionEvaluator(Evaluator):
    def __init__(self) -> None:
        self.items: list[tuple[int, np.ndarray, np.ndarray]] = []

    def update(self, output: torch.Tensor, target: torch.Tensor, indices: torch.Tensor) -> None:
        truth = target.detach().float().cpu().numpy()
        for i, dets, t in zip(indices.cpu().numpy(), _detections(output), truth):
            self.items.append((int(i), dets, t[t[:, 0] >= 0]))

    def state(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        return self.items

    def merge(self, states: Sequence[Any]) -> Evaluation:
        items = sorted((item for s in states for item in s), key=lambda item: item[0])
        frames = DetectionFrames(np.array([i for i, _, _ in items], dtype=np.int64),
                                 [d for _, d, _ in items], [t for _, _, t in items])
        # torchvision's detectors compute no loss in eval mode: validation is judged by its metrics
        return Evaluation(indices=frames.indices, loss=float("nan"), payload=frames)


def draw_boxes(rgb: np.ndarray, boxes: np.ndarray, colour: np.ndarray, thickness: int = 1) -> np.ndarray:
    """``rgb`` (H, W, 3 in [0, 1]) with the outlines of ``boxes`` (``x0, y0, x1, y1`` pixels) drawn in ``colour``."""
    out = rgb.copy()
    h, w = out.shape[:2]
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        c0, c1 = int(np.clip(np.floor(x0), 0, w - 1)), int(np.clip(np.ceil(x1) - 1, 0, w - 1))
        r0, r1 = int(np.clip(np.floor(y0), 0, h - 1)), int(np.clip(np.ceil(y1) - 1, 0, h - 1))
        for t in range(thickness):
            out[min(r0 + t, h - 1), c0:c1 + 1] = colour
            out[max(r1 - t, 0), c0:c1 + 1] = colour
            out[r0:r1 + 1, min(c0 + t, w - 1)] = colour
            out[r0:r1 + 1, max(c1 - t, 0)] = colour
    return out


@TASKS.register
class DetectionTask(Task):
    """Plaque boxes per frame (``data.classes: [background, plaque]``); the model is a detector.

    Args:
        classes: ``data.classes``: the background and the object class.
        score_threshold: detections below it do not count for recall/precision/IoU/total (AP uses
            every score); calibration replaces it on validation by the best-total threshold.
        iou_threshold: box IoU for a detection to match a plaque (0.5, as AP@0.5).
        max_boxes: boxes a frame may hold (the padded target's length).
        size_buckets: upper arc widths in degrees of the plaque-size buckets of ``per_size`` recall.
        aux_weight, label_smoothing, lambda_dice, lambda_ce: accepted for symmetry; unused.
    """

    name = "detection"
    gate_metric = "recall"
    selection_metrics = ("ap50", "map", "recall", "total")
    default_selection = "ap50"
    validation_loss = False  # torchvision's detectors compute their losses in train mode only
    per_class_metrics = (MetricSpec("recall", "Recall"), MetricSpec("precision", "Precision"),
                         MetricSpec("ap50", "AP@0.5"), MetricSpec("total", "Total (R+P+IoU)/3"))
    summary_metrics = (MetricSpec("ap50", "AP@0.5"), MetricSpec("map", "mAP@[.5:.95]"),
                       MetricSpec("recall", "Recall"), MetricSpec("precision", "Precision"),
                       MetricSpec("iou", "IoU"), MetricSpec("total", "Total (R+P+IoU)/3"),
                       MetricSpec("interval_total", "Total on angular intervals"))
    calibrates = True
    predictions_file = "predictions.json"

    def __init__(self, classes: Sequence[str], *, score_threshold: float = 0.5, iou_threshold: float = 0.5,
                 max_boxes: int = 16, size_buckets: Sequence[float] = (30.0, 90.0), aux_weight: float = 0.4,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(classes)
        from medprune.errors import ConfigError

        if not 0.0 <= score_threshold < 1.0:
            raise ConfigError(f"task_options.score_threshold: must be in [0, 1), got {score_threshold}")
        if not 0.0 < iou_threshold < 1.0:
            raise ConfigError(f"task_options.iou_threshold: must be in (0, 1), got {iou_threshold}")
        if max_boxes < 1:
            raise ConfigError(f"task_options.max_boxes: must be >= 1, got {max_boxes}")
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_boxes = int(max_boxes)
        self.size_buckets = tuple(float(b) for b in size_buckets)
        self.frame_width: int | None = None  # set by dataset(): the columns spanning 360°
        self._cache: tuple[str, Any] | None = None  # (boxes file, its records): read once per file

    # ------------------------------------------------------------------ data
    @classmethod
    def check_data(cls, data: Any) -> None:
        from medprune.data import validate_augmentation
        from medprune.errors import MedpruneError
        from medprune.schema import FieldError

        if not data.label_classes:
            raise FieldError("data.label_classes", "is required for detection: the frame-level labels of the "
                             "manifest's label column, e.g. [normal, plaque]")
        if len(data.classes) != 2:
            raise FieldError("data.classes", f"detection takes the background and one object class, e.g. "
                             f"[background, plaque]; got {list(data.classes)}")
        try:
            validate_augmentation(data.augmentation, boxes=True)
        except MedpruneError as exc:
            raise FieldError("data.augmentation", str(exc)) from None

    def resolve_data(self, data: Any, manifest: Path) -> Any:
        """``data`` with ``boxes`` resolved: given, or ``boxes.json`` beside the manifest."""
        from dataclasses import replace

        from medprune.errors import DataError

        boxes = Path(data.boxes) if data.boxes else Path(manifest).parent / "boxes.json"
        if not boxes.is_file():
            raise DataError(f"{boxes}: boxes file not found (data.boxes; default: boxes.json beside {manifest})")
        return replace(data, boxes=str(boxes))

    def _records(self, data: Any) -> Any:
        from medprune.data import load_box_records

        key = str(Path(data.boxes).resolve())
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, load_box_records(data.boxes))
        return self._cache[1]

    def check_samples(self, samples: Any, data: Any, options: Any, progress: bool) -> list[Any]:
        from medprune.data import check_samples
        from medprune.data.detection import frame_boxes_error
        from medprune.data.manifest import BadSample

        bad = check_samples(samples, list(data.label_classes), options, progress=progress)
        seen = {(b.path, b.row) for b in bad}
        records = self._records(data)
        for sample in samples:
            error = frame_boxes_error(sample, records, self.max_boxes)
            if error and (sample.path, sample.row) not in seen:
                bad.append(BadSample(path=sample.path, row=sample.row, reason=error))
        return bad

    def dataset(self, samples: Any, data: Any, options: Any, *, train: bool, seed: int) -> Any:
        from medprune.data import DetectionDataset, build_augmentation, build_degrader

        self.frame_width = int(data.image_size[1])
        return DetectionDataset(samples, self.classes, tuple(data.image_size), data.channels, options,
                                augmentation=build_augmentation(data.augmentation, boxes=True) if train else None,
                                colormap=data.colormap, mean=data.mean, std=data.std, seed=seed,
                                boxes=self._records(data), label_classes=list(data.label_classes),
                                max_boxes=self.max_boxes, degradation=build_degrader(data.degradation, train=train))

    def balance_classes(self, dataset: Any) -> int:
        return len(dataset.label_classes)

    # ------------------------------------------------------------------ training
    def forward(self, model: Any, x: torch.Tensor, target: torch.Tensor) -> Any:
        """Training forward: the detector computes its losses from the targets."""
        return model(x, target)

    def class_weights(self, dataset: Any) -> torch.Tensor:
        from medprune.errors import ConfigError

        raise ConfigError("optim.class_balance: weighted_loss does not apply to detection (torchvision's losses "
                          "take no class weights); use balanced_sampler or none")

    def loss(self, output: Any, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(output, dict):
            raise TypeError("a detection model returns its loss dictionary in train mode; got "
                            f"{type(output).__name__} (was the model called without targets?)")
        return sum(output.values())

    # ------------------------------------------------------------------ evaluation
    def evaluator(self, full: bool = True) -> Evaluator:
        return _DetectionEvaluator()

    def metrics(self, evaluation: Evaluation, patient_ids: Sequence[str] | None, settings: Any) -> dict[str, Any]:
        from medprune.metrics.detection import detection_metrics

        frames: DetectionFrames = evaluation.payload
        options: dict[str, Any] = {"quick": True, "n_bootstrap": 0}
        if settings is not None:
            opts = settings.metric_options()
            options = {k: opts[k] for k in ("n_bootstrap", "ci", "seed", "min_class_support", "min_patients")}
        preds, targets = _dicts(frames)
        result = detection_metrics(preds, targets, self.frame_width or 360,
                                   patient_ids=None if patient_ids is None else list(patient_ids),
                                   sample_ids=[int(i) for i in frames.indices], score_threshold=self.score_threshold,
                                   match_iou=self.iou_threshold, size_edges=self.size_buckets, **options)
        # The object class as a per-class row, so the report's per-class tables, comparison plots and the
        # gate's resolution check read detection like the other tasks. Its support is the frames with
        # plaque: per-frame recall averages over them, so one frame moves it by up to 1/support.
        name = self.classes[1]
        result["classes"] = [name]
        result["per_class"] = {name: {**{m.key: result.get(m.key) for m in self.per_class_metrics},
                                      "support": result["counts"]["n_frames_with_plaque"]}}
        for m in self.per_class_metrics:
            if m.key in result.get("ci", {}):
                result["ci"][f"per_class.{name}.{m.key}"] = result["ci"][m.key]
        return result

    def epoch_record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {f"val_{k}": metrics.get(k) for k in ("ap50", "map", "recall", "precision", "total")}

    def write_predictions(self, evaluation: Evaluation, dataset: Any, out_dir: Path) -> Path:
        from medprune.metrics.detection import detection_predictions, write_detection_predictions

        frames: DetectionFrames = evaluation.payload
        idx = evaluation.indices
        preds, targets = _dicts(frames)
        paths = [str(dataset.paths[i]) for i in idx]
        predictions = detection_predictions(preds, targets, self.frame_width or 360, sample_ids=[int(i) for i in idx],
                                            patient_ids=[dataset.patient_ids[i] for i in idx], paths=paths)
        return write_detection_predictions(Path(out_dir) / "predictions.json", predictions, paths=paths)

    # ------------------------------------------------------------------ deployment
    @torch.no_grad()
    def calibrate(self, model: Any, dataset: Any, device: Any, batch_size: int) -> dict[str, Any] | None:
        """Sweep the score threshold on validation; keep the one with the best total score.

        Returns ``{"kind": "score_threshold", "threshold", "total", "curve": [[t, total], ...]}``;
        ``medprune predict`` keeps detections scoring at least ``threshold``.
        """
        from torch.utils.data import DataLoader

        evaluator = self.evaluator(full=False)
        model = model.to(device).eval()
        for x, y, idx in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            evaluator.update(model(x.to(device)), y, idx)
        evaluation = evaluator.merge([evaluator.state()])
        thresholds = np.round(np.arange(0.05, 0.951, 0.05), 2)
        saved = self.score_threshold
        curve = []
        try:
            for t in thresholds:
                self.score_threshold = float(t)
                curve.append(self.metrics(evaluation, None, None).get("total"))
        finally:
            self.score_threshold = saved
        values = np.array([np.nan if v is None else v for v in curve], dtype=np.float64)
        best = int(np.nanargmax(values)) if np.isfinite(values).any() else int(np.argmin(np.abs(thresholds - saved)))
        return {"kind": "score_threshold", "threshold": float(thresholds[best]),
                "total": None if np.isnan(values[best]) else float(values[best]),
                "curve": [[float(t), None if np.isnan(v) else float(v)] for t, v in zip(thresholds, values)],
                "split": "val", "images": len(dataset)}

    def unseen_class(self, name: str) -> str:
        return f"validation has no frame with '{name}': the gate cannot see its recall at all"

    def coarse_class(self, name: str, support: int, limit: float) -> str:
        return (f"validation has only {support} frame{'s' if support != 1 else ''} with '{name}': one frame moves "
                f"the mean recall by up to {1.0 / support:.2f}, more than the {limit:g} limit (use a larger "
                "validation split)")

    def _kept(self, logits: torch.Tensor, calibration: dict[str, Any] | None) -> np.ndarray:
        threshold = self.score_threshold
        if calibration and calibration.get("kind") == "score_threshold":
            threshold = float(calibration["threshold"])
        rows = first_output(logits).float().cpu().numpy().reshape(-1, 6)
        return rows[rows[:, 4] >= max(threshold, 1e-12)]

    def describe_prediction(self, logits: torch.Tensor, *, image_size: tuple[int, int] | None = None,
                            calibration: dict[str, Any] | None = None) -> dict[str, Any]:
        """Boxes (pixels of the model input), scores, and the angular intervals they cover (wrap-aware)."""
        from medprune.data.polar import box_to_interval, merge_intervals

        rows = self._kept(logits, calibration)
        width = (image_size or (0, self.frame_width or 360))[1]
        intervals = merge_intervals([box_to_interval(r[:4], width) for r in rows]) if len(rows) else []
        return {"boxes": [[round(float(v), 2) for v in r[:4]] for r in rows],
                "scores": [round(float(r[4]), 4) for r in rows],
                "labels": [self.classes[int(r[5])] if 0 <= int(r[5]) < len(self.classes) else str(int(r[5]))
                           for r in rows],
                "intervals_deg": [[round(float(a), 2), round(float(b), 2)] for a, b in intervals],
                "present": bool(len(rows))}

    def summarize_prediction(self, record: dict[str, Any]) -> str:
        if not record["boxes"]:
            return f"no {self.classes[1]}"
        arcs = ", ".join(f"{a:g}-{b:g} deg" for a, b in record["intervals_deg"])
        return f"{len(record['boxes'])} {self.classes[1]} box(es), best score {max(record['scores']):.2f}; arcs {arcs}"

    def write_prediction_files(self, logits: torch.Tensor, image: np.ndarray, name: str, out_dir: Path,
                               calibration: dict[str, Any] | None = None) -> list[Path]:
        """Overlay PNGs of the detections: on the polar frame, and on its Cartesian (x, y) scan conversion."""
        from medprune._io import atomic_write
        from medprune.data.polar import polar_to_cartesian
        from medprune.tasks.segmentation import write_png

        rows = self._kept(logits, calibration)
        gray = image.mean(axis=2) if image.ndim == 3 else image
        lo, hi = float(gray.min()), float(gray.max())
        gray = (gray - lo) / (hi - lo) if hi > lo else np.zeros_like(gray)
        polar = draw_boxes(np.repeat(gray[:, :, None], 3, axis=2), rows[:, :4], _DETECTED)
        written = [write_png(out_dir / f"{name}_polar.png", (polar * 255).round().astype(np.uint8), atomic_write)]
        cart = polar_to_cartesian(polar)
        written.append(write_png(out_dir / f"{name}_cartesian.png", (np.clip(cart, 0, 1) * 255).round()
                                  .astype(np.uint8), atomic_write))
        return written
