"""Settings of evaluation: bootstrap intervals by patient, exact intervals for small counts.

``eval:`` in an experiment config (:mod:`medprune.config` assembles the sections).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from medprune.schema import check

__all__ = ["EvalConfig"]


@dataclass
class EvalConfig:
    """Evaluation: bootstrap confidence intervals by patient, patient-level aggregation.

    Proportions counted on fewer than ``exact_below`` patients (or whose bootstrap interval
    degenerates, e.g. 5 of 5 right) get a ``small_sample_method`` interval instead of the
    bootstrap; classes with fewer than ``min_class_support`` patients and splits with fewer than
    ``min_patients`` are flagged as too small to judge (metrics.json ``small_sample``).
    """

    n_bootstrap: int = 1000
    ci: float = 0.95
    seed: int = 0
    patient_aggregation: Literal["mean", "max"] = "mean"
    batch_size: int | None = None
    exact_below: int = 30
    small_sample_method: Literal["clopper_pearson", "wilson"] = "clopper_pearson"
    min_class_support: int = 10
    min_patients: int = 20

    def __post_init__(self) -> None:
        check(self.n_bootstrap >= 0, "n_bootstrap", f"must be >= 0, got {self.n_bootstrap}")
        check(0 < self.ci < 1, "ci", f"must be in (0, 1), got {self.ci}")
        if self.batch_size is not None:
            check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        for key in ("exact_below", "min_class_support", "min_patients"):
            check(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")

    def metric_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`medprune.metrics.classification_metrics` from this section."""
        return {"n_bootstrap": self.n_bootstrap, "ci": self.ci, "seed": self.seed,
                "patient_aggregation": self.patient_aggregation, "exact_below": self.exact_below,
                "small_sample_method": self.small_sample_method, "min_class_support": self.min_class_support,
                "min_patients": self.min_patients}
