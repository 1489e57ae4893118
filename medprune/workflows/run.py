"""``medprune run CONFIG``: the whole job, one config in, a compressed, exported, evaluated model out.

The stages are one table, :data:`STAGES` — in order, each writing into the run directory
``<runtime.out_dir>/<name>/``::

    train     checkpoints/best.pt, metrics.json            (base model, test split)
    baselines baselines/<name>/  (data.degradation: the models the degradation-aware one must beat,
              trained at the same budget: on clean images; on degraded images without q)
    pool      pooled/      (compress.pooling: the trained model's pools swapped, fine-tuned, evaluated)
    prune     compressed/  (model.pt, metrics.json, base/, kept channels, plots, prune_summary.json)
    quantize  quantized/   (compress.quantize.method: direct — Direct Quantization, fine-tuned, evaluated)
    calibrate calibration.json + .png (tasks that tune post-processing on validation: segmentation's
              background-removal threshold, swept on the final model; used by ``medprune predict``)
    export    export/model.onnx (+ model.int8.onnx for compress.quantize.method: int8, evaluated
              on the test split with ONNX Runtime), export/export.json (parity / agreement); a
              two-stage detector (data.stage1) also export/two_stage.onnx: stage 1, its
              background threshold and the detector as one graph, parity-checked on raw frames
    bench     bench.json   (base and final model timed interleaved, PyTorch and ONNX Runtime CPU)
    degradation degradation/grid.json, grid.csv, plots (data.degradation: every model — aware with true
              and estimated q, compressed, baselines — on the test split at each level of the grid)
    report    report.html  (self-contained) + report_*.png

:class:`~medprune.workflows.stages.Runner` decides, stage by stage, what to reuse and what to
redo: a stage whose outputs exist and whose settings (and those of every stage before it) are
the ones it ran with is reused, so a killed run continues where it stopped (an interrupted
training resumes from ``checkpoints/last.pt``); ``force=("prune",)`` (``--force prune``) redoes a
stage and every later one; when the *training* settings changed, the run stops and asks for
``--force train`` or another name instead of deleting a trained model. A model that fails its
safety gate is kept as ``model.gate_failed.pt``, the gated stages after it are skipped, and
``outcome.gate_failures`` says why (``medprune run`` exits 3); ``accept_unsafe`` keeps it.
What each stage did is recorded in ``run.json`` (:class:`~medprune.report.records.RunRecord`).

Every stage goes through the config's task (:mod:`medprune.tasks`): classification and
segmentation runs share this table.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from medprune._io import atomic_write_json
from medprune.config import ExperimentConfig, save_config
from medprune.errors import CheckpointError, ConfigError
from medprune.registry import suggest
from medprune.tasks import task_class
from medprune.workflows.stages import Runner, Stage, digest

__all__ = ["STAGES", "STAGE_NAMES", "RunOutcome", "RunContext", "run_job", "base_checkpoint", "stage_model",
           "replace_compress", "prune_applies", "CALIBRATION", "final_model_file"]

log = logging.getLogger(__name__)

#: Post-processing tuned on validation (the segmentation background threshold), read by ``medprune predict``.
CALIBRATION = "calibration.json"


@dataclass
class RunOutcome:
    """What ``medprune run`` produced: the run directory, what each stage did, and the key files.

    ``gate_failures`` holds one line per compressed model that failed its safety gate (kept as
    ``*.gate_failed.*``, not final); the ``medprune run`` command then exits 3.
    """

    run_dir: Path
    stages: dict[str, dict[str, Any]]
    final: str | None
    report: Path | None
    seconds: float
    files: dict[str, str] = field(default_factory=dict)
    gate_failures: list[str] = field(default_factory=list)


@dataclass
class RunContext:
    """What the stages of one run share: the config, its task, the run directory, the data (built once)."""

    config: ExperimentConfig
    accept_unsafe: bool = False
    runner: Runner | None = None
    _data: Any = None
    _task: Any = None

    @property
    def run_dir(self) -> Path:
        return self.config.run_dir

    @property
    def task(self) -> Any:
        if self._task is None:
            self._task = self.config.build_task()
        return self._task

    def data(self) -> Any:
        """The prepared data (manifest, patient split, data sets), built once per run."""
        from medprune.workflows.data import prepare_data

        if self._data is None:
            self._data = prepare_data(self.config, self.run_dir, task=self.task)
        return self._data

    def device(self) -> torch.device:
        from medprune.workflows.helpers import resolve_device

        return resolve_device(self.config)

    def load(self, path: Path) -> nn.Module:
        from medprune.workflows.helpers import load_model_file

        return load_model_file(path, self.config, torch.device("cpu"))

    def input_model(self, stage: Stage) -> Path:
        """The model ``stage`` starts from: the last model-producing stage before it whose model is current
        and passed its gate, else the base model."""
        assert self.runner is not None
        merged = self.runner.merged()
        before = list(STAGES)[: STAGE_NAMES.index(stage.name)]
        for prior in reversed(before):
            record = self.runner.records.get(prior.name) or merged.get(prior.name)
            if prior.produces_model and record is not None and record.produced and not record.gate_failed:
                return self.run_dir / str(prior.folder) / "model.pt"
        return base_checkpoint(self.run_dir)

    def final_model(self, *, include_failed: bool = False) -> tuple[str, Path]:
        """``(name, file)`` of the run's final model: the last compressed one, else the base."""
        assert self.runner is not None
        final = self.runner.final(include_failed=include_failed)
        if final is None:
            return "base", base_checkpoint(self.run_dir)
        return str(final.folder), stage_model(self.run_dir / str(final.folder))


