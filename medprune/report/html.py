"""The self-contained HTML report of ``medprune run``: what compression cost and what it bought.

:func:`write_report` reads a run directory (``runs/<name>/``: ``metrics.json`` of the base model,
``run.json``, each compressed stage's folder, ``export/export.json``, ``bench.json``,
``sweep/sweep.json``) and writes ``report.html`` — one file with inline CSS and every image
embedded as a base64 data URI, no script and no network access, so it can be mailed to a
reviewer or archived with the model. The figures are also kept as ``report_*.png`` beside it.

The report opens with a red banner for every model that failed its safety gate, a paragraph
computed from the numbers ("2.30× faster … balanced accuracy went from … the intervals overlap,
so this test set cannot show a difference") and the warnings a reader must not miss (a model
that predicts one class, a compressed model that beats the base outside the intervals, an
unstable training, a class too small to judge, safety-gate findings — see
:mod:`medprune.report._warnings`); the same warnings are written to ``report_warnings.json``
beside the report as a list of ``{kind, model, message}``. Then a table of base vs every
compressed model (INT8 included) with 95 % intervals and ECE, the plots (per-class metrics,
training curves, ROC, reliability, accuracy vs cost, latency per runtime, kept channels,
confusion matrices), and what was run on which machine. Only the base ``metrics.json`` is
required; a missing optional file makes its section say "not run". Example::

    from medprune.report import write_report
    write_report(Path("runs/thermography_demo"))   # → runs/thermography_demo/report.html
"""

from __future__ import annotations

import base64
import datetime
import html
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medprune._io import atomic_write_json, atomic_write_text
from medprune.errors import DataError
from medprune.metrics.classification import PER_CLASS_METRICS
from medprune.metrics.summary import worst_class
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
from medprune.report._warnings import ReportWarning, collect_warnings
from medprune.report.curves import OUTLIER_FACTOR, plot_training_curves
from medprune.report.plots import plot_reliability, plot_roc_comparison
from medprune.report.run_plots import (
    TradeoffPoint,
    model_colour,
    plot_latency_and_size,
    plot_per_class_metrics,
    plot_tradeoff,
)

__all__ = ["write_report"]

logger = logging.getLogger(__name__)

_MIB = 2.0**20
_PLOTS = ("report_per_class.png", "report_tradeoff_macs.png", "report_tradeoff_latency.png",
          "report_latency_size.png", "report_training_curves.png", "report_roc.png", "report_reliability.png")
#: File beside report.html listing the warnings as ``[{kind, model, message}, ...]``.
WARNINGS_FILE = "report_warnings.json"
_WARNING_TITLES = {"gate_failed": "Safety gate failed", "gate_accepted_unsafe": "Accepted despite a failed safety gate",
                   "single_class": "Predicts one class only", "compressed_beats_base": "Compressed beats base",
                   "unstable_training": "Unstable training", "small_sample": "Too small to judge",
                   "gate_warning": "Safety gate warning"}
#: Footnote marks of intervals that are not a plain percentile bootstrap, with their legend.
_CI_MARKS = {
    "clopper_pearson": ("†", "Clopper–Pearson exact binomial interval"),
    "wilson": ("‡", "Wilson score interval"),
    "percentile_bootstrap_degenerate": ("§", "percentile bootstrap of zero width (every resample gave the same "
                                              "value): not certainty — the data cannot show the uncertainty"),
}
_GATE_WORDS = {"passed": "passed", "failed": "FAILED — not for deployment",
               "accepted_unsafe": "failed, accepted despite it (--accept-unsafe)", "off": "off (not checked)"}
