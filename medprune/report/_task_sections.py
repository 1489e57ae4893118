"""The report sections that differ by task, one function registered per task name.

Classification evaluations hold class probabilities (``predictions.csv``), so its sections are
the ROC and reliability diagrams of every model and the confusion matrices; segmentation
evaluations hold per-image scores, so its sections are each class's Dice with its interval (and
the mean and worst-class Dice built on it) and the overlays each evaluation drew. The report
calls :func:`evaluation_sections` and never branches on the task — like
:data:`medprune.report.evaluation.EVALUATION_PLOTS`, a new task registers its own function here.
"""

from __future__ import annotations

from collections.abc import Callable

from medprune.registry import Registry
from medprune.report._html_parts import colours, gallery, level, note, plot
from medprune.report._run_dir import RunData, interval, number, per_class_value
from medprune.report.plots import plot_reliability, plot_roc_comparison
from medprune.report.run_plots import plot_metric_by_class

__all__ = ["EVALUATION_SECTIONS", "SECTION_PLOTS", "evaluation_sections"]

EVALUATION_SECTIONS = Registry("report section")
"""Task name → ``fn(data, suffix) -> list of HTML chunks`` (each opening with its ``<h3>``)."""

#: Figures the task sections may draw beside report.html (removed before each report is written).
SECTION_PLOTS = ("report_roc.png", "report_reliability.png", "report_class_metric.png")

_Section = Callable[[RunData, str], list[str]]


def evaluation_sections(data: RunData, suffix: str) -> list[str]:
    """The sections of ``data``'s task; ``suffix`` ends every figure title (" — SYNTHETIC phantom data")."""
    section: _Section = EVALUATION_SECTIONS.get(data.task.name)
    return section(data, suffix)


# ----------------------------------------------------------------------------- classification


def _roc_classes(data: RunData) -> list[str]:
    """Two classes: the minority one (its curve mirrors the other's); more: every class."""
    if len(data.classes) > 2:
        return list(data.classes)
    supports = [(per_class_value(data.base, c, "support") or 0.0, -i, c) for i, c in enumerate(data.classes)]
    return [min(supports)[2]]


def _roc(data: RunData, suffix: str) -> str:
    models = {m.label: m.predictions for m in data.models if m.predictions is not None}
    if not models:
        return note("ROC: not drawn (no predictions.csv beside the base or a compressed model's metrics.json).")
    missing = [m.label for m in data.models if m.predictions is None]
    classes = _roc_classes(data)
    auc_ci = {m.label: {c: interval(m.metrics, f"per_class.{c}.auc") for c in classes} for m in data.models}
    which = (f"the minority class, {classes[0]} (with two classes the other curve is its mirror)"
             if len(classes) == 1 else "each class against the rest")
    caption = (f"ROC of {which}, every model on the same axes, from each model's predictions.csv. Legend: AUC "
               f"(scikit-learn) and its {level(data.base)} bootstrap interval from metrics.json."
               + (f" No predictions.csv for: {', '.join(missing)}." if missing else ""))
    return plot(lambda: plot_roc_comparison(models, classes, data.run_dir / "report_roc.png", auc_ci=auc_ci,
                                            colours=colours(data), title=f"ROC, base vs compressed{suffix}"),
                "ROC", caption)


def _reliability(data: RunData, suffix: str) -> str:
    chosen = [data.base_model] + ([data.final] if data.final is not None else [])
    models = {m.label: m.predictions for m in chosen if m.predictions is not None}
    if not models:
        return note("Reliability diagram: not drawn (no predictions.csv for the base or the final model).")
    ece = {m.label: (number((m.metrics or {}).get("ece")), interval(m.metrics, "ece")) for m in chosen}
    caption = ("Accuracy against confidence, base vs the final compressed model: on the diagonal the probabilities "
               "can be read as such; below it the model is over-confident. Legend: ECE and its interval from "
               "metrics.json (the table has every model's).")
    return plot(lambda: plot_reliability(models, data.run_dir / "report_reliability.png", ece=ece,
                                         colours=colours(data), title=f"Calibration{suffix}"),
                "Reliability diagram", caption)


