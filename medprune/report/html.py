"""The self-contained HTML report of ``medprune run``: what compression cost and what it bought.

:func:`write_report` reads a run directory (``runs/<name>/``: ``metrics.json`` of the base model,
``run.json``, each compressed stage's folder, ``export/export.json``, ``bench.json``,
``sweep/sweep.json``) and writes ``report.html`` — one file with inline CSS and every image
embedded as a base64 data URI, no script and no network access, so it can be mailed to a
reviewer or archived with the model. The figures are also kept as ``report_*.png`` beside it.

The report speaks its run's task (:class:`~medprune.tasks.Task`, from ``run.json``): the table's
rows are the task's summary and per-class metrics, the headline is its gate metric
("worst-class Dice 0.61 → 0.58"), the curves its selection metrics, and the sections that differ
by task (ROC, calibration and confusion matrices for classification; per-class Dice and overlays
for segmentation) come from :mod:`medprune.report._task_sections`, looked up by task name.

The report opens with a red banner for every model that failed its safety gate, a paragraph
computed from the numbers ("2.30× faster … balanced accuracy went from … the intervals overlap,
so this test set cannot show a difference") and the warnings a reader must not miss (a model
whose output collapsed, a compressed model that beats the base outside the intervals, an
unstable training, a class too small to judge, safety-gate findings — see
:mod:`medprune.report._warnings`); the same warnings are written to ``report_warnings.json``
beside the report as a list of ``{kind, model, message}``. Then a table of base vs every
compressed model (INT8 included) with 95 % intervals, the plots (per-class metrics, training
curves, the task's sections, quality vs cost, latency per runtime, kept channels), and what was
run on which machine. Only the base ``metrics.json`` is required; a missing optional file makes
its section say "not run". Example::

    from medprune.report import write_report
    write_report(Path("runs/thermography_demo"))   # → runs/thermography_demo/report.html
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medprune._io import atomic_write_json, atomic_write_text
from medprune.compress.latency import BenchEntry, LatencyStats
from medprune.metrics.summary import worst_class
from medprune.report._html_parts import colours, esc, fmt, fmt_ci, image, level, missing, note, plot, with_ci
from medprune.report._run_dir import (
    Gate,
    RunData,
    RunModel,
    ci_method,
    interval,
    load_run_dir,
    number,
    per_class_value,
    small_sample,
)
from medprune.report._task_sections import SECTION_PLOTS, evaluation_sections
from medprune.report.degradation_plots import degradation_section
from medprune.report._warnings import DEGENERATE_OUTPUT, ReportWarning, collect_warnings
from medprune.report.curves import OUTLIER_FACTOR, TrainingLog, plot_training_curves, validation_keys
from medprune.report.run_plots import (
    TradeoffPoint,
    model_colour,
    plot_latency_and_size,
    plot_per_class_metrics,
    plot_tradeoff,
)
from medprune.tasks import MetricSpec

__all__ = ["write_report"]

logger = logging.getLogger(__name__)

_MIB = 2.0**20
_PLOTS = ("report_per_class.png", "report_tradeoff_macs.png", "report_tradeoff_latency.png",
          "report_latency_size.png", "report_training_curves.png", *SECTION_PLOTS)
#: How many validation metrics (the task's selection metrics the logs hold) the curves draw.
_CURVE_METRICS = 2
#: File beside report.html listing the warnings as ``[{kind, model, message}, ...]``.
WARNINGS_FILE = "report_warnings.json"
_WARNING_TITLES = {"gate_failed": "Safety gate failed", "gate_accepted_unsafe": "Accepted despite a failed safety gate",
                   "single_class": "Predicts one class only", "missed_class": "Never finds a class", "no_detections": "Detects nothing",
                   "compressed_beats_base": "Compressed beats base", "unstable_training": "Unstable training",
                   "small_sample": "Too small to judge", "gate_warning": "Safety gate warning"}
#: Footnote marks of intervals that are not a plain percentile bootstrap, with their legend.
_CI_MARKS = {
    "clopper_pearson": ("†", "Clopper–Pearson exact binomial interval"),
    "wilson": ("‡", "Wilson score interval"),
    "percentile_bootstrap_degenerate": ("§", "percentile bootstrap of zero width (every resample gave the same "
                                              "value): not certainty — the data cannot show the uncertainty"),
}
_GATE_WORDS = {"passed": "passed", "failed": "FAILED — not for deployment",
               "accepted_unsafe": "failed, accepted despite it (--accept-unsafe)", "off": "off (not checked)"}
_RUNTIMES = (("torch", "PyTorch"), ("onnxruntime", "ONNX Runtime"))

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.1em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
.sub{color:#666;margin-top:0}
.banner{background:#b00020;color:#fff;font-weight:bold;padding:.8em 1em;border-radius:4px;font-size:1.1em}
.gate{background:#b00020;color:#fff;padding:.8em 1em;border-radius:4px;margin:.6em 0}
.gate.unsafe{background:#e07b00}.gate strong{font-size:1.15em}.gate ul{margin:.3em 0 0}
.warnings{background:#fff4e5;border-left:4px solid #e07b00;padding:.5em 1em;margin-top:.8em}
.warnings h3{margin:.2em 0}.warnings li{margin:.25em 0}
.ok{background:#eaf6ec;border-left:4px solid #55a868;padding:.5em 1em;margin-top:.8em}
th.failed{background:#b00020;color:#fff}th.unsafe{background:#e07b00;color:#fff}
.tag{display:block;font-size:.8em;font-weight:normal}
.summary{background:#f4f6fa;border-left:4px solid #4c72b0;padding:.8em 1em}
.note{color:#666;font-style:italic}
.problem{color:#b00020}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left}
tr.section th{background:#eef1f6;text-align:left}
.ci{color:#666;font-size:.85em;white-space:nowrap}
.worse{background:#fde2e1}.better{background:#e2f3e5}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}
.gallery{display:flex;flex-wrap:wrap;gap:1em}.gallery figure{flex:1 1 300px}
"""


