"""The ``medprune`` command. Thin: every command parses its typed arguments and calls the library.

Errors caused by input (config, data, checkpoints) end in one line on stderr and exit code 2,
never a traceback; a failed safety gate exits 3; Ctrl-C ends with exit code 130 and what to type
to continue; a bug in medprune is one line (exit 1) with the traceback saved to a file. The table
of exit codes is in :mod:`medprune.errors`.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import typer

from medprune.errors import (EXIT_BUG, EXIT_INPUT, EXIT_INTERRUPTED, DistributedRunError, MedpruneError,
                             SafetyGateError)

WORKER_ENV = "MEDPRUNE_DDP_WORKER"  # = medprune.engine.distributed.WORKER_ENV, without importing torch here

__all__ = ["app", "main", "interrupted_hint"]

log = logging.getLogger("medprune")

app = typer.Typer(help="medprune: train, compress and evaluate medical imaging models for point-of-care "
                       "hardware, with per-class clinical metrics.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Data tools: synthetic phantoms, manifest indexers for public data sets.",
                       no_args_is_help=True)
index_app = typer.Typer(help="Build a manifest CSV from a data set's folder layout.", no_args_is_help=True)
app.add_typer(data_app, name="data")
data_app.add_typer(index_app, name="index")

AcceptUnsafeOption = typer.Option(False, "--accept-unsafe", help="Keep a compressed model that fails its safety "
                                  "gate as the deliverable (recorded as accepted_unsafe) instead of exiting 3.")
OverridesArg = typer.Argument(None, help="Config overrides key.path=value, e.g. optim.lr=0.001 optim.epochs=3",
                              show_default=False)


@app.command()
def train(
    config: Path = typer.Argument(..., help="Experiment YAML, e.g. configs/thermography/demo.yaml"),
    overrides: Optional[list[str]] = OverridesArg,
    resume: bool = typer.Option(False, "--resume", help="Continue the run from checkpoints/last.pt."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard an existing run of the same name."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Data-parallel processes on this machine (DDP via torchrun)."),
) -> None:
    """Train the config's model, keep the best validation epoch, evaluate it on the test split."""
    from medprune.config import load_config
    from medprune.engine.distributed import cleanup_distributed, launch_torchrun, under_torchrun

    cfg = load_config(config, overrides or [])
    if nproc > 1 and not under_torchrun():
        argv = ["train", str(config), *(overrides or [])]
        argv += ["--resume"] if resume else []
        argv += ["--overwrite"] if overwrite else []
        result = launch_torchrun(nproc, "medprune.cli", argv,
                                 log_dir=cfg.run_dir / "logs")
        if result.exit_code:
            lines = [f"rank {f.rank} failed (exit code {f.exit_code}): {f.message}" for f in result.failures]
            if result.log is not None:
                lines.append(f"tracebacks of the failing ranks: {result.log}")
            raise DistributedRunError("\n".join(lines), exit_code=result.exit_code)
        return
    from medprune.workflows.jobs import train as run_training

    try:
        outcome = run_training(cfg, resume=resume, overwrite=overwrite)
    finally:
        cleanup_distributed()
    if outcome.metrics is not None:
        _summary(outcome.metrics, outcome.run_dir)
        typer.echo(f"trained in {outcome.seconds:.0f} s; results in {outcome.run_dir}")


@app.command()
def evaluate(
    config: Path = typer.Argument(..., help="The experiment YAML the checkpoint was trained with."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A checkpoint, e.g. runs/NAME/checkpoints/best.pt"),
    out: Path = typer.Option(..., "--out", help="Folder for metrics.json, predictions.csv and plots."),
    split: str = typer.Option("test", "--split", help="train, val or test (the config's patient split)."),
    overrides: Optional[list[str]] = OverridesArg,
) -> None:
    """Per-class metrics with patient-level bootstrap CIs, plus confusion-matrix and ROC plots."""
    from medprune.config import load_config
    from medprune.workflows.jobs import evaluate as run_evaluation

    cfg = load_config(config, overrides or [])
    metrics = run_evaluation(cfg, checkpoint, out, split=split)
    _summary(metrics, out)


@app.command()
def validate(
    config: Path = typer.Argument(..., help="Experiment YAML to check."),
    overrides: Optional[list[str]] = OverridesArg,
) -> None:
    """Check a config (types, ranges, names, that its manifest and listed files exist) without running
    anything; print it resolved."""
    import yaml

    from medprune.config import check_sources, load_config

    cfg = load_config(config, overrides or [])
    sources = check_sources(cfg)
    typer.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None).rstrip())
    for line in sources:
        typer.echo(line)
    typer.echo(f"{config}: ok")


