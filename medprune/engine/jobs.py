"""The jobs behind ``medprune train`` and ``medprune evaluate``: config → data → model → results.

Each job writes into the run directory ``<runtime.out_dir>/<name>/``::

    config.yaml          resolved config
    splits.json          patients per split (patient-level, no patient in two splits)
    bad_samples.csv      rows skipped with data.on_bad_sample: skip
    checkpoints/         last.pt (every epoch), best.pt (best validation epoch)
    metrics.jsonl        one line per epoch; TensorBoard events in tensorboard/
    metrics.json         final evaluation of best.pt on the test split
    predictions.csv      per-image probabilities behind metrics.json
    confusion_matrix.png, roc.png
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
from torch import nn

from medprune._io import atomic_write_json
from medprune.config import ExperimentConfig, save_config
from medprune.data import (
    ClassificationDataset,
    ReaderOptions,
    Sample,
    build_augmentation,
    check_samples,
    format_bad_samples,
    make_phantom,
    read_manifest,
    split_by_patient,
    write_bad_samples,
)
from medprune.engine.checkpoint import load_checkpoint, load_model_weights
from medprune.engine.distributed import DistInfo, barrier, init_distributed
from medprune.engine.trainer import EpochCallback, Trainer, TrainResult, predict
from medprune.errors import CheckpointError, ConfigError, DataError
from medprune.metrics import classification_metrics, write_predictions_csv
from medprune.models import create_model, replace_pooling
from medprune.models.structure import build_from_spec

__all__ = ["DataBundle", "TrainOutcome", "resolve_device", "prepare_data", "build_model", "train",
           "evaluate", "evaluate_model"]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def resolve_device(config: ExperimentConfig, dist_info: DistInfo | None = None) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is a config error."""
    want = config.runtime.device
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{config.source}: runtime.device: 'cuda' requested but no CUDA device is available; "
                          "use 'auto' or 'cpu'")
    if want == "cpu" or (want == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    index = dist_info.local_rank if dist_info is not None else 0
    return torch.device("cuda", index)


@dataclass
class DataBundle:
    """The data of one experiment, split by patient and wrapped in datasets."""

    manifest: Path
    samples: dict[str, list[Sample]]
    datasets: dict[str, ClassificationDataset]
    bad_samples: list[Any]
    synthetic: bool


def _manifest_path(config: ExperimentConfig, run_dir: Path, dist_info: DistInfo) -> tuple[Path, bool]:
    if config.data.manifest is not None:
        return Path(config.data.manifest), False
    ph = config.data.phantom
    assert ph is not None  # guaranteed by DataConfig validation
    out = Path(ph.out) if ph.out else run_dir / "phantom"
    manifest = out / "manifest.csv"
    stamp = out / "phantom_spec.json"
    spec = {"kind": ph.kind, "patients": ph.patients, "imbalance": ph.imbalance, "views": ph.views,
            "size": list(ph.size), "seed": ph.seed}
    if dist_info.is_main:
        current = json.loads(stamp.read_text()) if stamp.exists() else None
        if not manifest.exists() or current != spec:
            # A phantom made with other settings is regenerated, never silently reused.
            log.info("generating synthetic %s phantom data in %s", ph.kind, out)
            make_phantom(ph.kind, out, patients=ph.patients, imbalance=ph.imbalance, views=ph.views,
                         size=tuple(ph.size), seed=ph.seed)
            atomic_write_json(stamp, spec)
    barrier(dist_info)
    return manifest, True


def reader_options(config: ExperimentConfig) -> ReaderOptions:
    """Reader options from the config's data section."""
    d = config.data
    return ReaderOptions(temperature_window=tuple(d.temperature_window),
                         dicom_window=tuple(d.dicom_window) if d.dicom_window else None, dicom_frame=d.dicom_frame)


def prepare_data(config: ExperimentConfig, run_dir: str | Path, dist_info: DistInfo = DistInfo()) -> DataBundle:
    """Read the manifest (or make the phantom), check every sample, split by patient, build datasets.

    Bad samples stop the job here — before any training — with every bad row listed, unless
    ``data.on_bad_sample: skip``, which drops them and writes ``bad_samples.csv``.
    """
    run_dir = Path(run_dir)
    manifest, synthetic = _manifest_path(config, run_dir, dist_info)
    samples = read_manifest(manifest)
    options = reader_options(config)
    bad = check_samples(samples, list(config.data.classes), options, progress=config.runtime.progress)
    if bad:
        if config.data.on_bad_sample == "error":
            raise DataError(f"{manifest}: {len(bad)} bad sample(s); fix or exclude them, or set "
                            f"data.on_bad_sample: skip\n" + format_bad_samples(bad, manifest))
        if dist_info.is_main:
            write_bad_samples(bad, run_dir / "bad_samples.csv")
        log.warning("skipping %d bad sample(s), listed in %s", len(bad), run_dir / "bad_samples.csv")
        bad_rows = {(b.path, b.row) for b in bad}
        samples = [s for s in samples if (s.path, s.row) not in bad_rows]
    if not samples:
        raise DataError(f"{manifest}: no usable samples left")
    split = config.data.split
    parts = split_by_patient(samples, split.val_fraction, split.test_fraction, split.seed)
    if not parts["train"]:
        raise DataError(f"{manifest}: the training split is empty")
    d = config.data
    common = dict(classes=list(d.classes), image_size=tuple(d.image_size), channels=d.channels, options=options,
                  colormap=d.colormap, mean=d.mean, std=d.std, seed=config.runtime.seed)
    datasets = {name: ClassificationDataset(parts[name], augmentation=build_augmentation(d.augmentation)
                                            if name == "train" else None, **common)
                for name in SPLITS if parts[name]}
    return DataBundle(manifest=manifest, samples=parts, datasets=datasets, bad_samples=bad, synthetic=synthetic)


def build_model(config: ExperimentConfig) -> nn.Module:
    """The registry model the config names, sized for its classes and channels, with ``model.pooling`` applied."""
    model = create_model(config.model.name, **config.model_kwargs())
    spec = config.model.pooling_spec()
    if spec is not None:
        kind, options = spec
        replace_pooling(model, str(kind), **options)
    return model


def _configure_runtime(config: ExperimentConfig) -> None:
    if config.runtime.threads is not None:
        torch.set_num_threads(config.runtime.threads)
    if config.runtime.deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


@dataclass
class TrainOutcome:
    """What ``medprune train`` produced."""

    run_dir: Path
    result: TrainResult
    metrics: dict[str, Any] | None
    seconds: float
    model: nn.Module
    data: DataBundle


def _prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    last = run_dir / "checkpoints" / "last.pt"
    if resume:
        if not last.exists():
            raise CheckpointError(f"{last}: nothing to resume (no checkpoint); start without --resume "
                                  "(resume=False in Python)")
        return
    if last.exists() and not overwrite:
        raise CheckpointError(f"{run_dir}: already holds a training run; continue it with --resume (resume=True in "
                              "Python), start again with --overwrite (overwrite=True), or choose another name "
                              "(override name=...)")
    if overwrite:
        for name in ("checkpoints", "tensorboard"):
            shutil.rmtree(run_dir / name, ignore_errors=True)
        for name in ("metrics.jsonl", "metrics.json", "predictions.csv", "bad_samples.csv"):
            (run_dir / name).unlink(missing_ok=True)


def train(config: ExperimentConfig, *, resume: bool = False, overwrite: bool = False,
          callbacks: Sequence[EpochCallback] = (), evaluate_test: bool = True) -> TrainOutcome:
    """Train the config's model, keep the best epoch, evaluate it on the test split.

    Works as a single process or inside a torchrun/DDP job (it joins the process group itself).
    """
    t0 = time.perf_counter()
    _configure_runtime(config)
    device_probe = resolve_device(config)
    dist_info = init_distributed(device_probe.type)
    device = resolve_device(config, dist_info)
    run_dir = config.run_dir
    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _prepare_run_dir(run_dir, resume, overwrite)
        save_config(config, run_dir / "config.yaml")
    barrier(dist_info)
    data = prepare_data(config, run_dir, dist_info)
    if "val" not in data.datasets:
        raise ConfigError(f"{config.source}: data.split.val_fraction: the validation split is empty; "
                          "the trainer needs one to select the best epoch")
    if dist_info.is_main:
        atomic_write_json(run_dir / "splits.json", {
            name: sorted({s.patient_id for s in data.samples[name]}) for name in SPLITS})
    torch.manual_seed(config.runtime.seed)
    model = build_model(config)
    trainer = Trainer(model, data.datasets["train"], data.datasets["val"], config, run_dir, device,
                      dist_info=dist_info, callbacks=callbacks)
    result = trainer.fit(resume=resume)
    metrics = None
    if evaluate_test and dist_info.is_main:
        best = result.best_checkpoint or result.last_checkpoint
        split = "test" if "test" in data.datasets else "val"
        if split == "val":
            log.warning("no test split (data.split.test_fraction is 0): evaluating on the validation split")
        ckpt = load_checkpoint(best, map_location=device)
        load_model_weights(trainer.model, ckpt, best)
        metrics = evaluate_model(trainer.model, data.datasets[split], config, run_dir, device=device,
                                 split=split, synthetic=data.synthetic,
                                 extra={"checkpoint": str(best), "epoch": ckpt.get("epoch")})
    barrier(dist_info)
    return TrainOutcome(run_dir=run_dir, result=result, metrics=metrics, seconds=time.perf_counter() - t0,
                        model=trainer.model, data=data)


def evaluate_model(model: nn.Module, dataset: ClassificationDataset, config: ExperimentConfig,
                   out_dir: str | Path, *, device: torch.device | None = None, split: str = "test",
                   synthetic: bool = False, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Predict ``dataset``, write ``metrics.json``, ``predictions.csv`` and the plots into ``out_dir``."""
    from medprune.report import plot_confusion_matrix, plot_roc

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = device or torch.device("cpu")
    model = model.to(device)
    preds = predict(model, dataset, batch_size=config.eval.batch_size or config.optim.batch_size, device=device,
                    workers=config.runtime.workers, progress=config.runtime.progress, desc=f"evaluate {split}")
    patients = [dataset.patient_ids[i] for i in preds.indices]
    ev = config.eval
    metrics = classification_metrics(preds.labels, preds.probs, list(config.data.classes), patient_ids=patients,
                                     **ev.metric_options())
    metrics = {"split": split, "synthetic_data": synthetic, "model": getattr(model, "medprune_spec", None),
               **(extra or {}), "loss": preds.loss, **metrics}
    atomic_write_json(out_dir / "metrics.json", metrics)
    write_predictions_csv(out_dir / "predictions.csv", preds.indices, [str(dataset.paths[i]) for i in preds.indices],
                          patients, preds.labels, preds.probs, list(config.data.classes))
    note = " (synthetic phantom data)" if synthetic else ""
    plot_confusion_matrix(metrics["confusion_matrix"], list(config.data.classes), out_dir / "confusion_matrix.png",
                          title=f"Confusion matrix, {split} split{note}")
    plot_roc(preds.labels, preds.probs, list(config.data.classes), out_dir / "roc.png",
             title=f"ROC, {split} split{note}")
    return metrics


def evaluate(config: ExperimentConfig, checkpoint: str | Path, out_dir: str | Path, *, split: str = "test") -> dict[str, Any]:
    """Evaluate a checkpoint on the config's ``split`` (same patient split as training)."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    _configure_runtime(config)
    device = resolve_device(config)
    ckpt = load_checkpoint(checkpoint, map_location=device)
    data = prepare_data(config, config.run_dir)
    if split not in data.datasets:
        raise DataError(f"{data.manifest}: the {split} split is empty under this config's data.split")
    spec = ckpt.get("model_spec")
    model = build_from_spec(spec, str(checkpoint)) if spec else build_model(config)
    load_model_weights(model, ckpt, checkpoint)
    return evaluate_model(model, data.datasets[split], config, out_dir, device=device, split=split,
                          synthetic=data.synthetic, extra={"checkpoint": str(checkpoint), "epoch": ckpt.get("epoch")})
