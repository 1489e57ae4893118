"""What a kind of problem asks of the engine: the :class:`Task` every stage goes through.

The trainer, ``medprune evaluate``, the prune/pool/quantize stages, the export checks, the safety
gate and the report never branch on the kind of problem. They ask the task:

- **data** — which samples are bad (:meth:`Task.check_samples`), the data set of a split
  (:meth:`Task.dataset`), and which stratum each item belongs to (:meth:`Task.balance_labels`:
  the class for classification, the frame-level label for segmentation), so class-balanced
  sampling and pruning calibration balance what matters;
- **training** — the training forward (:meth:`Task.forward`: a detector takes the targets too),
  the loss of a model's output (:meth:`Task.loss`) and its class weights;
- **evaluation** — an :class:`Evaluator` that turns outputs into what the metrics need, batch by
  batch (mergeable across DDP ranks), the metrics (``metrics.json``), and the predictions file
  written beside them (the report layer draws each task's plots);
- **the safety gate and early stopping** — :attr:`Task.gate_metric` (``worst_class_sensitivity``,
  ``worst_class_dice``) and :attr:`Task.selection_metrics`;
- **the report** — which per-class and summary metrics a comparison table shows.

A task is a small registered class (``@TASKS.register``, named by its ``name``); ``create_task(name, classes, **options)``
builds one, its options checked against the constructor like every registered strategy.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from medprune.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

    from medprune.data.manifest import BadSample, Sample
    from medprune.data.readers import ReaderOptions
    from medprune.data.settings import DataConfig
    from medprune.metrics.settings import EvalConfig

__all__ = ["TASKS", "Task", "Evaluator", "Evaluation", "MetricSpec", "create_task", "list_tasks",
           "task_class"]

TASKS = Registry("task")
"""Name → task class."""


def list_tasks() -> list[str]:
    """Registered task names, e.g. ``['classification', 'segmentation']``."""
    return TASKS.names()


def task_class(name: str) -> type[Task]:
    """The class registered as ``name`` (unknown names suggest close ones)."""
    return TASKS.get(name)


def create_task(name: str, classes: Sequence[str], **options: Any) -> Task:
    """The task ``name`` for ``classes`` with its options (``task_options`` in a config)."""
    return TASKS.get(name)(list(classes), **options)


@dataclass(frozen=True)
class MetricSpec:
    """A metric a report shows: its key in ``metrics.json``, a label, whether higher is better."""

    key: str
    label: str
    higher_is_better: bool = True


@dataclass
class Evaluation:
    """A model's outputs over a data set, reduced to what the task's metrics need, in data-set order.

    ``indices``: item indices; ``loss``: mean loss per item; ``payload``: the task's own arrays
    (class probabilities and labels; per-image segmentation scores).
    """

    indices: np.ndarray
    loss: float
    payload: Any


class Evaluator:
    """Accumulates one evaluation batch by batch; ``state()`` crosses process boundaries (DDP)."""

    def update(self, output: torch.Tensor, target: torch.Tensor, indices: torch.Tensor) -> None:
        raise NotImplementedError

    def state(self) -> Any:
        """What this process accumulated, picklable (gathered from every rank)."""
        raise NotImplementedError

    def merge(self, states: Sequence[Any]) -> Evaluation:
        """One :class:`Evaluation` from every rank's :meth:`state`, sorted by item index."""
        raise NotImplementedError


