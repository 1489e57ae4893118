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
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from medprune._io import atomic_write_json
from medprune.compress._context import CompressContext, PruneOptions
from medprune.compress.calibration import class_balanced_batches
from medprune.compress.gate import GateResult, gate_file, judge_gate
from medprune.compress.importance import create_criterion
from medprune.compress.prune import _count_macs, _count_params, layer_widths
from medprune.compress.schedules import create_schedule
from medprune.compress.serialize import save_model
from medprune.config import ExperimentConfig
from medprune.engine.checkpoint import load_checkpoint, load_model_weights
from medprune.engine.jobs import (DataBundle, _configure_runtime, build_model, evaluate_model, prepare_data,
                                  resolve_device)
from medprune.engine.trainer import Distillation, Trainer, predict
from medprune.errors import ConfigError, DataError, PruningError
from medprune.metrics import classification_metrics
from medprune.models.structure import build_from_spec

__all__ = ["PruneOutcome", "prune_job", "load_trained_model", "example_batch", "search_latency_ratio",
           "finetune_config", "validation_metrics", "model_record"]

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


def load_trained_model(config: ExperimentConfig, checkpoint: str | Path, device: torch.device) -> nn.Module:
    """The model a checkpoint holds (its recorded architecture, else the config's model)."""
    ckpt = load_checkpoint(checkpoint, map_location=device)
    spec = ckpt.get("model_spec")
    model = build_from_spec(spec, str(checkpoint)) if spec else build_model(config)
    load_model_weights(model, ckpt, checkpoint)
    return model.to(device)


def model_record(config: ExperimentConfig) -> dict[str, Any]:
    """``input_size`` ``(C, H, W)`` and ``classes`` of the config's models, for :func:`save_model`."""
    h, w = config.data.image_size
    return {"input_size": (1 if config.data.channels == "gray" else 3, int(h), int(w)),
            "classes": list(config.data.classes)}


def example_batch(dataset: Any, n: int = 2) -> torch.Tensor:
    """The first ``n`` images of ``dataset`` as a batch (for tracing and self-checks)."""
    return torch.stack([dataset[i][0] for i in range(min(n, len(dataset)))])


def finetune_config(config: ExperimentConfig, epochs: int, lr: float | None = None) -> ExperimentConfig:
    """``config`` for fine-tuning: ``epochs`` epochs at ``lr`` (default ``compress.finetune.lr``, else
    ``optim.lr``), no warm-up, no early stop (the best validation epoch is still kept)."""
    lr = lr or config.compress.finetune.lr
    optim = dataclasses.replace(
        config.optim, epochs=epochs, lr=lr or config.optim.lr,
        schedule=dataclasses.replace(config.optim.schedule, warmup_epochs=0),
        early_stopping=dataclasses.replace(config.optim.early_stopping, patience=None))
    return dataclasses.replace(config, optim=optim)


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


