"""The figures written beside one evaluation's ``metrics.json``, per task.

Classification draws its confusion matrix and ROC from the class probabilities; segmentation
overlays prediction and ground truth on a few images. Each task's figures are a function
registered here under the task's name — the workflow that evaluates a model calls
:func:`plot_evaluation` and never branches on the task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medprune.registry import Registry

__all__ = ["EVALUATION_PLOTS", "plot_evaluation", "plot_segmentation_overlays", "overlay"]

log = logging.getLogger(__name__)

EVALUATION_PLOTS = Registry("evaluation plot")
"""Task name → ``fn(evaluation, dataset, metrics, out_dir, title, predict_masks) -> list[Path]``."""

#: Colours of mask classes 1, 2, ... in overlays (class 0, the background, is left transparent).
_CLASS_COLOURS = np.array([[0.12, 0.47, 0.71], [1.0, 0.5, 0.05], [0.17, 0.63, 0.17], [0.84, 0.15, 0.16],
                           [0.58, 0.4, 0.74], [0.55, 0.34, 0.29]])


def plot_evaluation(task: str, evaluation: Any, dataset: Any, metrics: dict[str, Any], out_dir: Path, *,
                    title: str = "", predict_masks: Callable[[list[int]], np.ndarray] | None = None) -> list[Path]:
    """Draw the task's evaluation figures into ``out_dir``; returns their paths."""
    return EVALUATION_PLOTS.get(task)(evaluation, dataset, metrics, Path(out_dir), title, predict_masks)


@EVALUATION_PLOTS.register("classification")
def _classification(evaluation: Any, dataset: Any, metrics: dict[str, Any], out_dir: Path, title: str,
                    predict_masks: Any) -> list[Path]:
    from medprune.report.plots import plot_confusion_matrix, plot_roc

    classes = list(metrics["classes"])
    return [plot_confusion_matrix(metrics["confusion_matrix"], classes, out_dir / "confusion_matrix.png",
                                  title=f"Confusion matrix{title}"),
            plot_roc(evaluation.payload["labels"], evaluation.payload["probs"], classes, out_dir / "roc.png",
                     title=f"ROC{title}")]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """An RGB picture of ``image`` (``(H, W)`` or ``(H, W, C)`` in any range) with the non-zero classes
    of ``mask`` tinted in their colours."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3:
        img = img.mean(axis=2) if img.shape[2] != 3 else img
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    rgb = np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img
    out = rgb.copy()
    for c in range(1, int(mask.max(initial=0)) + 1):
        where = mask == c
        out[where] = (1 - alpha) * rgb[where] + alpha * _CLASS_COLOURS[(c - 1) % len(_CLASS_COLOURS)]
    return np.clip(out, 0.0, 1.0)


def plot_segmentation_overlays(images: list[np.ndarray], targets: list[np.ndarray], preds: list[np.ndarray],
                               classes: list[str], path: Path, *, titles: list[str] | None = None,
                               title: str = "") -> Path:
    """One row per image: the image, ground truth over it, prediction over it."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from medprune.report.plots import save_figure

    n = len(images)
    fig = Figure(figsize=(9, 2.6 * n + 0.6))
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        label = (titles or [""] * n)[i]
        for j, (picture, name) in enumerate(((overlay(images[i], np.zeros_like(targets[i])), "image"),
                                             (overlay(images[i], targets[i]), "ground truth"),
                                             (overlay(images[i], preds[i]), "prediction"))):
            axes[i, j].imshow(picture, interpolation="nearest")
            axes[i, j].set_title(f"{name}{' — ' + label if label and j == 0 else ''}", fontsize=8)
            axes[i, j].axis("off")
    handles = [Patch(color=_CLASS_COLOURS[(c - 1) % len(_CLASS_COLOURS)], label=name)
               for c, name in enumerate(classes) if c > 0]
    fig.legend(handles=handles, loc="lower center", ncol=max(1, len(handles)), fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    return save_figure(fig, path).path


@EVALUATION_PLOTS.register("segmentation")
def _segmentation(evaluation: Any, dataset: Any, metrics: dict[str, Any], out_dir: Path, title: str,
                  predict_masks: Callable[[list[int]], np.ndarray] | None) -> list[Path]:
    if predict_masks is None or len(dataset) == 0:
        return []
    # The images worth looking at: the worst and the best by mean foreground Dice, and one without lesion.
    scores = evaluation.payload
    fg = np.nanmean(scores.dice[:, 1:], axis=1) if scores.dice.shape[1] > 1 else scores.dice[:, 0]
    order = [int(i) for i in np.argsort(np.where(np.isnan(fg), np.inf, fg)) if not np.isnan(fg[i])]
    empty = [int(i) for i in np.flatnonzero(np.isnan(fg))]
    chosen = list(dict.fromkeys(order[:2] + order[-2:] + empty[:1]))[:5]
    indices = [int(evaluation.indices[i]) for i in chosen]
    preds = predict_masks(indices)
    images, targets = [], []
    for i in indices:
        image, target = dataset.load(i)
        images.append(image)
        targets.append(target)
    labels = [f"{Path(str(dataset.paths[i])).name}, Dice {fg[c]:.2f}" if not np.isnan(fg[c]) else
              f"{Path(str(dataset.paths[i])).name}, no lesion" for i, c in zip(indices, chosen)]
    return [plot_segmentation_overlays(images, targets, list(preds), list(metrics["classes"]),
                                       out_dir / "overlays.png", titles=labels, title=f"Segmentation{title}")]