# ---------------------------------------------------------------------------------------- helpers
def base_checkpoint(run_dir: Path) -> Path:
    """The base model of a run directory: ``checkpoints/best.pt``, else ``last.pt``."""
    best = run_dir / "checkpoints" / "best.pt"
    return best if best.is_file() else run_dir / "checkpoints" / "last.pt"


def stage_model(folder: Path) -> Path:
    """The model file of a stage folder: ``model.pt``, or ``model.gate_failed.pt`` when it failed its gate."""
    from medprune.compress.gate import GateResult, gate_file

    plain = folder / "model.pt"
    failed = gate_file(plain, GateResult("failed"))
    return failed if failed.is_file() and not plain.is_file() else plain


def int8_file(folder: Path) -> Path:
    """``export/model.int8.onnx``, or its ``gate_failed`` name when the INT8 graph failed its gate."""
    from medprune.compress.gate import GateResult, gate_file

    plain = folder / "model.int8.onnx"
    failed = gate_file(plain, GateResult("failed"))
    return failed if failed.is_file() and not plain.is_file() else plain


def prune_applies(config: ExperimentConfig) -> bool:
    """Whether the config asks for pruning at all."""
    cc = config.compress
    return cc.ratio > 0 or bool(cc.layer_ratios) or cc.latency_target is not None or cc.allocation is not None


def _gate_extra(gate: Any, path: Path) -> dict[str, Any]:
    """What a gated stage adds to its run.json record."""
    return {"gate": gate.to_dict(), "safety_gate": gate.message, "model_file": str(path)}


def _example(ctx: RunContext, n: int = 2) -> torch.Tensor:
    from medprune.workflows.helpers import example_batch

    data = ctx.data()
    return example_batch(data.datasets["val" if "val" in data.datasets else "train"], n)


