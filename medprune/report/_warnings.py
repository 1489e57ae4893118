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
    (classification) a model predicts one class only: every prediction of its confusion matrix
    is in one column.
``missed_class``
    (segmentation) a model predicts no pixel of a class where the test images hold it: Dice 0
    or pixel sensitivity 0 for a class with support.
``no_detections``
    (detection) a model keeps no box at its score threshold on any test frame while some hold plaque.
``compressed_beats_base``
    a compressed model's interval for the task's headline metric (balanced accuracy, mean Dice)
    or a class's headline per-class metric (sensitivity, Dice) lies entirely on the better side
    of the base model's: suspect the base model (under-trained or unstable training).
``unstable_training``
    a training or fine-tuning logged a NaN/inf loss, or a loss more than
    :data:`~medprune.report.curves.OUTLIER_FACTOR` × that training's median loss.
``small_sample``
    a class (or the whole split) is too small to judge: from the ``small_sample`` section of
    ``metrics.json``, else derived from the class supports and patient count.
``gate_warning``
    a warning the safety gate itself recorded (e.g. its validation split is too small).

The degenerate-output check differs by task: it is a small class registered in
:data:`DEGENERATE_OUTPUT` under the task's name (its warning ``kind``, the sentence the report
says when no model triggers it, and ``__call__(model, data)``); :func:`collect_warnings` looks it
up and never branches on the task.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from medprune.registry import Registry
from medprune.report._run_dir import RunData, RunModel, interval, load_run_dir, per_class_value, small_sample
from medprune.report.curves import LOSS_KEYS, OUTLIER_FACTOR, loss_outliers

__all__ = ["ReportWarning", "WARNING_KINDS", "DEGENERATE_OUTPUT", "DegenerateOutput", "collect_warnings",
           "run_warnings"]

#: Every kind :func:`collect_warnings` can report, in reporting order.
WARNING_KINDS = ("gate_failed", "gate_accepted_unsafe", "single_class", "missed_class", "no_detections", "compressed_beats_base",
                 "unstable_training", "small_sample", "gate_warning")

DEGENERATE_OUTPUT = Registry("degenerate-output check")
"""Task name → :class:`DegenerateOutput` subclass: how a model of that task has collapsed."""


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


class DegenerateOutput:
    """A task's check for a model whose output has collapsed (one class everywhere, a class never found).

    ``kind`` is the warning kind it reports; ``all_clear`` what the report says when no model
    triggers it ("no model predicts one class only").
    """

    kind: str = ""
    all_clear: str = ""

    def __call__(self, model: RunModel, data: RunData) -> list[ReportWarning]:
        raise NotImplementedError


@DEGENERATE_OUTPUT.register("classification")
class SingleClass(DegenerateOutput):
    """A model whose confusion matrix has every prediction in one column."""

    kind = "single_class"
    all_clear = "no model predicts one class only"

    def __call__(self, model: RunModel, data: RunData) -> list[ReportWarning]:
        cm = (model.metrics or {}).get("confusion_matrix")
        if not isinstance(cm, list) or not cm or not all(isinstance(row, list) for row in cm):
            return []
        try:
            columns = [sum(float(row[j]) for row in cm) for j in range(len(cm[0]))]
        except (TypeError, ValueError, IndexError):
            return []
        used = [j for j, total in enumerate(columns) if total > 0]
        if len(used) != 1:
            return []
        names = (model.metrics or {}).get("classes") or data.task.classes
        cls = names[used[0]] if used[0] < len(names) else f"class {used[0]}"
        split = (model.metrics or {}).get("split", "test")
        return [ReportWarning(self.kind, f"{model.label} predicts only '{cls}' for all {int(columns[used[0]])} "
                                         f"{split} images: it has collapsed to one class, so its sensitivity for "
                                         "every other class is 0 and its other numbers mean little", model.label)]