@app.command()
def prune(
    config: Path = typer.Argument(..., help="The experiment YAML (its compress section says how to prune)."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="The trained model, e.g. runs/NAME/checkpoints/best.pt"),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: runs/NAME/compressed)."),
    overrides: Optional[list[str]] = OverridesArg,
    accept_unsafe: bool = AcceptUnsafeOption,
) -> None:
    """Prune a trained model (criterion, schedule, ratio from the config); evaluate base and pruned.

    A pruned model that fails the safety gate is kept as model.gate_failed.pt and the command exits 3.
    """
    from medprune.workflows.prune import prune_job
    from medprune.config import load_config

    cfg = load_config(config, overrides or [])
    outcome = prune_job(cfg, checkpoint, out, accept_unsafe=accept_unsafe)
    s = outcome.summary
    typer.echo(f"pruned with {s['criterion']} / {s['schedule']} at ratio {s['ratio']:.2f}: params "
               f"{s['params_before']:,} -> {s['params_after']:,}, MACs {s['macs_before']:,} -> {s['macs_after']:,} "
               f"({s['macs_reduction']:.2f}x fewer)")
    _gate_lines(outcome.gate)
    typer.echo("base model:")
    _summary(outcome.base_metrics, outcome.out_dir / "base")
    typer.echo("pruned model:")
    _summary(outcome.metrics, outcome.out_dir)
    typer.echo(f"pruned model: {outcome.model_file}; done in {s['seconds']:.0f} s")
    if outcome.gate.failed:
        raise SafetyGateError(_gate_failure(outcome.gate, outcome.model_file))


def _gate_lines(gate: object) -> None:
    """The safety gate's verdict and its warnings, one line each."""
    typer.echo(f"safety gate: {'FAILED: ' if getattr(gate, 'failed') else ''}{getattr(gate, 'message')}")
    for warning in getattr(gate, "warnings"):
        typer.echo(f"  warning: {warning}")


def _gate_failure(gate: object, kept: Path) -> str:
    return (f"{getattr(gate, 'message')}; the model is kept as {kept}, not for deployment — compress less, "
            "fine-tune longer, or pass --accept-unsafe to keep it anyway (recorded)")


@app.command("run")
def run_cmd(
    config: Path = typer.Argument(..., help="Experiment YAML, e.g. configs/thermography/demo.yaml"),
    overrides: Optional[list[str]] = OverridesArg,
    force: Optional[list[str]] = typer.Option(None, "--force", help="Redo this stage and every later one "
                                              "(train, prune, export, bench, report); repeatable."),
    accept_unsafe: bool = AcceptUnsafeOption,
) -> None:
    """Train, compress, fine-tune, evaluate base and compressed, export, bench and write report.html.

    A stage whose output exists (with the same settings) is reused, so a killed run continues. A
    compressed model that fails its safety gate is kept as *.gate_failed.*, the stages that would
    build on or ship it are skipped, the report marks it, and the command exits 3.
    """
    from medprune.config import load_config
    from medprune.workflows.run import run_job

    cfg = load_config(config, overrides or [])
    outcome = run_job(cfg, force=force or [], accept_unsafe=accept_unsafe)
    typer.echo("stages: " + ", ".join(f"{k} {v['status']}" + (f" ({v['seconds']:.0f} s)" if v.get("seconds") else "")
                                      for k, v in outcome.stages.items()))
    _run_summary(outcome.run_dir)
    for key in ("report", "compressed_model", "onnx", "onnx_int8"):
        if key in outcome.files:
            typer.echo(f"{key.replace('_', ' ')}: {outcome.files[key]}")
    typer.echo(f"done in {outcome.seconds:.0f} s; everything is in {outcome.run_dir}")
    if outcome.gate_failures:
        raise SafetyGateError("; ".join(outcome.gate_failures) + " — not for deployment; compress less, fine-tune "
                              "longer, or pass --accept-unsafe to keep it anyway (recorded)")


