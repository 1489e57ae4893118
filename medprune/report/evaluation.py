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


@EVALUATION_PLOTS.register("detection")
def _detection(evaluation: Any, dataset: Any, metrics: dict[str, Any], out_dir: Path, title: str,
               predict_masks: Any) -> list[Path]:
    """Ground-truth (green) and detected (orange, at the score threshold) boxes on a few polar frames:
    the two with the most plaque missed, the two best found, and one without plaque."""
    from matplotlib.figure import Figure

    from medprune.report.plots import save_figure
    from medprune.tasks.detection import draw_boxes

    frames = evaluation.payload
    if len(frames.indices) == 0:
        return []
    threshold = float(metrics.get("score_threshold", 0.5))
    kept = [d[d[:, 4] >= threshold] for d in frames.detections]
    with_plaque = [i for i, t in enumerate(frames.targets) if len(t)]
    # frames ranked by how many of their plaques no kept detection overlaps
    def missed(i: int) -> int:
        from medprune.metrics.detection import match_detections

        matched, _ = match_detections(kept[i][:, :4], kept[i][:, 4], frames.targets[i][:, 1:5])
        return len(frames.targets[i]) - int(np.sum(matched >= 0))

    ranked = sorted(with_plaque, key=lambda i: (-missed(i), i))
    empty = [i for i, t in enumerate(frames.targets) if not len(t)]
    chosen = list(dict.fromkeys(ranked[:2] + ranked[-2:] + empty[:1]))[:5]
    fig = Figure(figsize=(7, 1.9 * len(chosen) + 0.6))
    axes = fig.subplots(len(chosen), 1, squeeze=False)
    for ax, i in zip(axes[:, 0], chosen):
        index = int(frames.indices[i])
        image, _ = dataset.load(index)
        grey = image.mean(axis=2)
        rgb = np.repeat(((grey - grey.min()) / max(float(np.ptp(grey)), 1e-9))[:, :, None], 3, axis=2)
        rgb = draw_boxes(rgb, frames.targets[i][:, 1:5], np.array([0.17, 0.63, 0.17]))
        rgb = draw_boxes(rgb, kept[i][:, :4], np.array([1.0, 0.5, 0.05]))
        ax.imshow(rgb, interpolation="nearest", aspect="auto")
        ax.set_title(f"{Path(str(dataset.paths[index])).name}: {len(frames.targets[i])} plaque box(es), "
                     f"{len(kept[i])} detection(s) >= {threshold:.2f}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"Detections (orange) and ground truth (green), polar frames{title}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return [save_figure(fig, out_dir / "overlays.png").path]


def plot_threshold_curve(calibration: dict[str, Any], path: Path, *, title: str = "") -> Path:
    """A post-processing threshold sweep (segmentation's background threshold: foreground Dice;
    detection's score threshold: the total score) against the threshold, the chosen one marked."""
    from matplotlib.figure import Figure

    from medprune.report.plots import save_figure

    curve = [(t, d) for t, d in calibration["curve"] if d is not None]
    fig = Figure(figsize=(5, 3.4))
    ax = fig.subplots()
    ax.plot([t for t, _ in curve], [d for _, d in curve], "o-", ms=3, color="#4c72b0")
    t0 = calibration["threshold"]
    detection = calibration.get("kind") == "score_threshold"
    value = calibration["total"] if detection else calibration["foreground_dice"]
    ax.axvline(t0, color="#dd8452", ls="--", label=f"chosen {t0:.2f} ({'total' if detection else 'Dice'} "
               f"{value:.3f})" if value is not None else f"chosen {t0:.2f}")
    ax.set_xlabel("detection score threshold" if detection else "foreground probability threshold")
    ax.set_ylabel("total score (validation)" if detection else "foreground Dice (validation)")
    ax.set_title(f"{'Score' if detection else 'Background removal'} threshold{title}", fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path).path