@DEGENERATE_OUTPUT.register("segmentation")
class MissedClass(DegenerateOutput):
    """A model that finds no pixel of a class its test images hold: Dice 0 or pixel sensitivity 0
    with support > 0. Its PPV tells whether it labels that class nowhere at all (undefined: no
    pixel predicted) or only in the wrong places."""

    kind = "missed_class"
    all_clear = "every model finds each class somewhere in the test images that hold it"

    def __call__(self, model: RunModel, data: RunData) -> list[ReportWarning]:
        metrics = model.metrics or {}
        split = metrics.get("split", "test")
        out = []
        for cls in data.classes:
            support = per_class_value(metrics, cls, "support") or 0
            if support <= 0 or not (per_class_value(metrics, cls, "dice") == 0
                                    or per_class_value(metrics, cls, "sensitivity") == 0):
                continue
            n = int(support)
            images = f"the {n} {split} image{'s' if n != 1 else ''} that hold it"
            if per_class_value(metrics, cls, "ppv") is None:  # no pixel predicted as the class: PPV is 0/0
                what = (f"predicts no '{cls}' anywhere: not one pixel of any {split} image is labelled '{cls}' "
                        f"(Dice 0 and sensitivity 0 over {images})")
            else:
                what = (f"finds no '{cls}' anywhere: Dice 0 and sensitivity 0 over {images}; the pixels it labels "
                        f"'{cls}' all lie outside it (PPV 0)")
            out.append(ReportWarning(self.kind, f"{model.label} {what}; it does not segment '{cls}', so its other "
                                                "numbers for that class mean little", model.label))
        return out


@DEGENERATE_OUTPUT.register("detection")
class NoDetections(DegenerateOutput):
    """A detector that keeps no box at its score threshold on any test frame while plaques are there:
    recall 0 and precision undefined — it does not detect, whatever its AP over all scores says."""

    kind = "no_detections"
    all_clear = "every model keeps detections on the test frames that hold plaque"

    def __call__(self, model: RunModel, data: RunData) -> list[ReportWarning]:
        metrics = model.metrics or {}
        counts = metrics.get("counts") or {}
        frames = int(counts.get("n_frames_with_plaque") or 0)
        if frames == 0 or int(counts.get("n_detections") or 0) > 0:
            return []
        split = metrics.get("split", "test")
        threshold = metrics.get("score_threshold")
        at = f" at score threshold {threshold:g}" if isinstance(threshold, (int, float)) else ""
        return [ReportWarning(self.kind, f"{model.label} keeps no detection{at} on any of the "
                                         f"{split} frames, {frames} of which hold plaque: recall 0, so its other "
                                         "numbers mean little", model.label)]


def _beats_base(data: RunData, model: RunModel) -> ReportWarning | None:
    """A compressed model whose interval lies entirely on the better side of the base model's, for
    the task's headline metric or a class's headline per-class metric."""
    lead = data.headline
    keys = [(data.words(lead.score), lead.score.key, lead.score.higher_is_better)]
    keys += [(f"'{c}' {data.words(lead.per_class)}", f"per_class.{c}.{lead.per_class.key}",
              lead.per_class.higher_is_better) for c in data.classes]
    better = []
    for name, key, higher in keys:
        base_ci, new_ci = interval(data.base, key), interval(model.metrics, key)
        if base_ci is None or new_ci is None:
            continue
        if (new_ci[0] > base_ci[1]) if higher else (new_ci[1] < base_ci[0]):
            better.append(f"{name} [{new_ci[0]:.2f}, {new_ci[1]:.2f}] vs base [{base_ci[0]:.2f}, {base_ci[1]:.2f}]")
    if not better:
        return None
    return ReportWarning("compressed_beats_base",
                         f"{model.label} beats the base model outside the intervals ({'; '.join(better)}): compression "
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
        flags = small_sample(model.metrics, data.classes, model.predictions,
                             metric=data.words(data.headline.per_class))
        for note in flags.notes:
            if note not in seen:
                seen.add(note)
                out.append(ReportWarning("small_sample", note, None))
    return out


def collect_warnings(data: RunData) -> list[ReportWarning]:
    """Every warning of the run, ordered by :data:`WARNING_KINDS` then by model in pipeline order."""
    degenerate = DEGENERATE_OUTPUT.get(data.task.name)()
    found: list[ReportWarning] = []
    for model in data.models:
        found += _gate_warnings(model)
        found += degenerate(model, data)
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