# ----------------------------------------------------------------------------- formatting


def _mib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / _MIB:.3g} MiB"


def _count(n: float | None) -> str:
    if n is None:
        return "n/a"
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f}"


def _ms(n: float | None) -> str:
    return "n/a" if n is None else f"{n:.3g} ms"


def _times(ratio: float, better: str, worse: str) -> str:
    """``2.30× faster`` / ``1.18× slower``: ratios below 1 are turned around so they read naturally."""
    if abs(ratio - 1.0) < 0.005:
        return "unchanged (1.00×)"
    return f"{ratio:.2f}× {better}" if ratio > 1 else f"{1 / ratio:.2f}× {worse}"


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _row_label(spec: MetricSpec) -> str:
    """A table row's name: the metric's label, saying when lower is better (``HD95 (px; lower is better)``)."""
    if spec.higher_is_better:
        return spec.label
    if spec.label.endswith(")"):
        return spec.label[:-1] + "; lower is better)"
    return f"{spec.label} (lower is better)"


# ----------------------------------------------------------------------------- numbers


def _latency(entry: BenchEntry | None, runtime: str) -> LatencyStats | None:
    return entry.latency_ms.get(runtime) if entry is not None else None


def _median(entry: BenchEntry | None, runtime: str) -> float | None:
    stats = _latency(entry, runtime)
    return None if stats is None else number(stats.median_ms)


def _cost(data: RunData, model: RunModel) -> dict[str, float | None]:
    """Parameters, MACs and sizes of ``model`` from bench.json, else from the pruning summary."""
    entry = data.bench_entry(model.bench_key)
    cost = {name: number(getattr(entry, name)) if entry is not None else None
            for name in ("params", "macs", "file_bytes", "onnx_bytes")}
    if model.kind == "int8":
        return cost
    stage = model if model.kind == "stage" else None
    summaries = [stage.prune_summary] if stage is not None else [s.prune_summary for s in data.stages]
    for summary in filter(None, summaries):
        which = "after" if stage is not None else "before"
        for name in ("params", "macs"):
            if cost[name] is None:
                cost[name] = number(summary.get(f"{name}_{which}"))
    return cost