def validation_metrics(model: nn.Module, dataset: Any, config: ExperimentConfig,
                       device: torch.device) -> dict[str, Any]:
    """Per-class metrics on ``dataset`` without intervals: what the safety gate compares."""
    preds = predict(model, dataset, batch_size=config.eval.batch_size or config.optim.batch_size, device=device,
                    workers=config.runtime.workers, progress=False, desc="gate")
    return classification_metrics(preds.labels, preds.probs, list(config.data.classes), n_bootstrap=0)


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
    _configure_runtime(config)
    device = resolve_device(config)
    cc = config.compress
    out = Path(out_dir) if out_dir is not None else config.run_dir / "compressed"
    out.mkdir(parents=True, exist_ok=True)
    model = load_trained_model(config, checkpoint, device)  # a bad checkpoint fails before any data work
    data: DataBundle = prepare_data(config, config.run_dir)
    if split not in data.datasets:
        split = "val" if "val" in data.datasets else "train"
        log.warning("no test split: evaluating base and pruned models on the %s split", split)
    if "val" not in data.datasets:
        raise DataError(f"{data.manifest}: the validation split is empty; pruning needs it to fine-tune and gate")
    base_metrics = evaluate_model(model, data.datasets[split], config, out / "base", device=device, split=split,
                                  synthetic=data.synthetic, extra={"checkpoint": str(checkpoint), "stage": "base"})
    teacher = copy.deepcopy(model).eval() if cc.finetune.distill.enabled else None
    example = example_batch(data.datasets["val"]).to(device)
    try:
        criterion = create_criterion(cc.criterion, **cc.criterion_options)
        schedule = create_schedule(cc.schedule, **cc.schedule_options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{config.source}: compress: {exc}") from None
    calib = class_balanced_batches(data.datasets[cc.calibration.split], batch_size=cc.calibration.batch_size,
                                   num_batches=cc.calibration.batches, seed=cc.calibration.seed,
                                   num_classes=len(config.data.classes))

    def finetune(m: nn.Module, epochs: int, hooks: Sequence[Any], tag: str) -> nn.Module:
        ft_cfg = finetune_config(config, epochs)
        shutil.rmtree(out / tag, ignore_errors=True)  # a previous prune run's fine-tuning is not resumed
        distill = Distillation(teacher, cc.finetune.distill.alpha, cc.finetune.distill.temperature) \
            if teacher is not None else None
        trainer = Trainer(m, data.datasets["train"], data.datasets["val"], ft_cfg, out / tag, device,
                          hooks=hooks, distill=distill)
        result = trainer.fit()
        best = result.best_checkpoint
        if best is not None:
            load_model_weights(trainer.model, load_checkpoint(best, map_location=device), best)
        return trainer.model

    def validate(m: nn.Module) -> dict[str, Any]:
        return validation_metrics(m, data.datasets["val"], config, device)

    options = PruneOptions(ratio=cc.ratio, layer_ratios=dict(cc.layer_ratios), global_pruning=cc.global_pruning,
                           round_to=cc.round_to, protect=tuple(cc.protect), max_layer_ratio=cc.max_layer_ratio)
    ctx = CompressContext(model=model, example_inputs=example, criterion=criterion, options=options,
                          calibration=(lambda: (((x.to(device), y.to(device)) for x, y in calib())))
                          if criterion.data_driven else None,
                          finetune=finetune, evaluate=validate, finetune_epochs=cc.finetune.epochs,
                          max_worst_class_drop=cc.safety.max_worst_class_drop, gate_action=cc.safety.action,
                          calibration_batches=cc.calibration.batches, run_dir=out)
    latency_record = None
    if cc.latency_target is not None:
        ratio, latency_record = search_latency_ratio(model, example, ctx, cc.latency_target, out)
        ctx.options = dataclasses.replace(options, ratio=ratio)
        ctx.event("latency_target", **{k: v for k, v in latency_record.items() if k != "steps"})
    widths_before = layer_widths(model)
    macs_before, params_before = _count_macs(model, example, None), _count_params(model)
    ctx.record_baseline(model)
    t_prune = time.perf_counter()
    try:
        pruned = schedule(ctx)
    except PruningError as exc:
        raise PruningError(f"{config.source}: compress: {exc}") from None
    prune_seconds = time.perf_counter() - t_prune
    pruned = pruned.to(device).eval()
    gate = ctx.judge(pruned) or judge_gate({}, {}, None)
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
        "params_before": params_before, "params_after": _count_params(pruned),
        "macs_before": macs_before, "macs_after": _count_macs(pruned, example, None),
        "input_size": list(example.shape[1:]), "prune_and_finetune_seconds": round(prune_seconds, 2),
        "events": ctx.events, "latency_search": latency_record, "synthetic_data": data.synthetic,
    }
    summary["macs_reduction"] = summary["macs_before"] / max(1, summary["macs_after"])
    summary["gate"] = gate.to_dict()
    summary["safety_gate"] = gate.message
    model_file = gate_file(out / "model.pt", gate)
    for stale in {out / "model.pt", gate_file(out / "model.pt", GateResult("failed"))} - {model_file}:
        stale.unlink(missing_ok=True)
    summary["model_file"] = model_file.name
    save_model(pruned, model_file, extra={"prune": {k: summary[k] for k in (
        "criterion", "schedule", "ratio", "macs_before", "macs_after")}, "gate": gate.to_dict()},
        **model_record(config))
    metrics = evaluate_model(pruned, data.datasets[split], config, out, device=device, split=split,
                             synthetic=data.synthetic, extra={"checkpoint": str(model_file), "stage": "pruned"})
    atomic_write_json(out / "kept_channels.json", {n: {"before": b, "after": a} for n, (b, a) in kept.items()})
    note = " (synthetic phantom data)" if data.synthetic else ""
    plot_kept_channels(kept, out / "kept_channels.png", title=f"Channels per layer: {cc.criterion}, {cc.schedule}")
    plot_sensitivity_comparison(base_metrics, metrics, list(config.data.classes), out / "sensitivity_base_vs_pruned.png",
                                title=f"Per-class sensitivity, base vs pruned, {split} split{note}")
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(out / "prune_summary.json", summary)
    return PruneOutcome(out_dir=out, model=pruned, base_metrics=base_metrics, metrics=metrics, summary=summary,
                        gate=gate, model_file=model_file)
