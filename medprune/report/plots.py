"""Evaluation plots for the report: confusion matrix, ROC curves, reliability diagram.

:func:`plot_confusion_matrix` and :func:`plot_roc` draw one model; :func:`plot_roc_comparison`
draws the base and every compressed model on the same axes per class, with each AUC and its
interval in the legend; :func:`plot_reliability` compares calibration (accuracy against
confidence). The comparison plots return a :class:`Plotted` — the written path plus what was
drawn on each panel (scales, series labels, the numbers printed) — so a caller or a test can check
the figure says what the data say without reading pixels.

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly, so importing or
calling this module never touches pyplot's global state or the process-wide backend, and no figure
stays open after saving. Files are written atomically; the format follows the path's suffix
(``.png`` by default, ``.pdf`` and ``.svg`` also work).

Pass the data provenance in ``title`` — e.g. ``"Inception V3 — synthetic data (phantom)"`` —
so a plot of phantom data is never mistaken for a clinical result.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from medprune._io import atomic_write
from medprune.errors import DataError
from medprune.metrics.predictions import Predictions

__all__ = ["Panel", "Plotted", "save_figure", "plot_confusion_matrix", "plot_roc", "plot_roc_comparison",
           "plot_reliability"]

logger = logging.getLogger(__name__)

_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
_DPI = 120


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_classes(classes: Sequence[str], what: str) -> list[str]:
    names = [str(c) for c in classes]
    if len(names) < 2:
        raise DataError(f"{what}: need at least 2 class names, got {names!r}")
    return names


@dataclass(frozen=True)
class Panel:
    """One drawn panel: its title, axis scales and the labels of the series it shows, in drawing order."""

    title: str
    xscale: str
    yscale: str
    series: tuple[str, ...]


@dataclass(frozen=True)
class Plotted:
    """A written figure and what it shows.

    ``path`` is the file; ``panels`` the visible panels in reading order; ``values`` the numbers
    the figure prints, keyed as each plot function documents (e.g. ``"base / sick"`` → AUC).
    ``os.fspath(plotted)`` is the path, so a ``Plotted`` goes wherever a path does.
    """

    path: Path
    panels: tuple[Panel, ...]
    values: Mapping[str, float] = field(default_factory=dict)

    def __fspath__(self) -> str:
        return os.fspath(self.path)


def _describe(fig: Figure) -> tuple[Panel, ...]:
    panels = []
    for ax in fig.axes:
        if not ax.get_visible() or not ax.axison:
            continue
        _, labels = ax.get_legend_handles_labels()
        panels.append(Panel(ax.get_title(), ax.get_xscale(), ax.get_yscale(), tuple(labels)))
    return tuple(panels)


def save_figure(fig: Figure, path: str | os.PathLike[str], values: Mapping[str, float] | None = None) -> Plotted:
    """Render ``fig`` with the Agg canvas, write it atomically in the suffix's format, describe it.

    Raises:
        DataError: if the suffix is not .png/.pdf/.svg.
    """
    target = Path(path)
    fmt = _FORMATS.get(target.suffix.lower())
    if fmt is None:
        fig.clear()
        raise DataError(f"{target}: unsupported plot format {target.suffix!r}; use one of {', '.join(_FORMATS)}")
    panels = _describe(fig)
    FigureCanvasAgg(fig)
    try:
        written = atomic_write(target, lambda tmp: fig.savefig(tmp, format=fmt, dpi=_DPI, bbox_inches="tight"))
    finally:
        fig.clear()
    return Plotted(written, panels, dict(values or {}))


def plot_confusion_matrix(
    cm: np.ndarray | Sequence[Sequence[int]],
    classes: Sequence[str],
    path: str | os.PathLike[str],
    normalize: bool = False,
    title: str | None = None,
) -> Path:
    """Draw a confusion matrix (rows = true class, columns = predicted) and save it to ``path``.

    With ``normalize=True`` each row is divided by its total, so the diagonal shows each class's
    sensitivity; every cell still shows the raw count beneath the fraction. A class with no
    samples gets an empty row ("n/a"). Returns the written path.

    Raises:
        DataError: if ``cm`` is not a square ``(K, K)`` matrix of non-negative counts with
            ``K == len(classes)``, or the file suffix is not .png/.pdf/.svg.
    """
    names = _check_classes(classes, "plot_confusion_matrix: classes")
    m = _to_numpy(cm)
    k = len(names)
    if m.ndim != 2 or m.shape != (k, k):
        raise DataError(
            f"plot_confusion_matrix: cm must be a ({k}, {k}) matrix for classes {names}, got shape {tuple(m.shape)}"
        )
    if not np.issubdtype(m.dtype, np.number) or not np.all(np.isfinite(m)) or np.any(m < 0):
        raise DataError("plot_confusion_matrix: cm must hold non-negative finite counts")
    counts = m.astype(np.float64)
    row_total = counts.sum(axis=1, keepdims=True)
    shown = np.divide(counts, row_total, out=np.zeros_like(counts), where=row_total > 0) if normalize else counts

    size = max(3.2, 1.0 + 0.9 * k)
    fig = Figure(figsize=(size + 1.0, size))
    ax = fig.add_subplot()
    vmax = 1.0 if normalize else max(float(shown.max()), 1.0)
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=vmax)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class" if normalize else "count")
    for t in range(k):
        for q in range(k):
            if normalize and row_total[t, 0] == 0:
                text = "n/a"
            elif normalize:
                text = f"{shown[t, q]:.2f}\n({int(counts[t, q])})"
            else:
                text = f"{int(counts[t, q])}"
            dark = shown[t, q] > 0.6 * vmax
            ax.text(q, t, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
    ax.set_xticks(range(k), names, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    default = "Confusion matrix (row-normalised)" if normalize else "Confusion matrix"
    ax.set_title(title if title is not None else default, fontsize=10)
    return save_figure(fig, path).path


def plot_roc(
    y_true: np.ndarray | Sequence[int],
    probs: np.ndarray,
    classes: Sequence[str],
    path: str | os.PathLike[str],
    title: str | None = None,
) -> Path:
    """Draw one-vs-rest ROC curves, one per class, with each class's AUC in the legend.

    For two classes both curves are drawn; they have the same AUC (one is the other mirrored), so
    the positive class can be read off whichever the clinical question names. A class absent
    from ``y_true`` (or the only one present) has no ROC curve and is listed as "AUC undefined".
    Returns the written path.

    Raises:
        DataError: if ``probs`` is not ``(N, K)`` with ``K == len(classes)``, ``y_true`` does not
            have ``N`` labels in ``0..K-1``, or the file suffix is not .png/.pdf/.svg.
    """
    names = _check_classes(classes, "plot_roc: classes")
    k = len(names)
    p = _to_numpy(probs)
    y = _to_numpy(y_true)
    if p.ndim != 2 or p.shape[1] != k:
        raise DataError(f"plot_roc: probs must have shape (N, {k}) for classes {names}, got {tuple(p.shape)}")
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise DataError(
            f"plot_roc: y_true must hold one label per row of probs ({p.shape[0]}), got shape {tuple(y.shape)}"
        )
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= k):
        raise DataError(f"plot_roc: y_true must hold integer labels in 0..{k - 1} for classes {names}")

    fig = Figure(figsize=(5.0, 4.6))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="chance")
    for c, name in enumerate(names):
        positive = y == c
        n_pos = int(positive.sum())
        if n_pos == 0 or n_pos == y.size:
            ax.plot([], [], linestyle="none", label=f"{name}: AUC undefined (n={n_pos})")
            logger.info("plot_roc: class %r has no ROC curve (%d of %d samples positive)", name, n_pos, y.size)
            continue
        fpr, tpr, _ = roc_curve(positive, p[:, c])
        auc = roc_auc_score(positive, p[:, c])
        ax.plot(fpr, tpr, linewidth=1.6, label=f"{name}: AUC {auc:.3f} (n={n_pos})")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 − specificity (false-positive rate)")
    ax.set_ylabel("sensitivity (true-positive rate)")
    ax.set_title(title if title is not None else "ROC, one-vs-rest", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(True, linewidth=0.4, alpha=0.5)
    return save_figure(fig, path).path


def _class_column(pred: Predictions, label: str, cls: str, what: str) -> int:
    if cls not in pred.classes:
        raise DataError(f"{what}: predictions of {label!r} have no class {cls!r} (classes {pred.classes})")
    return pred.classes.index(cls)


def _colour(colours: Mapping[str, str] | None, label: str, index: int) -> str:
    return (colours or {}).get(label, f"C{index % 10}")


def plot_roc_comparison(
    models: Mapping[str, Predictions],
    classes: Sequence[str],
    path: str | os.PathLike[str],
    *,
    auc_ci: Mapping[str, Mapping[str, tuple[float, float] | None]] | None = None,
    colours: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Plotted:
    """One-vs-rest ROC of every model on the same axes, one panel per class in ``classes``.

    ``models`` maps a model label to its test-split predictions (``predictions.csv``), the first
    being the reference (drawn thicker). Each legend entry reads ``"<model>: AUC 0.912 [0.85,
    0.96]"``: the AUC is scikit-learn's ``roc_auc_score`` on those predictions, the interval is
    ``auc_ci[model][class]`` when given (the bootstrap interval of the model's ``metrics.json``).
    A class a model's test set does not contain, or contains only, has no curve ("AUC
    undefined"). ``values["<model> / <class>"]`` holds every drawn AUC. Returns a :class:`Plotted`.

    Raises:
        DataError: if ``models`` or ``classes`` is empty, a model's predictions lack a class (the
            message names both), or the suffix is not .png/.pdf/.svg.
    """
    names = [str(c) for c in classes]
    if not models or not names:
        raise DataError("plot_roc_comparison: need at least one model and one class")
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    fig = Figure(figsize=(4.6 * ncols, 4.5 * nrows + 0.4))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    values: dict[str, float] = {}
    for ax, cls in zip(axes, names):
        ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1)
        counts = ""
        for j, (label, pred) in enumerate(models.items()):
            column = _class_column(pred, label, cls, "plot_roc_comparison")
            positive = pred.y_true == column
            n_pos = int(positive.sum())
            if j == 0:
                counts = f" ({n_pos} of {positive.size} images)"
            if n_pos == 0 or n_pos == positive.size:
                ax.plot([], [], linestyle="none", label=f"{label}: AUC undefined (n={n_pos})")
                continue
            fpr, tpr, _ = roc_curve(positive, pred.probs[:, column])
            auc = float(roc_auc_score(positive, pred.probs[:, column]))
            values[f"{label} / {cls}"] = auc
            ci = ((auc_ci or {}).get(label) or {}).get(cls)
            text = f"{label}: AUC {auc:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci is not None else "")
            ax.plot(fpr, tpr, color=_colour(colours, label, j), linewidth=2.2 if j == 0 else 1.4,
                    drawstyle="steps-post", label=text)
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("1 − specificity (false-positive rate)", fontsize=8)
        ax.set_ylabel(f"sensitivity for {cls}", fontsize=8)
        ax.set_title(f"{cls} vs rest{counts}", fontsize=9)
        ax.legend(loc="lower right", fontsize=7)
        ax.grid(True, linewidth=0.4, alpha=0.5)
        ax.tick_params(labelsize=8)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.suptitle(title if title is not None else "ROC, one-vs-rest, base vs compressed (legend: AUC [95 % CI])",
                 fontsize=10)
    return save_figure(fig, path, values)


def _reliability_bins(pred: Predictions, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin (equal width, right-closed on [0, 1]): image count, mean confidence, accuracy."""
    conf = pred.probs.max(axis=1)
    correct = (pred.probs.argmax(axis=1) == pred.y_true).astype(np.float64)
    index = np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], conf, side="left")
    count = np.bincount(index, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(index, weights=correct, minlength=n_bins) / count
    return count, mean_conf, accuracy


def plot_reliability(
    models: Mapping[str, Predictions],
    path: str | os.PathLike[str],
    *,
    n_bins: int = 10,
    ece: Mapping[str, tuple[float | None, tuple[float, float] | None]] | None = None,
    colours: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Plotted:
    """Reliability diagram: accuracy against confidence per bin for every model, and how many images each bin holds.

    A calibrated model lies on the diagonal; below it the model is over-confident. Bins are
    ``n_bins`` equal-width, right-closed intervals of the top-class probability on [0, 1] (empty
    bins are skipped). The legend gives each model's ECE: ``ece[model] = (value, interval)`` when
    given (the ``metrics.json`` value, so figure and table agree), else the ECE over the drawn
    bins. ``values["<model> / ece"]`` holds the printed ECE. Returns a :class:`Plotted`.

    Raises:
        DataError: if ``models`` is empty, ``n_bins < 2``, a model has no predictions, or the
            suffix is not .png/.pdf/.svg.
    """
    if not models:
        raise DataError("plot_reliability: need at least one model")
    if n_bins < 2:
        raise DataError(f"plot_reliability: n_bins must be at least 2, got {n_bins}")
    fig = Figure(figsize=(5.6, 6.4))
    top, bottom = fig.subplots(2, 1, gridspec_kw={"height_ratios": (3, 1)}, sharex=True)
    top.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1)
    values: dict[str, float] = {}
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    for j, (label, pred) in enumerate(models.items()):
        if pred.y_true.size == 0:
            raise DataError(f"plot_reliability: {label!r} has no predictions")
        count, mean_conf, accuracy = _reliability_bins(pred, n_bins)
        filled = count > 0
        given = (ece or {}).get(label)
        if given is not None and given[0] is not None:
            value, ci = float(given[0]), given[1]
        else:
            value, ci = float(np.sum(count[filled] * np.abs(accuracy[filled] - mean_conf[filled])) / count.sum()), None
        values[f"{label} / ece"] = value
        text = f"{label}: ECE {value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci is not None else "")
        colour = _colour(colours, label, j)
        top.plot(mean_conf[filled], accuracy[filled], marker="o", markersize=4, color=colour,
                 linewidth=2.0 if j == 0 else 1.3, label=text)
        bottom.stairs(count / count.sum(), edges, color=colour, linewidth=1.3, label=label)
    top.set_xlim(-0.01, 1.01)
    top.set_ylim(-0.02, 1.02)
    top.set_ylabel("accuracy in the bin", fontsize=8)
    top.set_title("Reliability (on the diagonal = calibrated; below = over-confident)", fontsize=9)
    top.legend(loc="upper left", fontsize=7)
    top.grid(True, linewidth=0.4, alpha=0.5)
    bottom.set_xlabel("confidence (top-class probability)", fontsize=8)
    bottom.set_ylabel("share of images", fontsize=8)
    bottom.set_title("Images per confidence bin", fontsize=9)
    bottom.grid(True, linewidth=0.4, alpha=0.5)
    for ax in (top, bottom):
        ax.tick_params(labelsize=8)
    fig.suptitle(title if title is not None else "Calibration, base vs compressed (legend: ECE [95 % CI])",
                 fontsize=10)
    return save_figure(fig, path, values)