def _summary(data: RunData) -> list[str]:
    """The plain-language paragraph, one sentence per item."""
    base, final = data.base, data.final
    ci_level = level(base)
    sentences = []
    n, patients = base.get("n_samples"), base.get("n_patients")
    split = base.get("split", "test")
    if n is not None:
        unit = base.get("bootstrap_unit", "patient")
        boot = (f"intervals are {ci_level} {unit}-level bootstrap intervals" if number(base.get("n_bootstrap"))
                else "no confidence intervals were computed (n_bootstrap 0), so no difference below can be judged")
        sentences.append(f"All metrics are measured on the {split} split ({n} images"
                         + (f" of {patients} patients" if patients is not None else "") + f"); {boot}.")
    if final is None or final.metrics is None:
        reason = "no compression stage ran" if final is None else f"the {final.label} model was not evaluated"
        sentences.append(f"This report describes the base model only: {reason}.")
        return sentences

    key = final.bench_key
    base_cost, final_cost = _cost(data, data.base_model), _cost(data, final)
    if final.gate is not None and final.gate.unsafe:
        verdict = ("FAILED its safety gate and is not for deployment" if final.gate.status == "failed" else
                   "failed its safety gate and was accepted despite it (--accept-unsafe)")
        sentences.append(f"The final compressed model, {final.label}, {verdict}: {final.gate.reason()}.")
    gains = []
    ort, torch_ = data.speedup(key, "onnxruntime"), data.speedup(key, "torch")
    machine = data.bench.machine.get("processor") if data.bench is not None else None
    where = f"on this CPU ({machine}; " if machine else "on the benchmark CPU ("
    base_entry, final_entry = data.bench_entry(data.base_model.bench_key), data.bench_entry(key)
    if ort is not None:
        text = (f"{_times(ort, 'faster', 'slower')} {where}ONNX Runtime, {_ms(_median(base_entry, 'onnxruntime'))}"
                f" → {_ms(_median(final_entry, 'onnxruntime'))} per image")
        gains.append(text + (f"; PyTorch {_times(torch_, 'faster', 'slower')})" if torch_ is not None else ")"))
    elif torch_ is not None:
        gains.append(f"{_times(torch_, 'faster', 'slower')} {where}PyTorch, {_ms(_median(base_entry, 'torch'))} → "
                     f"{_ms(_median(final_entry, 'torch'))} per image)")
    if base_cost["file_bytes"] and final_cost["file_bytes"]:
        gains.append(f"{_times(base_cost['file_bytes'] / final_cost['file_bytes'], 'smaller', 'larger')} "
                     f"({_mib(base_cost['file_bytes'])} → {_mib(final_cost['file_bytes'])})")
    macs = ""
    if base_cost["macs"] and final_cost["macs"]:
        ratio = base_cost["macs"] / final_cost["macs"]
        macs = (f"{ratio:.2f}× fewer MACs" if ratio >= 1.005 else "unchanged MACs" if ratio > 0.995
                else f"{1 / ratio:.2f}× more MACs")
        macs += f" ({_count(base_cost['macs'])} → {_count(final_cost['macs'])})"
    if gains:
        sentences.append(f"The final compressed model, {final.label}, is " + " and ".join(gains)
                         + (f", with {macs}" if macs else "") + ".")
    elif macs:
        sentences.append(f"The final compressed model, {final.label}, needs {macs}.")
    others = [s.label for s in data.stages if s is not final]
    if others:
        several = len(others) > 1
        sentences.append(f"The other compressed stage{'s' if several else ''} ({', '.join(others)}) "
                         f"{'are' if several else 'is'} compared in the table below.")
    if data.bench is None:
        sentences.append("Latency and file size were not measured (bench not run).")
    elif final_entry is None:
        sentences.append(f"Latency and file size of {final.label} were not measured "
                         f"(bench.json has no '{key}' entry).")

    lead = data.headline
    score = lead.score.key
    values = [number(m.get(score)) for m in (base, final.metrics)]
    cis = [interval(m, score) for m in (base, final.metrics)]
    text = f"{lead.score.label} went from {with_ci(values[0], cis[0])} to {with_ci(values[1], cis[1])}"
    sentences.append(text + _judgement(values[1], cis[0], cis[1], ci_level) + ".")

    metric, word = lead.per_class.key, data.words(lead.per_class)
    worst = _worst_class(final.metrics, data)
    if worst is not None:
        key_ci = f"per_class.{worst}.{metric}"
        before = per_class_value(base, worst, metric)
        after = per_class_value(final.metrics, worst, metric)
        text = (f"The compressed model's worst class is {worst}: its {word} went from "
                f"{with_ci(before, interval(base, key_ci))} to {with_ci(after, interval(final.metrics, key_ci))}")
        text += _judgement(after, interval(base, key_ci), interval(final.metrics, key_ci), ci_level)
        base_worst = _worst_class(base, data)
        if base_worst is not None and base_worst != worst:
            text += (f" (the base model's worst class was {base_worst}, {word} "
                     f"{fmt(per_class_value(base, base_worst, metric))})")
        sentences.append(text + ".")

    for model in data.compressed:
        if model is final and model.gate is not None and model.gate.unsafe:
            continue  # said first, above
        if model.gate is not None:
            sentences.append(f"Safety gate of {model.label}: {_gate_text(model.gate)}.")
        elif legacy := (model.summary or {}).get("safety_gate"):
            sentences.append(f"Safety gate of {model.label}: {str(legacy).rstrip('.')}.")
    if data.synthetic:
        sentences.append("All numbers describe synthetic phantom data, not clinical performance.")
    return sentences


def _gate_text(gate: Gate) -> str:
    """``FAILED — not for deployment: <reason>`` (an ``off`` gate: its own message)."""
    if gate.status == "off":
        return gate.message or _GATE_WORDS["off"]
    return f"{_GATE_WORDS[gate.status]}: {gate.reason().rstrip('.')}"


def _worst_class(metrics: Mapping[str, Any], data: RunData) -> str | None:
    """The class with the worst headline per-class metric (lowest sensitivity or Dice; highest when
    lower is better)."""
    spec = data.headline.per_class
    if spec.higher_is_better:
        return worst_class(metrics, spec.key, classes=data.classes)[0]
    values = [(-v, i, c) for i, c in enumerate(data.classes)
              if (v := per_class_value(metrics, c, spec.key)) is not None]
    return min(values)[2] if values else None


