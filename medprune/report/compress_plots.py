"""Compression plots for the report: channels kept per layer, and per-class metrics before/after.

The question a clinical reviewer asks of a compressed model is not "how much accuracy was lost"
but "did the sick class lose sensitivity, and is the difference larger than the uncertainty" —
:func:`plot_sensitivity_comparison` draws per-class sensitivity and specificity of the base and
the compressed model side by side with their bootstrap intervals (``metrics.json`` schema,
DESIGN.md §2). :func:`plot_kept_channels` shows where the pruner cut.

Like :mod:`medprune.report.plots`, figures use the Agg canvas directly (no pyplot state) and are
written atomically; the format follows the path's suffix (.png, .pdf, .svg).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medprune.errors import DataError
from medprune.report.plots import save_figure

__all__ = ["plot_kept_channels", "plot_sensitivity_comparison"]

logger = logging.getLogger(__name__)

_MAX_LABEL = 48
#: Colours of the base and the compressed model in every report figure.
BASE_COLOUR = "#4c72b0"
COMPRESSED_COLOUR = "#dd8452"


def _short(name: str) -> str:
    """Keep the informative end of a long qualified layer name."""
    return name if len(name) <= _MAX_LABEL else "…" + name[-(_MAX_LABEL - 1):]


def plot_kept_channels(
    kept: Mapping[str, tuple[int, int]],
    path: str | os.PathLike[str],
    title: str | None = None,
) -> Path:
    """Horizontal bars per layer: original channel count (grey) and channels kept (coloured).

    ``kept`` maps layer name → ``(original, kept)``; layers are drawn top to bottom in the given
    order. The figure grows with the number of layers and the font shrinks, so a 300-layer
    Inception stays readable; up to 60 layers each bar is labelled ``kept/original``.
    Returns the written path.

    Raises:
        DataError: if ``kept`` is empty or a layer's counts are not ``0 <= kept <= original``,
            ``original >= 1`` (the message names the layer), or the suffix is not .png/.pdf/.svg.
    """
    if not kept:
        raise DataError("plot_kept_channels: no layers to plot")
    names: list[str] = []
    original: list[int] = []
    remaining: list[int] = []
    for name, pair in kept.items():
        try:
            before, after = (int(v) for v in pair)
        except (TypeError, ValueError):
            raise DataError(f"plot_kept_channels: layer {name!r}: expected (original, kept) channel counts, "
                            f"got {pair!r}") from None
        if before < 1 or not 0 <= after <= before:
            raise DataError(f"plot_kept_channels: layer {name!r}: kept {after} of {before} channels; "
                            f"need 0 <= kept <= original and original >= 1")
        names.append(_short(str(name)))
        original.append(before)
        remaining.append(after)

    n = len(names)
    fontsize = 8 if n <= 30 else 6 if n <= 100 else 5
    row_inches = 0.24 if n <= 30 else 0.15 if n <= 100 else 0.11
    fig = Figure(figsize=(7.5, max(2.5, 1.2 + row_inches * n)))
    ax = fig.add_subplot()
    y = np.arange(n)
    ax.barh(y, original, height=0.8, color="0.85", edgecolor="0.6", linewidth=0.4, label="original")
    ax.barh(y, remaining, height=0.8, color=BASE_COLOUR, label="kept")
    if n <= 60:
        for i, (before, after) in enumerate(zip(original, remaining)):
            ax.text(before, i, f" {after}/{before}", va="center", ha="left", fontsize=fontsize - 1, color="0.25")
        ax.set_xlim(0, max(original) * 1.18)
    ax.set_yticks(y, names, fontsize=fontsize)
    ax.set_ylim(n - 0.5, -0.5)  # first layer on top
    ax.tick_params(axis="x", labelsize=fontsize)
    ax.set_xlabel("output channels", fontsize=fontsize + 1)
    ax.legend(loc="lower right", fontsize=fontsize)
    ax.grid(True, axis="x", linewidth=0.4, alpha=0.5)
    total_before, total_after = sum(original), sum(remaining)
    default = (f"Channels kept per layer: {total_after:,} of {total_before:,} "
               f"({100.0 * total_after / total_before:.1f} %)")
    ax.set_title(title if title is not None else default, fontsize=10)
    return save_figure(fig, path).path


def _value(metrics: Mapping[str, Any], cls: str, metric: str, which: str) -> tuple[float, list[float] | None]:
    """Point estimate (NaN when undefined) and interval (``None`` when absent) of one per-class metric."""
    return per_class_point(metrics, cls, metric, f"plot_sensitivity_comparison: {which} metrics have")


def per_class_point(metrics: Mapping[str, Any], cls: str, metric: str,
                    subject: str) -> tuple[float, list[float] | None]:
    """Point estimate (NaN when undefined) and interval (``None`` when absent) of one per-class metric.

    ``subject`` starts the error raised when ``cls`` is missing, e.g. ``"plot_x: 'base' has"``.
    """
    per_class = metrics.get("per_class")
    if not isinstance(per_class, Mapping) or cls not in per_class:
        available = ", ".join(map(str, per_class)) if isinstance(per_class, Mapping) else "none"
        raise DataError(f"{subject} no per_class entry for class {cls!r} (available: {available})")
    point = per_class[cls].get(metric)
    value = float(point) if point is not None else math.nan
    ci = (metrics.get("ci") or {}).get(f"per_class.{cls}.{metric}")
    if ci is None or len(ci) != 2 or any(v is None for v in ci) or math.isnan(value):
        return value, None
    return value, [float(ci[0]), float(ci[1])]


def plot_sensitivity_comparison(
    base: Mapping[str, Any],
    compressed: Mapping[str, Any],
    classes: Sequence[str],
    path: str | os.PathLike[str],
    title: str | None = None,
    metrics: Sequence[str] = ("sensitivity", "specificity"),
) -> Path:
    """Grouped bars per class — base vs compressed — for each of ``metrics``, with 95 % intervals.

    ``base`` and ``compressed`` are ``classification_metrics`` results (``metrics.json``): the
    bars are ``per_class[c][metric]``, the error bars ``ci["per_class.<c>.<metric>"]``. A missing
    interval (``n_bootstrap: 0``, too few defined replicates) draws the bar without an error bar;
    an undefined value (``None``) draws no bar and writes "n/a". One panel per metric.
    Returns the written path.

    Raises:
        DataError: if ``classes`` is empty, a class has no ``per_class`` entry in either result
            (the message names the class and the result), or the suffix is not .png/.pdf/.svg.
    """
    names = [str(c) for c in classes]
    if not names:
        raise DataError("plot_sensitivity_comparison: no classes to plot")
    if not metrics:
        raise DataError("plot_sensitivity_comparison: no metrics to plot")
    k = len(names)
    fig = Figure(figsize=(max(4.0, 1.2 + 1.1 * k) * len(metrics), 4.0))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    width = 0.38
    x = np.arange(k)
    for ax, metric in zip(axes, metrics):
        for offset, result, label, colour in ((-width / 2, base, "base", BASE_COLOUR),
                                              (width / 2, compressed, "compressed", COMPRESSED_COLOUR)):
            pairs = [_value(result, c, metric, label) for c in names]
            values = np.array([v for v, _ in pairs])
            shown = np.nan_to_num(values, nan=0.0)
            # Percentile intervals need not contain the point estimate; clip so matplotlib
            # never sees a negative error length.
            err = np.array([[max(0.0, v - ci[0]), max(0.0, ci[1] - v)] if ci else [0.0, 0.0]
                            for v, ci in pairs]).T
            has_ci = np.array([ci is not None for _, ci in pairs])
            bars = ax.bar(x + offset, shown, width, color=colour, label=label)
            if has_ci.any():
                ax.errorbar((x + offset)[has_ci], shown[has_ci], yerr=err[:, has_ci], fmt="none",
                            ecolor="0.15", elinewidth=1.0, capsize=3)
            for bar, v in zip(bars, values):
                inside = not math.isnan(v) and v >= 0.15  # a short bar has no room for its label
                text = "n/a" if math.isnan(v) else f"{v:.2f}"
                ax.text(bar.get_x() + bar.get_width() / 2, v / 2 if inside else 0.02, text,
                        ha="center", va="center" if inside else "bottom", fontsize=7,
                        color="white" if inside else "0.2", rotation=90 if k > 6 else 0)
        ax.set_xticks(x, names, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
        ax.set_ylim(0.0, 1.2)  # headroom above 1.0 holds the legend clear of bars and error bars
        ax.set_yticks(np.linspace(0.0, 1.0, 6))
        ax.set_ylabel(metric)
        ax.grid(True, axis="y", linewidth=0.4, alpha=0.5)
    axes[0].legend(loc="upper center", ncol=2, fontsize=8)
    if not (base.get("ci") and compressed.get("ci")):
        logger.info("plot_sensitivity_comparison: no confidence intervals in %s",
                    "either result" if not (base.get("ci") or compressed.get("ci"))
                    else "base" if not base.get("ci") else "compressed")
    fig.suptitle(title if title is not None else "Per-class metrics: base vs compressed (95 % CI)", fontsize=10)
    return save_figure(fig, path).path
