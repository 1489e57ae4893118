"""Breast thermography: the DMR-IR adapter (manifest indexing) and thermography presets.

Declared to medprune as the ``thermography`` pipeline (``pyproject.toml`` entry point):
``medprune data index dmr ROOT --out manifest.csv`` runs :func:`index_dmr`.
"""

from pipelines.thermography.dmr import index_dmr, read_exclusions
from pipelines.thermography.commands import PIPELINE

__all__ = ["index_dmr", "read_exclusions", "PIPELINE"]