def _headline(data: RunData) -> str:
    """``worst-class Dice 0.61 → 0.58, mean Dice 0.70 → 0.68 (base → pruned …)``: the gate metric first."""
    lead = data.headline
    final = data.final
    after_metrics = final.metrics if final is not None else None
    parts = []
    for spec in dict.fromkeys((lead.gate, lead.score)):
        before = fmt(number(data.base.get(spec.key)))
        after = f" → {fmt(number(after_metrics.get(spec.key)))}" if after_metrics is not None else ""
        parts.append(f"{data.words(spec)} {before}{after}")
    which = f"base → {final.label}" if final is not None and after_metrics is not None else "base model only"
    return f"{', '.join(parts)} ({which})"


def _judgement(value: float | None, base_ci: tuple[float, float] | None, new_ci: tuple[float, float] | None,
               ci_level: str) -> str:
    """``— within the base model's 95 % interval; the intervals overlap, …`` (empty without intervals)."""
    if value is None or base_ci is None:
        return ""
    where = "within" if base_ci[0] <= value <= base_ci[1] else "below" if value < base_ci[0] else "above"
    text = f" — {where} the base model's {ci_level} interval"
    if new_ci is None:
        return text
    if _overlap(base_ci, new_ci):
        return text + (", but the two intervals overlap, so the difference is not conclusive on this test set"
                       if where != "within" else "; the intervals overlap, so this test set cannot show a difference")
    return text + ", and the two intervals do not overlap"


# ----------------------------------------------------------------------------- sections


def _metric_cell(value: float | None, ci: tuple[float, float] | None, base_ci: tuple[float, float] | None,
                 *, lower_is_better: bool = False, mark: str = "") -> str:
    """Point estimate, interval, footnote ``mark``, and ▼/▲ when it lies outside the base model's interval.

    The arrow gives the direction of the value; the colour whether that is worse (red) or better
    (green), so a rise in a lower-is-better metric (ECE) is ▲ on red.
    """
    if value is None:
        return "<td>n/a</td>"
    arrow, css = "", ""
    if base_ci is not None and value < base_ci[0]:
        arrow, css = " ▼", ' class="better"' if lower_is_better else ' class="worse"'
    elif base_ci is not None and value > base_ci[1]:
        arrow, css = " ▲", ' class="worse"' if lower_is_better else ' class="better"'
    ci_html = f' <span class="ci">{esc(fmt_ci(ci, 3))}</span>' if ci else ""
    ci_html += f'<sup class="mark">{esc(mark)}</sup>' if ci and mark else ""
    return f"<td{css}>{value:.3f}{ci_html}{arrow}</td>"


def _column_header(model: RunModel) -> str:
    """The model's label; a failed or accepted-unsafe model is labelled so in red / amber."""
    gate = model.gate
    if gate is not None and gate.status == "failed":
        return (f'<th class="failed">{esc(model.label)}'
                '<span class="tag">FAILED safety gate — not for deployment</span></th>')
    if gate is not None and gate.status == "accepted_unsafe":
        return (f'<th class="unsafe">{esc(model.label)}'
                '<span class="tag">accepted despite failing its safety gate (--accept-unsafe)</span></th>')
    return f"<th>{esc(model.label)}</th>"


def _gate_cell(model: RunModel) -> str:
    gate = model.gate
    if model.kind == "base":
        return "<td>—</td>"
    if gate is None:
        return "<td>not recorded</td>"
    css = {"failed": ' class="worse"', "accepted_unsafe": ' class="worse"', "passed": ' class="better"'}
    numbers = gate.numbers()
    detail = f' <span class="ci">{esc(numbers)}</span>' if numbers else ""
    return f"<td{css.get(gate.status, '')}>{esc(gate.status)}{detail}</td>"


