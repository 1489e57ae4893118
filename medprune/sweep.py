"""``medprune sweep CONFIG --ratios 0.3,0.5,0.7``: the accuracy / cost frontier from one trained model.

The config's model is trained once (the ``train`` stage of ``medprune run``, reused when it
exists); then, for every (criterion, ratio) setting, the compress and evaluate stages run into
``<run dir>/sweep/<criterion>_r<ratio>/`` (the layout of ``compressed/``) and every pruned model
and the base are exported to ONNX and timed interleaved on ONNX Runtime CPU. The result::

    sweep/sweep.json      base and one point per setting: MACs, params, ONNX Runtime latency,
                          balanced accuracy, worst-class sensitivity (and which class)
    sweep/frontier.png    balanced accuracy and worst-class sensitivity against MACs and latency

A setting whose folder already holds a finished prune with the same settings is reused, so an
interrupted sweep continues; ``force=True`` redoes every setting.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from medprune._io import atomic_write_json
from medprune.config import ExperimentConfig
from medprune.errors import ConfigError

__all__ = ["SweepOutcome", "sweep_job", "worst_class", "parse_list"]

log = logging.getLogger(__name__)


@dataclass
class SweepOutcome:
    """The sweep's record (``sweep.json`` content), its folder and the frontier plot."""

    out_dir: Path
    result: dict[str, Any]
    plot: Path
    seconds: float


def worst_class(metrics: dict[str, Any]) -> tuple[str, float]:
    """The class with the lowest sensitivity and that sensitivity."""
    per_class = {c: row.get("sensitivity") for c, row in metrics.get("per_class", {}).items()}
    scored = {c: float(v) for c, v in per_class.items() if v is not None}
    if not scored:
        return "", float("nan")
    name = min(scored, key=scored.__getitem__)
    return name, scored[name]


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


def _point_settings(config: ExperimentConfig) -> dict[str, Any]:
    from medprune.run import stage_settings

    return {**stage_settings(config, "train"), **stage_settings(config, "prune")}


def sweep_job(config: ExperimentConfig, *, ratios: Sequence[float] = (), criteria: Sequence[str] = (),
              force: bool = False, out_dir: str | Path | None = None) -> SweepOutcome:
    """Prune the config's trained model at every (criterion, ratio); evaluate, time and plot the frontier."""
    from medprune.compress.job import example_batch, load_trained_model, prune_job
    from medprune.compress.export import export_onnx
    from medprune.compress.latency import _torch_threads, interleaved_latency, ort_runner
    from medprune.engine.jobs import prepare_data
    from medprune.report.sweep_plots import plot_frontier
    from medprune.run import _base_checkpoint, replace_compress, run_job

    t0 = time.perf_counter()
    ratios = list(ratios) or [config.compress.ratio]
    criteria = list(criteria) or [config.compress.criterion]
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
    checkpoint = _base_checkpoint(run_dir)
    base_metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))

    points: list[dict[str, Any]] = []
    for crit, r, cfg in settings:
        folder = out / _tag(crit, r)
        marker = folder / "sweep_point.json"
        wanted = _point_settings(cfg)
        done = marker.is_file() and (folder / "prune_summary.json").is_file() and not force
        if done:
            try:
                done = json.loads(marker.read_text(encoding="utf-8")).get("settings") == json.loads(
                    json.dumps(wanted, default=str))
            except (OSError, ValueError):
                done = False
        if done:
            log.info("sweep: reusing %s", folder)
        else:
            log.info("sweep: %s at ratio %.2f", crit, r)
            shutil.rmtree(folder, ignore_errors=True)
            prune_job(cfg, checkpoint, folder)
            atomic_write_json(marker, {"settings": json.loads(json.dumps(wanted, default=str))})
        summary = json.loads((folder / "prune_summary.json").read_text(encoding="utf-8"))
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        worst, sens = worst_class(metrics)
        points.append({"criterion": crit, "ratio": r, "macs": summary["macs_after"], "params": summary["params_after"],
                       "macs_reduction": summary["macs_reduction"], "balanced_accuracy": metrics["balanced_accuracy"],
                       "worst_class_sensitivity": sens, "worst_class": worst, "safety_gate": summary["safety_gate"],
                       "dir": str(folder.relative_to(run_dir)) if folder.is_relative_to(run_dir) else str(folder)})

    # Latency: every model on ONNX Runtime CPU, interleaved so the machine's drift hits all alike.
    data = prepare_data(config, run_dir)
    example = example_batch(data.datasets["val" if "val" in data.datasets else "train"], 1)
    bc = config.bench
    threads = bc.threads or torch.get_num_threads()
    onnx = {"base": export_onnx(load_trained_model(config, checkpoint, torch.device("cpu")).eval(), example,
                                out / "base.onnx").path}
    for p in points:
        model = load_trained_model(config, run_dir / p["dir"] / "model.pt", torch.device("cpu")).eval()
        onnx[p["dir"]] = export_onnx(model, example, run_dir / p["dir"] / "model.onnx").path
    x = example.repeat(bc.batch, 1, 1, 1)
    with _torch_threads(threads):
        stats = interleaved_latency({k: ort_runner(v, x, threads) for k, v in onnx.items()},
                                    rounds=bc.rounds, per_round=bc.per_round)
    base_ms = stats["base"].median_ms
    for p in points:
        p["ort_ms"] = stats[p["dir"]].median_ms
        p["speedup"] = base_ms / max(p["ort_ms"], 1e-9)
    worst, sens = worst_class(base_metrics)
    base_summary = next((json.loads((run_dir / p["dir"] / "prune_summary.json").read_text(encoding="utf-8"))
                         for p in points), {})
    result = {
        "config": config.source, "synthetic_data": bool(base_metrics.get("synthetic_data")),
        "split": base_metrics.get("split"), "threads": threads, "batch": bc.batch,
        "base": {"macs": base_summary.get("macs_before"), "params": base_summary.get("params_before"),
                 "ort_ms": base_ms, "balanced_accuracy": base_metrics["balanced_accuracy"],
                 "worst_class_sensitivity": sens, "worst_class": worst},
        "points": points,
    }
    atomic_write_json(out / "sweep.json", result)
    note = " (SYNTHETIC phantom data)" if result["synthetic_data"] else ""
    plot = plot_frontier(result, out / "frontier.png", title=f"{config.name}: accuracy vs cost{note}")
    return SweepOutcome(out_dir=out, result=result, plot=plot, seconds=time.perf_counter() - t0)


def format_sweep(result: dict[str, Any]) -> str:
    """The sweep as a plain-text table (one row per setting, base first)."""
    b = result["base"]
    rows = [f"{'setting':<26}{'MACs':>12}{'ORT ms':>9}{'speed-up':>9}{'bal.acc':>9}{'worst sens':>12}  worst class",
            f"{'base':<26}{b['macs'] or 0:>12,}{b['ort_ms']:>9.2f}{1.0:>9.2f}{b['balanced_accuracy']:>9.3f}"
            f"{b['worst_class_sensitivity']:>12.3f}  {b['worst_class']}"]
    for p in result["points"]:
        setting = f"{p['criterion']} r={p['ratio']:.2f}"
        rows.append(f"{setting:<26}{p['macs']:>12,}{p['ort_ms']:>9.2f}"
                    f"{p['speedup']:>9.2f}{p['balanced_accuracy']:>9.3f}{p['worst_class_sensitivity']:>12.3f}"
                    f"  {p['worst_class']}")
    return "\n".join(rows)