def _finetune_gate_evaluate(ctx: RunContext, model: nn.Module, out: Path, ft: Any, source: nn.Module,
                            stage: str) -> tuple[nn.Module, Any, Path]:
    """Fine-tune ``model`` as ``ft`` (a FinetuneConfig) says (distilling from ``source`` if asked), keep the
    best epoch, judge it with the safety gate against ``source`` on validation, evaluate it on test.
    Returns the model, the gate and the file it is to be saved as."""
    from medprune.compress.gate import gate_file, judge_gate, task_gate
    from medprune.workflows.helpers import evaluate_model, finetune, validation_metrics

    config, task, data, device = ctx.config, ctx.task, ctx.data(), ctx.device()
    model = finetune(model.to(device), data, config, out / "finetune", epochs=ft.epochs, lr=ft.lr, task=task,
                     device=device, teacher=source if ft.distill.enabled else None).eval()
    limit = config.compress.safety.max_worst_class_drop
    if limit is None:
        gate = judge_gate({}, {}, None, metric=task.gate_metric)
    else:
        gate = task_gate(validation_metrics(source.to(device).eval(), data, config, device, task),
                         validation_metrics(model, data, config, device, task), limit, task, what=f"the {stage} model")
    gate = gate.accepted() if ctx.accept_unsafe else gate
    path = gate_file(out / "model.pt", gate)
    split = data.eval_split()
    evaluate_model(model, data.datasets[split], config, out, task=task, device=device, split=split,
                   synthetic=data.synthetic, extra={"checkpoint": str(path), "stage": stage})
    return model, gate, path


# ---------------------------------------------------------------------------------------- settings
def _train_settings(plain: dict[str, Any]) -> dict[str, Any]:
    return {"task": plain["task"], "task_options": plain["task_options"], "data": plain["data"],
            "model": plain["model"], "optim": plain["optim"], "seed": plain["runtime"]["seed"], "eval": plain["eval"]}


def _export_settings(plain: dict[str, Any]) -> dict[str, Any]:
    compress = plain["compress"]
    int8 = compress["quantize"] if compress["quantize"]["method"] == "int8" else None
    return {"export": plain["export"], "int8": int8, "calibration": compress["calibration"],
            "safety": compress["safety"]}


# ---------------------------------------------------------------------------------------- stages
def _train(ctx: RunContext, stage: Stage) -> dict[str, Any]:
    from medprune.workflows.jobs import train

    assert ctx.runner is not None
    last = ctx.run_dir / "checkpoints" / "last.pt"
    previous = ctx.runner.previous_stage("train")
    same = previous is not None and previous.chain == ctx.runner.chain
    resume = last.is_file() and "train" not in ctx.runner.forced and same
    if resume:
        log.info("stage train: resuming the interrupted training from %s", last)
    elif last.is_file() and not same and "train" not in ctx.runner.forced:
        raise CheckpointError(f"{ctx.run_dir}: holds a training run with unknown settings (no run.json or "
                              "config.yaml that matches); pass --force train to retrain it, or set another name")
    outcome = train(ctx.config, resume=resume, overwrite=not resume)
    ctx._data = outcome.data
    return {"best_checkpoint": str(outcome.result.best_checkpoint or outcome.result.last_checkpoint), "label": "base"}


def _train_changed(ctx: RunContext, keys: list[str]) -> None:
    assert ctx.runner is not None
    if "train" not in ctx.runner.forced:
        raise ConfigError(
            f"{ctx.config.source}: {ctx.run_dir} was trained with other settings (changed: {', '.join(keys[:6])}"
            f"{', …' if len(keys) > 6 else ''}); pass --force train to retrain it there, or set another name")


def _pool(ctx: RunContext, stage: Stage) -> dict[str, Any]:
    from medprune.compress.serialize import save_model
    from medprune.models.pooling import replace_pooling
    from medprune.models.settings import pooling_spec
    from medprune.workflows.helpers import model_record

    out = ctx.run_dir / str(stage.folder)
    spec = pooling_spec(ctx.config.compress.pooling)
    assert spec is not None and spec[0] is not None  # validated with the config
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    base = ctx.load(ctx.input_model(stage))
    model = replace_pooling(copy.deepcopy(base), spec[0], **spec[1])
    model, gate, path = _finetune_gate_evaluate(ctx, model, out, ctx.config.compress.finetune, base, "pooled")
    save_model(model, path, extra={"pooling": {"kind": spec[0], **spec[1]}, "gate": gate.to_dict(),
                                   **model_record(ctx.config)})
    return {"label": f"{spec[0]} pooling", **_gate_extra(gate, path)}