@app.command()
def predict(
    target: Path = typer.Argument(..., help="An experiment YAML (its run's final model) or a model file."),
    overrides: Optional[list[str]] = OverridesArg,
    inputs: list[Path] = typer.Option(..., "--input", help="An image file to predict (PNG/JPEG/TIFF/NPY/DMR .txt/"
                                      "DICOM); repeatable."),
    out: Path = typer.Option(..., "--out", help="Folder for predictions.json and the per-image files."),
    degradation: Optional[str] = typer.Option(
        None, "--degradation", help="The inputs' known degradation for a degradation-aware model, as KIND=VALUE in "
        "the kind's own unit (jpeg=30: JPEG quality 30; noise=15: sigma 15 grey levels; blur=1.5: sigma 1.5 px); "
        "without it the model's estimator estimates it."),
) -> None:
    """Run a trained or compressed model on files you point to: probabilities (classification), masks and
    overlays (segmentation), boxes, arcs and overlays (detection; both IVOCT stages), and predictions.json."""
    from medprune.workflows.predict import predict_job

    outcome = predict_job(target, inputs, out, overrides=overrides or [], degradation=degradation)
    for record in outcome.records:
        typer.echo(f"{record['input']}: {record['summary']}"
                   + (f"; files: {', '.join(record['files'])}" if record.get("files") else ""))
    threshold = (outcome.calibration or {}).get("threshold")
    kind = str((outcome.calibration or {}).get("kind", "threshold")).replace("_", " ")
    typer.echo(f"model: {outcome.model_file}" + (f"; {kind} {threshold:.2f}" if threshold else ""))
    typer.echo(f"predictions: {outcome.json_path}")


@app.command()
def sweep(
    config: Path = typer.Argument(..., help="Experiment YAML; its model is trained once (or reused)."),
    overrides: Optional[list[str]] = OverridesArg,
    ratios: Optional[str] = typer.Option(None, "--ratios", help="Comma-separated pruning ratios, e.g. 0.3,0.5,0.7 "
                                         "(default: compress.ratio)."),
    criteria: Optional[str] = typer.Option(None, "--criteria", help="Comma-separated criteria, e.g. l1,taylor "
                                           "(default: compress.criterion)."),
    force: bool = typer.Option(False, "--force", help="Redo every setting even when its folder is complete."),
) -> None:
    """Compress and evaluate one trained model at several ratios/criteria; draw the accuracy/cost frontier."""
    from medprune.config import load_config
    from medprune.workflows.sweep import format_sweep, parse_list, sweep_job

    cfg = load_config(config, overrides or [])
    outcome = sweep_job(cfg, ratios=parse_list(ratios, float, "--ratios"),
                        criteria=parse_list(criteria, str, "--criteria"), force=force)
    if outcome.result.get("synthetic_data"):
        typer.echo("SYNTHETIC phantom data: these numbers describe the phantom, not clinical performance")
    typer.echo(format_sweep(outcome.result))
    typer.echo(f"frontier: {outcome.plot}; json: {outcome.out_dir / 'sweep.json'}; done in {outcome.seconds:.0f} s")


