"""``medprune run CONFIG``: the whole job, one config in, a compressed, exported, evaluated model out.

Stages, in order, each writing into the run directory ``<runtime.out_dir>/<name>/``::

    train     checkpoints/best.pt, metrics.json            (base model, test split)
    pool      pooled/      (compress.pooling: the trained model's pools swapped, fine-tuned, evaluated)
    prune     compressed/  (model.pt, metrics.json, base/, kept channels, plots, prune_summary.json)
    quantize  quantized/   (compress.quantize.method: direct — Direct Quantization, fine-tuned, evaluated)
    export    export/model.onnx (+ model.int8.onnx for compress.quantize.method: int8, evaluated
              on the test split with ONNX Runtime), export/export.json (parity / agreement)
    bench     bench.json   (base and compressed timed interleaved, PyTorch and ONNX Runtime CPU)
    report    report.html  (self-contained) + report_*.png

A stage whose output exists, and whose settings (and those of every stage before it) are the
ones it ran with, is reused, so a killed run continues where it stopped: an interrupted training
resumes from ``checkpoints/last.pt``. ``force=("prune",)`` (``--force prune``) redoes a stage and
every stage after it. When the settings of a derived stage changed since it ran, it is redone
and the log says why; when the *training* settings changed, the run stops and asks for
``--force train`` or another name instead of deleting a trained model. What each stage did is
recorded in ``run.json``.

A stage that the config does not ask for (e.g. ``compress.ratio: 0`` with no latency target) is
``not_applicable``; the final model is then the last stage that produced one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from medprune._io import atomic_write_json
from medprune.config import ExperimentConfig, save_config
from medprune.errors import CheckpointError, ConfigError
from medprune.registry import suggest

__all__ = ["STAGES", "RunOutcome", "run_job", "stage_settings", "final_stage"]

log = logging.getLogger(__name__)

#: The stages of ``medprune run``, in order.
STAGES: tuple[str, ...] = ("train", "pool", "prune", "quantize", "export", "bench", "report")


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


# ---------------------------------------------------------------------------------------- settings
def _plain(config: ExperimentConfig) -> dict[str, Any]:
    return config.to_dict()


def stage_settings(config: ExperimentConfig, stage: str) -> dict[str, Any]:
    """The config values a stage's output depends on (its own, not those of earlier stages)."""
    plain = _plain(config)
    runtime = plain["runtime"]
    if stage == "train":
        return {"data": plain["data"], "model": plain["model"], "optim": plain["optim"],
                "seed": runtime["seed"], "eval": plain["eval"]}
    compress = plain["compress"]
    if stage == "pool":
        return {"pooling": compress["pooling"], "finetune": compress["finetune"]}
    if stage == "prune":
        return {"compress": {k: v for k, v in compress.items() if k not in ("pooling", "quantize")}}
    if stage == "quantize":
        return {"quantize": compress["quantize"], "calibration": compress["calibration"]}
    if stage == "export":
        int8 = compress["quantize"] if compress["quantize"]["method"] == "int8" else None
        return {"export": plain["export"], "int8": int8, "calibration": compress["calibration"]}
    if stage == "bench":
        return {"bench": plain["bench"]}
    if stage == "report":
        return {}
    raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two plain config dicts differ (for a useful message)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def prune_applies(config: ExperimentConfig) -> bool:
    """Whether the config asks for pruning at all."""
    cc = config.compress
    return cc.ratio > 0 or bool(cc.layer_ratios) or cc.latency_target is not None


def gate_failed(record: dict[str, Any] | None) -> bool:
    """Whether a stage record holds a model that failed its safety gate (and was not accepted)."""
    return ((record or {}).get("gate") or {}).get("status") == "failed"


def final_stage(stages: dict[str, dict[str, Any]], *, include_failed: bool = False) -> str | None:
    """The last model-producing stage that ran or was reused (``None``: the base model is final).

    A stage whose model failed its safety gate is not final (its model is not the deliverable),
    unless ``include_failed`` — the bench stage times it anyway, so the report can show what it
    would have bought.
    """
    for name in ("quantize", "prune", "pool"):
        record = stages.get(name, {})
        if record.get("status") in ("done", "reused") and (include_failed or not gate_failed(record)):
            return name
    return None