_METRIC_NAMES = {"sensitivity": "Sensitivity", "specificity": "Specificity", "ppv": "PPV", "npv": "NPV",
                 "f1": "F1", "auc": "AUC (one-vs-rest)"}
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


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _f(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ci(ci: tuple[float, float] | None, digits: int = 2) -> str:
    return "" if ci is None else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _with_ci(value: float | None, ci: tuple[float, float] | None, digits: int = 2) -> str:
    return _f(value, digits) + (f" {_ci(ci, digits)}" if ci else "")


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


def _level(metrics: Mapping[str, Any]) -> str:
    level = number(metrics.get("ci_level")) or 0.95
    return f"{100 * level:g} %"


# ----------------------------------------------------------------------------- numbers


def _latency(entry: Mapping[str, Any] | None, runtime: str) -> Mapping[str, Any] | None:
    stats = ((entry or {}).get("latency_ms") or {}).get(runtime)
    return stats if isinstance(stats, Mapping) and number(stats.get("median_ms")) is not None else None


def _median(entry: Mapping[str, Any] | None, runtime: str) -> float | None:
    stats = _latency(entry, runtime)
    return None if stats is None else number(stats["median_ms"])


def _speedup(data: RunData, key: str, runtime: str) -> float | None:
    """Speed-up of model ``key`` over base as ``bench.json`` recorded it, else from the two medians."""
    recorded = number((((data.bench or {}).get("speedup") or {}).get(key) or {}).get(runtime))
    if recorded is not None:
        return recorded
    base, other = _median(data.bench_entry("base"), runtime), _median(data.bench_entry(key), runtime)
    return base / other if base and other else None


def _cost(data: RunData, model: RunModel) -> dict[str, float | None]:
    """Parameters, MACs and sizes of ``model`` from bench.json, else from the pruning summary."""
    entry = data.bench_entry(model.bench_key) or {}
    cost = {name: number(entry.get(name)) for name in ("params", "macs", "file_bytes", "onnx_bytes")}
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
    level = _level(base)
    sentences = []
    n, patients = base.get("n_samples"), base.get("n_patients")
    split = base.get("split", "test")
    if n is not None:
        unit = base.get("bootstrap_unit", "patient")
        boot = (f"intervals are {level} {unit}-level bootstrap intervals" if number(base.get("n_bootstrap"))
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
    ort, torch_ = _speedup(data, key, "onnxruntime"), _speedup(data, key, "torch")
    machine = ((data.bench or {}).get("machine") or {}).get("processor")
    where = f"on this CPU ({machine}; " if machine else "on the benchmark CPU ("
    base_entry, final_entry = data.bench_entry("base"), data.bench_entry(key)
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

    ba = [number(m.get("balanced_accuracy")) for m in (base, final.metrics)]
    ba_ci = [interval(m, "balanced_accuracy") for m in (base, final.metrics)]
    text = f"Balanced accuracy went from {_with_ci(ba[0], ba_ci[0])} to {_with_ci(ba[1], ba_ci[1])}"
    sentences.append(text + _judgement(ba[1], ba_ci[0], ba_ci[1], level) + ".")

    worst = worst_class(final.metrics, classes=data.classes)[0]
    if worst is not None:
        key_ci = f"per_class.{worst}.sensitivity"
        before = per_class_value(base, worst, "sensitivity")
        after = per_class_value(final.metrics, worst, "sensitivity")
        text = (f"The compressed model's worst class is {worst}: its sensitivity went from "
                f"{_with_ci(before, interval(base, key_ci))} to {_with_ci(after, interval(final.metrics, key_ci))}")
        text += _judgement(after, interval(base, key_ci), interval(final.metrics, key_ci), level)
        base_worst = worst_class(base, classes=data.classes)[0]
        if base_worst is not None and base_worst != worst:
            text += (f" (the base model's worst class was {base_worst}, sensitivity "
                     f"{_f(per_class_value(base, base_worst, 'sensitivity'))})")
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


def _judgement(value: float | None, base_ci: tuple[float, float] | None, new_ci: tuple[float, float] | None,
               level: str) -> str:
    """``— within the base model's 95 % interval; the intervals overlap, …`` (empty without intervals)."""
    if value is None or base_ci is None:
        return ""
    where = "within" if base_ci[0] <= value <= base_ci[1] else "below" if value < base_ci[0] else "above"
    text = f" — {where} the base model's {level} interval"
    if new_ci is None:
        return text
    if _overlap(base_ci, new_ci):
        return text + (", but the two intervals overlap, so the difference is not conclusive on this test set"
                       if where != "within" else "; the intervals overlap, so this test set cannot show a difference")
    return text + ", and the two intervals do not overlap"


# ----------------------------------------------------------------------------- sections


def _image(path: Path, alt: str, caption: str | None = None) -> str:
    """A ``<figure>`` with ``path`` embedded as a base64 PNG data URI."""
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{encoded}">{cap}</figure>'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _missing(data: RunData, relative: str, what: str) -> str:
    """"not run" — or why an existing file could not be used."""
    problem = data.problem(relative)
    if problem:
        return f'<p class="problem">{_e(relative)} {_e(problem)}</p>'
    return _note(f"{what}: not run ({relative} not found).")


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
    ci_html = f' <span class="ci">{_e(_ci(ci, 3))}</span>' if ci else ""
    ci_html += f'<sup class="mark">{_e(mark)}</sup>' if ci and mark else ""
    return f"<td{css}>{value:.3f}{ci_html}{arrow}</td>"


def _column_header(model: RunModel) -> str:
    """The model's label; a failed or accepted-unsafe model is labelled so in red / amber."""
    gate = model.gate
    if gate is not None and gate.status == "failed":
        return (f'<th class="failed">{_e(model.label)}'
                '<span class="tag">FAILED safety gate — not for deployment</span></th>')
    if gate is not None and gate.status == "accepted_unsafe":
        return (f'<th class="unsafe">{_e(model.label)}'
                '<span class="tag">accepted despite failing its safety gate (--accept-unsafe)</span></th>')
    return f"<th>{_e(model.label)}</th>"


def _gate_cell(model: RunModel) -> str:
    gate = model.gate
    if model.kind == "base":
        return "<td>—</td>"
    if gate is None:
        return "<td>not recorded</td>"
    css = {"failed": ' class="worse"', "accepted_unsafe": ' class="worse"', "passed": ' class="better"'}
    numbers = gate.numbers()
    detail = f' <span class="ci">{_e(numbers)}</span>' if numbers else ""
    return f"<td{css.get(gate.status, '')}>{_e(gate.status)}{detail}</td>"


def _comparison_table(data: RunData) -> tuple[str, str]:
    """The table of base vs every compressed model, and its footnotes (interval methods, small samples)."""
    columns = data.models
    width = len(columns) + 1
    rows = ["<tr><th>quantity</th>" + "".join(_column_header(m) for m in columns) + "</tr>"]
    used_marks: dict[str, str] = {}

    def section(title: str) -> None:
        rows.append(f'<tr class="section"><th colspan="{width}">{_e(title)}</th></tr>')

    def row(name: str, cells: Sequence[str]) -> None:
        rows.append(f"<tr><td>{_e(name)}</td>{''.join(cells)}</tr>")

    if any(m.gate is not None for m in columns):
        section("Safety gate (validation split; the stage's metric before → after, and its limit)")
        row("Gate status", [_gate_cell(m) for m in columns])

    section("Cost")
    costs = [_cost(data, m) for m in columns]
    row("Parameters", [f"<td>{_e(_count(c['params']))}</td>" for c in costs])
    row("MACs per image", [f"<td>{_e(_count(c['macs']))}</td>" for c in costs])
    row("Model file", [f"<td>{_e(_mib(c['file_bytes']))}</td>" for c in costs])
    row("ONNX file", [f"<td>{_e(_mib(c['onnx_bytes']))}</td>" for c in costs])
    for runtime, name in _RUNTIMES:
        cells, speed = [], []
        for model in columns:
            stats = _latency(data.bench_entry(model.bench_key), runtime)
            spread = ""
            p10, p90 = (number((stats or {}).get(k)) for k in ("p10_ms", "p90_ms"))
            if p10 is not None and p90 is not None:
                spread = f' <span class="ci">p10–p90 {p10:.3g}–{p90:.3g}</span>'
            cells.append(f"<td>{_e(_ms(None if stats is None else number(stats['median_ms'])))}{spread}</td>")
            is_base = model.kind == "base"
            ratio = None if is_base else _speedup(data, model.bench_key, runtime)
            speed.append(f"<td>{'—' if is_base else _e(_f(ratio) + '×' if ratio is not None else 'n/a')}</td>")
        row(f"{name} latency (median)", cells)
        row(f"{name} speed-up vs base", speed)

    flags = small_sample(data.base, data.classes, data.base_model.predictions)
    split = data.base.get("split", "test")
    title = (f"Quality on the {split} split ({_level(data.base)} intervals; ▼/▲ outside the base model's interval, "
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

    for name, summary_key in (("Balanced accuracy", "balanced_accuracy"), ("Macro F1", "macro_f1"),
                              ("Worst-class sensitivity", "worst_class_sensitivity")):
        metric_row(name, lambda m, k=summary_key: number(m.get(k)), summary_key)
    metric_row("ECE (calibration error; lower is better)", lambda m: number(m.get("ece")), "ece",
               lower_is_better=True)
    for cls in data.classes:
        support = ((data.base.get("per_class") or {}).get(cls) or {}).get("support")
        title = f"Class {cls}" + (f" (support {support})" if support is not None else "")
        if cls in flags.classes:
            title += (f" — too few images to judge ({flags.classes[cls]}, fewer than {flags.min_class_support}; "
                      "one error moves its sensitivity by "
                      + (f"{1 / flags.classes[cls]:.2f})" if flags.classes[cls] else "an undefined amount)"))
        section(title)
        for metric in PER_CLASS_METRICS:
            metric_row(_METRIC_NAMES[metric], lambda m, c=cls, q=metric: per_class_value(m, c, q),
                       f"per_class.{cls}.{metric}")
    notes = [f"Intervals are {_level(data.base)} {data.base.get('bootstrap_unit', 'patient')}-level percentile "
             "bootstrap intervals unless marked"
             + (": " + "; ".join(f"{mark} {legend}" for mark, legend in used_marks.items()) if used_marks else "")
             + "."]
    if flags.classes or flags.split:
        notes.append("Classes and splits marked 'too few to judge' have intervals too wide for any comparison on "
                     "them to mean much" + (" (flags derived from the supports: this metrics.json has no "
                                            "small_sample section)" if flags.derived else "") + ".")
    return "<table>" + "".join(rows) + "</table>", "".join(_note(n) for n in notes)


def _plot(draw: Callable[[], Any], alt: str, caption: str) -> str:
    """Draw a figure (a path or a :class:`~medprune.report.plots.Plotted`) and embed it; a figure the
    data cannot support says why instead."""
    try:
        return _image(Path(draw()), alt, caption)
    except DataError as err:
        logger.warning("report: %s not drawn: %s", alt, err)
        return f'<p class="problem">{_e(alt)} could not be drawn: {_e(err)}</p>'


def _colours(data: RunData) -> dict[str, str]:
    """One colour per model label, shared by every figure."""
    return {m.label: model_colour(i) for i, m in enumerate(data.models)}


def _tradeoff_points(data: RunData) -> list[TradeoffPoint]:
    points = []
    for i, model in enumerate(data.models):
        metrics = model.metrics
        if metrics is None:
            continue
        cost = _cost(data, model)
        worst = number(metrics.get("worst_class_sensitivity"))
        if worst is None and (cls := worst_class(metrics, classes=data.classes)[0]) is not None:
            worst = per_class_value(metrics, cls, "sensitivity")
        points.append(TradeoffPoint(
            label=model.label, kind="base" if model.kind == "base" else "stage", macs=cost["macs"],
            ort_ms=_median(data.bench_entry(model.bench_key), "onnxruntime"),
            balanced_accuracy=number(metrics.get("balanced_accuracy")), worst_class_sensitivity=worst,
            balanced_accuracy_ci=interval(metrics, "balanced_accuracy"),
            worst_class_sensitivity_ci=interval(metrics, "worst_class_sensitivity"), colour=model_colour(i)))
    for p in (data.sweep or {}).get("points") or []:
        if not isinstance(p, Mapping):
            continue
        label = f"{p.get('criterion', '?')} {p.get('ratio', '?')}"
        points.append(TradeoffPoint(
            label=label, kind="sweep", macs=number(p.get("macs")), ort_ms=number(p.get("ort_ms")),
            balanced_accuracy=number(p.get("balanced_accuracy")),
            worst_class_sensitivity=number(p.get("worst_class_sensitivity"))))
    return points


def _roc_classes(data: RunData) -> list[str]:
    """Two classes: the minority one (its curve mirrors the other's); more: every class."""
    if len(data.classes) > 2:
        return list(data.classes)
    supports = [(per_class_value(data.base, c, "support") or 0.0, -i, c) for i, c in enumerate(data.classes)]
    return [min(supports)[2]]


def _curves_section(data: RunData, suffix: str) -> str:
    root = data.run_dir
    colours = _colours(data)
    logs, log_colours = [], {}
    for model in data.models:
        for log in model.logs:
            logs.append(log)
            log_colours[log.label] = colours[model.label]
    if not logs:
        return _note("Training curves: not found (no metrics.jsonl in the run directory or a stage folder).")
    caption = ("Base training, then each fine-tuning in pipeline order (its folder names the segment). Losses on a "
               f"log scale; red rings mark an epoch whose loss is more than {OUTLIER_FACTOR:g}× the median of its "
               "training (or not a number). A jumpy or exploding validation loss means an unstable training: "
               "distrust the model it produced.")
    return _plot(lambda: plot_training_curves(logs, root / "report_training_curves.png", colours=log_colours,
                                              title=f"Training curves{suffix}"), "Training curves", caption)


def _roc_section(data: RunData, suffix: str) -> str:
    root = data.run_dir
    models = {m.label: m.predictions for m in data.models if m.predictions is not None}
    if not models:
        return _note("ROC: not drawn (no predictions.csv beside the base or a compressed model's metrics.json).")
    missing = [m.label for m in data.models if m.predictions is None]
    classes = _roc_classes(data)
    auc_ci = {m.label: {c: interval(m.metrics, f"per_class.{c}.auc") for c in classes} for m in data.models}
    which = (f"the minority class, {classes[0]} (with two classes the other curve is its mirror)"
             if len(classes) == 1 else "each class against the rest")
    caption = (f"ROC of {which}, every model on the same axes, from each model's predictions.csv. Legend: AUC "
               f"(scikit-learn) and its {_level(data.base)} bootstrap interval from metrics.json."
               + (f" No predictions.csv for: {', '.join(missing)}." if missing else ""))
    return _plot(lambda: plot_roc_comparison(models, classes, root / "report_roc.png", auc_ci=auc_ci,
                                             colours=_colours(data), title=f"ROC, base vs compressed{suffix}"),
                 "ROC", caption)


def _reliability_section(data: RunData, suffix: str) -> str:
    root = data.run_dir
    chosen = [data.base_model] + ([data.final] if data.final is not None else [])
    models = {m.label: m.predictions for m in chosen if m.predictions is not None}
    if not models:
        return _note("Reliability diagram: not drawn (no predictions.csv for the base or the final model).")
    ece = {m.label: (number((m.metrics or {}).get("ece")), interval(m.metrics, "ece")) for m in chosen}
    caption = ("Accuracy against confidence, base vs the final compressed model: on the diagonal the probabilities "
               "can be read as such; below it the model is over-confident. Legend: ECE and its interval from "
               "metrics.json (the table has every model's).")
    return _plot(lambda: plot_reliability(models, root / "report_reliability.png", ece=ece, colours=_colours(data),
                                          title=f"Calibration{suffix}"), "Reliability diagram", caption)


def _plots(data: RunData, suffix: str) -> str:
    root = data.run_dir
    out = ["<h3>Per-class metrics</h3>"]
    results = {m.label: m.metrics for m in data.models if m.metrics is not None}
    out.append(_plot(lambda: plot_per_class_metrics(results, data.classes, root / _PLOTS[0], title=f"Per-class "
                                                    f"metrics{suffix} (error bars: 95 % CI)"),
                     "Per-class metrics", "Each panel is one metric; bars are classes × models. Error bars are the "
                     "bootstrap intervals — where they overlap, the test set cannot tell the models apart."))

    out.append("<h3>Training curves</h3>")
    out.append(_curves_section(data, suffix))
    out.append("<h3>ROC</h3>")
    out.append(_roc_section(data, suffix))
    out.append("<h3>Calibration</h3>")
    out.append(_reliability_section(data, suffix))

    out.append("<h3>Accuracy vs cost</h3>")
    points = _tradeoff_points(data)
    sweep_note = ""
    if data.sweep is None:
        sweep_note = " Pruning sweep: not run (sweep/sweep.json not found)." if not data.problem("sweep/sweep.json") \
            else f" sweep/sweep.json {data.problem('sweep/sweep.json')}."
    else:
        sweep_base = number((data.sweep.get("base") or {}).get("balanced_accuracy"))
        base_ba = number(data.base.get("balanced_accuracy"))
        if sweep_base is not None and base_ba is not None and abs(sweep_base - base_ba) > 1e-6:
            sweep_note = (f" The sweep's base model scores balanced accuracy {sweep_base:.3f} against {base_ba:.3f}"
                          " here: the sweep was evaluated on another split or setting, so compare sweep points with"
                          " each other rather than with the large markers.")
    if any(p.macs is not None for p in points):
        out.append(_plot(lambda: plot_tradeoff(points, root / _PLOTS[1], x="macs",
                                               title=f"Accuracy vs MACs{suffix}"),
                         "Accuracy vs MACs", "Large markers: base and compressed stages with 95 % intervals; grey dots:"
                         " pruning sweep; dashed: the frontier (no other point is cheaper and better)." + sweep_note))
    else:
        out.append(_note("Accuracy vs MACs: no MACs recorded (bench not run, no pruning summary)." + sweep_note))
    if any(p.ort_ms is not None for p in points):
        out.append(_plot(lambda: plot_tradeoff(points, root / _PLOTS[2], x="ort_ms",
                                               title=f"Accuracy vs measured latency{suffix}"),
                         "Accuracy vs latency", "The same against measured ONNX Runtime latency: MACs do not translate "
                         "one-to-one into time."))
    else:
        out.append(_note("Accuracy vs measured latency: not run (no ONNX Runtime latency in bench.json)."))

    out.append("<h3>Latency and size</h3>")
    models: dict[str, Mapping[str, Any]] = {}
    colours: dict[str, str] = {}
    speedups: dict[str, dict[str, float]] = {}
    for i, model in enumerate(data.models):
        if (entry := data.bench_entry(model.bench_key)) is not None:
            models[model.label], colours[model.label] = entry, model_colour(i)
            speedups[model.label] = {runtime: v for runtime, _ in _RUNTIMES if model.kind != "base"
                                     and (v := _speedup(data, model.bench_key, runtime)) is not None}
    if data.bench is None:
        out.append(_missing(data, "bench.json", "Latency and size"))
    elif "base" not in models:
        out.append(_note("Latency and size: bench.json has no base model entry, so no speed-up can be computed."))
    else:
        out.append(_plot(lambda: plot_latency_and_size(models, root / _PLOTS[3], colours=colours, speedups=speedups,
                                                       title=f"Measured latency and size{suffix}"),
                         "Latency and size", "Median over interleaved rounds on one machine, one panel per runtime "
                         "(each with its own axis); labels give the ratio to the base model."))

    out.append("<h3>Where the pruner cut, and confusion matrices</h3>")
    gallery = []
    for stage in data.stages:
        if (stage.path / "kept_channels.png").is_file():
            gallery.append(_image(stage.path / "kept_channels.png", f"Channels kept ({stage.label})",
                                  f"Channels kept per layer — {stage.label}"))
    if not gallery:
        gallery.append(_note("Channels kept per layer: not run (no kept_channels.png in a stage folder)."))
    out.extend(gallery)
    matrices = []
    for model in data.models:
        if (model.path / "confusion_matrix.png").is_file():
            matrices.append(_image(model.path / "confusion_matrix.png", f"Confusion matrix ({model.label})",
                                   f"Confusion matrix — {model.label}"))
        elif model.kind != "int8":
            matrices.append(_note(f"Confusion matrix — {model.label}: not found."))
    out.append('<div class="gallery">' + "".join(matrices) + "</div>")
    return "\n".join(out)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _provenance(data: RunData) -> str:
    out = ["<h3>Stages</h3>"]
    stages = (data.run or {}).get("stages")
    if isinstance(stages, Mapping) and stages:
        rows = []
        for name, info in stages.items():
            info = info if isinstance(info, Mapping) else {}
            seconds = number(info.get("seconds"))
            gate = info.get("gate")
            rows.append((name, info.get("status", "?"), "" if seconds is None else f"{seconds:.1f}",
                         info.get("note") or "", gate.get("status", "?") if isinstance(gate, Mapping) else ""))
        out.append(_table(("stage", "status", "seconds", "note", "safety gate"), rows))
    else:
        out.append(_missing(data, "run.json", "Stage table"))

    out.append("<h3>Export parity (ONNX vs PyTorch)</h3>")
    if data.export is None:
        out.append(_missing(data, "export/export.json", "Export"))
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
        out.append(_missing(data, "bench.json", "Benchmark"))
    else:
        bench = data.bench
        machine = bench.get("machine") or {}
        rows = [(f"machine: {k}", v) for k, v in machine.items()]
        rows += [(f"version: {k}", v) for k, v in (bench.get("versions") or {}).items()]
        size = bench.get("input_size")
        rows += [("input", f"batch {bench.get('batch', '?')} × "
                  + ("×".join(map(str, size)) if isinstance(size, list) else "?")),
                 ("threads", bench.get("threads", "?")), ("method", bench.get("method", "?"))]
        out.append(_table(("", ""), rows))

    out.append("<h3>Configuration (config.yaml)</h3>")
    if data.config_text is None:
        out.append(_note("config.yaml not found."))
    else:
        if data.problem("config.yaml"):
            out.append(f'<p class="problem">config.yaml {_e(data.problem("config.yaml"))}</p>')
        out.append(f"<pre>{_e(data.config_text)}</pre>")
    if data.problems:
        out.append("<h3>Files that could not be used</h3><ul>"
                   + "".join(f"<li>{_e(k)}: {_e(v)}</li>" for k, v in data.problems.items()) + "</ul>")
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
        lines = [f"<strong>{_e(model.label)}: {_e(headline)}.</strong>", f"<br>{_e(gate.reason())}"]
        if gate.warnings:
            lines.append("<ul>" + "".join(f"<li>{_e(w)}</li>" for w in gate.warnings) + "</ul>")
        css = "gate" if gate.status == "failed" else "gate unsafe"
        out.append(f'<div class="{css}">' + "".join(lines) + "</div>")
    return out


def _warnings_box(data: RunData, warnings: Sequence[ReportWarning]) -> str:
    if not warnings:
        flags = small_sample(data.base, data.classes)
        return ('<div class="ok">No warnings: no safety gate failed, no model predicts one class only, no compressed '
                "model beats the base outside the intervals, no training loss exploded, and every class has at "
                f"least {flags.min_class_support} test images from a split of at least {flags.min_patients} "
                f"patients. ({_e(WARNINGS_FILE)} lists the same, empty.)</div>")
    items = "".join(f"<li><strong>{_e(_WARNING_TITLES.get(w.kind, w.kind))}</strong>: {_e(w.message)}</li>"
                    for w in warnings)
    return (f'<div class="warnings"><h3>Warnings ({len(warnings)})</h3><ul>{items}</ul>'
            f'<p class="note">Also in {_e(WARNINGS_FILE)} beside this report, as {{kind, model, message}}.</p></div>')


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
        f"<title>{_e(data.name)} — medprune report</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(data.name)} — what compression cost and what it bought</h1>",
        f'<p class="sub">Report written {_e(now)} from {_e(data.run_dir)}'
        + (f" · {_e(data.description)}" if data.description else "") + "</p>",
    ]
    if data.synthetic:
        parts.append('<p class="banner">SYNTHETIC phantom data — these numbers describe the phantom, '
                     "not clinical performance.</p>")
    warnings = collect_warnings(data)
    parts.extend(_gate_banners(data))
    parts.append("<h2>Summary</h2>")
    parts.append('<div class="summary"><p>' + " ".join(_e(s) for s in _summary(data)) + "</p></div>")
    parts.append(_warnings_box(data, warnings))
    parts.append("<h2>Base vs compressed</h2>")
    if not data.stages:
        parts.append(_missing(data, "run.json", "Compression"))
    table, footnotes = _comparison_table(data)
    parts.append(table)
    parts.append(footnotes)
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
