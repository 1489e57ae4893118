"""The accuracy / cost frontier of ``medprune sweep``.

:func:`plot_frontier` draws, for every criterion of the sweep, the task's headline score (solid:
balanced accuracy, mean Dice) and its gate metric (dashed: worst-class sensitivity, worst-class
Dice) against MACs (left) and measured ONNX Runtime latency (right), with the unpruned model as a
star. A clinical reviewer reads the dashed line: the compression worth shipping is the cheapest
point before it falls.

On the latency axis every point carries its measured spread as a horizontal error bar (the
interquartile range of the per-round minima), the unpruned model's spread is a shaded band, and a
point whose speed-up is within the measured spread of the unpruned model is marked "≈": its latency
difference is not a measured result.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from medprune.errors import DataError
from medprune.report.compress_plots import BASE_COLOUR
from medprune.report.plots import save_figure

__all__ = ["plot_frontier"]

_COLOURS = ("#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(float(value))


def plot_frontier(sweep: Mapping[str, Any], path: str | os.PathLike[str], title: str | None = None) -> Path:
    """The headline and gate metrics vs MACs and vs latency, one colour per criterion.

    ``sweep`` has the ``sweep.json`` layout: ``metrics`` (which point keys are the ``score`` and the
    ``gate``, with labels; classification's balanced accuracy and worst-class sensitivity when
    absent), ``base`` and ``points`` with ``criterion``, ``macs``, ``ort_ms`` and those two keys; the
    latency axis also draws
    ``ort_iqr_ms`` (error bars, the base's as a band), ``within_spread_of_base`` ("≈") and
    ``distinct_architectures`` when present. Returns the written path.

    Raises:
        DataError: if there are no points.
    """
    points = list(sweep.get("points") or [])
    if not points:
        raise DataError("plot_frontier: the sweep has no points")
    base = sweep.get("base") or {}
    roles = sweep.get("metrics") or {}
    score = (roles.get("score") or {}).get("key", "balanced_accuracy")
    gate = (roles.get("gate") or {}).get("key", "worst_class_sensitivity")
    words = [(roles.get(r) or {}).get("label", default) for r, default in
             (("score", "balanced accuracy"), ("gate", "worst-class sensitivity"))]
    axes_spec = [("macs", "MACs (millions)", 1e-6), ("ort_ms", "ONNX Runtime CPU latency (ms)", 1.0)]
    fig = Figure(figsize=(11, 4.6))
    criteria = list(dict.fromkeys(p["criterion"] for p in points))
    for i, (key, label, scale) in enumerate(axes_spec):
        ax = fig.add_subplot(1, 2, i + 1)
        spread_axis = key == "ort_ms"
        has_spread = marked_within = False
        for j, crit in enumerate(criteria):
            colour = _COLOURS[j % len(_COLOURS)]
            mine = sorted((p for p in points if p["criterion"] == crit and _finite(p.get(key))), key=lambda p: p[key])
            if not mine:
                continue
            xs = [p[key] * scale for p in mine]
            xerr = _xerr(mine, key, scale) if spread_axis else None
            has_spread |= xerr is not None
            for field, fmt, mfc, what in [(score, "-o", None, words[0]), (gate, "--s", "white", words[1])]:
                ys = [p[field] if _finite(p.get(field)) else math.nan for p in mine]
                if xerr is None:
                    ax.plot(xs, ys, fmt, color=colour, mfc=mfc, label=f"{crit}: {what}")
                else:
                    ax.errorbar(xs, ys, xerr=xerr, fmt=fmt, color=colour, mfc=mfc, capsize=3, elinewidth=0.8,
                                label=f"{crit}: {what}")
            for p, x in zip(mine, xs):
                within = spread_axis and bool(p.get("within_spread_of_base"))
                marked_within |= within
                ax.annotate(f"{p['ratio']:.2f}" + (" ≈" if within else ""), (x, p.get(score) or 0.0),
                            textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7, color=colour)
        if _finite(base.get(key)):
            bx = base[key] * scale
            iqr = base.get("ort_iqr_ms") if spread_axis else None
            if iqr is not None and all(_finite(v) for v in iqr):
                ax.axvspan(iqr[0] * scale, iqr[1] * scale, color=BASE_COLOUR, alpha=0.12, lw=0)
            ax.plot([bx], [base[score] if _finite(base.get(score)) else math.nan], "*", ms=14, color=BASE_COLOUR, label=f"unpruned: {words[0]}")
            ax.plot([bx], [base[gate] if _finite(base.get(gate)) else math.nan], "*", ms=14, mfc="white", color=BASE_COLOUR,
                    label=f"unpruned: {words[1]}")
        if spread_axis:
            label = _latency_label(sweep.get("distinct_architectures"), has_spread, marked_within)
        ax.set_xlabel(label, fontsize=8 if "\n" in label else None)
        ax.set_ylabel("score (test split)")
        ax.set_ylim(-0.02, 1.05)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title or "Quality vs cost (numbers above points: pruning ratio)")
    fig.tight_layout()
    return save_figure(fig, path).path


def _latency_label(n_arch: Any, has_spread: bool, marked_within: bool) -> str:
    """The latency axis label, saying what the error bars, the band and "≈" mean when drawn."""
    label = "ONNX Runtime CPU latency (ms)"
    if isinstance(n_arch, int):
        label = f"ONNX Runtime CPU latency (ms; {n_arch} distinct architecture{'s' if n_arch != 1 else ''}, " \
                "each timed once)"
    notes = []
    if has_spread:
        notes.append("bars: interquartile range of per-round minima (shaded: unpruned)")
    if marked_within:
        notes.append("≈: within the unpruned model's spread")
    return label + ("\n" + "; ".join(notes) if notes else "")


def _xerr(points: list[Mapping[str, Any]], key: str, scale: float) -> list[list[float]] | None:
    """Asymmetric x error bars from each point's ``ort_iqr_ms`` (``None`` when a point lacks it)."""
    if not all(isinstance(p.get("ort_iqr_ms"), (list, tuple)) for p in points):
        return None  # a sweep.json written before the spread was recorded
    low = [max(0.0, (p[key] - p["ort_iqr_ms"][0]) * scale) for p in points]
    high = [max(0.0, (p["ort_iqr_ms"][1] - p[key]) * scale) for p in points]
    return [low, high]