def _prune(ctx: RunContext, stage: Stage) -> dict[str, Any]:
    from medprune.workflows.prune import prune_job

    out = ctx.run_dir / str(stage.folder)
    shutil.rmtree(out, ignore_errors=True)
    outcome = prune_job(ctx.config, ctx.input_model(stage), out, accept_unsafe=ctx.accept_unsafe)
    s = outcome.summary
    how = "worst-class allocation" if s.get("allocation") else f"ratio {s['ratio']:.2f}"
    return {"label": f"pruned ({s['criterion']}, {s['schedule']}, {how})",
            "macs_reduction": s["macs_reduction"], **_gate_extra(outcome.gate, outcome.model_file)}


def _quantize(ctx: RunContext, stage: Stage) -> dict[str, Any]:
    from medprune.compress.quantize import packed_size_bytes, quantize_model, quantized_layers
    from medprune.compress.serialize import save_model
    from medprune.workflows.helpers import calibration_batches, model_record

    out = ctx.run_dir / str(stage.folder)
    qc = ctx.config.compress.quantize
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    source = ctx.input_model(stage)
    teacher = ctx.load(source)
    model = quantize_model(copy.deepcopy(teacher), bits=qc.bits, act_bits=qc.act_bits,
                           calibration=calibration_batches(ctx.config, ctx.data(), ctx.task, qc.calibration),
                           example_inputs=_example(ctx), skip_first_last=qc.skip_first_last, skip=list(qc.skip),
                           level_init=qc.level_init, act_objective=qc.act_objective)
    model, gate, path = _finetune_gate_evaluate(ctx, model, out, qc.finetune, teacher, "quantized")
    save_model(model, path, extra={"gate": gate.to_dict(), **model_record(ctx.config)})
    summary = {"method": "direct", "bits": qc.bits, "act_bits": qc.act_bits, "source": str(source),
               "quantized_layers": sorted(quantized_layers(model)), "gate": gate.to_dict(), "model_file": path.name,
               "packed_bytes": packed_size_bytes(model), "synthetic_data": ctx.data().synthetic}
    atomic_write_json(out / "quantize_summary.json", summary)
    return {"label": f"Direct Quantization {qc.bits}-bit weights"
                     + (f", {qc.act_bits}-bit activations" if qc.act_bits else ""), **_gate_extra(gate, path)}


def _calibrate(ctx: RunContext, stage: Stage) -> dict[str, Any]:
    from medprune.report.evaluation import plot_threshold_curve

    data = ctx.data()
    name, path = ctx.final_model()
    record = ctx.task.calibrate(ctx.load(path), data.datasets["val"], ctx.device(),
                                ctx.config.eval.batch_size or ctx.config.optim.batch_size)
    assert record is not None  # the stage applies only to tasks that calibrate
    record = {**record, "model": name, "model_file": str(path), "synthetic_data": data.synthetic}
    atomic_write_json(ctx.run_dir / CALIBRATION, record)
    note = " (synthetic phantom data)" if data.synthetic else ""
    plot_threshold_curve(record, ctx.run_dir / "calibration.png", title=f", {name} model{note}")
    return {"threshold": record["threshold"], "model": name}


