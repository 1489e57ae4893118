"""Semantic segmentation: a class per pixel; per-class Dice and HD95 with patient-level intervals.

- **Samples**: manifest rows with a ``mask`` column (PNG/NPY/DICOM label maps; raw values mapped
  to ``data.classes`` by ``data.mask_values``) and a frame-level ``label`` from
  ``data.label_classes`` (e.g. ``normal``/``plaque``), which class-balanced sampling and pruning
  calibration balance over — frames with and without the lesion.
- **Loss**: MONAI's ``DiceCELoss`` (soft Dice + cross-entropy on one-hot targets); with
  ``optim.class_balance: weighted_loss`` the cross-entropy is weighted by median-frequency class
  weights of the training masks' pixels.
- **Metrics**: :func:`~medprune.metrics.segmentation_metrics` — MONAI ``DiceMetric`` and
  ``HausdorffDistanceMetric`` (95th percentile) per image and class, pooled pixel sensitivity and
  PPV, patient-level bootstrap intervals (``metrics.json``: ``per_class``, ``mean_dice``,
  ``worst_class_dice``, ``ci``, ``patient``); the per-image scores go to ``predictions.csv``.
- **Safety gate / early stopping**: validation worst-class Dice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medprune.tasks.base import TASKS, Evaluation, Evaluator, MetricSpec, Task
from medprune.tasks.classification import first_output

__all__ = ["SegmentationTask", "median_frequency_weights", "overlay", "write_png", "CLASS_COLOURS"]


def median_frequency_weights(pixel_counts: Sequence[int] | np.ndarray) -> torch.Tensor:
    """Per-class weights ``median(f) / f_c`` over the classes present (absent classes weigh 0).

    Median-frequency balancing (Eigen & Fergus 2015): a class with the median pixel share weighs 1,
    a class a hundred times rarer weighs a hundred.
    """
    counts = np.asarray(pixel_counts, dtype=np.float64)
    freq = counts / max(counts.sum(), 1.0)
    present = freq > 0
    out = np.zeros_like(freq)
    if present.any():
        out[present] = np.median(freq[present]) / freq[present]
    return torch.as_tensor(out, dtype=torch.float32)


#: Colours of mask classes 1, 2, ... in overlays (class 0, the background, is left untinted).
CLASS_COLOURS = np.array([[0.12, 0.47, 0.71], [1.0, 0.5, 0.05], [0.17, 0.63, 0.17], [0.84, 0.15, 0.16],
                          [0.58, 0.4, 0.74], [0.55, 0.34, 0.29]])


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """An RGB picture in [0, 1] of ``image`` (``(H, W)`` or ``(H, W, C)``, any range) with the non-zero
    classes of ``mask`` tinted in :data:`CLASS_COLOURS`."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3 and img.shape[2] != 3:
        img = img.mean(axis=2)
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    rgb = np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img
    out = rgb.copy()
    for c in range(1, int(np.max(mask, initial=0)) + 1):
        where = mask == c
        out[where] = (1 - alpha) * rgb[where] + alpha * CLASS_COLOURS[(c - 1) % len(CLASS_COLOURS)]
    return np.clip(out, 0.0, 1.0)


