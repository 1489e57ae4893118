"""What a reader of the report must not miss, computed from the run directory.

:func:`collect_warnings` checks every model of the run (base, compressed stages, INT8 export)
and returns one :class:`ReportWarning` per finding; the report shows them at the top and writes
them to ``report_warnings.json`` as a list of ``{kind, model, message}``. The kinds, in the order
they are reported:

``gate_failed``
    a model's safety gate has status ``failed``: not for deployment.
``gate_accepted_unsafe``
    a model failed its gate and was accepted anyway (``--accept-unsafe``).
``single_class``
    a model predicts one class only: every prediction of its confusion matrix is in one column.
``compressed_beats_base``
    a compressed model's interval for balanced accuracy or a class's sensitivity lies entirely
    above the base model's: suspect the base model (under-trained or unstable training).
``unstable_training``
    a training or fine-tuning logged a NaN/inf loss, or a loss more than
    :data:`~medprune.report.curves.OUTLIER_FACTOR` × that training's median loss.
``small_sample``
    a class (or the whole split) is too small to judge: from the ``small_sample`` section of
    ``metrics.json``, else derived from the class supports and patient count.
``gate_warning``
    a warning the safety gate itself recorded (e.g. its validation split is too small).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from medprune.report._run_dir import RunData, RunModel, interval, load_run_dir, small_sample
from medprune.report.curves import LOSS_KEYS, OUTLIER_FACTOR, loss_outliers

__all__ = ["ReportWarning", "WARNING_KINDS", "collect_warnings", "run_warnings"]

#: Every kind :func:`collect_warnings` can report, in reporting order.
WARNING_KINDS = ("gate_failed", "gate_accepted_unsafe", "single_class", "compressed_beats_base",
                 "unstable_training", "small_sample", "gate_warning")


@dataclass(frozen=True)
class ReportWarning:
    """One finding: its ``kind`` (one of :data:`WARNING_KINDS`), the model label it concerns
    (``None`` when it concerns the test split), and a sentence a reader can act on."""

    kind: str
    message: str
    model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "message": self.message}

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> ReportWarning:
        return cls(kind=str(obj["kind"]), message=str(obj["message"]),
                   model=None if obj.get("model") is None else str(obj["model"]))


def _gate_warnings(model: RunModel) -> list[ReportWarning]:
    gate = model.gate
    if gate is None:
        return []
    out = []
    detail = gate.reason()
    if gate.status == "failed":
        out.append(ReportWarning("gate_failed", f"{model.label} FAILED its safety gate — not for deployment: "
                                                f"{detail}", model.label))
    elif gate.status == "accepted_unsafe":
        out.append(ReportWarning("gate_accepted_unsafe", f"{model.label} was accepted despite failing its safety "
                                                         f"gate (--accept-unsafe): {detail}", model.label))
    out += [ReportWarning("gate_warning", f"{model.label} safety gate: {w}", model.label) for w in gate.warnings]
    return out


def _single_class(model: RunModel, classes: list[str]) -> ReportWarning | None:
    """A model whose confusion matrix has every prediction in one column."""
    cm = (model.metrics or {}).get("confusion_matrix")
    if not isinstance(cm, list) or not cm or not all(isinstance(row, list) for row in cm):
        return None
    try:
        columns = [sum(float(row[j]) for row in cm) for j in range(len(cm[0]))]
    except (TypeError, ValueError, IndexError):
        return None
    used = [j for j, total in enumerate(columns) if total > 0]
    if len(used) != 1:
        return None
    names = (model.metrics or {}).get("classes") or classes
    cls = names[used[0]] if used[0] < len(names) else f"class {used[0]}"
    split = (model.metrics or {}).get("split", "test")
    return ReportWarning("single_class", f"{model.label} predicts only '{cls}' for all {int(columns[used[0]])} "
                                         f"{split} images: it has collapsed to one class, so its sensitivity for "
                                         "every other class is 0 and its other numbers mean little", model.label)


def _beats_base(data: RunData, model: RunModel) -> ReportWarning | None:
    """A compressed model whose interval lies entirely above the base model's."""
    keys = [("balanced accuracy", "balanced_accuracy")]
    keys += [(f"'{c}' sensitivity", f"per_class.{c}.sensitivity") for c in data.classes]
    above = []
    for name, key in keys:
        base_ci, new_ci = interval(data.base, key), interval(model.metrics, key)
        if base_ci is not None and new_ci is not None and new_ci[0] > base_ci[1]:
            above.append(f"{name} [{new_ci[0]:.2f}, {new_ci[1]:.2f}] vs base [{base_ci[0]:.2f}, {base_ci[1]:.2f}]")
    if not above:
        return None
    return ReportWarning("compressed_beats_base",
                         f"{model.label} beats the base model outside the intervals ({'; '.join(above)}): compression "
                         "should not make a model better, so suspect the base model (under-trained or unstable "
                         "training); check its training curve", model.label)


def _unstable(model: RunModel) -> list[ReportWarning]:
    out = []
    for log in model.logs:
        for key, name in LOSS_KEYS:
            values = log.series(key)
            bad = loss_outliers(values)
            if not bad:
                continue
            finite = [v for v in values if v is not None and math.isfinite(v)]
            median = float(np.median(finite)) if finite else math.nan
            epochs = [log.epochs[i].get("epoch", i + 1) for i in bad]
            shown = ", ".join(f"{values[i]:.3g} at epoch {e}" for i, e in zip(bad, epochs))
            out.append(ReportWarning(
                "unstable_training",
                f"{log.label} ({log.path.name}): {name} {shown} — more than {OUTLIER_FACTOR:g}× its median "
                f"{median:.3g}, or not a number; the training was unstable, read its curve before trusting "
                f"{'the base model' if model.kind == 'base' else model.label}", model.label))
    return out


def _small(data: RunData) -> list[ReportWarning]:
    """Small classes / split of the base model's test split, and of any model evaluated on another split."""
    out: list[ReportWarning] = []
    seen: set[str] = set()
    for model in data.models:
        if model.metrics is None:
            continue
        flags = small_sample(model.metrics, data.classes, model.predictions)
        for note in flags.notes:
            if note not in seen:
                seen.add(note)
                out.append(ReportWarning("small_sample", note, None))
    return out


def collect_warnings(data: RunData) -> list[ReportWarning]:
    """Every warning of the run, ordered by :data:`WARNING_KINDS` then by model in pipeline order."""
    found: list[ReportWarning] = []
    for model in data.models:
        found += _gate_warnings(model)
        if (single := _single_class(model, data.classes)) is not None:
            found.append(single)
        if model.kind != "base" and (beats := _beats_base(data, model)) is not None:
            found.append(beats)
        found += _unstable(model)
    found += _small(data)
    order = {kind: i for i, kind in enumerate(WARNING_KINDS)}
    return sorted(found, key=lambda w: order[w.kind])  # stable: model order kept within a kind


def run_warnings(run_dir: str | os.PathLike[str]) -> list[ReportWarning]:
    """The warnings of a run directory, as :func:`~medprune.report.write_report` shows them.

    Example: ``[w.kind for w in run_warnings("runs/thermography_demo")]`` →
    ``["single_class", "unstable_training"]``.

    Raises:
        DataError: if the base model's ``metrics.json`` is missing or unreadable.
    """
    return collect_warnings(load_run_dir(run_dir))