def _export(ctx: RunContext, stage: Stage) -> dict[str, Any]:
    from medprune.workflows.export import export_job
    from medprune.workflows.helpers import evaluate_onnx

    int8 = ctx.config.compress.quantize.method == "int8"
    out = ctx.run_dir / str(stage.folder)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    _, source = ctx.final_model()
    outcome = export_job(source, out / "model.onnx", int8=int8, config=ctx.config, accept_unsafe=ctx.accept_unsafe)
    record: dict[str, Any] = {"fp32": outcome.fp32.to_dict(), "int8": None, "model_file": str(source),
                              "input_size": list(outcome.input_size), "check_data": outcome.check_data,
                              "tolerance": outcome.tolerance, "quantized": outcome.quantized, "notes": outcome.notes}
    extra: dict[str, Any] = {"max_abs_diff": outcome.fp32.max_abs_diff}
    if outcome.int8 is not None:
        data = ctx.data()
        split = data.eval_split()
        metrics = evaluate_onnx(outcome.int8.path, data.datasets[split], ctx.config, out / "int8", task=ctx.task,
                                split=split, synthetic=data.synthetic, extra={"stage": "int8"})
        record["int8"] = {**outcome.int8.to_dict(), "test_metrics": {m.key: metrics.get(m.key)
                                                                     for m in ctx.task.summary_metrics}}
        extra["int8_top1_agreement"] = outcome.int8.top1_agreement
        if outcome.int8_gate is not None:
            record["int8"]["gate"] = outcome.int8_gate.to_dict()
            extra.update(_gate_extra(outcome.int8_gate, outcome.int8.path))
    if ctx.config.data.stage1 is not None:  # both stages as one graph: raw frame in, detections out
        from medprune.workflows.two_stage import export_two_stage

        two = export_two_stage(ctx.config, source, out / "two_stage.onnx")
        record["two_stage"] = two.to_dict()
        extra["two_stage_max_abs_diff"] = two.max_abs_diff
    atomic_write_json(out / "export.json", record)
    return extra


def _bench(ctx: RunContext, stage: Stage) -> dict[str, Any]:
    from medprune.compress.export import export_onnx
    from medprune.compress.latency import bench_models
    from medprune.compress.quantize import quantized_layers

    bc = ctx.config.bench
    example = _example(ctx, 1)
    fixed = getattr(ctx.load(base_checkpoint(ctx.run_dir)), "export_batch", None)
    if fixed and bc.batch != fixed:
        raise ConfigError(f"{ctx.config.source}: bench.batch: the model's ONNX graph takes {fixed} input(s) at a time "
                          f"(model.export_batch); got {bc.batch}")
    folder = ctx.run_dir / "export"
    folder.mkdir(parents=True, exist_ok=True)
    models = {"base": ctx.load(base_checkpoint(ctx.run_dir))}
    onnx: dict[str, Any] = {"base": export_onnx(models["base"], example, folder / "base.onnx").path}
    name, path = ctx.final_model(include_failed=True)  # a failed model is timed too: what it would have bought
    if name != "base":
        models[name] = ctx.load(path)
        fp32 = folder / "model.onnx"
        # A quantized model with quantized activations is checked by agreement in the export stage;
        # here, without that stage, its graph is only needed for timing.
        onnx[name] = fp32 if fp32.is_file() else export_onnx(
            models[name], example, folder / f"{name}.onnx", check=not quantized_layers(models[name])).path
    int8 = int8_file(folder)
    if int8.is_file():
        onnx[f"{name}_int8"] = int8
    result = bench_models(models, onnx, example, batch=bc.batch, threads=bc.threads, rounds=bc.rounds,
                          per_round=bc.per_round)
    atomic_write_json(ctx.run_dir / "bench.json", result.to_dict())
    return {"speedup": result.speedup}


def _baselines(ctx: RunContext, stage: Stage) -> dict[str, Any]:
    from medprune.workflows.degradation import train_baselines

    trained = train_baselines(ctx.config)
    atomic_write_json(ctx.run_dir / str(stage.folder) / "baselines.json", trained)
    return {"baselines": trained}


def _degradation(ctx: RunContext, stage: Stage) -> dict[str, Any]:
    from medprune.workflows.degradation import evaluate_grid

    out = ctx.run_dir / str(stage.folder)
    shutil.rmtree(out, ignore_errors=True)
    grid = evaluate_grid(ctx.config, ctx.data(), ctx.task, ctx.device(), ctx.final_model(), out)
    return {"models": [m.name for m in grid.models], "levels": len({p.level for p in grid.points})}