def _run_summary(run_dir: Path) -> None:
    """Base vs compressed headline from the run directory's files (``run.json`` as a RunRecord,
    ``bench.json`` as a BenchResult), in the run's task's metrics."""
    import json

    from medprune.compress.latency import BenchResult
    from medprune.report import HeadlineMetrics, sentence_label
    from medprune.report.records import RUN_RECORD, read_run_record
    from medprune.tasks import task_class

    def load(path: Path) -> dict | None:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    record = read_run_record(run_dir / RUN_RECORD)
    base = load(run_dir / "metrics.json")
    final = record.final if record is not None else None
    comp = load(run_dir / final / "metrics.json") if final and final != "base" else None
    bench_data = load(run_dir / "bench.json")
    bench_result = BenchResult.from_dict(bench_data) if bench_data is not None else None
    task = task_class(record.task if record is not None else str((base or {}).get("task") or "classification"))
    lead = HeadlineMetrics.of(task)

    def number(metrics: dict, key: str) -> str:
        value = metrics.get(key)
        return "n/a" if value is None else f"{value:.3f}"

    def line(metrics: dict) -> str:
        word, key = sentence_label(lead.per_class, task), lead.per_class.key
        per_class = ", ".join(f"{c} {r[key]:.3f}" for c, r in metrics["per_class"].items() if r.get(key) is not None)
        return "; ".join([*(f"{sentence_label(s, task)} {number(metrics, s.key)}" for s in (lead.score, lead.gate)),
                          f"{word} {per_class}"])

    if (base or {}).get("synthetic_data"):
        typer.echo("SYNTHETIC phantom data: these numbers describe the phantom, not clinical performance")
    if base:
        typer.echo(f"base:       {line(base)}")
    if comp:
        typer.echo(f"compressed: {line(comp)}")
        if base:
            typer.echo(f"headline:   {sentence_label(lead.gate, task)} {number(base, lead.gate.key)} → "
                       f"{number(comp, lead.gate.key)}")
    if bench_result is None or bench_result.base not in bench_result.models:
        return
    base_macs = bench_result.models[bench_result.base].macs
    for key, speedup in bench_result.speedup.items():
        macs = bench_result.models[key].macs
        parts = [f"{base_macs / max(1, macs):.2f}x fewer MACs"] if base_macs and macs else []
        parts += [f"{speedup[rt]:.2f}x {where}" for rt, where in (("onnxruntime", "faster on ONNX Runtime CPU"),
                                                                  ("torch", "on PyTorch")) if rt in speedup]
        typer.echo(f"{key}: {', '.join(parts)} ({bench_result.threads} threads, batch {bench_result.batch})")


