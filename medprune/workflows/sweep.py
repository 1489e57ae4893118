"""``medprune sweep CONFIG --ratios 0.3,0.5,0.7``: the accuracy / cost frontier from one trained model.

The config's model is trained once (the ``train`` stage of ``medprune run``, reused when it
exists); then, for every (criterion, ratio) setting, the compress and evaluate stages run into
``<run dir>/sweep/<criterion>_r<ratio>/`` (the layout of ``compressed/``) and every pruned model
and the base are exported to ONNX and timed interleaved on ONNX Runtime CPU. The result::

    sweep/sweep.json      base and one point per setting: MACs, params, ONNX Runtime latency with
                          its measured spread, speed-up interval and verdict, the task's headline
                          and gate metrics (classification: balanced_accuracy and
                          worst_class_sensitivity; segmentation: mean_dice and worst_class_dice)
                          and the worst class; ``metrics`` names those keys and their labels
    sweep/frontier.png    the headline and gate metrics against MACs and latency

Latency is measured per **architecture**, not per setting (DESIGN.md §4 item 7): settings that keep
the same layer widths (L1 and L2 at one per-layer ratio usually do) run the same kernels, so
each distinct :func:`~medprune.compress.latency.architecture_key` is timed once, interleaved with
the others, and every point of it gets that timing. Timing them separately would only measure the
machine's drift (it showed 1.07×–2.34× "speed-ups" between identical models). Each timing keeps its
spread (interquartile range of the per-round minima); a point whose speed-up interval includes 1.0
is reported "within the measured spread" of the base, and two points whose timings do not differ
beyond their spreads are reported within each other's (:func:`compare_latency`).

A setting whose folder already holds a finished prune with the same settings is reused, so an
interrupted sweep continues; ``force=True`` redoes every setting.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from medprune._io import atomic_write_json
from medprune.compress.latency import (
    METHOD,
    LatencyStats,
    architecture_key,
    differs,
    speedup_interval,
)
from medprune.config import ExperimentConfig
from medprune.errors import ConfigError
from medprune.metrics.summary import worst_class
from medprune.tasks import Task

__all__ = ["SweepOutcome", "sweep_job", "compare_latency", "format_sweep", "parse_list"]

log = logging.getLogger(__name__)


@dataclass
class SweepOutcome:
    """The sweep's record (``sweep.json`` content), its folder and the frontier plot."""

    out_dir: Path
    result: dict[str, Any]
    plot: Path
    seconds: float


def parse_list(text: str | None, kind: type, what: str) -> list[Any]:
    """``"0.3,0.5"`` → ``[0.3, 0.5]``; a bad item raises ConfigError naming ``what``."""
    if text is None or not text.strip():
        return []
    out = []
    for item in text.split(","):
        item = item.strip()
        try:
            out.append(kind(item))
        except ValueError:
            raise ConfigError(f"{what}: {item!r} is not a {kind.__name__}") from None
    return out


def _tag(criterion: str, ratio: float) -> str:
    return f"{criterion}_r{ratio:.2f}"


#: ``metrics`` of a classification sweep (and of a sweep.json written before the field existed).
_CLASSIFICATION_METRICS = {"score": {"key": "balanced_accuracy", "label": "balanced accuracy"},
                           "gate": {"key": "worst_class_sensitivity", "label": "worst-class sensitivity"},
                           "per_class": {"key": "sensitivity", "label": "sensitivity"}}


def _label(point: Mapping[str, Any]) -> str:
    return f"{point['criterion']} r={point['ratio']:.2f}"


