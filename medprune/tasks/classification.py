"""Image classification: one class per image; per-class sensitivity with patient-level intervals.

What medprune did before it knew other tasks, moved here unchanged: cross-entropy (class weights,
label smoothing, Inception's auxiliary head), softmax probabilities, :func:`~medprune.metrics.
classification_metrics` (``metrics.json``), ``predictions.csv``, and the safety gate on validation
worst-class sensitivity.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medprune.tasks.base import TASKS, Evaluation, Evaluator, MetricSpec, Task

__all__ = ["ClassificationTask", "first_output"]


def first_output(output: Any) -> torch.Tensor:
    """The main logits of a model output (Inception's train mode returns ``(logits, aux)``)."""
    if isinstance(output, (tuple, list)):
        return output[0]
    return output


class _ClassificationEvaluator(Evaluator):
    def __init__(self) -> None:
        self.indices: list[np.ndarray] = []
        self.probs: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.loss_sum = 0.0
        self.k = 0

    def update(self, output: torch.Tensor, target: torch.Tensor, indices: torch.Tensor) -> None:
        logits = first_output(output).float()
        self.k = int(logits.shape[1])
        self.loss_sum += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
        self.probs.append(torch.softmax(logits, dim=1).cpu().numpy())
        self.labels.append(target.cpu().numpy())
        self.indices.append(indices.cpu().numpy())

    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        cat = lambda parts, shape, dtype: np.concatenate(parts) if parts else np.zeros(shape, dtype)  # noqa: E731
        return (cat(self.indices, (0,), np.int64), cat(self.probs, (0, self.k), np.float32),
                cat(self.labels, (0,), np.int64), self.loss_sum)

    def merge(self, states: Sequence[Any]) -> Evaluation:
        indices = np.concatenate([s[0] for s in states])
        order = np.argsort(indices, kind="stable")
        probs = np.concatenate([s[1] for s in states])[order]
        labels = np.concatenate([s[2] for s in states])[order]
        loss = sum(s[3] for s in states) / max(1, len(indices))
        return Evaluation(indices=indices[order], loss=loss, payload={"probs": probs, "labels": labels})


@TASKS.register
class ClassificationTask(Task):
    """One label per image from ``classes``; the model outputs logits ``(N, K)``.

    Args:
        classes: the class names (``data.classes``).
        label_smoothing: cross-entropy label smoothing (``optim.label_smoothing``).
        aux_weight: weight of an auxiliary head's loss (Inception V3 in train mode).
    """

    name = "classification"
    gate_metric = "worst_class_sensitivity"
    selection_metrics = ("balanced_accuracy", "worst_class_sensitivity", "macro_f1", "macro_auc", "accuracy",
                         "loss")
    default_selection = "balanced_accuracy"
    carries_q = True
    per_class_metrics = (MetricSpec("sensitivity", "Sensitivity"), MetricSpec("specificity", "Specificity"),
                         MetricSpec("ppv", "PPV"), MetricSpec("npv", "NPV"), MetricSpec("f1", "F1"),
                         MetricSpec("auc", "AUC (one-vs-rest)"))
    summary_metrics = (MetricSpec("balanced_accuracy", "Balanced accuracy"),
                       MetricSpec("worst_class_sensitivity", "Worst-class sensitivity"),
                       MetricSpec("accuracy", "Accuracy"), MetricSpec("macro_f1", "Macro F1"),
                       MetricSpec("macro_auc", "Macro AUC"), MetricSpec("ece", "ECE", higher_is_better=False))

    def __init__(self, classes: Sequence[str], *, label_smoothing: float = 0.0, aux_weight: float = 0.4) -> None:
        super().__init__(classes)
        self.label_smoothing = float(label_smoothing)
        self.aux_weight = float(aux_weight)

    # ------------------------------------------------------------------ data
    def check_samples(self, samples: Any, data: Any, options: Any, progress: bool) -> list[Any]:
        from medprune.data import check_samples

        return check_samples(samples, self.classes, options, progress=progress)

    def dataset(self, samples: Any, data: Any, options: Any, *, train: bool, seed: int) -> Any:
        from medprune.data import ClassificationDataset, build_augmentation, build_degrader

        return ClassificationDataset(samples, self.classes, tuple(data.image_size), data.channels, options,
                                     augmentation=build_augmentation(data.augmentation) if train else None,
                                     colormap=data.colormap, mean=data.mean, std=data.std, seed=seed,
                                     degradation=build_degrader(data.degradation, train=train))

    def balance_classes(self, dataset: Any) -> int:
        return len(self.classes)

    # ------------------------------------------------------------------ training
    def class_weights(self, dataset: Any) -> torch.Tensor:
        from medprune.data.sampling import inverse_frequency_weights

        return inverse_frequency_weights(self.balance_labels(dataset), len(self.classes))

    def loss(self, output: Any, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy of the logits; a tuple output adds ``aux_weight`` × the cross-entropy of each
        auxiliary head (Inception V3) and, as they are, the 0-dim losses the model computed itself
        (the degradation-aware model's estimator loss, :mod:`medprune.models.degradation`)."""
        ce = dict(weight=weights, label_smoothing=self.label_smoothing)
        if isinstance(output, (tuple, list)):
            loss = nn.functional.cross_entropy(output[0], target, **ce)
            for aux in output[1:]:
                if aux.dim() == 0:  # a loss the model computed itself (the degradation estimator's)
                    loss = loss + aux
                else:
                    loss = loss + self.aux_weight * nn.functional.cross_entropy(aux, target, **ce)
            return loss
        return nn.functional.cross_entropy(output, target, **ce)

    # ------------------------------------------------------------------ evaluation
    def evaluator(self, full: bool = True) -> Evaluator:
        return _ClassificationEvaluator()

    def metrics(self, evaluation: Evaluation, patient_ids: Sequence[str] | None, settings: Any) -> dict[str, Any]:
        from medprune.metrics import classification_metrics

        p = evaluation.payload
        options = settings.metric_options() if settings is not None else {"n_bootstrap": 0}
        return classification_metrics(p["labels"], p["probs"], self.classes, patient_ids=patient_ids, **options)

    def epoch_record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        record = {f"val_{k}": metrics.get(k) for k in ("accuracy", "balanced_accuracy", "worst_class_sensitivity",
                                                        "macro_f1", "macro_auc")}
        record.update({f"val_sensitivity_{c}": (metrics["per_class"][c] or {}).get("sensitivity")
                       for c in self.classes})
        return record

    def write_predictions(self, evaluation: Evaluation, dataset: Any, out_dir: Path) -> Path:
        from medprune.metrics import write_predictions_csv

        idx = evaluation.indices
        p = evaluation.payload
        return write_predictions_csv(Path(out_dir) / "predictions.csv", idx, [str(dataset.paths[i]) for i in idx],
                                     [dataset.patient_ids[i] for i in idx], p["labels"], p["probs"], self.classes)

    def describe_prediction(self, logits: torch.Tensor, *, image_size: tuple[int, int] | None = None,
                            calibration: dict[str, Any] | None = None) -> dict[str, Any]:
        probs = torch.softmax(first_output(logits).float(), dim=0).tolist()
        best = int(np.argmax(probs))
        return {"prediction": self.classes[best], "probabilities": {c: float(p) for c, p in zip(self.classes, probs)}}

    def summarize_prediction(self, record: dict[str, Any]) -> str:
        return f"{record['prediction']} " + ", ".join(f"{c} {p:.3f}" for c, p in record["probabilities"].items())

    def coarse_class(self, name: str, support: int, limit: float) -> str:
        return (f"validation has only {support} '{name}' image{'s' if support != 1 else ''}: one error "
                f"moves its sensitivity by {1.0 / support:.2f}, more than the {limit:g} limit; the gate "
                "cannot judge this class at that resolution (use a larger validation split)")
