"""Reports: evaluation and compression plots (and, later, the HTML report)."""

from __future__ import annotations

from medprune.report.compress_plots import plot_kept_channels, plot_sensitivity_comparison
from medprune.report.plots import plot_confusion_matrix, plot_roc

__all__ = ["plot_confusion_matrix", "plot_roc", "plot_kept_channels", "plot_sensitivity_comparison"]