def compare_latency(base: dict[str, Any], points: Sequence[dict[str, Any]],
                    stats: Mapping[str, LatencyStats]) -> list[dict[str, Any]]:
    """Give ``base`` and every point its architecture's timing and a verdict; return the architecture table.

    ``base`` and each point carry ``"architecture"`` (a key of ``stats``; points also ``criterion``
    and ``ratio``). Fills in, in place:

    - base and points: ``ort_ms`` (median), ``ort_iqr_ms`` ``[q1, q3]``, ``ort_spread_pct`` (± half
      the interquartile range, % of the median);
    - points: ``speedup`` (base / point medians), ``speedup_interval`` ``[lo, hi]``
      (:func:`~medprune.compress.latency.speedup_interval`), ``within_spread_of_base`` (the
      interval includes 1.0), ``same_architecture_as`` (labels such as ``"l2 r=0.50"``, or
      ``"base"``: one timing, so no difference can be measured), ``within_spread_of`` (points of
      *other* architectures whose timings do not differ beyond the spreads,
      :func:`~medprune.compress.latency.differs` — compared directly, since they were timed in the
      same interleaved run).

    Returns:
        One row per distinct architecture, base's first: ``{"key", "models": [labels], "ort": stats
        dict}``.
    """
    labels = ["base", *(_label(p) for p in points)]
    members: dict[str, list[str]] = {}
    for label, entry in zip(labels, [base, *points]):
        if entry["architecture"] not in stats:
            raise KeyError(f"compare_latency: no timing for {label}'s architecture {entry['architecture']!r}")
        members.setdefault(entry["architecture"], []).append(label)
    for entry in (base, *points):
        s = stats[entry["architecture"]]
        entry.update(ort_ms=s.median_ms, ort_iqr_ms=[s.q1_ms, s.q3_ms], ort_spread_pct=s.spread_pct)
    b = stats[base["architecture"]]
    for label, p in zip(labels[1:], points):
        s = stats[p["architecture"]]
        lo, hi = speedup_interval(b, s)
        p["speedup"] = b.median_ms / max(s.median_ms, 1e-9)
        p["speedup_interval"] = [lo, hi]
        p["within_spread_of_base"] = lo <= 1.0 <= hi
        p["same_architecture_as"] = [m for m in members[p["architecture"]] if m != label]
        p["within_spread_of"] = [_label(q) for q in points if q["architecture"] != p["architecture"]
                                 and not differs(s, stats[q["architecture"]])]
    return [{"key": key, "models": models, "ort": stats[key].to_dict()} for key, models in members.items()]


