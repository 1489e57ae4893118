"""Reports: evaluation and compression plots, and the self-contained HTML report of ``medprune run``."""

from __future__ import annotations

from medprune.report.compress_plots import plot_kept_channels, plot_sensitivity_comparison
from medprune.report.html import write_report
from medprune.report.plots import plot_confusion_matrix, plot_roc
from medprune.report.run_plots import TradeoffPoint, plot_latency_and_size, plot_per_class_metrics, plot_tradeoff

__all__ = ["plot_confusion_matrix", "plot_roc", "plot_kept_channels", "plot_sensitivity_comparison",
           "plot_per_class_metrics", "plot_tradeoff", "plot_latency_and_size", "TradeoffPoint", "write_report"]
