"""Breast thermography: the DMR-IR adapter (manifest indexing) and thermography presets."""

from pipelines.thermography.dmr import index_dmr, read_exclusions

__all__ = ["index_dmr", "read_exclusions"]