def sweep_job(config: ExperimentConfig, *, ratios: Sequence[float] = (), criteria: Sequence[str] = (),
              force: bool = False, out_dir: str | Path | None = None) -> SweepOutcome:
    """Prune the config's trained model at every (criterion, ratio); evaluate, time and plot the frontier.

    Each setting is the run's prune stage placed in its own folder and driven by the same
    :class:`~medprune.workflows.stages.Runner` as ``medprune run``: reused when its settings (and
    the training's) are the ones it ran with, redone otherwise or with ``force``.
    """
    from medprune.report import HeadlineMetrics
    from medprune.report.sweep_plots import plot_frontier
    from medprune.tasks import task_class
    from medprune.workflows.helpers import example_batch, load_model_file
    from medprune.workflows.run import STAGES, RunContext, base_checkpoint, replace_compress, run_job, train_chain
    from medprune.workflows.stages import Runner

    t0 = time.perf_counter()
    task = task_class(config.task)
    lead = HeadlineMetrics.of(task)
    ratios = list(dict.fromkeys(ratios)) or [config.compress.ratio]  # a repeated setting is one point
    criteria = list(dict.fromkeys(criteria)) or [config.compress.criterion]
    for r in ratios:
        if not 0 < r < 1:
            raise ConfigError(f"--ratios: every ratio must be in (0, 1), got {r}")
    settings = []
    for crit in criteria:
        for r in ratios:
            options = config.compress.criterion_options if crit == config.compress.criterion else {}
            settings.append((crit, r, replace_compress(config, criterion=crit, criterion_options=options, ratio=r,
                                                       latency_target=None)))
    run_job(config, stop_after="train")
    run_dir = config.run_dir
    out = Path(out_dir) if out_dir is not None else run_dir / "sweep"
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = base_checkpoint(run_dir)
    base_metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    prune_stage = next(s for s in STAGES if s.name == "prune")

    points: list[dict[str, Any]] = []
    for crit, r, cfg in settings:
        folder = out / _tag(crit, r)
        stage = dataclasses.replace(prune_stage, folder=os.path.relpath(folder, run_dir), gated=False)
        ctx = RunContext(cfg)
        ctx.runner = Runner([stage], folder / "sweep_point.json", ctx, force=["prune"] if force else [],
                            chain=train_chain(cfg))
        folder.mkdir(parents=True, exist_ok=True)
        ctx.runner.run(stage)
        summary = json.loads((folder / "prune_summary.json").read_text(encoding="utf-8"))
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        points.append({"criterion": crit, "ratio": r, "macs": summary["macs_after"], "params": summary["params_after"],
                       "macs_reduction": summary["macs_reduction"], **_scores(metrics, lead),
                       "safety_gate": summary["safety_gate"],
                       "gate": (summary.get("gate") or {}).get("status"),
                       "model_file": summary.get("model_file", "model.pt"),
                       "dir": str(folder.relative_to(run_dir)) if folder.is_relative_to(run_dir) else str(folder)})

    # Latency: one ONNX Runtime CPU timing per distinct architecture, interleaved so the machine's
    # drift hits all alike; points of one architecture share its timing.
    from medprune.compress.export import export_onnx
    from medprune.compress.latency import bench_models

    example = example_batch(ctx.data().datasets["val" if "val" in ctx.data().datasets else "train"], 1)
    bc = config.bench
    base_model = load_model_file(checkpoint, config)
    base_key = architecture_key(base_model)
    onnx = {base_key: export_onnx(base_model, example, out / "base.onnx").path}
    for p in points:
        # a point that failed its safety gate is still a point of the frontier: timed and drawn, marked
        model = load_model_file(run_dir / p["dir"] / p["model_file"], config)
        p["architecture"] = architecture_key(model)
        path = export_onnx(model, example, run_dir / p["dir"] / "model.onnx").path
        onnx.setdefault(p["architecture"], path)
    log.info("sweep: timing %d distinct architecture(s) for the base and %d setting(s)", len(onnx), len(points))
    timed = bench_models({}, onnx, example, batch=bc.batch, threads=bc.threads, rounds=bc.rounds,
                         per_round=bc.per_round, base=base_key)
    threads = timed.threads
    stats = {key: entry.latency_ms["onnxruntime"] for key, entry in timed.models.items()}
    base_summary = next((json.loads((run_dir / p["dir"] / "prune_summary.json").read_text(encoding="utf-8"))
                         for p in points), {})
    base = {"macs": base_summary.get("macs_before"), "params": base_summary.get("params_before"),
            "architecture": base_key, **_scores(base_metrics, lead)}
    architectures = compare_latency(base, points, stats)
    result = {
        "config": config.source, "synthetic_data": bool(base_metrics.get("synthetic_data")),
        "split": base_metrics.get("split"), "task": config.task, "metrics": sweep_metrics(lead, task),
        "threads": threads, "batch": bc.batch,
        "distinct_architectures": len(architectures),
        "latency": {"runtime": "onnxruntime CPU", "rounds": bc.rounds, "per_round": bc.per_round,
                    "method": f"{METHOD}; each distinct architecture timed once",
                    "spread": "interquartile range of the per-round minima (ort_iqr_ms); ort_spread_pct is "
                              "half of it relative to the median",
                    "architectures": architectures},
        "base": base,
        "points": points,
    }
    atomic_write_json(out / "sweep.json", result)
    note = " (SYNTHETIC phantom data)" if result["synthetic_data"] else ""
    plot = plot_frontier(result, out / "frontier.png", title=f"{config.name}: quality vs cost{note}")
    return SweepOutcome(out_dir=out, result=result, plot=plot, seconds=time.perf_counter() - t0)


def sweep_metrics(lead: Any, task: type[Task] | Task) -> dict[str, dict[str, str]]:
    """``sweep.json``'s ``metrics``: which keys of its points are the headline score, the gate metric
    and the per-class metric the worst class is judged on, with their labels."""
    from medprune.report import sentence_label

    return {role: {"key": spec.key, "label": sentence_label(spec, task)}
            for role, spec in (("score", lead.score), ("gate", lead.gate), ("per_class", lead.per_class))}


