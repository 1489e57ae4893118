"""The jobs behind ``medprune train`` and ``medprune evaluate``: config → data → model → results.

Each job writes into the run directory ``<runtime.out_dir>/<name>/``::

    config.yaml          resolved config
    splits.json          patients per split (patient-level, no patient in two splits)
    bad_samples.csv      rows skipped with data.on_bad_sample: skip
    checkpoints/         last.pt (every epoch), best.pt (best validation epoch)
    metrics.jsonl        one line per epoch; TensorBoard events in tensorboard/
    metrics.json         final evaluation of best.pt on the test split
    predictions.csv      per-item predictions behind metrics.json
    confusion_matrix.png, roc.png (classification) / overlays.png (segmentation)

What is trained, its loss and its metrics come from the config's task (:mod:`medprune.tasks`).
"""

from __future__ import annotations

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
from medprune.engine.checkpoint import load_checkpoint, load_model_weights
from medprune.engine.distributed import barrier, init_distributed
from medprune.engine.trainer import EpochCallback, Trainer, TrainResult
from medprune.errors import CheckpointError, ConfigError, DataError
from medprune.workflows.data import SPLITS, DataBundle, prepare_data
from medprune.workflows.helpers import (build_model, configure_runtime, evaluate_model, load_model_file, model_record,
                                        resolve_device)

__all__ = ["TrainOutcome", "train", "evaluate"]

log = logging.getLogger(__name__)


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
    configure_runtime(config)
    task = config.build_task()
    device_probe = resolve_device(config)
    dist_info = init_distributed(device_probe.type)
    device = resolve_device(config, dist_info)
    run_dir = config.run_dir
    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _prepare_run_dir(run_dir, resume, overwrite)
        save_config(config, run_dir / "config.yaml")
    barrier(dist_info)
    data = prepare_data(config, run_dir, dist_info, task)
    if "val" not in data.datasets:
        raise ConfigError(f"{config.source}: data.split.val_fraction: the validation split is empty; "
                          "the trainer needs one to select the best epoch")
    if dist_info.is_main:
        atomic_write_json(run_dir / "splits.json", {
            name: sorted({s.patient_id for s in data.samples[name]}) for name in SPLITS})
    torch.manual_seed(config.runtime.seed)
    model = build_model(config)
    trainer = Trainer(model, data.datasets["train"], data.datasets["val"], task, config.optim, config.runtime,
                      run_dir, device, eval_batch_size=config.eval.batch_size, dist_info=dist_info,
                      callbacks=callbacks, record=model_record(config))
    result = trainer.fit(resume=resume)
    metrics = None
    if evaluate_test and dist_info.is_main:
        best = result.best_checkpoint or result.last_checkpoint
        split = "test" if "test" in data.datasets else "val"
        if split == "val":
            log.warning("no test split (data.split.test_fraction is 0): evaluating on the validation split")
        ckpt = load_checkpoint(best, map_location=device)
        load_model_weights(trainer.model, ckpt, best)
        metrics = evaluate_model(trainer.model, data.datasets[split], config, run_dir, task=task, device=device,
                                 split=split, synthetic=data.synthetic,
                                 extra={"checkpoint": str(best), "epoch": ckpt.get("epoch")})
    barrier(dist_info)
    return TrainOutcome(run_dir=run_dir, result=result, metrics=metrics, seconds=time.perf_counter() - t0,
                        model=trainer.model, data=data)


def evaluate(config: ExperimentConfig, checkpoint: str | Path, out_dir: str | Path, *, split: str = "test") -> dict[str, Any]:
    """Evaluate a checkpoint or model file on the config's ``split`` (same patient split as training)."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    configure_runtime(config)
    device = resolve_device(config)
    model = load_model_file(checkpoint, config, device)  # a bad checkpoint fails before any data work
    task = config.build_task()
    data = prepare_data(config, config.run_dir, task=task)
    if split not in data.datasets:
        raise DataError(f"{data.manifest}: the {split} split is empty under this config's data.split")
    epoch = load_checkpoint(checkpoint).get("epoch")
    return evaluate_model(model, data.datasets[split], config, out_dir, task=task, device=device, split=split,
                          synthetic=data.synthetic, extra={"checkpoint": str(checkpoint), "epoch": epoch})