def _comparison_table(data: RunData) -> tuple[str, str]:
    """The table of base vs every compressed model, and its footnotes (interval methods, small samples)."""
    columns = data.models
    width = len(columns) + 1
    rows = ["<tr><th>quantity</th>" + "".join(_column_header(m) for m in columns) + "</tr>"]
    used_marks: dict[str, str] = {}

    def section(title: str) -> None:
        rows.append(f'<tr class="section"><th colspan="{width}">{esc(title)}</th></tr>')

    def row(name: str, cells: Sequence[str]) -> None:
        rows.append(f"<tr><td>{esc(name)}</td>{''.join(cells)}</tr>")

    if any(m.gate is not None for m in columns):
        section("Safety gate (validation split; the stage's metric before → after, and its limit)")
        row("Gate status", [_gate_cell(m) for m in columns])

    section("Cost")
    costs = [_cost(data, m) for m in columns]
    row("Parameters", [f"<td>{esc(_count(c['params']))}</td>" for c in costs])
    row("MACs per image", [f"<td>{esc(_count(c['macs']))}</td>" for c in costs])
    row("Model file", [f"<td>{esc(_mib(c['file_bytes']))}</td>" for c in costs])
    row("ONNX file", [f"<td>{esc(_mib(c['onnx_bytes']))}</td>" for c in costs])
    for runtime, name in _RUNTIMES:
        cells, speed = [], []
        for model in columns:
            stats = _latency(data.bench_entry(model.bench_key), runtime)
            spread = ""
            if stats is not None:
                spread = f' <span class="ci">p10–p90 {stats.p10_ms:.3g}–{stats.p90_ms:.3g}</span>'
            cells.append(f"<td>{esc(_ms(None if stats is None else number(stats.median_ms)))}{spread}</td>")
            is_base = model.kind == "base"
            ratio = None if is_base else data.speedup(model.bench_key, runtime)
            speed.append(f"<td>{'—' if is_base else esc(fmt(ratio) + '×' if ratio is not None else 'n/a')}</td>")
        row(f"{name} latency (median)", cells)
        row(f"{name} speed-up vs base", speed)

    lead = data.headline
    word = data.words(lead.per_class)
    flags = small_sample(data.base, data.classes, data.base_model.predictions, metric=word)
    split = data.base.get("split", "test")
    title = (f"Quality on the {split} split ({level(data.base)} intervals; ▼/▲ outside the base model's interval, "
             "green better, red worse)")
    if flags.split:
        title += (f" — split too small to judge ({data.base.get('n_patients', '?')} patients, fewer than "
                  f"{flags.min_patients})")
    section(title)

    def metric_row(name: str, get: Callable[[Mapping[str, Any]], float | None], ci_key: str,
                   lower_is_better: bool = False) -> None:
        base_ci = interval(data.base, ci_key)
        cells = []
        for model in columns:
            metrics = model.metrics
            if metrics is None:
                cells.append("<td>not evaluated</td>")
                continue
            method = ci_method(metrics, ci_key)
            mark = ""
            if method is not None and method != "percentile_bootstrap" and interval(metrics, ci_key) is not None:
                mark, legend = _CI_MARKS.get(method, ("*", f"interval method {method!r}"))
                used_marks[mark] = legend
            cells.append(_metric_cell(get(metrics), interval(metrics, ci_key),
                                      None if model.kind == "base" else base_ci,
                                      lower_is_better=lower_is_better, mark=mark))
        row(name, cells)

    for spec in data.task.summary_metrics:
        metric_row(_row_label(spec), lambda m, k=spec.key: number(m.get(k)), spec.key,
                   lower_is_better=not spec.higher_is_better)
    for cls in data.classes:
        support = per_class_value(data.base, cls, "support")
        title = f"Class {cls}" + (f" (support {support:g})" if support is not None else "")
        if cls in flags.classes:
            title += (f" — too few images to judge ({flags.classes[cls]}, fewer than {flags.min_class_support}; "
                      f"one error moves its {word} by "
                      + (f"{1 / flags.classes[cls]:.2f})" if flags.classes[cls] else "an undefined amount)"))
        section(title)
        for spec in data.task.per_class_metrics:
            metric_row(_row_label(spec), lambda m, c=cls, q=spec.key: per_class_value(m, c, q),
                       f"per_class.{cls}.{spec.key}", lower_is_better=not spec.higher_is_better)
    notes = [f"Intervals are {level(data.base)} {data.base.get('bootstrap_unit', 'patient')}-level percentile "
             "bootstrap intervals unless marked"
             + (": " + "; ".join(f"{mark} {legend}" for mark, legend in used_marks.items()) if used_marks else "")
             + "."]
    if flags.classes or flags.split:
        notes.append("Classes and splits marked 'too few to judge' have intervals too wide for any comparison on "
                     "them to mean much" + (" (flags derived from the supports: this metrics.json has no "
                                            "small_sample section)" if flags.derived else "") + ".")
    return "<table>" + "".join(rows) + "</table>", "".join(note(n) for n in notes)


