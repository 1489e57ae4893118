"""The small pieces report.html is built from: escaping, number formats, embedded figures, notes.

Shared by :mod:`medprune.report.html` (the report's frame and task-independent sections) and
:mod:`medprune.report._task_sections` (each task's own sections), so both write the same markup.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from medprune.errors import DataError
from medprune.report._run_dir import RunData, number
from medprune.report.run_plots import model_colour

logger = logging.getLogger(__name__)


def esc(value: Any) -> str:
    """``value`` as HTML text (quotes escaped too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


def fmt(value: float | None, digits: int = 2) -> str:
    """``0.87`` or ``n/a``."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def fmt_ci(ci: tuple[float, float] | None, digits: int = 2) -> str:
    """``[0.81, 0.92]`` or ``""``."""
    return "" if ci is None else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def with_ci(value: float | None, ci: tuple[float, float] | None, digits: int = 2) -> str:
    """``0.87 [0.81, 0.92]``; the interval left out when there is none."""
    return fmt(value, digits) + (f" {fmt_ci(ci, digits)}" if ci else "")


def level(metrics: Mapping[str, Any]) -> str:
    """The interval level of a ``metrics.json`` as ``95 %``."""
    value = number(metrics.get("ci_level")) or 0.95
    return f"{100 * value:g} %"


def image(path: Path, alt: str, caption: str | None = None) -> str:
    """A ``<figure>`` with ``path`` embedded as a base64 PNG data URI."""
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{encoded}">{cap}</figure>'


def note(text: str) -> str:
    """A grey italic remark (a section not drawn, a file not found)."""
    return f'<p class="note">{esc(text)}</p>'


def missing(data: RunData, relative: str, what: str) -> str:
    """"not run" — or why an existing file could not be used."""
    problem = data.problem(relative)
    if problem:
        return f'<p class="problem">{esc(relative)} {esc(problem)}</p>'
    return note(f"{what}: not run ({relative} not found).")


def plot(draw: Callable[[], Any], alt: str, caption: str) -> str:
    """Draw a figure (a path or a :class:`~medprune.report.plots.Plotted`) and embed it; a figure the
    data cannot support says why instead."""
    try:
        return image(Path(draw()), alt, caption)
    except DataError as err:
        logger.warning("report: %s not drawn: %s", alt, err)
        return f'<p class="problem">{esc(alt)} could not be drawn: {esc(err)}</p>'


def colours(data: RunData) -> dict[str, str]:
    """One colour per model label, shared by every figure."""
    return {m.label: model_colour(i) for i, m in enumerate(data.models)}


def gallery(data: RunData, filename: str, what: str) -> str:
    """Every model's ``filename`` (written beside its ``metrics.json``) side by side; a model that
    should have one and has not says so (the INT8 export draws none)."""
    figures = []
    for model in data.models:
        if (model.path / filename).is_file():
            figures.append(image(model.path / filename, f"{what} ({model.label})", f"{what} — {model.label}"))
        elif model.kind != "int8":
            figures.append(note(f"{what} — {model.label}: not found."))
    return '<div class="gallery">' + "".join(figures) + "</div>"
