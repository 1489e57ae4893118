"""Reports: evaluation and compression plots, training curves, the HTML report of ``medprune run`` and its warnings."""

from __future__ import annotations

from medprune.report._task_metrics import HeadlineMetrics, sentence_label
from medprune.report._warnings import DEGENERATE_OUTPUT, WARNING_KINDS, ReportWarning, run_warnings
from medprune.report.compress_plots import plot_kept_channels, plot_sensitivity_comparison
from medprune.report.curves import TrainingLog, loss_outliers, plot_training_curves, read_training_log
from medprune.report.html import WARNINGS_FILE, write_report
from medprune.report.plots import (
    Panel,
    Plotted,
    plot_confusion_matrix,
    plot_reliability,
    plot_roc,
    plot_roc_comparison,
)
from medprune.report.run_plots import (
    TradeoffPoint,
    plot_latency_and_size,
    plot_metric_by_class,
    plot_per_class_metrics,
    plot_tradeoff,
)

__all__ = ["plot_confusion_matrix", "plot_roc", "plot_roc_comparison", "plot_reliability", "plot_kept_channels",
           "plot_sensitivity_comparison", "plot_per_class_metrics", "plot_metric_by_class", "plot_tradeoff",
           "plot_latency_and_size", "plot_training_curves", "read_training_log", "loss_outliers", "TrainingLog",
           "TradeoffPoint", "Panel", "Plotted", "WARNINGS_FILE", "write_report", "ReportWarning", "WARNING_KINDS",
           "DEGENERATE_OUTPUT", "run_warnings", "HeadlineMetrics", "sentence_label"]