@EVALUATION_SECTIONS.register("classification")
def _classification(data: RunData, suffix: str) -> list[str]:
    return ["<h3>ROC</h3>\n" + _roc(data, suffix),
            "<h3>Calibration</h3>\n" + _reliability(data, suffix),
            "<h3>Confusion matrices</h3>\n" + gallery(data, "confusion_matrix.png", "Confusion matrix")]


# ----------------------------------------------------------------------------- segmentation


def _class_metric(data: RunData, suffix: str) -> str:
    """The headline per-class metric (Dice) of every class and model, then the summaries built on it."""
    lead = data.headline
    results = {m.label: m.metrics for m in data.models if m.metrics is not None}
    summaries = [(data.words(spec), spec.key) for spec in (lead.score, lead.gate)]
    caption = (f"{lead.per_class.label} of every class for every model, then the {summaries[0][0]} and "
               f"{summaries[1][0]} built on it. Error bars: the {level(data.base)} "
               f"{data.base.get('bootstrap_unit', 'patient')}-level bootstrap intervals of metrics.json — where they "
               "overlap, the test set cannot tell the models apart. For scale: a trivial model that calls every "
               "pixel background scores Dice 0 on every other class, so its mean and worst-class Dice over the "
               "foreground classes are 0.")
    return plot(lambda: plot_metric_by_class(results, data.classes, data.run_dir / "report_class_metric.png",
                                             metric=lead.per_class.key, label=lead.per_class.label,
                                             summaries=summaries,
                                             title=f"{lead.per_class.label} per class, base vs compressed{suffix}"),
                f"{lead.per_class.label} per class", caption)


def _per_size(data: RunData) -> str:
    """Recall by plaque size (arc width) for every model, with its interval: the small plaques are the
    reason for the 12 and 16 px anchors."""
    def cell(metrics: dict, name: str, row: dict) -> str:
        value = row.get("recall")
        ci = (metrics.get("ci") or {}).get(f"per_size.{name}.recall")
        shown = "n/a" if value is None else f"{value:.3f}"
        if ci:
            shown += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
        return f"<td>{shown} ({row.get('n_detected', 0)}/{row.get('n_plaques', 0)})</td>"

    models = [m for m in data.models if m.metrics and m.metrics.get("per_size")]
    if not models:
        return note("no per-size recall in metrics.json")
    first = models[0].metrics["per_size"]
    head = "".join("<th>{} ({:g}&ndash;{:g}&deg;)</th>".format(name, row.get("min_deg") or 0, row.get("max_deg") or 360)
                   for name, row in first.items())
    rows = "".join("<tr><th>{}</th>{}</tr>".format(m.label, "".join(cell(m.metrics, n, r)
                                                                    for n, r in m.metrics["per_size"].items()))
                   for m in models)
    return (note("Recall of the test plaques by arc width (detected / plaques); intervals are pullback-level "
                 "bootstrap intervals.") + f"<table><tr><th>model</th>{head}</tr>{rows}</table>")


@EVALUATION_SECTIONS.register("detection")
def _detection(data: RunData, suffix: str) -> list[str]:
    lead = data.headline
    return [f"<h3>{lead.per_class.label}</h3>\n" + _class_metric(data, suffix),
            "<h3>Recall by plaque size</h3>\n" + _per_size(data),
            "<h3>Detections</h3>\n" + note("Each model's overlays.png, drawn by its evaluation: test frames with "
                                           "the most plaque missed, the best found, and one without plaque; ground "
                                           "truth in green, detections at the score threshold in orange.")
            + gallery(data, "overlays.png", "Detections")]


@EVALUATION_SECTIONS.register("segmentation")
def _segmentation(data: RunData, suffix: str) -> list[str]:
    lead = data.headline
    return [f"<h3>{lead.per_class.label} per class</h3>\n" + _class_metric(data, suffix),
            "<h3>Overlays</h3>\n" + note("Each model's overlays.png, drawn by its evaluation: a few test images "
                                         "chosen by that model's Dice (its worst and best, and one without lesion), "
                                         "with the ground truth and the prediction over each.")
            + gallery(data, "overlays.png", "Overlays")]
