"""Evaluation plots for the report: confusion matrix and one-vs-rest ROC curves.

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from medprune._io import atomic_write
from medprune.errors import DataError

__all__ = ["plot_confusion_matrix", "plot_roc"]

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


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Render ``fig`` with the Agg canvas and write it atomically in the suffix's format."""
    target = Path(path)
    fmt = _FORMATS.get(target.suffix.lower())
    if fmt is None:
        raise DataError(f"{target}: unsupported plot format {target.suffix!r}; use one of {', '.join(_FORMATS)}")
    FigureCanvasAgg(fig)
    try:
        return atomic_write(target, lambda tmp: fig.savefig(tmp, format=fmt, dpi=_DPI, bbox_inches="tight"))
    finally:
        fig.clear()


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
    return _save(fig, path)


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
    return _save(fig, path)
