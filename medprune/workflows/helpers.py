"""The pieces every workflow shares, written once.

- :func:`load_model_file` — a checkpoint or model file → the model it holds (its recorded
  architecture, pruned widths and transforms included; else the config's model);
- :func:`model_record` — what every checkpoint and model file records beside the weights (the
  config, input size, classes, task), so each file is usable on its own;
- :func:`finetune` — fine-tune a model through the trainer and reload its best epoch;
- :func:`calibration_batches` — class-balanced batches for data-driven criteria and quantizers,
  balanced over the task's strata;
- :func:`validation_metrics` — the quick validation metrics the safety gate compares;
- :func:`evaluate_model` — ``metrics.json`` (with intervals), the predictions file and the task's
  figures for one model on one split;
- :func:`onnx_evaluation` — the same evaluation for an exported graph run in ONNX Runtime.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from medprune._io import atomic_write_json
from medprune.config import ExperimentConfig
from medprune.engine.checkpoint import load_checkpoint, load_model_weights
from medprune.engine.distributed import DistInfo
from medprune.engine.trainer import Distillation, Trainer, predict
from medprune.errors import ConfigError
from medprune.models import create_model, replace_pooling
from medprune.models.structure import build_from_spec
from medprune.tasks import Evaluation, Task
from medprune.workflows.data import DataBundle

__all__ = ["resolve_device", "configure_runtime", "build_model", "load_model_file", "model_record", "config_trainer",
           "finetune_settings",
           "finetune", "calibration_batches", "validation_metrics", "evaluate_model", "onnx_evaluation",
           "example_batch"]

log = logging.getLogger(__name__)


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


def configure_runtime(config: ExperimentConfig) -> None:
    """Thread count and determinism flags from ``runtime``."""
    if config.runtime.threads is not None:
        torch.set_num_threads(config.runtime.threads)
    if config.runtime.deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def build_model(config: ExperimentConfig) -> nn.Module:
    """The registry model the config names, sized for its classes and channels, with ``model.pooling`` applied."""
    model = create_model(config.model.name, **config.model_kwargs())
    spec = config.model.pooling_spec()
    if spec is not None:
        kind, options = spec
        replace_pooling(model, str(kind), **options)
    return model


def load_model_file(path: str | Path, config: ExperimentConfig | None = None,
                    device: torch.device | str = "cpu") -> nn.Module:
    """The model a checkpoint or model file holds: its recorded architecture (pruned widths, pooling
    swaps, quantizers), else ``config``'s model; weights loaded with ``weights_only``; eval mode."""
    ckpt = load_checkpoint(path, map_location=device)
    spec = ckpt.get("model_spec")
    if spec is None and config is None:
        raise ConfigError(f"{path}: records no architecture; pass the config it was trained with")
    model = build_from_spec(spec, str(path)) if spec else build_model(config)  # type: ignore[arg-type]
    load_model_weights(model, ckpt, path)
    return model.to(device).eval()


def model_record(config: ExperimentConfig) -> dict[str, Any]:
    """``input_size`` ``(C, H, W)``, ``classes``, ``task`` and the resolved ``config``: what every
    checkpoint and model file medprune writes records beside the weights."""
    h, w = config.data.image_size
    return {"input_size": [config.input_channels(), int(h), int(w)],
            "classes": list(config.data.classes), "task": config.task, "config": config.to_dict()}


def config_trainer(model: nn.Module, train_set: Any, val_set: Any, config: ExperimentConfig, run_dir: str | Path,
                   device: torch.device, **kwargs: Any) -> Trainer:
    """A :class:`~medprune.engine.trainer.Trainer` set up from an experiment config: its task, ``optim``,
    ``runtime``, ``eval.batch_size`` and the record every checkpoint carries. ``kwargs`` go to the
    trainer (``dist_info``, ``callbacks``, ``hooks``, ``distill``, ``task``, ``optim``)."""
    task = kwargs.pop("task", None) or config.build_task()
    optim = kwargs.pop("optim", None) or config.optim
    return Trainer(model, train_set, val_set, task, optim, config.runtime, run_dir, device,
                   eval_batch_size=config.eval.batch_size, record=kwargs.pop("record", None) or model_record(config),
                   **kwargs)


def finetune_settings(config: ExperimentConfig, epochs: int, lr: float | None = None) -> Any:
    """``optim`` for fine-tuning: ``epochs`` epochs at ``lr`` (default ``compress.finetune.lr``, else
    ``optim.lr``), no warm-up, no early stop (the best validation epoch is still kept)."""
    lr = lr or config.compress.finetune.lr
    return dataclasses.replace(
        config.optim, epochs=epochs, lr=lr or config.optim.lr,
        schedule=dataclasses.replace(config.optim.schedule, warmup_epochs=0),
        early_stopping=dataclasses.replace(config.optim.early_stopping, patience=None))


def finetune(model: nn.Module, data: DataBundle, config: ExperimentConfig, out_dir: Path, *, epochs: int,
             task: Task, device: torch.device, lr: float | None = None, hooks: Sequence[Any] = (),
             teacher: nn.Module | None = None, fresh: bool = True) -> nn.Module:
    """Fine-tune ``model`` for ``epochs`` (in ``out_dir``: checkpoints, metrics.jsonl) and return it with
    its best validation epoch's weights; distils from ``teacher`` when ``compress.finetune.distill``
    is on. ``fresh`` discards an earlier fine-tuning in ``out_dir`` instead of resuming it."""
    if epochs <= 0:
        return model
    if fresh:
        shutil.rmtree(out_dir, ignore_errors=True)
    d = config.compress.finetune.distill
    distill = Distillation(teacher.to(device), d.alpha, d.temperature) if teacher is not None and d.enabled else None
    trainer = Trainer(model.to(device), data.datasets["train"], data.datasets["val"], task,
                      finetune_settings(config, epochs, lr), config.runtime, out_dir, device,
                      eval_batch_size=config.eval.batch_size, hooks=hooks, distill=distill,
                      record=model_record(config))
    best = trainer.fit().best_checkpoint
    if best is not None:
        load_model_weights(trainer.model, load_checkpoint(best, map_location=device), best)
    return trainer.model