def _degradation_applies(config: ExperimentConfig) -> bool:
    return config.data.degradation is not None and task_class(config.task).carries_q


def _report(ctx: RunContext, stage: Stage) -> dict[str, Any]:
    from medprune.report.html import write_report
    from medprune.report.records import StageRecord

    assert ctx.runner is not None
    ctx.runner.records["report"] = StageRecord("done", note="this report")
    _save(ctx)  # the report reads run.json
    save_config(ctx.config, ctx.run_dir / "config.yaml")
    write_report(ctx.run_dir)
    return {}


#: The stages of ``medprune run``, in order — the one table every other part of the workflow reads.
STAGES: tuple[Stage, ...] = (
    Stage("train", None, _train_settings, lambda c: True,
          lambda d: [d / "metrics.json", base_checkpoint(d)], _train, on_changed=_train_changed),
    Stage("baselines", "baselines", _train_settings,
          lambda c: _degradation_applies(c) and bool(c.data.degradation.baselines),
          lambda d: [d / "baselines.json"], _baselines),
    Stage("pool", "pooled", lambda p: {"pooling": p["compress"]["pooling"], "finetune": p["compress"]["finetune"],
                                        "safety": p["compress"]["safety"]},
          lambda c: c.compress.pooling is not None, lambda d: [stage_model(d), d / "metrics.json"], _pool,
          produces_model=True, gated=True),
    Stage("prune", "compressed",
          lambda p: {"compress": {k: v for k, v in p["compress"].items() if k not in ("pooling", "quantize")}},
          prune_applies, lambda d: [d / "prune_summary.json", stage_model(d), d / "metrics.json"], _prune,
          produces_model=True, gated=True),
    Stage("quantize", "quantized", lambda p: {"quantize": p["compress"]["quantize"],
                                              "calibration": p["compress"]["calibration"],
                                              "safety": p["compress"]["safety"]},
          lambda c: c.compress.quantize.method == "direct",
          lambda d: [stage_model(d), d / "metrics.json", d / "quantize_summary.json"], _quantize,
          produces_model=True, gated=True),
    Stage("calibrate", None, lambda p: {"task": p["task"], "task_options": p["task_options"]},
          lambda c: task_class(c.task).calibrates, lambda d: [d / CALIBRATION], _calibrate),
    Stage("export", "export", _export_settings, lambda c: c.export.enabled,
          lambda d: [d / "model.onnx", d / "export.json"], _export, gated=True),
    Stage("bench", None, lambda p: {"bench": p["bench"]}, lambda c: c.bench.enabled,
          lambda d: [d / "bench.json"], _bench),
    Stage("degradation", "degradation", lambda p: {"degradation": p["data"]["degradation"], "eval": p["eval"]},
          _degradation_applies, lambda d: [d / "grid.json", d / "grid.csv"], _degradation),
    Stage("report", None, lambda p: {}, lambda c: True, lambda d: [d / "report.html"], _report),
)
STAGE_NAMES: list[str] = [s.name for s in STAGES]


def _save(ctx: RunContext) -> Any:
    assert ctx.runner is not None
    return ctx.runner.save(name=ctx.config.name, config=ctx.config.source, task=ctx.config.task,
                           synthetic_data=_synthetic(ctx.run_dir))


def _synthetic(run_dir: Path) -> bool | None:
    base = run_dir / "metrics.json"
    if base.is_file():
        try:
            return bool(json.loads(base.read_text(encoding="utf-8")).get("synthetic_data"))
        except (OSError, ValueError):
            return None
    return None


