"""Domain pipelines, found through package metadata — the library never imports ``pipelines/``.

A pipeline (``pipelines/thermography``, ``pipelines/ivoct``, ...) owns a domain's data-set
adapters and presets. It declares itself as an entry point of the ``medprune.pipelines`` group
(``pyproject.toml``)::

    [project.entry-points."medprune.pipelines"]
    thermography = "pipelines.thermography:PIPELINE"

and :func:`load_pipelines` registers every declared :class:`Pipeline` in :data:`PIPELINES` (the
one registry mechanism, as for models and criteria). ``medprune data index <name>`` is built from
the pipelines' ``indexers``: typed functions the command line turns into sub-commands.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from medprune.registry import Registry

__all__ = ["Pipeline", "PIPELINES", "ENTRY_POINT_GROUP", "load_pipelines"]

log = logging.getLogger(__name__)

#: The entry-point group pipelines declare themselves in.
ENTRY_POINT_GROUP = "medprune.pipelines"

PIPELINES = Registry("pipeline")
"""Name → :class:`Pipeline` (filled by :func:`load_pipelines`)."""


@dataclass(frozen=True)
class Pipeline:
    """One domain pipeline: its name, what it is for, and its data-set indexers.

    ``indexers`` maps a sub-command name (``dmr``, ``cccv``) to a function whose typed, typer-
    annotated parameters are that command's arguments and options; it writes a manifest and
    returns its path.
    """

    name: str
    description: str
    indexers: dict[str, Callable[..., Any]] = field(default_factory=dict)


def load_pipelines() -> Registry:
    """Register every pipeline declared under :data:`ENTRY_POINT_GROUP` (once); returns :data:`PIPELINES`.

    A declared pipeline that fails to load is logged and left out, so one broken plugin does not
    take the command line down with it.
    """
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in PIPELINES:
            continue
        try:
            pipeline = ep.load()
        except Exception as exc:  # a plugin's own import error: report it, keep the rest usable
            log.warning("pipeline %s (%s) could not be loaded: %s: %s", ep.name, ep.value, type(exc).__name__, exc)
            continue
        if not isinstance(pipeline, Pipeline):
            log.warning("pipeline %s (%s) is a %s, not a medprune Pipeline; left out", ep.name, ep.value,
                        type(pipeline).__name__)
            continue
        PIPELINES.add(ep.name, pipeline)
    return PIPELINES