def calibration_batches(config: ExperimentConfig, data: DataBundle, task: Task,
                        settings: Any = None) -> Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """Class-balanced batches (``compress.calibration`` or ``settings``), balanced over the task's strata."""
    from medprune.compress.calibration import class_balanced_batches

    c = settings or config.compress.calibration
    if c.split not in data.datasets:
        from medprune.errors import DataError

        raise DataError(f"{config.source}: compress.calibration.split: the {c.split!r} split is empty")
    dataset = data.datasets[c.split]
    return class_balanced_batches(dataset, batch_size=c.batch_size, num_batches=c.batches, seed=c.seed,
                                  num_classes=task.balance_classes(dataset), labels=task.balance_labels(dataset))


def example_batch(dataset: Any, n: int = 2) -> torch.Tensor:
    """The first ``n`` images of ``dataset`` as a batch (for tracing and self-checks)."""
    return torch.stack([dataset[i][0] for i in range(min(n, len(dataset)))])


def validation_metrics(model: nn.Module, data: DataBundle, config: ExperimentConfig, device: torch.device,
                       task: Task) -> dict[str, Any]:
    """Quick task metrics on the validation split (no intervals): what the safety gate compares."""
    evaluation = predict(model, data.datasets["val"], task, batch_size=config.eval.batch_size or config.optim.batch_size,
                         device=device, workers=config.runtime.workers, desc="gate", full=False)
    return task.metrics(evaluation, None, None)


def _patients(dataset: Any, evaluation: Evaluation) -> list[str] | None:
    ids = getattr(dataset, "patient_ids", None)
    return [ids[i] for i in evaluation.indices] if ids is not None else None


def _write(evaluation: Evaluation, dataset: Any, config: ExperimentConfig, task: Task, out_dir: Path, split: str,
           synthetic: bool, extra: dict[str, Any] | None, model: Any, predict_masks: Any) -> dict[str, Any]:
    from medprune.report.evaluation import plot_evaluation

    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = task.metrics(evaluation, _patients(dataset, evaluation), config.eval)
    metrics = {"split": split, "synthetic_data": synthetic, "task": task.name, "model": model, **(extra or {}),
               "loss": None if np.isnan(evaluation.loss) else evaluation.loss, **metrics}  # NaN: no validation loss
    atomic_write_json(out_dir / "metrics.json", metrics)
    task.write_predictions(evaluation, dataset, out_dir)
    note = " (synthetic phantom data)" if synthetic else ""
    plot_evaluation(task.name, evaluation, dataset, metrics, out_dir, title=f", {split} split{note}",
                    predict_masks=predict_masks)
    return metrics


def evaluate_model(model: nn.Module, dataset: Any, config: ExperimentConfig, out_dir: str | Path, *, task: Task,
                   device: torch.device | None = None, split: str = "test", synthetic: bool = False,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataset``: ``metrics.json`` (with intervals), the predictions file and the
    task's figures in ``out_dir``; returns the metrics."""
    device = device or torch.device("cpu")
    model = model.to(device)
    evaluation = predict(model, dataset, task, batch_size=config.eval.batch_size or config.optim.batch_size,
                         device=device, workers=config.runtime.workers, progress=config.runtime.progress,
                         desc=f"evaluate {split}")

    @torch.no_grad()
    def predict_masks(indices: list[int]) -> np.ndarray:
        x = torch.stack([dataset[i][0] for i in indices]).to(device)
        return model.eval()(x).argmax(dim=1).cpu().numpy()

    return _write(evaluation, dataset, config, task, Path(out_dir), split, synthetic, extra,
                  getattr(model, "medprune_spec", None), predict_masks)


def onnx_evaluation(path: str | Path, dataset: Any, task: Task, threads: int | None = None) -> Evaluation:
    """The task's evaluation of an ONNX graph run in ONNX Runtime (CPU) over ``dataset``, in data-set order:
    what INT8 graphs are gated and scored with."""
    from torch.utils.data import DataLoader

    from medprune.compress.export import packed_feed
    from medprune.compress.latency import ort_session

    session = ort_session(path, threads)
    evaluator = task.evaluator()
    for x, y, idx in DataLoader(dataset, batch_size=1, shuffle=False):
        logits = torch.from_numpy(np.asarray(session.run(None, packed_feed(session, x))[0]))
        evaluator.update(logits, y, idx)
    return evaluator.merge([evaluator.state()])


def evaluate_onnx(path: str | Path, dataset: Any, config: ExperimentConfig, out_dir: str | Path, *, task: Task,
                  split: str, synthetic: bool, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """:func:`evaluate_model` for an ONNX graph (INT8 exports): metrics, predictions, figures."""
    from medprune.compress.export import packed_feed
    from medprune.compress.latency import ort_session

    evaluation = onnx_evaluation(path, dataset, task)
    session = ort_session(path)

    def predict_masks(indices: list[int]) -> np.ndarray:
        return np.concatenate([np.asarray(session.run(None, packed_feed(session, dataset[i][0][None]))[0]).argmax(1)
                               for i in indices])

    return _write(evaluation, dataset, config, task, Path(out_dir), split, synthetic, extra, str(path),
                  predict_masks)
