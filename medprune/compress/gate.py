"""The imbalance-aware safety gate: did compression cost the worst class more than allowed?

Every compressing step — pruning (any schedule), pooling swaps, Direct Quantization, ONNX Runtime
INT8 — ends with one verdict: the compressed model's validation worst-class sensitivity against
the model it came from, with ``compress.safety.max_worst_class_drop`` (absolute, e.g. 0.05) as the
limit. A failed gate does not lose the work: the model is kept under a name that says so
(``model.gate_failed.pt``, ``model.int8.gate_failed.onnx``), its metrics and the report are
written, and ``medprune`` exits with code 3. ``--accept-unsafe`` keeps it as the deliverable and
records ``accepted_unsafe``.

A gate is only as good as the validation split it reads: with 3 minority images one error moves
that class's sensitivity by 0.33, far more than a 0.05 limit, so the verdict says so in
``warnings`` instead of pretending to a resolution it does not have.

Example::

    gate = judge_gate(base_val_metrics, pruned_val_metrics, limit=0.05)
    gate.status, gate.drop, gate.warnings     # 'failed', 0.125, []
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

__all__ = ["GateResult", "GATE_STATUSES", "judge_gate", "task_gate", "gate_file", "FAILED_SUFFIX"]

GateStatus = Literal["passed", "failed", "accepted_unsafe", "off"]
GATE_STATUSES: tuple[str, ...] = ("passed", "failed", "accepted_unsafe", "off")

#: Inserted before a file's suffix when its model failed the gate: ``model.pt`` → ``model.gate_failed.pt``.
FAILED_SUFFIX = ".gate_failed"


@dataclass
class GateResult:
    """One safety-gate verdict; ``to_dict`` is what run.json, summaries and the report hold."""

    status: GateStatus
    metric: str = "worst_class_sensitivity"
    baseline: float | None = None
    value: float | None = None
    drop: float | None = None
    limit: float | None = None
    message: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """True when the model failed and was not accepted anyway."""
        return self.status == "failed"

    def accepted(self) -> GateResult:
        """This verdict after ``--accept-unsafe``: a failed gate becomes ``accepted_unsafe``."""
        if self.status != "failed":
            return self
        return replace(self, status="accepted_unsafe",
                       message=f"accepted despite failing its safety gate (--accept-unsafe): {self.message}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> GateResult | None:
        if not isinstance(data, Mapping) or data.get("status") not in GATE_STATUSES:
            return None
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["warnings"] = list(known.get("warnings") or [])
        return cls(**known)


def judge_gate(baseline: Mapping[str, Any], metrics: Mapping[str, Any], limit: float | None, *,
               what: str = "the compressed model", metric: str = "worst_class_sensitivity",
               warnings: Sequence[str] = ()) -> GateResult:
    """The gate's verdict on ``metrics`` (validation, compressed) against ``baseline`` (validation, source).

    ``metric`` is the task's gate metric (:attr:`medprune.tasks.Task.gate_metric`: worst-class
    sensitivity for classification, worst-class Dice for segmentation) and ``warnings`` what the
    task says about the validation split's resolution (:meth:`~medprune.tasks.Task.resolution_warnings`);
    :func:`task_gate` fills both from a task. ``limit`` ``None`` turns the gate off. A metric
    that is undefined on either side cannot be compared: the gate fails rather than pass blind.
    """
    if limit is None:
        return GateResult(status="off", metric=metric, message="off (compress.safety.max_worst_class_drop: null)")
    warnings = list(warnings)
    base, now = baseline.get(metric), metrics.get(metric)
    if base is None or now is None or (isinstance(now, float) and math.isnan(now)):
        return GateResult(status="failed", metric=metric, baseline=base, value=now, limit=limit, warnings=warnings,
                          message=f"validation {metric.replace('_', ' ')} of {what} is undefined; cannot judge it")
    drop = float(base) - float(now)
    passed = drop <= limit + 1e-12
    label = metric.replace("_", " ")
    if passed:
        message = f"passed: validation {label} {float(base):.3f} -> {float(now):.3f} (drop {drop:.3f} <= {limit:g})"
    else:
        message = (f"validation {label} of {what} fell from {float(base):.3f} to {float(now):.3f} (drop {drop:.3f}, "
                   f"limit {limit:g})")
    return GateResult(status="passed" if passed else "failed", metric=metric, baseline=float(base), value=float(now),
                      drop=drop, limit=limit, message=message, warnings=warnings)


def task_gate(baseline: Mapping[str, Any], metrics: Mapping[str, Any], limit: float | None, task: Any, *,
              what: str = "the compressed model") -> GateResult:
    """:func:`judge_gate` with the ``task``'s gate metric and resolution warnings."""
    warnings = task.resolution_warnings(dict(baseline), limit) if limit is not None else []
    return judge_gate(baseline, metrics, limit, what=what, metric=task.gate_metric, warnings=warnings)


def gate_file(path: Path, gate: GateResult | None) -> Path:
    """Where a model file goes: ``path`` itself, or ``<stem>.gate_failed<suffix>`` when it failed its gate.

    ``model.int8.onnx`` → ``model.int8.gate_failed.onnx``.
    """
    if gate is None or not gate.failed:
        return path
    return path.with_name(path.name[: -len(path.suffix)] + FAILED_SUFFIX + path.suffix)
