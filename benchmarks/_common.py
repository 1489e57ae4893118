"""Helpers shared by the benchmark scripts: machine record, result file, text tables.

The scripts run as ``python benchmarks/NAME.py``, so this folder is on ``sys.path`` and they
import this module as ``_common``.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from medprune._io import atomic_write_json
from medprune.compress import latency

RESULTS = Path(__file__).parent / "results"


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """The fields :func:`medprune.compress.latency.bench_model` records, plus Python and thread count.

    A latency from another machine or another run is not comparable; this record lets a reader tell.
    """
    return {"machine": latency.machine_info(), "versions": latency.library_versions(),
            "python": platform.python_version(), "threads": threads or torch.get_num_threads(),
            "argv": sys.argv[1:], "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def write_result(name: str, payload: dict[str, Any], out: str | Path | None = None) -> Path:
    """Write ``payload`` atomically to ``out`` or ``benchmarks/results/<name>.json``; return the path."""
    return atomic_write_json(Path(out) if out else RESULTS / f"{name}.json", payload)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A fixed-width text table; ``align`` has one ``<``/``>`` per column (default: first left, rest right)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "<" + ">" * (len(headers) - 1)
    lines = []
    for k, row in enumerate(cells):
        lines.append("  ".join(f"{c:{a}{w}}" for c, a, w in zip(row, align, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    vals = [float(v) for v in values]
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def parse_floats(text: str) -> list[float]:
    """``"0.3,0.5"`` → ``[0.3, 0.5]``."""
    return [float(t) for t in text.split(",") if t.strip()]


def parse_names(text: str) -> list[str]:
    """``"a, b"`` → ``["a", "b"]``."""
    return [t.strip() for t in text.split(",") if t.strip()]
