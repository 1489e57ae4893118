"""Evaluation metrics: per-class classification metrics with patient-level bootstrap intervals.

See :func:`classification_metrics` for the metrics.json schema (DESIGN.md §2).
"""

from __future__ import annotations

from medprune.metrics.classification import (
    CI_METHODS,
    PER_CLASS_METRICS,
    SUMMARY_METRICS,
    ClassificationMetrics,
    classification_metrics,
    small_sample_notes,
)
from medprune.metrics.predictions import Predictions, read_predictions_csv, write_predictions_csv
from medprune.metrics.segmentation import (
    SEGMENTATION_PER_CLASS_METRICS,
    SEGMENTATION_SUMMARY_METRICS,
    SegmentationMetrics,
    SegmentationScores,
    per_image_scores,
    read_segmentation_predictions_csv,
    segmentation_metrics,
    segmentation_metrics_from_scores,
    write_segmentation_predictions_csv,
)

from medprune.metrics.summary import worst_class

__all__ = [
    "worst_class",
    "classification_metrics",
    "ClassificationMetrics",
    "small_sample_notes",
    "PER_CLASS_METRICS",
    "CI_METHODS",
    "SUMMARY_METRICS",
    "Predictions",
    "write_predictions_csv",
    "read_predictions_csv",
    "segmentation_metrics",
    "segmentation_metrics_from_scores",
    "per_image_scores",
    "SegmentationMetrics",
    "SegmentationScores",
    "write_segmentation_predictions_csv",
    "read_segmentation_predictions_csv",
    "SEGMENTATION_PER_CLASS_METRICS",
    "SEGMENTATION_SUMMARY_METRICS",
]
