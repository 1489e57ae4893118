"""Plots of the ``medprune run`` report: what compression cost and what it bought.

Four figures, each comparing the base model with every compressed stage (the first entry is
always the reference):

* :func:`plot_per_class_metrics` — grouped bars of per-class metrics (sensitivity, specificity,
  … for classification; Dice, HD95, … for segmentation), with the bootstrap 95 % intervals of
  ``metrics.json`` as error bars;
* :func:`plot_metric_by_class` — one per-class metric (Dice) for every class and the summaries
  built on it (mean, worst class), with their intervals, on one axis;
* :func:`plot_tradeoff` — the task's headline metric and its worst-class metric (balanced
  accuracy and worst-class sensitivity; mean and worst-class Dice) against cost (MACs or
  measured ONNX Runtime latency), with the points of a pruning sweep and their frontier;
* :func:`plot_latency_and_size` — measured latency, one panel (and linear axis) per runtime so
  the INT8 and ONNX Runtime bars stay readable beside PyTorch's, and file sizes, each bar
  labelled with its speed-up or size reduction against the base model.

Like :mod:`medprune.report.plots`, figures use the Agg canvas directly (no pyplot state) and are
written atomically; the format follows the path's suffix (.png, .pdf, .svg).
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib.figure import Figure

from medprune.compress.latency import BenchEntry
from medprune.errors import DataError
from medprune.metrics.classification import PER_CLASS_METRICS
from medprune.report.compress_plots import BASE_COLOUR, COMPRESSED_COLOUR, per_class_point
from medprune.report.plots import Plotted, save_figure

__all__ = ["TradeoffPoint", "plot_per_class_metrics", "plot_metric_by_class", "plot_tradeoff", "plot_latency_and_size",
           "model_colour"]

# Base and first compressed stage keep the colours of compress_plots; later stages continue the
# same (seaborn "deep") palette so one model has one colour in every figure of a report.
_PALETTE = (BASE_COLOUR, COMPRESSED_COLOUR, "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")
_SWEEP_COLOUR = "0.55"
_MIB = 2.0**20
_METRIC_LABELS = {"sensitivity": "sensitivity", "specificity": "specificity", "ppv": "PPV", "npv": "NPV",
                  "f1": "F1", "auc": "AUC"}


def model_colour(index: int) -> str:
    """Colour of the ``index``-th model of a report (0 = base), shared by every figure."""
    return _PALETTE[index % len(_PALETTE)]


def _interval(ci: Any, value: float) -> tuple[float, float] | None:
    """``(lower, upper)`` error lengths of ``ci`` around ``value``, ``None`` when there is no interval."""
    if ci is None or math.isnan(value) or not isinstance(ci, Sequence) or len(ci) != 2 or None in ci:
        return None
    # Percentile intervals need not contain the point estimate; clip so no error length is negative.
    return max(0.0, value - float(ci[0])), max(0.0, float(ci[1]) - value)


def _per_class(metrics: Mapping[str, Any], label: str, cls: str,
               metric: str) -> tuple[float, tuple[float, float] | None]:
    value, ci = per_class_point(metrics, cls, metric, f"plot_per_class_metrics: {label!r} has")
    return value, _interval(ci, value)


def _bars(ax: Any, names: Sequence[str], results: Mapping[str, Any],
          point: Callable[[str, Any, str], tuple[float, tuple[float, float] | None]]) -> None:
    """Grouped bars on ``ax``: one group per name, one bar per model, error bars where there is an
    interval, values written on the bars while they stay readable; an undefined value says "n/a".
    The y axis spans [0, 1] unless a value or interval exceeds 1 (HD95 in pixels)."""
    k, m = len(names), len(results)
    width = 0.8 / m
    x = np.arange(k)
    label_bars = k * m <= 16  # beyond that the numbers overlap; the table has them
    drawn = [[point(label, result, name) for name in names] for label, result in results.items()]
    top = max([1.0] + [v + (ci[1] if ci else 0.0) for pairs in drawn for v, ci in pairs if not math.isnan(v)])
    for j, (label, pairs) in enumerate(zip(results, drawn)):
        values = np.array([v for v, _ in pairs])
        shown = np.nan_to_num(values, nan=0.0)
        pos = x - 0.4 + width * (j + 0.5)
        bars = ax.bar(pos, shown, width, color=model_colour(j), label=label)
        has_ci = np.array([ci is not None for _, ci in pairs])
        if has_ci.any():
            err = np.array([ci if ci is not None else (0.0, 0.0) for _, ci in pairs]).T
            ax.errorbar(pos[has_ci], shown[has_ci], yerr=err[:, has_ci], fmt="none", ecolor="0.15",
                        elinewidth=0.9, capsize=2)
        for bar, v in zip(bars, values):
            if math.isnan(v) or label_bars:
                inside = not math.isnan(v) and v >= 0.25 * top
                ax.text(bar.get_x() + bar.get_width() / 2, v / 2 if inside else 0.02 * top,
                        "n/a" if math.isnan(v) else f"{v:.2f}", ha="center",
                        va="center" if inside else "bottom", fontsize=6.5, rotation=90,
                        color="white" if inside else "0.2")
    ax.set_xticks(x, names, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center", fontsize=8)
    if top <= 1.0:
        ax.set_ylim(0.0, 1.08)
        ax.set_yticks(np.linspace(0.0, 1.0, 6))
    else:
        ax.set_ylim(0.0, 1.08 * top)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(True, axis="y", linewidth=0.4, alpha=0.5)


def plot_per_class_metrics(
    results: Mapping[str, Mapping[str, Any]],
    classes: Sequence[str],
    path: str | os.PathLike[str],
    *,
    metrics: Sequence[str] = PER_CLASS_METRICS,
    labels: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Path:
    """One panel per metric; in each, bars per class for every model, with 95 % intervals.

    ``results`` maps a model label (``"base"``, ``"pruned (taylor, ratio 0.50)"``) to its
    ``metrics.json``; insertion order is drawing order and the first is the reference.
    ``metrics`` are keys of its ``per_class`` entries (default: classification's); ``labels``
    names their panels (``{"hd95": "HD95 (px; lower is better)"}``). A panel spans [0, 1] unless a
    value exceeds 1. A missing interval draws the bar without an error bar; an undefined value
    (``None``) draws no bar and writes "n/a". Returns the written path.

    Raises:
        DataError: if ``results``, ``classes`` or ``metrics`` is empty, or a model lacks a class
            (the message names both), or the suffix is not .png/.pdf/.svg.
    """
    names = [str(c) for c in classes]
    if not results or not names or not metrics:
        raise DataError("plot_per_class_metrics: need at least one model, one class and one metric")
    k, m = len(names), len(results)
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    panel_width = max(3.2, 0.8 + 0.32 * k * m + 0.25 * k)
    fig = Figure(figsize=(panel_width * ncols, 3.4 * nrows + 0.6))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics):
        _bars(ax, names, results, lambda label, result, cls, q=metric: _per_class(result, label, cls, q))
        ax.set_title((labels or {}).get(metric) or _METRIC_LABELS.get(metric, metric), fontsize=9)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    handles, legend = axes[0].get_legend_handles_labels()
    fig.legend(handles, legend, loc="lower center", ncol=min(m, 4), fontsize=8, frameon=False)
    fig.suptitle(title if title is not None else "Per-class metrics per model (error bars: 95 % CI)", fontsize=10)
    fig.subplots_adjust(bottom=0.1 + 0.03 * math.ceil(m / 4), hspace=0.35)
    return save_figure(fig, path).path


def plot_metric_by_class(
    results: Mapping[str, Mapping[str, Any]],
    classes: Sequence[str],
    path: str | os.PathLike[str],
    *,
    metric: str,
    label: str,
    summaries: Sequence[tuple[str, str]] = (),
    title: str | None = None,
) -> Plotted:
    """One per-class metric for every class, then the summaries built on it, every model side by side.

    ``results`` maps a model label to its ``metrics.json`` (the first is the reference);
    ``metric`` is a key of its ``per_class`` entries (``"dice"``), ``label`` how the axis names it;
    ``summaries`` are ``(group name, summary key)`` pairs drawn after the classes —
    ``(("mean", "mean_dice"), ("worst class", "worst_class_dice"))``. Error bars are the
    ``ci`` intervals of ``metrics.json``. ``values["<model> / <group>"]`` holds every drawn value.

    Raises:
        DataError: if ``results`` or ``classes`` is empty, a model lacks a class (the message names
            both), or the suffix is not .png/.pdf/.svg.
    """
    names = [str(c) for c in classes]
    if not results or not names:
        raise DataError("plot_metric_by_class: need at least one model and one class")
    summary_keys = dict(summaries)
    groups = names + list(summary_keys)
    values: dict[str, float] = {}

    def point(model: str, result: Any, group: str) -> tuple[float, tuple[float, float] | None]:
        if group in summary_keys:
            raw = result.get(summary_keys[group])
            value = float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else math.nan
            ci = _interval((result.get("ci") or {}).get(summary_keys[group]), value)
        else:
            value, ci = _per_class(result, model, group, metric)
        if not math.isnan(value):
            values[f"{model} / {group}"] = value
        return value, ci

    fig = Figure(figsize=(max(5.0, 1.2 + 0.35 * len(groups) * len(results) + 0.3 * len(groups)), 4.2))
    ax = fig.add_subplot()
    _bars(ax, groups, results, point)
    if summary_keys:
        ax.axvline(len(names) - 0.5, color="0.45", linewidth=0.8)
    ax.set_ylabel(label, fontsize=9)
    ax.set_title(f"{label} per class" + (" and " + ", ".join(summary_keys) if summary_keys else ""), fontsize=9)
    ax.legend(loc="upper right", fontsize=7)
    fig.suptitle(title if title is not None else f"{label} per class (error bars: 95 % CI)", fontsize=10)
    return save_figure(fig, path, values)


@dataclass(frozen=True)
class TradeoffPoint:
    """One model on the quality-vs-cost plane.

    ``kind`` is ``"base"``, ``"stage"`` (a compressed stage of the run) or ``"sweep"`` (a point
    of a pruning sweep, drawn small and grey). ``macs`` and ``ort_ms`` are costs (``None`` when
    not measured). ``score`` is the task's headline metric (balanced accuracy, mean Dice) and
    ``worst`` its worst-class metric (worst-class sensitivity, worst-class Dice); the ``*_ci``
    fields are their ``(low, high)`` bootstrap intervals or ``None``. ``colour`` overrides the
    default colour of the kind.
    """

    label: str
    kind: Literal["base", "stage", "sweep"]
    macs: float | None
    ort_ms: float | None
    score: float | None
    worst: float | None
    score_ci: tuple[float, float] | None = None
    worst_ci: tuple[float, float] | None = None
    colour: str | None = None


def _frontier(xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
    """Pareto frontier: points no other point beats on both lower cost and higher metric."""
    order = sorted(range(len(xs)), key=lambda i: (xs[i], -ys[i]))
    fx: list[float] = []
    fy: list[float] = []
    for i in order:
        if not fy or ys[i] > fy[-1]:
            fx.append(xs[i])
            fy.append(ys[i])
    return fx, fy


def plot_tradeoff(
    points: Sequence[TradeoffPoint],
    path: str | os.PathLike[str],
    *,
    x: Literal["macs", "ort_ms"] = "macs",
    labels: tuple[str, str] = ("score", "worst-class score"),
    title: str | None = None,
) -> Path:
    """The headline metric (left) and the worst-class metric (right) against MACs or ONNX Runtime latency.

    ``labels`` name the two panels' metrics (``("mean Dice", "worst-class Dice")``).

    Base and compressed stages are large labelled markers with their 95 % intervals; sweep
    points are small grey dots. The dashed line joins the Pareto frontier over all drawn points
    (no point is both cheaper and better). Points without the cost or the metric are left out
    of that panel. The cost axis turns logarithmic when it spans more than 20×. Returns the path.

    Raises:
        DataError: if ``x`` is not ``"macs"``/``"ort_ms"``, no point has both the cost and a
            metric, or the suffix is not .png/.pdf/.svg.
    """
    if x not in ("macs", "ort_ms"):
        raise DataError(f"plot_tradeoff: x must be 'macs' or 'ort_ms', got {x!r}")
    scale, xlabel = ((1e6, "MACs per image (millions)") if x == "macs"
                     else (1.0, "ONNX Runtime latency (ms per image, median)"))
    panels = (("score", labels[0]), ("worst", labels[1]))
    usable = [p for p in points if getattr(p, x) is not None
              and any(getattr(p, metric) is not None for metric, _ in panels)]
    if not usable:
        raise DataError(f"plot_tradeoff: no point has both {x} and a metric to plot")
    costs = [float(getattr(p, x)) / scale for p in usable]
    fig = Figure(figsize=(10.0, 4.2))
    axes = fig.subplots(1, 2)
    stage_index = 0
    colours: dict[str, str] = {}
    for p in usable:
        if p.kind == "stage":
            stage_index += 1
        colours[p.label] = p.colour or (model_colour(0) if p.kind == "base" else _SWEEP_COLOUR if p.kind == "sweep"
                                        else model_colour(stage_index))
    for ax, (metric, ylabel) in zip(axes, panels):
        xs: list[float] = []
        ys: list[float] = []
        lows: list[float] = []
        for p, cost in zip(usable, costs):
            value = getattr(p, metric)
            if value is None:
                continue
            xs.append(cost)
            ys.append(float(value))
            if p.kind == "sweep":
                ax.scatter([cost], [value], s=18, color=colours[p.label], zorder=3)
                continue
            err = _interval(getattr(p, f"{metric}_ci"), float(value))
            if err is not None:
                lows.append(float(value) - err[0])
            ax.errorbar([cost], [value], yerr=None if err is None else np.array(err).reshape(2, 1),
                        fmt="o" if p.kind == "base" else "D", markersize=8, color=colours[p.label],
                        ecolor=colours[p.label], elinewidth=1.2, capsize=3, zorder=4, label=p.label)
            ax.annotate(p.label, (cost, value), xytext=(6, 6), textcoords="offset points", fontsize=7,
                        color="0.2")
        if len(xs) >= 2:
            fx, fy = _frontier(xs, ys)
            ax.plot(fx, fy, linestyle="--", color="0.35", linewidth=1.0, zorder=2, label="frontier")
        if any(p.kind == "sweep" for p in usable):
            ax.scatter([], [], s=18, color=_SWEEP_COLOUR, label="sweep points")
        if xs and min(xs) > 0 and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.set_ylim(min([0.5, *(y - 0.05 for y in ys), *(low - 0.02 for low in lows)]), 1.02)
        ax.grid(True, linewidth=0.4, alpha=0.5)
        ax.tick_params(labelsize=8)
    legend_ax = next((ax for ax in axes if ax.get_legend_handles_labels()[1]), None)
    if legend_ax is not None:
        legend_ax.legend(loc="lower right", fontsize=7)
    default = ("Quality vs MACs" if x == "macs" else "Quality vs measured latency") + " (error bars: 95 % CI)"
    fig.suptitle(title if title is not None else default, fontsize=10)
    return save_figure(fig, path).path


def _median(entry: BenchEntry, runtime: str) -> float | None:
    stats = entry.latency_ms.get(runtime)
    return stats.median_ms if stats is not None else None


def _bytes(entry: BenchEntry, key: str) -> float | None:
    value = getattr(entry, key)
    return float(value) if value is not None else None


def _bar_group(ax: Any, groups: Sequence[str], models: Sequence[str], values: Mapping[tuple[str, str], float],
               colours: Mapping[str, str], unit: str, words: tuple[str, str],
               ratios: Mapping[tuple[str, str], float]) -> None:
    """Grouped bars (groups on x, one bar per model that has a value), labelled with value and ratio.

    The ratio is ``ratios[(group, model)]`` when given, else the first model's value over this one.
    """
    width = 0.8 / len(models)
    top = max(values.values(), default=1.0)
    for j, model in enumerate(models):
        labelled = False
        for g, group in enumerate(groups):
            value = values.get((group, model))
            if value is None:
                continue
            pos = g - 0.4 + width * (j + 0.5)
            ax.bar(pos, value, width, color=colours[model], label=None if labelled else model)
            labelled = True
            reference = values.get((group, models[0]))
            ratio = ratios.get((group, model)) or (reference / value if j > 0 and reference and value > 0 else None)
            text = f"{value:.3g} {unit}"
            if j > 0 and ratio:
                text += f"\n{ratio:.2f}×\n{words[0]}" if ratio >= 1 else f"\n{1 / ratio:.2f}×\n{words[1]}"
            ax.text(pos, value + 0.01 * top, text, ha="center", va="bottom", fontsize=6.5, color="0.15",
                    linespacing=1.1)
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_ylim(0.0, top * 1.45)  # headroom for the three-line labels and the legend
    ax.grid(True, axis="y", linewidth=0.4, alpha=0.5)
    ax.tick_params(axis="y", labelsize=8)


def _latency_panel(ax: Any, models: Sequence[str], values: Mapping[str, float], colours: Mapping[str, str],
                   reference: str, ratios: Mapping[str, float]) -> dict[str, float]:
    """One bar per model on its own linear axis, labelled with the value and the speed-up against ``reference``."""
    top = max(values.values())
    shown: dict[str, float] = {}
    for i, model in enumerate(models):
        value = values[model]
        ax.bar(i, value, 0.7, color=colours[model], label=model)
        ref = values.get(reference)
        ratio = ratios.get(model) or (ref / value if model != reference and ref and value > 0 else None)
        text = f"{value:.3g} ms"
        if model != reference and ratio:
            shown[model] = ratio
            text += f"\n{ratio:.2f}×\nfaster" if ratio >= 1 else f"\n{1 / ratio:.2f}×\nslower"
        ax.text(i, value + 0.01 * top, text, ha="center", va="bottom", fontsize=6.5, color="0.15", linespacing=1.1)
    ax.set_xticks(range(len(models)), [textwrap.fill(m, 16) for m in models], fontsize=7)
    ax.set_ylim(0.0, top * 1.35)  # headroom for the three-line labels
    ax.set_ylabel("ms per image (median)", fontsize=9)
    ax.grid(True, axis="y", linewidth=0.4, alpha=0.5)
    ax.tick_params(axis="y", labelsize=8)
    return shown


def plot_latency_and_size(
    models: Mapping[str, BenchEntry | Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    colours: Mapping[str, str] | None = None,
    speedups: Mapping[str, Mapping[str, float]] | None = None,
    title: str | None = None,
) -> Plotted:
    """Median latency, one panel per runtime, and file sizes, labelled with the ratio to the first model.

    ``models`` maps a label to a :class:`~medprune.compress.latency.BenchEntry` (a ``bench.json``
    model entry given as a dict is read with ``BenchEntry.from_dict``): its ``latency_ms`` per
    runtime, ``file_bytes`` and ``onnx_bytes``; the first is the
    reference, so every other bar reads "2.30× faster" / "3.08× smaller" against it. PyTorch and
    ONNX Runtime each get their own panel and linear axis — their times differ by up to an order
    of magnitude, and on one axis the fast runtime's bars were unreadable. An entry with only ONNX
    Runtime figures (an INT8 model) appears only in that panel. ``colours`` maps labels to
    colours (default: :func:`model_colour` by order). ``speedups`` maps a label to
    ``{"torch": x, "onnxruntime": y}`` speed-ups printed instead of the ratio of the medians
    (``bench.json``'s ``speedup``, so figure and text agree).

    Returns a :class:`~medprune.report.plots.Plotted` whose panels are the latency panels that
    have a measurement, titled "PyTorch latency" / "ONNX Runtime latency", then "Size on disk";
    ``values`` holds ``"<label> / <runtime> ms"`` and ``"<label> / <runtime> speed-up"``.

    Raises:
        DataError: if ``models`` is empty or no entry has a latency or size, or the suffix is not
            .png/.pdf/.svg.
    """
    if not models:
        raise DataError("plot_latency_and_size: no models to plot")
    try:
        entries = {label: e if isinstance(e, BenchEntry) else BenchEntry.from_dict(e) for label, e in models.items()}
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"plot_latency_and_size: not a bench.json model entry: {err}") from None
    labels = list(entries)
    palette = {label: (colours or {}).get(label, model_colour(i)) for i, label in enumerate(labels)}
    runtimes = (("torch", "PyTorch"), ("onnxruntime", "ONNX Runtime"))
    sizes = (("file_bytes", "PyTorch file"), ("onnx_bytes", "ONNX file"))
    latency = {key: {label: v for label, entry in entries.items() if (v := _median(entry, key)) is not None}
               for key, _ in runtimes}
    size = {(name, label): v / _MIB for label, entry in entries.items() for key, name in sizes
            if (v := _bytes(entry, key)) is not None}
    measured = [(key, name) for key, name in runtimes if latency[key]]
    if not measured and not size:
        raise DataError("plot_latency_and_size: no model has a measured latency or a file size")
    widths = [1.2 + 0.85 * len(latency[key]) for key, _ in measured] or [3.0]
    widths.append(1.6 + 0.5 * len(labels) * len(sizes))
    fig = Figure(figsize=(max(8.0, sum(widths) + 0.8), 4.4))
    axes = fig.subplots(1, len(widths), gridspec_kw={"width_ratios": widths}, squeeze=False).ravel()
    values: dict[str, float] = {}
    if not measured:
        axes[0].text(0.5, 0.5, "no latency measured", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    for ax, (key, name) in zip(axes, measured):
        present = [label for label in labels if label in latency[key]]
        ratios = {label: float(per[key]) for label, per in (speedups or {}).items()
                  if per.get(key) is not None and label != labels[0]}
        shown = _latency_panel(ax, present, latency[key], palette, labels[0], ratios)
        values.update({f"{label} / {key} ms": v for label, v in latency[key].items()})
        values.update({f"{label} / {key} speed-up": r for label, r in shown.items()})
        ax.set_title(f"{name} latency", fontsize=9)
    ax = axes[-1]
    present = [label for label in labels if any(lbl == label for _, lbl in size)]
    if not present:
        ax.text(0.5, 0.5, "no size measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        used = [n for _, n in sizes if any(grp == n for grp, _ in size)]
        # The reference (first model) anchors the ratios even when it lacks one of the groups.
        _bar_group(ax, used, [labels[0]] + [lbl for lbl in present if lbl != labels[0]], size, palette,
                   "MiB", ("smaller", "larger"), {})
        ax.set_ylabel("MiB", fontsize=9)
        ax.set_title("Size on disk", fontsize=9)
        ax.legend(loc="upper right", fontsize=7)
    fig.suptitle(title if title is not None else "Measured latency and size (labels: ratio to base)", fontsize=10)
    return save_figure(fig, path, values)
