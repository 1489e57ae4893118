"""The accuracy / cost frontier of ``medprune sweep``.

:func:`plot_frontier` draws, for every criterion of the sweep, balanced accuracy (solid) and
worst-class sensitivity (dashed) against MACs (left) and measured ONNX Runtime latency (right),
with the unpruned model as a star. A clinical reviewer reads the dashed line: the compression
worth shipping is the cheapest point before it falls.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from medprune.errors import DataError
from medprune.report.plots import _save

__all__ = ["plot_frontier"]

_COLOURS = ("#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd")
_BASE_COLOUR = "#4c72b0"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(float(value))


def plot_frontier(sweep: Mapping[str, Any], path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Balanced accuracy and worst-class sensitivity vs MACs and vs latency, one colour per criterion.

    ``sweep`` has the ``sweep.json`` layout: ``base`` and ``points`` with ``criterion``, ``macs``,
    ``ort_ms``, ``balanced_accuracy``, ``worst_class_sensitivity``. Returns the written path.

    Raises:
        DataError: if there are no points.
    """
    points = list(sweep.get("points") or [])
    if not points:
        raise DataError("plot_frontier: the sweep has no points")
    base = sweep.get("base") or {}
    axes_spec = [("macs", "MACs (millions)", 1e-6), ("ort_ms", "ONNX Runtime CPU latency (ms)", 1.0)]
    fig = Figure(figsize=(11, 4.4))
    criteria = list(dict.fromkeys(p["criterion"] for p in points))
    for i, (key, label, scale) in enumerate(axes_spec):
        ax = fig.add_subplot(1, 2, i + 1)
        for j, crit in enumerate(criteria):
            colour = _COLOURS[j % len(_COLOURS)]
            mine = sorted((p for p in points if p["criterion"] == crit and _finite(p.get(key))), key=lambda p: p[key])
            if not mine:
                continue
            xs = [p[key] * scale for p in mine]
            ax.plot(xs, [p["balanced_accuracy"] for p in mine], "-o", color=colour, label=f"{crit}: balanced acc.")
            ax.plot(xs, [p["worst_class_sensitivity"] for p in mine], "--s", color=colour, mfc="white",
                    label=f"{crit}: worst-class sens.")
            for p, x in zip(mine, xs):
                ax.annotate(f"{p['ratio']:.2f}", (x, p["balanced_accuracy"]), textcoords="offset points",
                            xytext=(0, 6), ha="center", fontsize=7, color=colour)
        if _finite(base.get(key)):
            bx = base[key] * scale
            ax.plot([bx], [base["balanced_accuracy"]], "*", ms=14, color=_BASE_COLOUR, label="unpruned: balanced acc.")
            ax.plot([bx], [base["worst_class_sensitivity"]], "*", ms=14, mfc="white", color=_BASE_COLOUR,
                    label="unpruned: worst-class sens.")
        ax.set_xlabel(label)
        ax.set_ylabel("score (test split)")
        ax.set_ylim(-0.02, 1.05)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title or "Accuracy vs cost (numbers above points: pruning ratio)")
    fig.tight_layout()
    return _save(fig, path)