def _tradeoff_points(data: RunData) -> list[TradeoffPoint]:
    """Every model, and every sweep point, on the plane of the task's headline and gate metrics."""
    lead = data.headline
    points = []
    for i, model in enumerate(data.models):
        metrics = model.metrics
        if metrics is None:
            continue
        cost = _cost(data, model)
        worst = number(metrics.get(lead.gate.key))
        if worst is None and (cls := _worst_class(metrics, data)) is not None:
            worst = per_class_value(metrics, cls, lead.per_class.key)
        points.append(TradeoffPoint(
            label=model.label, kind="base" if model.kind == "base" else "stage", macs=cost["macs"],
            ort_ms=_median(data.bench_entry(model.bench_key), "onnxruntime"),
            score=number(metrics.get(lead.score.key)), worst=worst, score_ci=interval(metrics, lead.score.key),
            worst_ci=interval(metrics, lead.gate.key), colour=model_colour(i)))
    for p in (data.sweep or {}).get("points") or []:
        if not isinstance(p, Mapping):
            continue
        label = f"{p.get('criterion', '?')} {p.get('ratio', '?')}"
        points.append(TradeoffPoint(
            label=label, kind="sweep", macs=number(p.get("macs")), ort_ms=number(p.get("ort_ms")),
            score=number(p.get(lead.score.key)), worst=number(p.get(lead.gate.key))))
    return points


def _curve_metrics(data: RunData, logs: Sequence[TrainingLog]) -> list[tuple[str, str]]:
    """The task's selection metrics the logs hold (``val_<metric>``), the default selection and the
    gate's first, at most :data:`_CURVE_METRICS`, named as the table names them."""
    task = data.task
    held = set(validation_keys(logs))
    labels = {spec.key: spec for spec in task.summary_metrics}
    order = dict.fromkeys([task.default_selection, task.gate_metric, *task.selection_metrics])
    chosen = [m for m in order if m != "loss" and f"val_{m}" in held][:_CURVE_METRICS]
    return [(f"val_{m}", "val " + (data.words(labels[m]) if m in labels else m.replace("_", " "))) for m in chosen]


def _curves_section(data: RunData, suffix: str) -> str:
    root = data.run_dir
    model_colours = colours(data)
    logs, log_colours = [], {}
    for model in data.models:
        for log in model.logs:
            logs.append(log)
            log_colours[log.label] = model_colours[model.label]
    if not logs:
        return note("Training curves: not found (no metrics.jsonl in the run directory or a stage folder).")
    metrics = _curve_metrics(data, logs)
    shown = " and ".join(name.removeprefix("val ") for _, name in metrics) or "no validation metric"
    caption = ("Base training, then each fine-tuning in pipeline order (its folder names the segment). Losses on a "
               f"log scale; red rings mark an epoch whose loss is more than {OUTLIER_FACTOR:g}× the median of its "
               "training (or not a number). A jumpy or exploding validation loss means an unstable training: "
               f"distrust the model it produced. Below: validation {shown} per epoch.")
    return plot(lambda: plot_training_curves(logs, root / "report_training_curves.png", colours=log_colours,
                                             metrics=metrics, title=f"Training curves{suffix}"),
                "Training curves", caption)


