"""Reports: evaluation plots (and, later, the HTML report)."""

from __future__ import annotations

from medprune.report.plots import plot_confusion_matrix, plot_roc

__all__ = ["plot_confusion_matrix", "plot_roc"]