@app.command()
def bench(
    model_file: Path = typer.Argument(..., help="A medprune model file (model.pt, checkpoint) or an .onnx file."),
    input_size: Optional[tuple[int, int, int]] = typer.Option(None, "--input-size", help="C H W, e.g. --input-size "
                                                               "1 112 112 (default: the size the file records)"),
    batch: int = typer.Option(1, "--batch", min=1),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads (default: torch's)."),
    rounds: int = typer.Option(7, "--rounds", min=3, help="Interleaved rounds (PyTorch and ONNX Runtime alternate); "
                               "the median of per-round minima is reported."),
    out: Optional[Path] = typer.Option(None, "--json", help="Write the results here (default: MODEL_FILE.bench.json)."),
) -> None:
    """Parameters, MACs, file size and latency on PyTorch and ONNX Runtime CPU; writes JSON."""
    from medprune._io import atomic_write_json
    from medprune.compress.latency import bench_file, format_bench

    if not model_file.is_file():
        raise MedpruneError(f"{model_file}: model file not found")
    try:
        result = bench_file(model_file, tuple(input_size) if input_size else None, batch=batch, threads=threads,
                            rounds=rounds)
    except ValueError as exc:
        raise MedpruneError(f"{exc}; pass --input-size C H W") from None
    target = out or model_file.with_suffix(model_file.suffix + ".bench.json")
    atomic_write_json(target, result)
    typer.echo(format_bench(result))
    typer.echo(f"json: {target}")


@app.command("export")
def export_cmd(
    model_file: Path = typer.Argument(..., help="A medprune model file: checkpoint, pruned/pooled/quantized model.pt."),
    out: Path = typer.Option(..., "--out", help="The ONNX file to write, e.g. export/model.onnx."),
    int8: bool = typer.Option(False, "--int8", help="Also write OUT with suffix .int8.onnx: ONNX Runtime static INT8, "
                              "calibrated on class-balanced images of --config's data."),
    input_size: Optional[tuple[int, int, int]] = typer.Option(None, "--input-size", help="C H W (default: from the "
                                                               "training config in the file, else --config)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Experiment YAML: its data gives the check and "
                                          "calibration images, its export section the tolerances."),
    rtol: Optional[float] = typer.Option(None, "--rtol", min=0.0, help="Float models: relative tolerance (default "
                                         "export.rtol, 1e-3)."),
    atol: Optional[float] = typer.Option(None, "--atol", min=0.0, help="Float models: absolute tolerance (default "
                                         "export.atol, 1e-4)."),
    min_agreement: Optional[float] = typer.Option(None, "--min-agreement", min=0.0, max=1.0,
                                                  help="Models with quantized activations: least top-1 agreement "
                                                  "PyTorch vs ONNX Runtime (default "
                                                  "compress.quantize.parity_min_agreement, 0.99)."),
    int8_min_agreement: Optional[float] = typer.Option(None, "--int8-min-agreement", min=0.0, max=1.0,
                                                       help="Least top-1 agreement INT8 vs PyTorch (default "
                                                       "export.int8_min_agreement, 0.9)."),
    accept_unsafe: bool = AcceptUnsafeOption,
) -> None:
    """Export a model to ONNX, checked against PyTorch in ONNX Runtime; a file failing its check is not written."""
    from medprune.workflows.export import export_job
    from medprune.config import load_config

    if not model_file.is_file():
        raise MedpruneError(f"{model_file}: model file not found")
    cfg = load_config(config) if config is not None else None
    outcome = export_job(model_file, out, int8=int8, input_size=input_size, config=cfg, rtol=rtol, atol=atol,
                         min_agreement=min_agreement, int8_min_agreement=int8_min_agreement,
                         accept_unsafe=accept_unsafe)
    r = outcome.fp32
    c, h, w = outcome.input_size
    q = outcome.quantized
    kind = (f"Direct Quantization {q['bits']}-bit weights, "
            f"{q['act_bits'] if q['act_bits'] is not None else 'float'} activations ({q['layers']} layers)"
            if q else "float")
    typer.echo(f"{r.path}: {kind}, input {c}x{h}x{w}; checked on {outcome.check_data}")
    tol = outcome.tolerance
    if r.criterion == "top1":
        typer.echo(f"  ONNX Runtime vs PyTorch: top-1 agreement {r.top1_agreement:.3f} (required "
                   f"{tol['min_agreement']:.3f}; quantized activations can round differently), max |diff| "
                   f"{r.max_abs_diff:.3g}, {r.within_tolerance:.1%} of outputs within {tol['atol']:g} + "
                   f"{tol['rtol']:g}·|output|")
    else:
        typer.echo(f"  ONNX Runtime vs PyTorch: max |diff| {r.max_abs_diff:.3g}, max relative diff "
                   f"{r.max_rel_diff:.3g}; passed atol {tol['atol']:g} + rtol {tol['rtol']:g}·|output|")
    if outcome.int8 is not None:
        i = outcome.int8
        typer.echo(f"{i.path}: INT8 (QDQ) {i.size_bytes / 1e6:.2f} MB vs fp32 {i.fp32_size_bytes / 1e6:.2f} MB; "
                   f"top-1 agreement with PyTorch {i.top1_agreement:.3f} on {i.samples} images (required "
                   f"{i.min_agreement:.3f}), max |logit diff| {i.max_abs_diff:.3g}")
    for note in outcome.notes:
        typer.echo(f"  note: {note}")
    if outcome.int8_gate is not None:
        _gate_lines(outcome.int8_gate)
        if outcome.int8_gate.failed:
            raise SafetyGateError(_gate_failure(outcome.int8_gate, outcome.int8.path))


@app.command("models")
def list_models_cmd() -> None:
    """List the registered models."""
    from medprune.models import list_models

    for name in list_models():
        typer.echo(name)


@data_app.command()
def phantom(
    kind: str = typer.Argument("thermography", help="Phantom kind (synthetic data): thermography, ivoct."),
    out: Path = typer.Option(..., "--out", help="Folder to write the images and manifest.csv into."),
    patients: int = typer.Option(40, "--patients", min=4, help="Number of synthetic patients (IVOCT: pullbacks)."),
    height: Optional[int] = typer.Option(None, "--height", min=16, help="Image height in pixels (default: "
                                         "the phantom's)."),
    width: Optional[int] = typer.Option(None, "--width", min=16, help="Image width in pixels (default: the "
                                        "phantom's)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same data)."),
    imbalance: Optional[float] = typer.Option(None, "--imbalance", min=0.01, help="Thermography: healthy "
                                              "patients per sick patient."),
    views: Optional[int] = typer.Option(None, "--views", min=1, help="Thermography: views (images) per patient."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="Any other keyword of the phantom, "
                                               "key=value (IVOCT: frames=10, plaque_fraction=0.5); repeatable."),
) -> None:
    """Write a deterministic SYNTHETIC phantom data set with its manifest (never clinical data)."""
    import yaml

    from medprune.data import make_phantom
    from medprune.data.settings import PhantomConfig
    from medprune.errors import ConfigError
    from medprune.schema import FieldError

    options: dict[str, object] = {}
    for item in option or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {item!r}: expected key=value, e.g. frames=10")
        options[key.strip()] = yaml.safe_load(raw)
    try:  # the same checks as a config's data.phantom
        spec = PhantomConfig(kind=kind, patients=patients, imbalance=imbalance, views=views, seed=seed,
                             options=options, **({"size": (height or 60, width or 80)} if height or width else {}))
    except FieldError as exc:
        raise ConfigError(f"{'--' + exc.path.split('.')[-1] if exc.path else 'phantom'}: {exc.message}") from None
    kwargs = spec.generator_kwargs()
    if not (height or width):
        kwargs.pop("size")  # the phantom's own default size
    manifest = make_phantom(kind, out, **kwargs)
    typer.echo(f"synthetic {kind} phantom: {manifest}")


def _add_pipeline_commands() -> None:
    """``medprune data index <name>`` for every indexer of every declared pipeline (package metadata;
    the library never imports ``pipelines/`` by name)."""
    from medprune.workflows.pipelines import load_pipelines

    registry = load_pipelines()
    for name in registry.names():
        for command, fn in registry.get(name).indexers.items():
            index_app.command(command)(fn)


_add_pipeline_commands()


def _summary(metrics: dict, where: Path) -> None:
    """Print the headline numbers of an evaluation in its task's metrics, with CIs: the headline and
    gate metrics (balanced accuracy and worst-class sensitivity; mean and worst-class Dice), then per
    class the task's first two per-class metrics (sensitivity and specificity; Dice and HD95)."""
    from medprune.report import HeadlineMetrics, sentence_label
    from medprune.tasks import task_class

    task = task_class(str(metrics.get("task") or "classification"))
    lead = HeadlineMetrics.of(task)
    ci = metrics.get("ci", {})

    def fmt(key: str, value: float | None) -> str:
        if value is None:
            return "n/a"
        bounds = ci.get(key)
        return f"{value:.3f}" + (f" [{bounds[0]:.3f}, {bounds[1]:.3f}]" if bounds and None not in bounds else "")

    synthetic = " (SYNTHETIC phantom data, not clinical performance)" if metrics.get("synthetic_data") else ""
    typer.echo(f"{metrics.get('split', 'eval')} split, {metrics.get('n_samples')} images / "
               f"{metrics.get('n_patients')} patients{synthetic}")
    for spec in dict.fromkeys((lead.score, lead.gate)):
        typer.echo(f"  {sentence_label(spec, task):<24} {fmt(spec.key, metrics.get(spec.key))}")
    for cls, row in metrics.get("per_class", {}).items():
        cells = [f"{sentence_label(s, task)} {fmt(f'per_class.{cls}.{s.key}', row.get(s.key))}"
                 for s in task.per_class_metrics[:2]]
        typer.echo(f"  {cls:<12} " + "  ".join(cells))
    typer.echo(f"metrics: {Path(where) / 'metrics.json'}")


class _LogFilter(logging.Filter):
    """medprune's own records at INFO and above; other libraries' only at ERROR, without tracebacks.

    Third-party libraries log what they handled themselves (pydicom on a file medprune then refuses
    with its own one-line reason, torch's launcher on a rank medprune reports): printed with the
    ``medprune:`` prefix and their tracebacks, that was noise that read like a crash.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] in ("medprune", "pipelines", "__main__"):
            return True
        if record.levelno < logging.ERROR:
            return False
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.msg, record.args = f"({record.name}) {record.getMessage()}", None
        return True


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not to the stream of its creation
    (which a test harness, a notebook or a progress bar may since have closed or replaced)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _configure_logging() -> None:
    """One stderr handler on the root logger (replaced, not stacked, when ``main`` runs again)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "medprune_cli", False)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("medprune: %(message)s"))
    handler.addFilter(_LogFilter())
    handler.medprune_cli = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _command(args: Sequence[str]) -> tuple[str | None, str | None]:
    """The command name and its first positional argument (the config), from the raw arguments."""
    positional = [a for a in args if not a.startswith("-")]
    return (positional[0] if positional else None), (positional[1] if len(positional) > 1 else None)