def _adopt_manual_training(runner: Runner, config: ExperimentConfig) -> None:
    """A run directory trained by ``medprune train`` (no run.json) is reused if its config matches."""
    from medprune.config import load_config

    saved = config.run_dir / "config.yaml"
    if runner.previous_stage("train") is not None or not saved.is_file():
        return
    try:
        old = load_config(saved)
    except ConfigError as exc:
        log.warning("%s: cannot read the saved config (%s); the training there is not reused", saved, exc)
        return
    runner.adopt("train", _train_settings(old.to_dict()))


def run_job(config: ExperimentConfig, *, force: Sequence[str] = (), stop_after: str | None = None,
            accept_unsafe: bool = False) -> RunOutcome:
    """Run (or continue) every stage of ``medprune run`` for ``config``; see the module docstring.

    ``stop_after`` ends the job after that stage (``medprune sweep`` uses ``"train"``).
    ``accept_unsafe`` keeps a compressed model that fails its safety gate as the deliverable
    (recorded as ``accepted_unsafe``); without it such a model is kept as ``*.gate_failed.*``, the
    gated stages after it are skipped, bench and report still run (the report marks it), and
    ``outcome.gate_failures`` says why.
    """
    t0 = time.perf_counter()
    if stop_after is not None and stop_after not in STAGE_NAMES:
        raise ConfigError(suggest(stop_after, STAGE_NAMES, "stage"))
    ctx = RunContext(config, accept_unsafe=accept_unsafe)
    runner = Runner(STAGES, config.run_dir / "run.json", ctx, force=force, accept_unsafe=accept_unsafe)
    ctx.runner = runner
    config.run_dir.mkdir(parents=True, exist_ok=True)
    _adopt_manual_training(runner, config)
    stages = STAGES if stop_after is None else STAGES[: STAGE_NAMES.index(stop_after) + 1]
    for stage in stages:
        runner.run(stage, on_record=lambda: _save(ctx))
    _save(ctx)
    name, final_path = ctx.final_model()
    report = config.run_dir / "report.html"
    files = {"run_dir": str(config.run_dir), "base_model": str(base_checkpoint(config.run_dir))}
    if name != "base":
        files["compressed_model"] = str(final_path)
    export = config.run_dir / "export"
    if (export / "model.onnx").is_file():
        files["onnx"] = str(export / "model.onnx")
    if (export / "model.int8.onnx").is_file():
        files["onnx_int8"] = str(export / "model.int8.onnx")
    if report.is_file():
        files["report"] = str(report)
    for stage_name, record in runner.records.items():
        if record.gate_failed:
            files[f"{stage_name}_gate_failed"] = str(record.model_file)
    final = runner.final()
    return RunOutcome(run_dir=config.run_dir, stages={k: v.to_dict() for k, v in runner.records.items()},
                      final=final.name if final else None, report=report if report.is_file() else None,
                      seconds=time.perf_counter() - t0, files=files, gate_failures=runner.gate_failures())


def replace_compress(config: ExperimentConfig, **changes: Any) -> ExperimentConfig:
    """``config`` with ``compress`` fields replaced (validated again), e.g. for a sweep point."""
    from medprune.schema import FieldError

    try:
        compress = dataclasses.replace(config.compress, **changes)
    except FieldError as exc:
        raise ConfigError(f"{config.source}: compress.{exc.path}: {exc}") from None
    return dataclasses.replace(config, compress=compress)


def train_chain(config: ExperimentConfig) -> str:
    """The digest chain after the train stage (a sweep point continues from it)."""
    return digest(["", _train_settings(config.to_dict())])


def final_model_file(config: ExperimentConfig) -> tuple[str, Path]:
    """``(name, file)`` of the final model of ``config``'s run directory as ``run.json`` records it
    (the last compressed model that passed its gate), else its base checkpoint."""
    from medprune.report.records import read_run_record

    record = read_run_record(config.run_dir / "run.json")
    if record is not None and record.final:
        return record.final, stage_model(config.run_dir / record.final)
    return "base", base_checkpoint(config.run_dir)