def _scores(metrics: Mapping[str, Any], lead: Any) -> dict[str, Any]:
    """A model's headline and gate metrics and its worst class, keyed as in ``metrics.json``."""
    worst, value = worst_class(metrics, key=lead.per_class.key)
    gate = metrics.get(lead.gate.key)
    return {lead.score.key: metrics.get(lead.score.key), lead.gate.key: value if gate is None else gate,
            "worst_class": worst}


def _verdict(p: Mapping[str, Any]) -> str:
    """What a point's latency shows, in words: faster / slower than base, or within whose spread."""
    failed = ["FAILED its safety gate"] if p.get("gate") == "failed" else []
    if "base" in p["same_architecture_as"]:
        return "; ".join(failed + ["same architecture as base (one timing)"])
    parts = failed + ([] if p["within_spread_of_base"] else
                      ["faster than base" if p["speedup"] > 1 else "slower than base"])
    peers = ["base"] * p["within_spread_of_base"] + p["within_spread_of"]
    if peers:
        parts.append("within the measured spread of " + ", ".join(peers))
    if p["same_architecture_as"]:
        parts.append("same architecture (one timing) as " + ", ".join(p["same_architecture_as"]))
    return "; ".join(parts)


def format_sweep(result: Mapping[str, Any]) -> str:
    """The sweep as a plain-text table (one row per setting, base first), with the latency spread.

    ``arch`` is the start of the architecture key: rows sharing it share one timing. ``±`` is half
    the interquartile range of the per-round minima (% of the median); the speed-up interval comes
    from the quartiles, and the last column says whether a difference exceeds that spread.
    """
    b = result["base"]
    lat = result["latency"]
    keys = result.get("metrics") or _CLASSIFICATION_METRICS
    score, gate = keys["score"]["key"], keys["gate"]["key"]
    widths = [max(9, len(keys[role]["label"]) + 2) for role in ("score", "gate")]

    def value(v: Any, width: int) -> str:
        return f"{v:>{width}.3f}" if v is not None else f"{'n/a':>{width}}"

    rows = [f"{'setting':<16}{'arch':>8}{'MACs':>12}{'ORT ms':>9}{'±':>6}{'speed-up':>9}{'interval':>13}"
            f"{keys['score']['label']:>{widths[0]}}{keys['gate']['label']:>{widths[1]}}  {'worst class':<12}latency",
            f"{'base':<16}{b['architecture'][:6]:>8}{b['macs'] or 0:>12,}{b['ort_ms']:>9.2f}"
            f"{b['ort_spread_pct']:>5.0f}%{1.0:>9.2f}{'':>13}{value(b[score], widths[0])}"
            f"{value(b[gate], widths[1])}  {b['worst_class'] or '-':<12}"]
    for p in result["points"]:
        lo, hi = p["speedup_interval"]
        rows.append(f"{_label(p):<16}{p['architecture'][:6]:>8}{p['macs']:>12,}{p['ort_ms']:>9.2f}"
                    f"{p['ort_spread_pct']:>5.0f}%{p['speedup']:>9.2f}{f'{lo:.2f}–{hi:.2f}':>13}"
                    f"{value(p[score], widths[0])}{value(p[gate], widths[1])}  {p['worst_class'] or '-':<12}"
                    f"{_verdict(p)}")
    n = result["distinct_architectures"]
    rows.append(f"{n} distinct architecture{'s' if n != 1 else ''} among base and {len(result['points'])} "
                f"setting(s), each timed once on {lat['runtime']} ({result['threads']} thread(s), batch "
                f"{result['batch']}, interleaved, {lat['rounds']} rounds × {lat['per_round']} calls). "
                "± is half the interquartile range of the per-round minima; a speed-up interval that "
                "includes 1.00 is within the measured spread.")
    return "\n".join(rows)