def interrupted_hint(args: Sequence[str]) -> str:
    """What to type to continue after Ctrl-C, for the command in ``args``."""
    command, config = _command(args)
    config = config or "CONFIG"
    if command == "train":
        return (f"interrupted — continue with `medprune train {config} --resume` (the last finished epoch is "
                "in checkpoints/last.pt)")
    if command == "run":
        return (f"interrupted — continue with `medprune run {config}` (finished stages are reused; an "
                "interrupted training resumes from checkpoints/last.pt)")
    if command == "sweep":
        return f"interrupted — continue with the same `medprune sweep {config} ...` (finished settings are reused)"
    return "interrupted — nothing of this command was kept; run it again"


def _bug(exc: BaseException, args: Sequence[str]) -> int:
    """An exception medprune did not expect: one line, the traceback in a file to report."""
    import tempfile
    import traceback

    from medprune.engine.distributed import record_worker_failure

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    head = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    if record_worker_failure(f"internal error {head}", text, exit_code=EXIT_BUG):
        return EXIT_BUG
    fd, path = tempfile.mkstemp(prefix="medprune-traceback-", suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(f"medprune {' '.join(args)}\n\n{text}")
    typer.echo(f"medprune: internal error (a bug in medprune): {head} — please report it with the traceback "
               f"saved in {path} (set MEDPRUNE_TRACEBACK=1 to print it)", err=True)
    return EXIT_BUG


def _input_error(exc: MedpruneError) -> int:
    from medprune.engine.distributed import record_worker_failure

    if not record_worker_failure(str(exc), exit_code=exc.exit_code):
        prefix = "medprune: safety gate FAILED: " if isinstance(exc, SafetyGateError) else "medprune: error: "
        lines = str(exc).splitlines() if isinstance(exc, DistributedRunError) else [str(exc)]
        for line in lines:
            typer.echo(prefix + line, err=True)
    return exc.exit_code


def _click_exceptions() -> tuple[type[Exception], type[Exception], type[BaseException]]:
    """typer's ClickException, Exit and Abort classes.

    typer 0.2x vendors click (``typer._click``), older releases use click itself: the classes are
    found through typer's public names so either works.
    """
    click_exception = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    return click_exception, typer.Exit, typer.Abort


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``medprune`` console script; returns the exit code (see :mod:`medprune.errors`)."""
    click_exception, click_exit, click_abort = _click_exceptions()
    args = list(sys.argv[1:] if argv is None else argv)
    _configure_logging()
    try:
        code = app(args=args, prog_name="medprune", standalone_mode=False)
        if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C inside a command into Exit(130)
            raise KeyboardInterrupt
    except MedpruneError as exc:
        return _input_error(exc)
    except FloatingPointError as exc:
        typer.echo(f"medprune: error: {exc}", err=True)
        return EXIT_INPUT
    except (KeyboardInterrupt, click_abort) as exc:
        if isinstance(exc, click_abort) and not isinstance(exc.__context__, KeyboardInterrupt):
            return EXIT_BUG
        if not os.environ.get(WORKER_ENV):  # the launcher of a --nproc run says it once
            typer.echo(f"medprune: {interrupted_hint(args)}", err=True)
        return EXIT_INTERRUPTED
    except click_exit as exc:
        return int(getattr(exc, "exit_code", 0) or 0)
    except click_exception as exc:  # usage errors: click's own message and code (2)
        exc.show()  # type: ignore[attr-defined]
        return int(exc.exit_code)  # type: ignore[attr-defined]
    except Exception as exc:
        if os.environ.get("MEDPRUNE_TRACEBACK"):
            raise
        return _bug(exc, args)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
