"""The pruning job behind ``medprune prune CONFIG --checkpoint CKPT --out DIR``.

Reads the config's ``compress`` section, loads the trained model, evaluates it (base), runs the
schedule with the criterion (class-balanced calibration for data-driven criteria, fine-tuning
through the trainer, optional distillation from the unpruned model, the safety gate on validation
worst-class sensitivity), optionally searches the ratio that meets a measured ONNX Runtime
latency target, evaluates the pruned model on the same split and writes::

    <out>/model.pt                 pruned model (medprune.load_model / medprune evaluate --checkpoint);
                                   model.gate_failed.pt instead when it failed the safety gate
    <out>/metrics.json             pruned model, same schema as ``medprune evaluate``
    <out>/base/metrics.json        unpruned model, same split
    <out>/kept_channels.json|png   channels per layer before/after
    <out>/sensitivity_base_vs_pruned.png
    <out>/prune_summary.json       criterion, schedule, MACs/params, events (safety gate), timings
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from medprune._io import atomic_write_json
from medprune.compress.context import CompressContext, PruneOptions
from medprune.compress.gate import GateResult, gate_file, judge_gate
from medprune.compress.importance import create_criterion
from medprune.compress.prune import layer_widths
from medprune.compress.schedules import create_schedule
from medprune.compress.serialize import save_model
from medprune.config import ExperimentConfig
from medprune.errors import ConfigError, DataError, PruningError
from medprune.models.cost import count_params, total_macs
from medprune.workflows.data import DataBundle, prepare_data
from medprune.workflows.helpers import (calibration_batches, configure_runtime, evaluate_model, example_batch,
                                        finetune, load_model_file, model_record, resolve_device, validation_metrics)

__all__ = ["PruneOutcome", "prune_job", "search_latency_ratio"]

log = logging.getLogger(__name__)


@dataclass
class PruneOutcome:
    """What ``medprune prune`` produced."""

    out_dir: Path
    model: nn.Module
    base_metrics: dict[str, Any]
    metrics: dict[str, Any]
    summary: dict[str, Any]
    gate: GateResult
    model_file: Path


def _training_sample(data: DataBundle, calibration: Any) -> Any:
    """``calibration.batches`` batches of training images drawn as they come (not class-balanced, a fixed seeded
    subset): what a BatchNorm refresh should see, the distribution the statistics were trained on."""
    from torch.utils.data import DataLoader, Subset

    train = data.datasets["train"]
    g = torch.Generator().manual_seed(calibration.seed)
    n = min(len(train), calibration.batches * calibration.batch_size)
    subset = Subset(train, torch.randperm(len(train), generator=g)[:n].tolist())
    return DataLoader(subset, batch_size=calibration.batch_size, shuffle=False)


def search_latency_ratio(model: nn.Module, example: torch.Tensor, ctx: CompressContext, target: Any,
                         out_dir: Path) -> tuple[float, dict[str, Any]]:
    """Smallest ratio (in ``target.step`` steps) whose one-shot pruned copy meets the latency target.

    Latency is measured on ONNX Runtime CPU (median after warm-up). Returns the ratio and a record of
    every step; if no ratio up to ``max_ratio`` meets the target, the largest is used and the
    record says so.
    """
    from medprune.compress.export import export_onnx
    from medprune.compress.latency import measure_ort_latency

    size = tuple(example.shape[1:])
    onnx_dir = out_dir / "latency_search"
    onnx_dir.mkdir(parents=True, exist_ok=True)

    def latency(m: nn.Module, tag: str) -> float:
        path = export_onnx(m, example[:1], onnx_dir / f"{tag}.onnx").path
        stats = measure_ort_latency(path, size, batch=target.batch, threads=target.threads, repeats=target.repeats)
        return float(stats.median_ms)

    base_ms = latency(model, "base")
    goal_ms = target.ms if target.ms is not None else base_ms / target.speedup
    steps: list[dict[str, Any]] = []
    ratio = 0.0
    chosen, met = None, False
    while ratio + target.step <= target.max_ratio + 1e-9:
        ratio = round(ratio + target.step, 6)
        trial = copy.deepcopy(model)
        result = ctx.prune(trial, ratio=ratio)
        ms = latency(trial, f"ratio_{ratio:.2f}")
        steps.append({"ratio": ratio, "ms": ms, "speedup": base_ms / ms, "macs": result.macs_after})
        log.info("latency search: ratio %.2f -> %.2f ms (target %.2f ms)", ratio, ms, goal_ms)
        chosen = ratio
        if ms <= goal_ms:
            met = True
            break
    record = {"base_ms": base_ms, "target_ms": goal_ms, "met": met, "ratio": chosen, "steps": steps}
    if not met:
        log.warning("latency target %.2f ms not met up to ratio %.2f (reached %.2f ms)", goal_ms, chosen,
                    steps[-1]["ms"] if steps else base_ms)
    return float(chosen or 0.0), record


def _backoff_note(events: list[dict[str, Any]]) -> str | None:
    acted = [e for e in events if e["event"] in ("safety_backoff", "safety_stop")]
    return acted[0]["message"] if acted else None


def prune_job(config: ExperimentConfig, checkpoint: str | Path, out_dir: str | Path | None = None, *,
              split: str = "test", accept_unsafe: bool = False) -> PruneOutcome:
    """Prune the checkpoint's model as ``config.compress`` says; evaluate base and pruned; write reports.

    Whatever the schedule, the pruned model is judged by the safety gate (validation worst-class
    sensitivity against the unpruned model, :mod:`medprune.compress.gate`). A model that fails it
    is written as ``model.gate_failed.pt`` instead of ``model.pt`` (``outcome.gate.failed``), unless
    ``accept_unsafe``, which keeps it as ``model.pt`` and records ``accepted_unsafe``.
    """
    from medprune.report.compress_plots import plot_kept_channels, plot_sensitivity_comparison

    t0 = time.perf_counter()
    configure_runtime(config)
    device = resolve_device(config)
    task = config.build_task()
    cc = config.compress
    out = Path(out_dir) if out_dir is not None else config.run_dir / "compressed"
    out.mkdir(parents=True, exist_ok=True)
    model = load_model_file(checkpoint, config, device)  # a bad checkpoint fails before any data work
    data: DataBundle = prepare_data(config, config.run_dir, task=task)
    if split not in data.datasets:
        split = "val" if "val" in data.datasets else "train"
        log.warning("no test split: evaluating base and pruned models on the %s split", split)
    if "val" not in data.datasets:
        raise DataError(f"{data.manifest}: the validation split is empty; pruning needs it to fine-tune and gate")
    base_metrics = evaluate_model(model, data.datasets[split], config, out / "base", task=task, device=device,
                                  split=split, synthetic=data.synthetic,
                                  extra={"checkpoint": str(checkpoint), "stage": "base"})
    teacher = copy.deepcopy(model).eval() if cc.finetune.distill.enabled else None
    example = example_batch(data.datasets["val"]).to(device)
    try:
        criterion = create_criterion(cc.criterion, **cc.criterion_options)
        schedule = create_schedule(cc.schedule, **cc.schedule_options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{config.source}: compress: {exc}") from None
    calib = calibration_batches(config, data, task)

    def tune(m: nn.Module, epochs: int, hooks: Sequence[Any], tag: str) -> nn.Module:
        # a previous prune run's fine-tuning is discarded, never resumed
        return finetune(m, data, config, out / tag, epochs=epochs, task=task, device=device, hooks=hooks,
                        teacher=teacher)

    options = PruneOptions(ratio=cc.ratio, layer_ratios=dict(cc.layer_ratios), global_pruning=cc.global_pruning,
                           round_to=cc.round_to, protect=tuple(cc.protect), max_layer_ratio=cc.max_layer_ratio)
    ctx = CompressContext(model=model, example_inputs=example, criterion=criterion, options=options,
                          calibration=(lambda: (((x.to(device), y.to(device)) for x, y in calib())))
                          if criterion.data_driven else None,
                          finetune=tune, evaluate=lambda m: validation_metrics(m, data, config, device, task),
                          finetune_epochs=cc.finetune.epochs, max_worst_class_drop=cc.safety.max_worst_class_drop,
                          gate_action=cc.safety.action, calibration_batches=cc.calibration.batches, run_dir=out,
                          task=task)
    latency_record = None
    if cc.latency_target is not None:
        ratio, latency_record = search_latency_ratio(model, example, ctx, cc.latency_target, out)
        ctx.options = dataclasses.replace(options, ratio=ratio)
        ctx.event("latency_target", **{k: v for k, v in latency_record.items() if k != "steps"})
    allocation_record = None
    if cc.allocation is not None:
        from medprune.compress.allocation import refresh_batchnorm, worst_class_allocation

        ratios, allocation = worst_class_allocation(
            ctx, model, macs_keep=cc.allocation.macs_keep, candidates=cc.allocation.candidates,
            refresh=lambda m: refresh_batchnorm(m, _training_sample(data, cc.calibration)))
        ctx.options = dataclasses.replace(options, ratio=0.0, layer_ratios=ratios)
        allocation_record = allocation.to_dict()
        atomic_write_json(out / "allocation.json", allocation_record)
        ctx.event("allocation", metric=allocation.metric, macs_keep=allocation.macs_keep,
                  predicted_macs_saved=allocation.predicted_macs_saved, predicted_drop=allocation.predicted_drop,
                  layers={k: v for k, v in ratios.items() if v > 0})
    widths_before = layer_widths(model)
    macs_before, params_before = total_macs(model, example), count_params(model)
    ctx.record_baseline(model)
    t_prune = time.perf_counter()
    try:
        pruned = schedule(ctx)
    except PruningError as exc:
        raise PruningError(f"{config.source}: compress: {exc}") from None
    prune_seconds = time.perf_counter() - t_prune
    pruned = pruned.to(device).eval()
    gate = ctx.judge(pruned) or judge_gate({}, {}, None, metric=task.gate_metric)
    ctx.event("safety_gate", step="final", **{k: v for k, v in gate.to_dict().items() if k != "message"})
    backoff = _backoff_note(ctx.events)
    if backoff and gate.status == "passed":
        gate.message = f"{gate.message}; {backoff}"
    if accept_unsafe:
        gate = gate.accepted()
    kept = {n: (widths_before.get(n, w), w) for n, w in layer_widths(pruned).items()}
    summary: dict[str, Any] = {
        "criterion": cc.criterion, "criterion_options": cc.criterion_options, "schedule": cc.schedule,
        "schedule_options": cc.schedule_options, "ratio": ctx.options.ratio, "round_to": cc.round_to,
        "global_pruning": cc.global_pruning, "protect": list(cc.protect),
        "params_before": params_before, "params_after": count_params(pruned),
        "macs_before": macs_before, "macs_after": total_macs(pruned, example),
        "input_size": list(example.shape[1:]), "prune_and_finetune_seconds": round(prune_seconds, 2),
        "events": ctx.events, "latency_search": latency_record, "allocation": allocation_record,
        "synthetic_data": data.synthetic,
    }
    summary["macs_reduction"] = summary["macs_before"] / max(1, summary["macs_after"])
    summary["gate"] = gate.to_dict()
    summary["safety_gate"] = gate.message
    model_file = gate_file(out / "model.pt", gate)
    for stale in {out / "model.pt", gate_file(out / "model.pt", GateResult("failed"))} - {model_file}:
        stale.unlink(missing_ok=True)
    summary["model_file"] = model_file.name
    save_model(pruned, model_file, extra={"prune": {k: summary[k] for k in (
        "criterion", "schedule", "ratio", "macs_before", "macs_after")}, "gate": gate.to_dict(),
        **model_record(config)})
    metrics = evaluate_model(pruned, data.datasets[split], config, out, task=task, device=device, split=split,
                             synthetic=data.synthetic, extra={"checkpoint": str(model_file), "stage": "pruned"})
    atomic_write_json(out / "kept_channels.json", {n: {"before": b, "after": a} for n, (b, a) in kept.items()})
    note = " (synthetic phantom data)" if data.synthetic else ""
    plot_kept_channels(kept, out / "kept_channels.png", title=f"Channels per layer: {cc.criterion}, {cc.schedule}")
    first = task.per_class_metrics[0].key
    plot_sensitivity_comparison(base_metrics, metrics, list(metrics["per_class"]), out / f"{first}_base_vs_pruned.png",
                                title=f"Per-class {first}, base vs pruned, {split} split{note}",
                                metrics=[m.key for m in task.per_class_metrics[:2]])
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(out / "prune_summary.json", summary)
    return PruneOutcome(out_dir=out, model=pruned, base_metrics=base_metrics, metrics=metrics, summary=summary,
                        gate=gate, model_file=model_file)