def _plots(data: RunData, suffix: str) -> str:
    root = data.run_dir
    lead = data.headline
    out = ["<h3>Per-class metrics</h3>"]
    results = {m.label: m.metrics for m in data.models if m.metrics is not None}
    specs = data.task.per_class_metrics
    out.append(plot(lambda: plot_per_class_metrics(results, data.classes, root / _PLOTS[0],
                                                   metrics=[s.key for s in specs],
                                                   labels={s.key: _row_label(s) for s in specs},
                                                   title=f"Per-class metrics{suffix} (error bars: 95 % CI)"),
                    "Per-class metrics", f"{', '.join(s.label for s in specs)} of every class; "
                    "bars are classes × models. Error bars are the bootstrap intervals — where "
                    "they overlap, the test set cannot tell the models apart."))

    out.append("<h3>Training curves</h3>")
    out.append(_curves_section(data, suffix))
    out.extend(evaluation_sections(data, suffix))

    out.append("<h3>Quality vs cost</h3>")
    points = _tradeoff_points(data)
    labels = (data.words(lead.score), data.words(lead.gate))
    sweep_note = ""
    if data.sweep is None:
        sweep_note = " Pruning sweep: not run (sweep/sweep.json not found)." if not data.problem("sweep/sweep.json") \
            else f" sweep/sweep.json {data.problem('sweep/sweep.json')}."
    else:
        sweep_base = number((data.sweep.get("base") or {}).get(lead.score.key))
        base_score = number(data.base.get(lead.score.key))
        if sweep_base is not None and base_score is not None and abs(sweep_base - base_score) > 1e-6:
            sweep_note = (f" The sweep's base model scores {labels[0]} {sweep_base:.3f} against {base_score:.3f}"
                          " here: the sweep was evaluated on another split or setting, so compare sweep points with"
                          " each other rather than with the large markers.")
    title = f"{lead.score.label} and {labels[1]}"
    if any(p.macs is not None for p in points):
        out.append(plot(lambda: plot_tradeoff(points, root / _PLOTS[1], x="macs", labels=labels,
                                              title=f"{title} vs MACs{suffix}"),
                        "Quality vs MACs", "Large markers: base and compressed stages with 95 % intervals; grey dots:"
                        " pruning sweep; dashed: the frontier (no other point is cheaper and better)." + sweep_note))
    else:
        out.append(note("Quality vs MACs: no MACs recorded (bench not run, no pruning summary)." + sweep_note))
    if any(p.ort_ms is not None for p in points):
        out.append(plot(lambda: plot_tradeoff(points, root / _PLOTS[2], x="ort_ms", labels=labels,
                                              title=f"{title} vs measured latency{suffix}"),
                        "Quality vs latency", "The same against measured ONNX Runtime latency: MACs do not translate "
                        "one-to-one into time."))
    else:
        out.append(note("Quality vs measured latency: not run (no ONNX Runtime latency in bench.json)."))

    out.append("<h3>Latency and size</h3>")
    models: dict[str, BenchEntry] = {}
    bar_colours: dict[str, str] = {}
    speedups: dict[str, dict[str, float]] = {}
    for i, model in enumerate(data.models):
        if (entry := data.bench_entry(model.bench_key)) is not None:
            models[model.label], bar_colours[model.label] = entry, model_colour(i)
            speedups[model.label] = {runtime: v for runtime, _ in _RUNTIMES if model.kind != "base"
                                     and (v := data.speedup(model.bench_key, runtime)) is not None}
    if data.bench is None:
        out.append(missing(data, "bench.json", "Latency and size"))
    elif data.base_model.label not in models:
        out.append(note("Latency and size: bench.json has no base model entry, so no speed-up can be computed."))
    else:
        out.append(plot(lambda: plot_latency_and_size(models, root / _PLOTS[3], colours=bar_colours,
                                                      speedups=speedups, title=f"Measured latency and size{suffix}"),
                        "Latency and size", "Median over interleaved rounds on one machine, one panel per runtime "
                        "(each with its own axis); labels give the ratio to the base model."))

    out.append("<h3>Where the pruner cut</h3>")
    kept = []
    for stage in data.stages:
        if (stage.path / "kept_channels.png").is_file():
            kept.append(image(stage.path / "kept_channels.png", f"Channels kept ({stage.label})",
                              f"Channels kept per layer — {stage.label}"))
    if not kept:
        kept.append(note("Channels kept per layer: not run (no kept_channels.png in a stage folder)."))
    out.extend(kept)
    return "\n".join(out)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _provenance(data: RunData) -> str:
    out = ["<h3>Stages</h3>"]
    if data.record is not None and data.record.stages:
        rows = []
        for name, stage in data.record.stages.items():
            seconds = number(stage.seconds)
            gate = stage.gate.get("status", "?") if isinstance(stage.gate, Mapping) else ""
            rows.append((name, stage.status, "" if seconds is None else f"{seconds:.1f}", stage.note or "", gate))
        out.append(_table(("stage", "status", "seconds", "note", "safety gate"), rows))
    else:
        out.append(missing(data, "run.json", "Stage table"))

    out.append("<h3>Export parity (ONNX vs PyTorch)</h3>")
    if data.export is None:
        out.append(missing(data, "export/export.json", "Export"))
    else:
        rows = []
        for precision in ("fp32", "int8"):
            entry = data.export.get(precision)
            if not isinstance(entry, Mapping):
                rows.append((precision, "not run", "", "", "", ""))
                continue
            diff, rel = number(entry.get("max_abs_diff")), number(entry.get("max_rel_diff"))
            agree = number(entry.get("top1_agreement"))
            rows.append((precision, {True: "passed", False: "FAILED"}.get(entry.get("passed"), "?"),
                         "n/a" if diff is None else f"{diff:.3g}", "n/a" if rel is None else f"{rel:.3g}",
                         "" if agree is None else f"{100 * agree:.1f} %", entry.get("path", "")))
        out.append(_table(("precision", "parity", "max |diff|", "max rel. diff", "top-1 agreement", "file"), rows))

    out.append("<h3>Machine and versions</h3>")
    if data.bench is None:
        out.append(missing(data, "bench.json", "Benchmark"))
    else:
        bench = data.bench
        rows = [(f"machine: {k}", v) for k, v in bench.machine.items()]
        rows += [(f"version: {k}", v) for k, v in bench.versions.items()]
        rows += [("input", f"batch {bench.batch} × " + ("×".join(map(str, bench.input_size)) or "?")),
                 ("threads", bench.threads), ("method", bench.method)]
        out.append(_table(("", ""), rows))

    out.append("<h3>Configuration (config.yaml)</h3>")
    if data.config_text is None:
        out.append(note("config.yaml not found."))
    else:
        if data.problem("config.yaml"):
            out.append(f'<p class="problem">config.yaml {esc(data.problem("config.yaml"))}</p>')
        out.append(f"<pre>{esc(data.config_text)}</pre>")
    if data.problems:
        out.append("<h3>Files that could not be used</h3><ul>"
                   + "".join(f"<li>{esc(k)}: {esc(v)}</li>" for k, v in data.problems.items()) + "</ul>")
    return "\n".join(out)