class Task:
    """Base class of the tasks; see the module docstring for what each part is for."""

    name: ClassVar[str] = ""
    #: The validation metric the safety gate watches (a drop beyond the limit fails the gate).
    gate_metric: ClassVar[str] = ""
    #: Metrics ``optim.early_stopping.metric`` may name (``loss`` is minimised, the rest maximised).
    selection_metrics: ClassVar[tuple[str, ...]] = ("loss",)
    #: The default selection metric.
    default_selection: ClassVar[str] = "loss"
    #: Whether validation computes a loss (``metrics.jsonl`` ``val_loss``; ``NaN`` when not).
    validation_loss: ClassVar[bool] = True
    #: Per-class metrics of ``metrics.json`` a report compares (``per_class.<class>.<key>``).
    per_class_metrics: ClassVar[tuple[MetricSpec, ...]] = ()
    #: Summary metrics of ``metrics.json`` a report compares.
    summary_metrics: ClassVar[tuple[MetricSpec, ...]] = ()
    #: Whether the task's data set, under ``data.degradation``, appends the degradation parameter q to
    #: each image as extra planes (the model must then take q; :mod:`medprune.data.degrade`).
    carries_q: ClassVar[bool] = False
    #: The per-item predictions file :meth:`write_predictions` writes beside ``metrics.json``.
    predictions_file: ClassVar[str] = "predictions.csv"

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes = list(classes)

    @classmethod
    def options_signature(cls) -> inspect.Signature:
        """The constructor's options (``task_options``), for the config check."""
        return inspect.signature(cls.__init__)

    # ------------------------------------------------------------------ data
    @classmethod
    def check_data(cls, data: DataConfig) -> None:
        """Check the ``data`` section for this task at config load; raise
        :class:`~medprune.schema.FieldError` with the key path (``data.label_classes``)."""

    def check_samples(self, samples: Sequence[Sample], data: DataConfig, options: ReaderOptions,
                      progress: bool) -> list[BadSample]:
        """Every bad row (unreadable image, unknown label, ...) with its one-line reason."""
        raise NotImplementedError

    def dataset(self, samples: Sequence[Sample], data: DataConfig, options: ReaderOptions, *, train: bool,
                seed: int) -> Dataset:
        """The data set of one split (augmented when ``train``)."""
        raise NotImplementedError

    def resolve_data(self, data: DataConfig, manifest: Path) -> DataConfig:
        """``data`` with paths the task reads beside the manifest resolved (detection's boxes file);
        unchanged by default."""
        return data

    def balance_labels(self, dataset: Any) -> list[int]:
        """The stratum of every item (class-balanced sampling and calibration balance over these)."""
        return [int(v) for v in dataset.labels]

    def balance_classes(self, dataset: Any) -> int:
        """How many strata :meth:`balance_labels` may return."""
        raise NotImplementedError

    # ------------------------------------------------------------------ training
    def class_weights(self, dataset: Any) -> torch.Tensor:
        """Per-class loss weights for ``optim.class_balance: weighted_loss``."""
        raise NotImplementedError

    def forward(self, model: Any, x: torch.Tensor, target: torch.Tensor) -> Any:
        """The training forward: ``model(x)``; a detector also takes the targets (its losses need them)."""
        return model(x)

    def loss(self, output: Any, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """The training loss of a model output (logits, or a tuple whose first item is the logits)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ evaluation
    def evaluator(self, full: bool = True) -> Evaluator:
        """A fresh accumulator of model outputs; ``full=False`` may skip what only the final
        ``metrics.json`` reports (segmentation's Hausdorff distances) for per-epoch validation and
        the safety gate."""
        raise NotImplementedError

    def metrics(self, evaluation: Evaluation, patient_ids: Sequence[str] | None, settings: EvalConfig | None,
                ) -> dict[str, Any]:
        """``metrics.json`` of an evaluation: with intervals from ``settings``, or quick (no intervals,
        for validation, early stopping and the gate) when ``settings`` is ``None``."""
        raise NotImplementedError

    def epoch_record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The validation numbers logged per epoch (``metrics.jsonl``), prefixed ``val_``."""
        raise NotImplementedError

    def write_predictions(self, evaluation: Evaluation, dataset: Any, out_dir: Path) -> Path:
        """Write the per-item predictions file beside ``metrics.json`` (re-evaluable without the model)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ deployment
    #: Whether the task tunes a post-processing setting on validation after training (``calibrate``).
    calibrates: ClassVar[bool] = False

    def calibrate(self, model: Any, dataset: Any, device: Any, batch_size: int) -> dict[str, Any] | None:
        """Tune the task's post-processing on validation (``None``: nothing to tune); JSON-ready record."""
        return None

    def describe_prediction(self, logits: torch.Tensor, *, image_size: tuple[int, int] | None = None,
                            calibration: dict[str, Any] | None = None) -> dict[str, Any]:
        """What ``medprune predict`` reports of one input (``logits`` without the batch axis, the model
        input's ``(H, W)``, the calibrated post-processing), JSON-ready."""
        raise NotImplementedError

    def summarize_prediction(self, record: dict[str, Any]) -> str:
        """One line of what :meth:`describe_prediction` found, for the terminal."""
        raise NotImplementedError

    def write_prediction_files(self, logits: torch.Tensor, image: np.ndarray, name: str, out_dir: Path,
                               calibration: dict[str, Any] | None = None) -> list[Path]:
        """Files ``medprune predict`` writes for one input besides the JSON (masks, overlays); none by default."""
        return []

    def resolution_warnings(self, baseline: dict[str, Any], limit: float) -> list[str]:
        """Why a validation split is too small for the gate's ``limit`` (one line each): a class the
        baseline's ``per_class`` rows give no support, or so little that one image moves the gated
        metric by more than ``limit``. Tasks word the lines with :meth:`unseen_class` and
        :meth:`coarse_class`; a task whose gate is not per class returns no lines."""
        out = []
        for name, row in (baseline.get("per_class") or {}).items():
            support = int((row or {}).get("support") or 0)
            if support == 0:
                out.append(self.unseen_class(name))
            elif 1.0 / support > limit + 1e-12:
                out.append(self.coarse_class(name, support, limit))
        return out

    def unseen_class(self, name: str) -> str:
        """The warning for a class validation does not contain."""
        return f"validation has no '{name}' images: the gate cannot see that class at all"

    def coarse_class(self, name: str, support: int, limit: float) -> str:
        """The warning for a class whose ``support`` images make one error move its metric past ``limit``."""
        return (f"validation has only {support} '{name}' image{'s' if support != 1 else ''}: one error moves its "
                f"{self.gate_metric} by {1.0 / support:.2f}, more than the {limit:g} limit (use a larger validation split)")
