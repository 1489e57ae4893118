"""Training curves of a run: base training and every fine-tuning, one timeline, outliers marked.

The trainer logs one JSON line per epoch to ``metrics.jsonl`` (``train_loss``, ``val_loss``, ``lr``
and the task's validation numbers — ``val_balanced_accuracy``, ``val_worst_class_sensitivity``,
``val_sensitivity_<class>`` for classification; ``val_mean_dice``, ``val_worst_class_dice``,
``val_dice_<class>`` for segmentation): the base model's beside its ``metrics.json``, each
fine-tuning in a sub-folder of its stage folder (``compressed/finetune/``,
``compressed/finetune_step2/``, ``quantized/finetune/``).
:func:`read_training_log` reads one such file; :func:`plot_training_curves` draws them one after
the other on a shared epoch axis — losses on a log scale, so a validation loss that explodes to
97.5 for one epoch and ends near 0.3 is visible, and marked — and :func:`loss_outliers` is the
rule both the figure and the report's warnings use to call an epoch an outlier.

Example::

    logs = [read_training_log(run / "metrics.jsonl", "base"),
            read_training_log(run / "compressed/finetune/metrics.jsonl", "pruned: finetune")]
    plot_training_curves(logs, run / "report_training_curves.png")
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medprune.errors import DataError
from medprune.report._task_metrics import metric_name
from medprune.report.plots import Plotted, save_figure

__all__ = ["TrainingLog", "read_training_log", "loss_outliers", "plot_training_curves", "validation_keys",
           "OUTLIER_FACTOR", "LOSS_KEYS"]

#: An epoch's loss is an outlier when it exceeds this many times the median loss of its training.
OUTLIER_FACTOR = 10.0
#: Loss series of a log and how the figure names them.
LOSS_KEYS = (("train_loss", "train loss"), ("val_loss", "val loss"))
_LINESTYLES = {"train_loss": "-", "val_loss": "--"}
#: Line styles of the validation metrics, in order, and how the panel title names them.
_METRIC_STYLES = (("-", "solid"), (":", "dotted"), ("-.", "dash-dot"), ((0, (5, 1, 1, 1, 1, 1)), "dash-dot-dot"))


@dataclass(frozen=True)
class TrainingLog:
    """The per-epoch records of one training (``metrics.jsonl``), labelled for the report."""

    label: str
    path: Path
    epochs: list[dict[str, Any]] = field(default_factory=list)

    def series(self, key: str) -> list[float | None]:
        """``key`` of every epoch, ``None`` where absent; NaN/inf are kept (they are the news)."""
        out: list[float | None] = []
        for record in self.epochs:
            value = record.get(key)
            out.append(float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None)
        return out


def read_training_log(path: str | os.PathLike[str], label: str) -> TrainingLog:
    """Read a trainer's ``metrics.jsonl`` (one JSON object per line; blank lines are skipped).

    Raises:
        DataError: if the file cannot be read or a line is not a JSON object (names file and line).
    """
    source = Path(path)
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{source}: could not be read: {err}") from None
    epochs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{source}: line {number} is not JSON: {err}") from None
        if not isinstance(record, dict):
            raise DataError(f"{source}: line {number} is not a JSON object")
        epochs.append(record)
    return TrainingLog(label=label, path=source, epochs=epochs)


def loss_outliers(values: Sequence[float | None], factor: float = OUTLIER_FACTOR) -> list[int]:
    """Indices of epochs whose loss is NaN/inf, or more than ``factor`` × the median of the finite losses.

    The median needs at least three finite values; with fewer only non-finite values count.
    ``None`` (not logged) is never an outlier. Example: ``loss_outliers([0.7, 97.5, 0.4, 0.3])``
    is ``[1]``.
    """
    finite = [v for v in values if v is not None and math.isfinite(v)]
    median = float(np.median(finite)) if len(finite) >= 3 else None
    out = []
    for i, v in enumerate(values):
        if v is None:
            continue
        if not math.isfinite(v) or (median is not None and median > 0 and v > factor * median):
            out.append(i)
    return out


def validation_keys(logs: Sequence[TrainingLog]) -> list[str]:
    """The ``val_*`` keys the logs hold a number for, other than the validation loss, in first-seen order."""
    keys: dict[str, None] = {}
    for log in logs:
        for record in log.epochs:
            for key, value in record.items():
                if key.startswith("val_") and key != "val_loss" and isinstance(value, (int, float)) \
                        and not isinstance(value, bool):
                    keys.setdefault(key)
    return list(keys)


def _segment_label(label: str, limit: int = 28) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def plot_training_curves(
    logs: Sequence[TrainingLog],
    path: str | os.PathLike[str],
    *,
    colours: Mapping[str, str] | None = None,
    metrics: Sequence[tuple[str, str]] | None = None,
    factor: float = OUTLIER_FACTOR,
    title: str | None = None,
) -> Plotted:
    """Loss (log scale) and validation metrics per epoch.

    ``metrics`` are the validation series of the lower panel as ``(key, name)`` —
    ``("val_mean_dice", "val mean Dice")``; by default every ``val_*`` number the logs hold
    (:func:`validation_keys`), named as the task that has the metric labels it. The report passes
    its task's selection metrics that the logs hold.

    The logs are drawn one after the other on one epoch axis, in the given order (base training
    first, then each fine-tuning), separated by vertical lines and named at the top; each log has
    one colour (``colours[label]``, default the matplotlib cycle). Train loss is solid, val loss
    dashed; the metrics are solid, dotted, dash-dot, … in ``metrics`` order. The loss axis is
    logarithmic unless a loss is zero or negative; the metric axis spans [0, 1] unless a value lies
    outside. Outliers (:func:`loss_outliers`) are ringed in red and labelled with their value; a
    NaN/inf loss is marked at the top of the panel.

    ``values`` of the result: ``"<label> / epochs"`` and ``"<label> / <key> outliers"`` (counts).

    Raises:
        DataError: if no log has an epoch, or the suffix is not .png/.pdf/.svg.
    """
    usable = [log for log in logs if log.epochs]
    if not usable:
        raise DataError("plot_training_curves: no training log has an epoch to plot")
    if metrics is None:
        metrics = [(key, metric_name(key)) for key in validation_keys(usable)]
    styles = {key: _METRIC_STYLES[i % len(_METRIC_STYLES)] for i, (key, _) in enumerate(metrics)}
    metric_values: list[float] = []
    total = sum(len(log.epochs) for log in usable)
    fig = Figure(figsize=(min(16.0, max(8.0, 4.0 + 0.18 * total)), 7.0))
    loss_ax, metric_ax = fig.subplots(2, 1, sharex=True)
    values: dict[str, float] = {}
    positives, any_loss = True, False
    outlier_labelled = False
    offset = 0
    for j, log in enumerate(usable):
        colour = (colours or {}).get(log.label, f"C{j % 10}")
        n = len(log.epochs)
        xs = np.arange(offset + 1, offset + n + 1)
        values[f"{log.label} / epochs"] = float(n)
        for key, name in LOSS_KEYS:
            ys = log.series(key)
            if all(v is None for v in ys):
                continue
            shown = [(x, v) for x, v in zip(xs, ys) if v is not None and math.isfinite(v)]
            positives = positives and all(v > 0 for _, v in shown)
            any_loss = any_loss or bool(shown)
            loss_ax.plot([x for x, _ in shown], [v for _, v in shown], color=colour, linestyle=_LINESTYLES[key],
                         marker=".", markersize=4, linewidth=1.4, label=f"{log.label}: {name}")
            bad = loss_outliers(ys, factor)
            values[f"{log.label} / {key} outliers"] = float(len(bad))
            for i in bad:
                v = float(ys[i])  # type: ignore[arg-type]  # loss_outliers skips missing epochs
                kwargs = {} if outlier_labelled else {"label": f"loss outlier (> {factor:g}× median, or NaN)"}
                outlier_labelled = True
                if math.isfinite(v):
                    loss_ax.scatter([xs[i]], [v], s=90, facecolors="none", edgecolors="#c00000", linewidths=1.6,
                                    zorder=5, **kwargs)
                    loss_ax.annotate(f"{v:.3g}", (xs[i], v), xytext=(6, 0), textcoords="offset points",
                                     fontsize=7, color="#c00000", va="center")
                else:
                    loss_ax.scatter([xs[i]], [0.96], s=60, marker="x", color="#c00000", zorder=5,
                                    transform=loss_ax.get_xaxis_transform(), **kwargs)
                    loss_ax.annotate(str(v), (xs[i], 0.96), xycoords=loss_ax.get_xaxis_transform(),
                                     xytext=(6, 0), textcoords="offset points", fontsize=7, color="#c00000",
                                     va="center")
        for key, name in metrics:
            ys = log.series(key)
            shown = [(x, v) for x, v in zip(xs, ys) if v is not None and math.isfinite(v)]
            if shown:
                metric_values += [v for _, v in shown]
                metric_ax.plot([x for x, _ in shown], [v for _, v in shown], color=colour,
                               linestyle=styles[key][0], marker=".", markersize=4, linewidth=1.4,
                               label=f"{log.label}: {name}")
        for ax in (loss_ax, metric_ax):
            if offset:
                ax.axvline(offset + 0.5, color="0.45", linewidth=0.8, linestyle="-")
        loss_ax.text(offset + 0.6, 1.01, _segment_label(log.label), transform=loss_ax.get_xaxis_transform(),
                     fontsize=7, color=colour, rotation=20, ha="left", va="bottom")
        offset += n
    positives = positives and any_loss
    if positives:
        loss_ax.set_yscale("log")
    loss_ax.set_ylabel("loss" + (" (log scale)" if positives else ""), fontsize=8)
    loss_ax.set_title("Loss per epoch" + (" (log scale)" if positives else ""), fontsize=9, pad=22)
    metric_ax.set_ylabel("validation metric", fontsize=8)
    if all(0.0 <= v <= 1.0 for v in metric_values):
        metric_ax.set_ylim(-0.02, 1.02)
    names = [f"{name.removeprefix('val ')} ({styles[key][1]})" for key, name in metrics]
    metric_ax.set_title("Validation " + (", ".join(names) if names else "metrics: none logged"), fontsize=9)
    metric_ax.set_xlabel("epoch (base training, then each fine-tuning in pipeline order)", fontsize=8)
    for ax in (loss_ax, metric_ax):
        ax.grid(True, linewidth=0.4, alpha=0.5)
        ax.tick_params(labelsize=8)
        if ax.get_legend_handles_labels()[1]:
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False)
    fig.suptitle(title if title is not None else "Training curves", fontsize=10)
    return save_figure(fig, path, values)
