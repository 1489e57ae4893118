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
from medprune.tasks.segmentation import CLASS_COLOURS, overlay

__all__ = ["EVALUATION_PLOTS", "plot_evaluation", "plot_segmentation_overlays", "plot_threshold_curve"]

log = logging.getLogger(__name__)

EVALUATION_PLOTS = Registry("evaluation plot")
"""Task name → ``fn(evaluation, dataset, metrics, out_dir, title, predict_masks) -> list[Path]``."""



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
    handles = [Patch(color=CLASS_COLOURS[(c - 1) % len(CLASS_COLOURS)], label=name)
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


def plot_threshold_curve(calibration: dict[str, Any], path: Path, *, title: str = "") -> Path:
    """The background-threshold sweep: foreground Dice against the threshold, the chosen one marked."""
    from matplotlib.figure import Figure

    from medprune.report.plots import save_figure

    curve = [(t, d) for t, d in calibration["curve"] if d is not None]
    fig = Figure(figsize=(5, 3.4))
    ax = fig.subplots()
    ax.plot([t for t, _ in curve], [d for _, d in curve], "o-", ms=3, color="#4c72b0")
    t0 = calibration["threshold"]
    ax.axvline(t0, color="#dd8452", ls="--", label=f"chosen {t0:.2f} (Dice {calibration['foreground_dice']:.3f})")
    ax.set_xlabel("foreground probability threshold")
    ax.set_ylabel("foreground Dice (validation)")
    ax.set_title(f"Background removal threshold{title}", fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path).path