def write_png(path: Path, array: np.ndarray, atomic_write: Any) -> Path:
    """Write ``array`` (8-bit grey or RGB) as a PNG at ``path`` through ``atomic_write``; its folder is made."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def _take(scores: Any, order: np.ndarray) -> Any:
    """``scores`` (a SegmentationScores) with its images in ``order``."""
    from dataclasses import replace

    per_image = ("sample_ids", "patient_ids", "dice", "hd", "tp", "fp", "fn", "spacing", "paths")
    return replace(scores, **{name: None if getattr(scores, name) is None else getattr(scores, name)[order]
                              for name in per_image})


class _SegmentationEvaluator(Evaluator):
    def __init__(self, task: SegmentationTask, full: bool) -> None:
        from medprune.metrics import SegmentationMetrics

        self.task = task
        self.scores = SegmentationMetrics(task.classes, n_bootstrap=0, hd_percentile=task.hd_percentile, with_hd=full)
        self.loss_sum = 0.0
        self.n = 0

    def update(self, output: torch.Tensor, target: torch.Tensor, indices: torch.Tensor) -> None:
        logits = first_output(output).float()
        self.loss_sum += float(self.task.loss(logits, target)) * len(target)
        self.n += len(target)
        self.scores.update(logits.argmax(dim=1).cpu(), target.cpu(), sample_ids=indices.cpu().numpy())

    def state(self) -> tuple[Any, float]:
        return (self.scores.predictions() if self.n else None), self.loss_sum

    def merge(self, states: Sequence[Any]) -> Evaluation:
        from medprune.metrics import SegmentationScores

        parts = [s[0] for s in states if s[0] is not None]
        scores = SegmentationScores.concat(parts)
        order = np.argsort(scores.sample_ids.astype(np.int64), kind="stable")
        scores = _take(scores, order)
        loss = sum(s[1] for s in states) / max(1, scores.n_samples)
        return Evaluation(indices=scores.sample_ids.astype(np.int64), loss=loss, payload=scores)


@TASKS.register
class SegmentationTask(Task):
    """A class per pixel from ``classes`` (label 0 the background); the model outputs ``(N, K, H, W)``.

    Args:
        classes: the mask class names (``data.classes``), background first.
        include_background: report (and average) the background class's Dice too.
        hd_percentile: the Hausdorff percentile (95 → HD95).
        lambda_dice, lambda_ce: weights of the Dice and cross-entropy terms of the loss.
        label_smoothing: cross-entropy label smoothing (``optim.label_smoothing``).
        aux_weight: accepted for symmetry with classification; segmentation models have no
            auxiliary head.
    """

    name = "segmentation"
    gate_metric = "worst_class_dice"
    selection_metrics = ("mean_dice", "worst_class_dice", "loss")
    default_selection = "mean_dice"
    per_class_metrics = (MetricSpec("dice", "Dice"), MetricSpec("hd95", "HD95 (px)", higher_is_better=False),
                         MetricSpec("sensitivity", "Sensitivity (pixels)"), MetricSpec("ppv", "PPV (pixels)"))
    summary_metrics = (MetricSpec("mean_dice", "Mean Dice"), MetricSpec("worst_class_dice", "Worst-class Dice"))

    def __init__(self, classes: Sequence[str], *, include_background: bool = False, hd_percentile: float = 95.0,
                 lambda_dice: float = 1.0, lambda_ce: float = 1.0, label_smoothing: float = 0.0,
                 aux_weight: float = 0.4) -> None:
        super().__init__(classes)
        self.include_background = bool(include_background)
        self.hd_percentile = float(hd_percentile)
        self.lambda_dice = float(lambda_dice)
        self.lambda_ce = float(lambda_ce)
        self.label_smoothing = float(label_smoothing)
        self._losses: dict[Any, Any] = {}

    # ------------------------------------------------------------------ data
    @classmethod
    def check_data(cls, data: Any) -> None:
        from medprune.data import MaskValues, validate_augmentation
        from medprune.errors import MedpruneError
        from medprune.schema import FieldError

        if not data.label_classes:
            raise FieldError("data.label_classes", "is required for segmentation: the frame-level labels of the "
                             "manifest's label column, e.g. [normal, plaque]")
        try:
            MaskValues.build(data.classes, data.mask_values)
        except MedpruneError as exc:
            raise FieldError("", str(exc)) from None  # the message names data.mask_values itself
        try:
            validate_augmentation(data.augmentation, masks=True)
        except MedpruneError as exc:
            raise FieldError("data.augmentation", str(exc)) from None

    def check_samples(self, samples: Any, data: Any, options: Any, progress: bool) -> list[Any]:
        from medprune.data import check_samples

        return check_samples(samples, self.label_classes(data), options, progress=progress,
                             masks=self.mask_values(data))

    def label_classes(self, data: Any) -> list[str]:
        """The frame-level label classes (``data.label_classes``)."""
        return list(data.label_classes)

    def mask_values(self, data: Any) -> Any:
        from medprune.data import MaskValues

        return MaskValues.build(self.classes, data.mask_values)

    def dataset(self, samples: Any, data: Any, options: Any, *, train: bool, seed: int) -> Any:
        from medprune.data import SegmentationDataset, build_augmentation, build_degrader

        return SegmentationDataset(samples, self.classes, tuple(data.image_size), data.channels, options,
                                   augmentation=build_augmentation(data.augmentation, masks=True) if train else None,
                                   colormap=data.colormap, mean=data.mean, std=data.std, seed=seed,
                                   label_classes=self.label_classes(data), values=self.mask_values(data),
                                   degradation=build_degrader(data.degradation, train=train))

    def balance_classes(self, dataset: Any) -> int:
        return len(dataset.label_classes)

    # ------------------------------------------------------------------ training
    def class_weights(self, dataset: Any) -> torch.Tensor:
        counts = np.zeros(len(self.classes), dtype=np.int64)
        for i in range(len(dataset)):
            _, mask = dataset.load(i)
            counts += np.bincount(mask.ravel(), minlength=len(self.classes))[: len(self.classes)]
        return median_frequency_weights(counts)

    def loss(self, output: Any, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        from monai.losses import DiceCELoss

        logits = first_output(output)
        key = (None if weights is None else tuple(float(w) for w in weights), logits.device)
        if key not in self._losses:
            self._losses[key] = DiceCELoss(to_onehot_y=True, softmax=True, include_background=True,
                                           weight=None if weights is None else weights.to(logits.device),
                                           lambda_dice=self.lambda_dice, lambda_ce=self.lambda_ce,
                                           label_smoothing=self.label_smoothing)
        return self._losses[key](logits, target.unsqueeze(1))

    # ------------------------------------------------------------------ evaluation
    def evaluator(self, full: bool = True) -> Evaluator:
        return _SegmentationEvaluator(self, full)

    def metrics(self, evaluation: Evaluation, patient_ids: Sequence[str] | None, settings: Any) -> dict[str, Any]:
        from dataclasses import replace

        from medprune.metrics import segmentation_metrics_from_scores

        scores = evaluation.payload
        if patient_ids is not None:
            scores = replace(scores, patient_ids=np.asarray(list(patient_ids), dtype=object))
        options: dict[str, Any] = {"n_bootstrap": 0}
        if settings is not None:
            options = {k: v for k, v in settings.metric_options().items() if k != "patient_aggregation"}
        return segmentation_metrics_from_scores(scores, include_background=self.include_background, **options)

    def epoch_record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        record = {f"val_{k}": metrics.get(k) for k in ("mean_dice", "worst_class_dice")}
        record.update({f"val_dice_{c}": (row or {}).get("dice") for c, row in metrics["per_class"].items()})
        return record

    def write_predictions(self, evaluation: Evaluation, dataset: Any, out_dir: Path) -> Path:
        from dataclasses import replace

        from medprune.metrics import write_segmentation_predictions_csv

        idx = evaluation.indices
        scores = replace(evaluation.payload, patient_ids=np.asarray([dataset.patient_ids[i] for i in idx],
                                                                     dtype=object))
        return write_segmentation_predictions_csv(Path(out_dir) / "predictions.csv", scores,
                                                  paths=[str(dataset.paths[i]) for i in idx])

    # ------------------------------------------------------------------ deployment
    calibrates = True

    @torch.no_grad()
    def calibrate(self, model: Any, dataset: Any, device: Any, batch_size: int) -> dict[str, Any] | None:
        """Sweep the background-removal threshold on validation.

        The foreground probability of a pixel is ``1 - P(background)``; at threshold ``t`` the
        foreground mask is ``P_fg >= t``. For ``t`` from 0.05 to 0.95 the foreground Dice against the
        ground truth (every non-background class) is pooled over the split; the best ``t`` is the
        one a deployment uses to remove the background (stage 1 of the IVOCT pipeline hands the
        frame with the background removed at ``t`` to the detector). Returns
        ``{"kind": "background_threshold", "threshold", "foreground_dice", "curve": [[t, dice], ...]}``.
        """
        from torch.utils.data import DataLoader

        thresholds = np.round(np.arange(0.05, 0.951, 0.05), 2)
        tp = np.zeros(len(thresholds))
        fp = np.zeros(len(thresholds))
        fn = np.zeros(len(thresholds))
        model = model.to(device).eval()
        for x, y, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            p_fg = 1.0 - torch.softmax(first_output(model(x.to(device))).float(), dim=1)[:, 0].cpu().numpy()
            truth = y.numpy() > 0
            for i, t in enumerate(thresholds):
                pred = p_fg >= t
                tp[i] += np.sum(pred & truth)
                fp[i] += np.sum(pred & ~truth)
                fn[i] += np.sum(~pred & truth)
        dice = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), np.nan)
        best = int(np.nanargmax(dice)) if np.isfinite(dice).any() else len(thresholds) // 2
        return {"kind": "background_threshold", "threshold": float(thresholds[best]),
                "foreground_dice": None if np.isnan(dice[best]) else float(dice[best]),
                "curve": [[float(t), None if np.isnan(d) else float(d)] for t, d in zip(thresholds, dice)],
                "split": "val", "images": len(dataset)}

    def describe_prediction(self, logits: torch.Tensor, *, image_size: tuple[int, int] | None = None,
                            calibration: dict[str, Any] | None = None) -> dict[str, Any]:
        labels = first_output(logits).float().argmax(dim=0).cpu().numpy()
        counts = np.bincount(labels.ravel(), minlength=len(self.classes))
        return {"pixels": {c: int(n) for c, n in zip(self.classes, counts)},
                "fraction": {c: float(n) / labels.size for c, n in zip(self.classes, counts)},
                "present": [c for c, n in zip(self.classes, counts) if n > 0 and c != self.classes[0]]}

    def summarize_prediction(self, record: dict[str, Any]) -> str:
        return ", ".join(f"{c} {f:.1%}" for c, f in record["fraction"].items())

    def write_prediction_files(self, logits: torch.Tensor, image: np.ndarray, name: str, out_dir: Path,
                               calibration: dict[str, Any] | None = None) -> list[Path]:
        """The mask (class indices as an 8-bit PNG), an overlay of it on the image, and — with a
        background threshold from calibration — the frame with the background removed."""
        from medprune._io import atomic_write

        probs = torch.softmax(first_output(logits).float(), dim=0).cpu().numpy()
        labels = probs.argmax(axis=0).astype(np.uint8)
        written = [write_png(out_dir / f"{name}_mask.png", labels, atomic_write),
                   write_png(out_dir / f"{name}_overlay.png", (overlay(image, labels) * 255).round().astype(np.uint8),
                              atomic_write)]
        if calibration and calibration.get("kind") == "background_threshold":
            keep = (1.0 - probs[0]) >= float(calibration["threshold"])
            gray = image.mean(axis=2) if image.ndim == 3 else image
            written.append(write_png(out_dir / f"{name}_background_removed.png",
                                      (np.clip(gray, 0, 1) * keep * 255).round().astype(np.uint8), atomic_write))
        return written

    def unseen_class(self, name: str) -> str:
        return f"validation has no image with '{name}': the gate cannot see that class at all"

    def coarse_class(self, name: str, support: int, limit: float) -> str:
        return (f"validation has only {support} image{'s' if support != 1 else ''} with '{name}': one "
                f"image moves its mean Dice by up to {1.0 / support:.2f}, more than the {limit:g} limit "
                "(use a larger validation split)")