# ----------------------------------------------------------------------------- top of the report


def _gate_banners(data: RunData) -> list[str]:
    """A red banner per model that failed its safety gate, an amber one per model accepted despite it."""
    out = []
    for model in data.compressed:
        gate = model.gate
        if gate is None or not gate.unsafe:
            continue
        headline = ("FAILED its safety gate — not for deployment" if gate.status == "failed"
                    else "accepted despite failing its safety gate (--accept-unsafe)")
        lines = [f"<strong>{esc(model.label)}: {esc(headline)}.</strong>", f"<br>{esc(gate.reason())}"]
        if gate.warnings:
            lines.append("<ul>" + "".join(f"<li>{esc(w)}</li>" for w in gate.warnings) + "</ul>")
        css = "gate" if gate.status == "failed" else "gate unsafe"
        out.append(f'<div class="{css}">' + "".join(lines) + "</div>")
    return out


def _warnings_box(data: RunData, warnings: Sequence[ReportWarning]) -> str:
    if not warnings:
        flags = small_sample(data.base, data.classes)
        all_clear = DEGENERATE_OUTPUT.get(data.task.name).all_clear
        return (f'<div class="ok">No warnings: no safety gate failed, {esc(all_clear)}, no compressed '
                "model beats the base outside the intervals, no training loss exploded, and every class has at "
                f"least {flags.min_class_support} test images from a split of at least {flags.min_patients} "
                f"patients. ({esc(WARNINGS_FILE)} lists the same, empty.)</div>")
    items = "".join(f"<li><strong>{esc(_WARNING_TITLES.get(w.kind, w.kind))}</strong>: {esc(w.message)}</li>"
                    for w in warnings)
    return (f'<div class="warnings"><h3>Warnings ({len(warnings)})</h3><ul>{items}</ul>'
            f'<p class="note">Also in {esc(WARNINGS_FILE)} beside this report, as {{kind, model, message}}.</p></div>')


# ----------------------------------------------------------------------------- entry point


def write_report(run_dir: Path | str, *, out: Path | str | None = None) -> Path:
    """Write the self-contained HTML report of ``run_dir`` and return its path.

    The report goes to ``out`` (default ``run_dir/report.html``), its warnings to
    ``report_warnings.json`` beside it (a list of ``{kind, model, message}``, empty when there are
    none); its figures are also written to ``run_dir/report_*.png`` (stale ones from an earlier
    report that are not redrawn are removed). Optional inputs that are missing make their section
    say "not run".

    Raises:
        DataError: if ``run_dir/metrics.json`` (the evaluated base model) is missing or unreadable;
            the message names the file.
    """
    data = load_run_dir(run_dir)
    for name in _PLOTS:  # a figure the data no longer support must not linger beside the report
        (data.run_dir / name).unlink(missing_ok=True)
    suffix = " — SYNTHETIC phantom data" if data.synthetic else ""
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(data.name)} — medprune report</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(data.name)} — what compression cost and what it bought</h1>",
        f'<p class="sub">Report written {esc(now)} from {esc(data.run_dir)}'
        + (f" · {esc(data.description)}" if data.description else "") + "</p>",
    ]
    if data.synthetic:
        parts.append('<p class="banner">SYNTHETIC phantom data — these numbers describe the phantom, '
                     "not clinical performance.</p>")
    warnings = collect_warnings(data)
    parts.extend(_gate_banners(data))
    parts.append("<h2>Summary</h2>")
    parts.append(f'<div class="summary"><p class="headline"><strong>{esc(_headline(data))}</strong></p><p>'
                 + " ".join(esc(s) for s in _summary(data)) + "</p></div>")
    parts.append(_warnings_box(data, warnings))
    parts.append("<h2>Base vs compressed</h2>")
    if not data.stages:
        parts.append(missing(data, "run.json", "Compression"))
    table, footnotes = _comparison_table(data)
    parts.append(table)
    parts.append(footnotes)
    if data.degradation is not None or data.problem("degradation/grid.json"):
        parts.extend(degradation_section(data.degradation, data.run_dir, data.problem("degradation/grid.json")))
    parts.append("<h2>Plots</h2>")
    parts.append(_plots(data, suffix))
    parts.append("<h2>What was run</h2>")
    parts.append(_provenance(data))
    parts.append("</body></html>\n")
    target = Path(out) if out is not None else data.run_dir / "report.html"
    atomic_write_json(target.parent / WARNINGS_FILE, [w.to_dict() for w in warnings])
    atomic_write_text(target, "\n".join(parts))
    logger.info("report: wrote %s (%d warning%s)", target, len(warnings), "" if len(warnings) == 1 else "s")
    return target
