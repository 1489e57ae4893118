"""How classification holds up as images degrade: the level-grid record of a degradation study.

A degradation run (``data.degradation``; :mod:`medprune.workflows.degradation`) evaluates every
model it compares — the degradation-aware model with the true parameter (oracle) and with the
estimated one (blind), its compressed twin, the model trained on clean images and the one trained
on degraded images without the parameter — on the test split at a fixed grid of levels per
degradation kind, plus the clean images. :class:`DegradationGrid` is what the workflow writes
(``degradation/grid.json``) and the report reads: one :class:`GridPoint` per model × level, with
accuracy, balanced accuracy, worst-class and per-class sensitivity and their patient-level
intervals, and the estimator's mean absolute error on q where the model estimated it.

Example::

    grid = DegradationGrid.from_dict(read_json(path, "degradation grid"))
    grid.series("aware (oracle)", "jpeg", "balanced_accuracy")   # [(q, value, (low, high)), ...]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["GridModel", "GridPoint", "DegradationGrid", "grid_point_metrics", "GRID_METRICS"]

#: The summary metrics a grid point keeps (with their intervals), besides per-class sensitivity.
GRID_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "worst_class_sensitivity")


@dataclass(frozen=True)
class GridModel:
    """One model of the comparison: its label, file, q mode and whether it is compressed."""

    name: str
    file: str
    mode: str
    compressed: bool = False
    macs: int | None = None


@dataclass
class GridPoint:
    """One model evaluated at one level: ``kind`` ``None`` is the clean test images (``q`` 0)."""

    model: str
    kind: str | None
    value: float | None
    q: float
    metrics: dict[str, float | None]
    ci: dict[str, list[float]] = field(default_factory=dict)
    estimator_mae: float | None = None

    @property
    def level(self) -> str:
        """``clean`` or ``<kind>=<value>``."""
        return "clean" if self.kind is None else f"{self.kind}={self.value:g}"


def grid_point_metrics(metrics: dict[str, Any], classes: list[str]) -> tuple[dict[str, float | None],
                                                                              dict[str, list[float]]]:
    """The values and intervals a grid point keeps from a ``metrics.json``-style dict."""
    values: dict[str, float | None] = {k: metrics.get(k) for k in GRID_METRICS}
    for c in classes:
        values[f"sensitivity.{c}"] = (metrics["per_class"].get(c) or {}).get("sensitivity")
    ci_all = metrics.get("ci") or {}
    ci = {k: list(ci_all[k]) for k in GRID_METRICS if k in ci_all}
    for c in classes:
        key = f"per_class.{c}.sensitivity"
        if key in ci_all:
            ci[f"sensitivity.{c}"] = list(ci_all[key])
    return values, ci


@dataclass
class DegradationGrid:
    """Every model at every level of the grid (see the module docstring); JSON via ``to_dict``/``from_dict``."""

    classes: list[str]
    kinds: list[str]
    units: dict[str, str]
    split: str
    items: int
    models: list[GridModel]
    points: list[GridPoint]
    synthetic_data: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "kinds": list(self.kinds), "units": dict(self.units),
                "split": self.split, "items": self.items, "synthetic_data": self.synthetic_data,
                "models": [asdict(m) for m in self.models], "points": [asdict(p) for p in self.points]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DegradationGrid:
        return cls(classes=list(data["classes"]), kinds=list(data["kinds"]), units=dict(data.get("units") or {}),
                   split=str(data["split"]), items=int(data["items"]), synthetic_data=bool(data.get("synthetic_data")),
                   models=[GridModel(**m) for m in data["models"]], points=[GridPoint(**p) for p in data["points"]])

    def point(self, model: str, kind: str | None, value: float | None) -> GridPoint | None:
        """The point of ``model`` at that level (``kind`` ``None``: clean)."""
        for p in self.points:
            if p.model == model and p.kind == kind and (kind is None or p.value == value):
                return p
        return None

    def levels(self, kind: str) -> list[float]:
        """The grid values of ``kind``, in evaluation order."""
        out: list[float] = []
        for p in self.points:
            if p.kind == kind and p.value is not None and p.value not in out:
                out.append(p.value)
        return out

    def series(self, model: str, kind: str, metric: str) -> list[tuple[float, float | None, tuple[float, float] | None]]:
        """``(q, value, interval)`` of ``metric`` for ``model`` from clean (q 0) along ``kind``'s levels."""
        points = [self.point(model, None, None)] + [self.point(model, kind, v) for v in self.levels(kind)]
        out = []
        for p in points:
            if p is None:
                continue
            ci = p.ci.get(metric)
            out.append((p.q, p.metrics.get(metric), (ci[0], ci[1]) if ci else None))
        return out

    def mean_over_levels(self, model: str, metric: str) -> float | None:
        """``metric`` of ``model`` averaged over every degraded level (clean excluded)."""
        values = [p.metrics.get(metric) for p in self.points if p.model == model and p.kind is not None]
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None