#: Model-producing stages and their folders in the run directory.
_STAGE_DIRS = {"pool": "pooled", "prune": "compressed", "quantize": "quantized"}
#: Stages skipped after a model failed its safety gate: they would build on it, or ship it.
_GATED_STAGES = ("pool", "prune", "quantize", "export")


# ---------------------------------------------------------------------------------------- the job
class _Run:
    """State shared by the stages of one ``run_job`` call."""

    def __init__(self, config: ExperimentConfig, force: Sequence[str], accept_unsafe: bool = False) -> None:
        unknown = [s for s in force if s not in STAGES]
        if unknown:
            raise ConfigError(f"--force: {suggest(unknown[0], STAGES, 'stage')} (in run order: {', '.join(STAGES)})")
        self.config = config
        self.run_dir = config.run_dir
        self.record_path = self.run_dir / "run.json"
        self.previous = self._load_record()
        self._adopt_manual_training()
        first_forced = min((STAGES.index(s) for s in force), default=len(STAGES))
        self.forced = set(STAGES[first_forced:])
        self.stages: dict[str, dict[str, Any]] = {}
        self.chain = ""  # digest of the settings of every stage so far
        self.redo_rest = False  # an earlier stage was (re)done: later outputs are stale
        self.accept_unsafe = accept_unsafe
        self.blocked: str | None = None  # why later compressing stages do not run (a failed safety gate)
        self._data = None

    def _load_record(self) -> dict[str, Any]:
        if not self.record_path.is_file():
            return {}
        try:
            record = json.loads(self.record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable (%s); every stage's outputs are checked afresh", self.record_path, exc)
            return {}
        return record if isinstance(record, dict) else {}

    def _adopt_manual_training(self) -> None:
        """A run directory trained by ``medprune train`` (no run.json) is reused if its config matches."""
        stages = self.previous.setdefault("stages", {})
        saved = self.run_dir / "config.yaml"
        if "train" in stages or not saved.is_file():
            return
        from medprune.config import load_config

        try:
            old = load_config(saved)
        except ConfigError as exc:
            log.warning("%s: cannot read the saved config (%s); the training there is not reused", saved, exc)
            return
        settings = stage_settings(old, "train")
        stages["train"] = {"status": "adopted", "settings": settings, "chain": _digest(["", settings])}

    def data(self) -> Any:
        """The prepared data (manifest, patient split, datasets), built once per run."""
        from medprune.engine.jobs import prepare_data

        if self._data is None:
            self._data = prepare_data(self.config, self.run_dir)
        return self._data

    def merged_stages(self) -> dict[str, dict[str, Any]]:
        """This call's stage records, plus the previous records of stages it did not reach
        (``stop_after``), so a sweep does not erase what ``medprune run`` recorded."""
        previous = {k: v for k, v in self.previous.get("stages", {}).items() if v.get("status") != "adopted"}
        return {n: self.stages.get(n) or previous[n] for n in STAGES if n in self.stages or n in previous}

    def save(self) -> None:
        stages = self.merged_stages()
        final = final_stage(stages)
        record = {
            "name": self.config.name, "config": self.config.source,
            "synthetic_data": self._synthetic(), "stages": stages,
            "compressed_stages": [
                {"stage": s, "label": stages[s].get("label", s), "dir": _STAGE_DIRS[s],
                 "gate_status": (stages[s].get("gate") or {}).get("status")}
                for s in _STAGE_DIRS if stages.get(s, {}).get("status") in ("done", "reused")],
            "accept_unsafe": self.accept_unsafe,
            "final": _STAGE_DIRS.get(final) if final else None,
        }
        atomic_write_json(self.record_path, record)

    def _synthetic(self) -> bool | None:
        base = self.run_dir / "metrics.json"
        if base.is_file():
            try:
                return bool(json.loads(base.read_text(encoding="utf-8")).get("synthetic_data"))
            except (OSError, ValueError):
                return None
        return None

    def stage(self, name: str, outputs: Sequence[Path], applies: bool, work: Callable[[], dict[str, Any] | None],
              *, on_changed: Callable[[list[str]], None] | None = None) -> None:
        """Run or reuse stage ``name``; ``outputs`` all existing (with unchanged settings) means done."""
        settings = stage_settings(self.config, name)
        self.chain = _digest([self.chain, settings])
        if not applies:
            self.stages[name] = {"status": "not_applicable", "seconds": None, "note": "not asked for by the config"}
            self.save()
            return
        if self.blocked and name in _GATED_STAGES:
            log.warning("stage %s: skipped (%s)", name, self.blocked)
            # What an earlier run left there was made from another model: it must not look current.
            shutil.rmtree(self.run_dir / _STAGE_DIRS.get(name, name), ignore_errors=True)
            self.stages[name] = {"status": "skipped", "seconds": None, "note": self.blocked}
            self.save()
            return
        old = self.previous.get("stages", {}).get(name, {})
        exists = all(p.exists() for p in outputs)
        same = old.get("chain") == self.chain
        if exists and not same and old.get("settings") is not None and on_changed is not None:
            on_changed(_changed_keys(old.get("settings"), settings) or ["an earlier stage's settings"])
        accepting = self.accept_unsafe and gate_failed(old)
        if exists and same and name not in self.forced and not self.redo_rest and not accepting:
            log.info("stage %s: reusing %s", name, outputs[0] if outputs else self.run_dir)
            self.stages[name] = {**{k: v for k, v in old.items() if k not in ("status",)}, "status": "reused"}
            self._note_gate(name)
            self.save()
            return
        why = ("forced" if name in self.forced else "an earlier stage was redone" if self.redo_rest and exists
               else "redone to keep its model with --accept-unsafe" if accepting and exists
               else "settings changed" if exists else "first run")
        log.info("stage %s: running (%s)", name, why)
        # Recorded before the work starts, so an interrupted stage is recognised (and training resumed).
        self.stages[name] = {"status": "running", "seconds": None, "note": why, "chain": self.chain,
                             "settings": settings}
        self.save()
        t0 = time.perf_counter()
        extra = work() or {}
        self.stages[name] = {"status": "done", "seconds": round(time.perf_counter() - t0, 2), "note": why,
                             "chain": self.chain, "settings": settings, **extra}
        self.redo_rest = True
        self._note_gate(name)
        self.save()

    def _note_gate(self, name: str) -> None:
        """A stage whose model failed its safety gate stops the compressing stages after it."""
        if gate_failed(self.stages.get(name)):
            self.blocked = f"{name} failed its safety gate"

    def gate_failures(self) -> list[str]:
        """One line per stage of this run whose model failed its safety gate."""
        out = []
        for name, record in self.stages.items():
            if gate_failed(record):
                out.append(f"{name}: {record['gate'].get('message')} (kept as {record.get('model_file')})")
        return out


def run_job(config: ExperimentConfig, *, force: Sequence[str] = (), stop_after: str | None = None,
            accept_unsafe: bool = False) -> RunOutcome:
    """Run (or continue) every stage of ``medprune run`` for ``config``; see the module docstring.

    ``stop_after`` ends the job after that stage (``medprune sweep`` uses ``"train"``).
    ``accept_unsafe`` keeps a compressed model that fails its safety gate as the deliverable
    (recorded as ``accepted_unsafe``); without it such a model is kept as ``*.gate_failed.*``, the
    compressing stages after it are skipped, bench and report still run (the report marks it),
    and ``outcome.gate_failures`` says why.
    """
    t0 = time.perf_counter()
    if stop_after is not None and stop_after not in STAGES:
        raise ConfigError(suggest(stop_after, STAGES, "stage"))
    run = _Run(config, force, accept_unsafe)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    stages = STAGES if stop_after is None else STAGES[: STAGES.index(stop_after) + 1]
    for name in stages:
        _STAGE_FUNCS[name](run)
    run.save()
    final = final_stage(run.stages)
    report = run.run_dir / "report.html"
    files = {"run_dir": str(run.run_dir), "base_model": str(_base_checkpoint(run.run_dir))}
    if final:
        files["compressed_model"] = str(run.run_dir / _STAGE_DIRS[final] / "model.pt")
    if (run.run_dir / "export" / "model.onnx").is_file():
        files["onnx"] = str(run.run_dir / "export" / "model.onnx")
    if (run.run_dir / "export" / "model.int8.onnx").is_file():
        files["onnx_int8"] = str(run.run_dir / "export" / "model.int8.onnx")
    if report.is_file():
        files["report"] = str(report)
    for name, record in run.stages.items():
        if gate_failed(record):
            files[f"{name}_gate_failed"] = str(record.get("model_file"))
    return RunOutcome(run_dir=run.run_dir, stages=run.stages, final=final,
                      report=report if report.is_file() else None, seconds=time.perf_counter() - t0, files=files,
                      gate_failures=run.gate_failures())


# ---------------------------------------------------------------------------------------- stages
def _base_checkpoint(run_dir: Path) -> Path:
    best = run_dir / "checkpoints" / "best.pt"
    return best if best.is_file() else run_dir / "checkpoints" / "last.pt"


def _train(run: _Run) -> None:
    from medprune.engine.jobs import train

    run_dir = run.run_dir
    last = run_dir / "checkpoints" / "last.pt"

    def changed(keys: list[str]) -> None:
        if "train" not in run.forced:
            raise ConfigError(
                f"{run.config.source}: {run_dir} was trained with other settings (changed: {', '.join(keys[:6])}"
                f"{', …' if len(keys) > 6 else ''}); pass --force train to retrain it there, or set another name")

    def work() -> dict[str, Any]:
        same = run.previous.get("stages", {}).get("train", {}).get("chain") == run.chain
        resume = last.is_file() and "train" not in run.forced and same
        if resume:
            log.info("stage train: resuming the interrupted training from %s", last)
        elif last.is_file() and not same and "train" not in run.forced:
            raise CheckpointError(f"{run_dir}: holds a training run with unknown settings (no run.json or "
                                  "config.yaml that matches); pass --force train to retrain it, or set another name")
        outcome = train(run.config, resume=resume, overwrite=not resume)
        run._data = outcome.data
        return {"best_checkpoint": str(outcome.result.best_checkpoint or outcome.result.last_checkpoint),
                "label": "base"}

    # The train stage also "runs" when only its resumable checkpoint exists: work() resumes it.
    run.stage("train", [run_dir / "metrics.json", _base_checkpoint(run_dir)], True, work, on_changed=changed)


def _stage_model(folder: Path) -> Path:
    """The model file of a stage folder: ``model.pt``, or ``model.gate_failed.pt`` when it failed its gate."""
    from medprune.compress.gate import GateResult, gate_file

    plain = folder / "model.pt"
    failed = gate_file(plain, GateResult("failed"))
    return failed if failed.is_file() and not plain.is_file() else plain


def _gate_extra(gate: Any, path: Path) -> dict[str, Any]:
    """What a gated stage adds to its run.json record."""
    return {"gate": gate.to_dict(), "safety_gate": gate.message, "model_file": str(path)}


def _prune(run: _Run) -> None:
    from medprune.compress.job import prune_job

    out = run.run_dir / "compressed"

    def work() -> dict[str, Any]:
        shutil.rmtree(out, ignore_errors=True)
        outcome = prune_job(run.config, _input_model_file(run, "prune"), out, accept_unsafe=run.accept_unsafe)
        s = outcome.summary
        return {"label": f"pruned ({s['criterion']}, {s['schedule']}, ratio {s['ratio']:.2f})",
                "macs_reduction": s["macs_reduction"], **_gate_extra(outcome.gate, outcome.model_file)}

    run.stage("prune", [out / "prune_summary.json", _stage_model(out), out / "metrics.json"],
              prune_applies(run.config), work)


def _input_model_file(run: _Run, stage: str) -> Path:
    """The model a stage starts from: the last model-producing stage before it that passed its gate, else the base."""
    before = STAGES[: STAGES.index(stage)]
    for name in reversed(before):
        record = run.stages.get(name, {})
        if name in _STAGE_DIRS and record.get("status") in ("done", "reused") and not gate_failed(record):
            return run.run_dir / _STAGE_DIRS[name] / "model.pt"
    return _base_checkpoint(run.run_dir)


def _finetune_gate_evaluate(run: _Run, model: nn.Module, out: Path, ft: Any, source: nn.Module,
                            stage: str) -> tuple[nn.Module, Any, Path]:
    """Fine-tune ``model`` as ``ft`` (a FinetuneConfig) says (distilling from ``source`` if asked),
    keep the best epoch, judge it with the safety gate against ``source`` on validation, evaluate it
    on test. Returns the model, the gate and the file it is to be saved as."""
    from medprune.compress.gate import gate_file, judge_gate
    from medprune.compress.job import finetune_config, validation_metrics
    from medprune.engine.checkpoint import load_checkpoint, load_model_weights
    from medprune.engine.jobs import evaluate_model, resolve_device
    from medprune.engine.trainer import Distillation, Trainer

    config = run.config
    data = run.data()
    device = resolve_device(config)
    model = model.to(device)
    if ft.epochs > 0:
        distill = (Distillation(source.to(device), ft.distill.alpha, ft.distill.temperature)
                   if ft.distill.enabled else None)
        trainer = Trainer(model, data.datasets["train"], data.datasets["val"],
                          finetune_config(config, ft.epochs, ft.lr), out / "finetune", device, distill=distill)
        best = trainer.fit().best_checkpoint
        if best is not None:
            load_model_weights(trainer.model, load_checkpoint(best, map_location=device), best)
        model = trainer.model
    model = model.eval()
    limit = config.compress.safety.max_worst_class_drop
    val = data.datasets["val"]
    gate = judge_gate(validation_metrics(source.to(device).eval(), val, config, device) if limit is not None else {},
                      validation_metrics(model, val, config, device) if limit is not None else {}, limit,
                      what=f"the {stage} model")
    gate = gate.accepted() if run.accept_unsafe else gate
    path = gate_file(out / "model.pt", gate)
    split = "test" if "test" in data.datasets else "val"
    evaluate_model(model, data.datasets[split], config, out, device=device, split=split, synthetic=data.synthetic,
                   extra={"checkpoint": str(path), "stage": stage})
    return model, gate, path


def _calibration(run: _Run, calib: Any) -> Callable[[], Any]:
    from medprune.compress.calibration import class_balanced_batches

    c = calib or run.config.compress.calibration
    return class_balanced_batches(run.data().datasets[c.split], batch_size=c.batch_size, num_batches=c.batches,
                                  seed=c.seed, num_classes=len(run.config.data.classes))


def _pool(run: _Run) -> None:
    from medprune.compress.job import model_record
    from medprune.compress.serialize import save_model
    from medprune.config import pooling_spec
    from medprune.models.pooling import replace_pooling

    out = run.run_dir / "pooled"
    spec = pooling_spec(run.config.compress.pooling)

    def work() -> dict[str, Any]:
        assert spec is not None and spec[0] is not None  # validated with the config
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        base = _load(_input_model_file(run, "pool"), run.config)
        model = replace_pooling(_copy(base), spec[0], **spec[1])
        model, gate, path = _finetune_gate_evaluate(run, model, out, run.config.compress.finetune, base, "pooled")
        save_model(model, path, extra={"pooling": {"kind": spec[0], **spec[1]}, "gate": gate.to_dict()},
                   **model_record(run.config))
        return {"label": f"{spec[0]} pooling", **_gate_extra(gate, path)}

    run.stage("pool", [_stage_model(out), out / "metrics.json"], spec is not None, work)


def _quantize(run: _Run) -> None:
    from medprune.compress.job import model_record
    from medprune.compress.quantize import packed_size_bytes, quantize_model, quantized_layers
    from medprune.compress.serialize import save_model

    out = run.run_dir / "quantized"
    qc = run.config.compress.quantize

    def work() -> dict[str, Any]:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        source = _input_model_file(run, "quantize")
        teacher = _load(source, run.config)
        model = quantize_model(_copy(teacher), bits=qc.bits, act_bits=qc.act_bits,
                               calibration=_calibration(run, qc.calibration), example_inputs=_example(run),
                               skip_first_last=qc.skip_first_last, skip=list(qc.skip), level_init=qc.level_init,
                               act_objective=qc.act_objective)
        model, gate, path = _finetune_gate_evaluate(run, model, out, qc.finetune, teacher, "quantized")
        save_model(model, path, extra={"gate": gate.to_dict()}, **model_record(run.config))
        summary = {"method": "direct", "bits": qc.bits, "act_bits": qc.act_bits, "source": str(source),
                   "quantized_layers": sorted(quantized_layers(model)), "gate": gate.to_dict(),
                   "model_file": path.name, "packed_bytes": packed_size_bytes(model),
                   "synthetic_data": run.data().synthetic}
        atomic_write_json(out / "quantize_summary.json", summary)
        return {"label": f"Direct Quantization {qc.bits}-bit weights"
                         + (f", {qc.act_bits}-bit activations" if qc.act_bits else ""), **_gate_extra(gate, path)}

    run.stage("quantize", [_stage_model(out), out / "metrics.json", out / "quantize_summary.json"],
              qc.method == "direct", work)


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def _final_model_file(run: _Run) -> Path:
    final = final_stage(run.stages)
    return run.run_dir / _STAGE_DIRS[final] / "model.pt" if final else _base_checkpoint(run.run_dir)


def _example(run: _Run, n: int = 2) -> torch.Tensor:
    from medprune.compress.job import example_batch

    data = run.data()
    split = "val" if "val" in data.datasets else "train"
    return example_batch(data.datasets[split], n)


def _load(path: Path, config: ExperimentConfig) -> nn.Module:
    from medprune.compress.job import load_trained_model

    return load_trained_model(config, path, torch.device("cpu")).eval()


def _int8_metrics(run: _Run, path: Path, out: Path) -> dict[str, Any]:
    """Per-class metrics of an INT8 ONNX graph on the test split, run in ONNX Runtime (CPU)."""
    from medprune.compress.export_job import onnx_predictions
    from medprune.metrics import classification_metrics, write_predictions_csv

    data = run.data()
    split = "test" if "test" in data.datasets else "val"
    dataset = data.datasets[split]
    preds = onnx_predictions(path, dataset)
    metrics = classification_metrics(preds.labels, preds.probs, list(run.config.data.classes),
                                     patient_ids=[dataset.patient_ids[i] for i in preds.indices],
                                     **run.config.eval.metric_options())
    metrics = {"split": split, "synthetic_data": data.synthetic, "model": str(path), "stage": "int8",
               "loss": preds.loss, **metrics}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", metrics)
    # the same files as a PyTorch model's evaluation, so the report draws INT8 in its ROC and reliability plots
    write_predictions_csv(out / "predictions.csv", preds.indices, [str(dataset.paths[i]) for i in preds.indices],
                          [dataset.patient_ids[i] for i in preds.indices], preds.labels, preds.probs,
                          list(run.config.data.classes))
    return metrics


def _int8_file(folder: Path) -> Path:
    """``export/model.int8.onnx``, or its ``gate_failed`` name when the INT8 graph failed its gate."""
    from medprune.compress.gate import GateResult, gate_file

    plain = folder / "model.int8.onnx"
    failed = gate_file(plain, GateResult("failed"))
    return failed if failed.is_file() and not plain.is_file() else plain


def _export(run: _Run) -> None:
    from medprune.compress.export_job import export_job

    ec = run.config.export
    int8 = run.config.compress.quantize.method == "int8"
    out = run.run_dir / "export"

    def work() -> dict[str, Any]:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        source = _final_model_file(run)
        outcome = export_job(source, out / "model.onnx", int8=int8, config=run.config,
                             accept_unsafe=run.accept_unsafe)
        record: dict[str, Any] = {"fp32": outcome.fp32.to_dict(), "int8": None, "model_file": str(source),
                                  "input_size": list(outcome.input_size), "check_data": outcome.check_data,
                                  "tolerance": outcome.tolerance, "quantized": outcome.quantized,
                                  "notes": outcome.notes}
        extra: dict[str, Any] = {"max_abs_diff": outcome.fp32.max_abs_diff}
        if outcome.int8 is not None:
            record["int8"] = outcome.int8.to_dict()
            metrics = _int8_metrics(run, outcome.int8.path, out / "int8")
            record["int8"]["test_balanced_accuracy"] = metrics["balanced_accuracy"]
            extra["int8_top1_agreement"] = outcome.int8.top1_agreement
            if outcome.int8_gate is not None:
                record["int8"]["gate"] = outcome.int8_gate.to_dict()
                extra.update(_gate_extra(outcome.int8_gate, outcome.int8.path))
        atomic_write_json(out / "export.json", record)
        return extra

    outputs = [out / "model.onnx", out / "export.json"] + ([_int8_file(out)] if int8 else [])
    run.stage("export", outputs, ec.enabled, work)


def _bench(run: _Run) -> None:
    from medprune.compress.export import export_onnx
    from medprune.compress.quantize import quantized_layers
    from medprune.compress.latency import (_context, _state_dict_bytes, _torch_threads, count_macs, count_params,
                                           interleaved_latency, ort_runner, torch_runner)

    bc = run.config.bench
    target = run.run_dir / "bench.json"

    def work() -> dict[str, Any]:
        final = final_stage(run.stages, include_failed=True)  # a failed model is timed too: what it would buy
        threads = bc.threads or torch.get_num_threads()
        example = _example(run, 1)
        size = tuple(int(s) for s in example.shape[1:])
        x = example.repeat(bc.batch, 1, 1, 1)
        folder = run.run_dir / "export"
        folder.mkdir(parents=True, exist_ok=True)
        models = {"base": _load(_base_checkpoint(run.run_dir), run.config)}
        onnx = {"base": export_onnx(models["base"], example, folder / "base.onnx").path}
        if final:
            name = _STAGE_DIRS[final]
            models[name] = _load(_stage_model(run.run_dir / name), run.config)
            fp32 = folder / "model.onnx"
            # A quantized model with quantized activations is checked by agreement in the export stage;
            # here, without that stage, its graph is only needed for timing.
            onnx[name] = fp32 if fp32.is_file() else export_onnx(
                models[name], example, folder / f"{name}.onnx", check=not quantized_layers(models[name])).path
        runners: dict[str, Callable[[], None]] = {}
        for key, model in models.items():
            runners[f"{key}/torch"] = torch_runner(model, x)
            runners[f"{key}/onnxruntime"] = ort_runner(onnx[key], x, threads)
        int8 = _int8_file(folder)
        int8_key = f"{_STAGE_DIRS[final] if final else 'base'}_int8"
        if int8.is_file():
            runners[f"{int8_key}/onnxruntime"] = ort_runner(int8, x, threads)
        with _torch_threads(threads):
            stats = interleaved_latency(runners, rounds=bc.rounds, per_round=bc.per_round)
        entries: dict[str, Any] = {}
        for key, model in models.items():
            entries[key] = {"params": count_params(model), "macs": count_macs(model, size),
                            "file_bytes": _state_dict_bytes(model), "file_kind": "torch.save(state_dict)",
                            "onnx_bytes": Path(onnx[key]).stat().st_size,
                            "latency_ms": {rt: stats[f"{key}/{rt}"].to_dict() for rt in ("torch", "onnxruntime")}}
        if int8.is_file():
            entries[int8_key] = {"onnx_bytes": int8.stat().st_size,
                                 "latency_ms": {"onnxruntime": stats[f"{int8_key}/onnxruntime"].to_dict()}}
        result = {"models": entries, **_context(size, bc.batch, threads, {}, bc.rounds, bc.per_round)}
        result.pop("latency_ms", None)
        base = entries["base"]["latency_ms"]
        result["speedup"] = {key: {rt: base[rt]["median_ms"] / max(lat[rt]["median_ms"], 1e-9) for rt in lat}
                             for key, e in entries.items() if key != "base" for lat in [e["latency_ms"]]}
        atomic_write_json(target, result)
        return {"speedup": result["speedup"]}

    run.stage("bench", [target], bc.enabled, work)


def _report(run: _Run) -> None:
    from medprune.report.html import write_report

    target = run.run_dir / "report.html"

    def work() -> dict[str, Any]:
        run.stages["report"] = {**run.stages["report"], "status": "done", "note": "this report"}
        run.save()  # the report reads run.json
        save_config(run.config, run.run_dir / "config.yaml")
        write_report(run.run_dir)
        return {}

    run.stage("report", [target], True, work)


_STAGE_FUNCS: dict[str, Callable[[_Run], None]] = {
    "train": _train, "pool": _pool, "prune": _prune, "quantize": _quantize, "export": _export, "bench": _bench,
    "report": _report,
}


def replace_compress(config: ExperimentConfig, **changes: Any) -> ExperimentConfig:
    """``config`` with ``compress`` fields replaced (validated again), e.g. for a sweep point."""
    from medprune.schema import FieldError

    try:
        compress = dataclasses.replace(config.compress, **changes)
    except FieldError as exc:
        raise ConfigError(f"{config.source}: compress.{exc.path}: {exc}") from None
    return dataclasses.replace(config, compress=compress)
