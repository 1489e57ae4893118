"""The thermography pipeline as medprune's command line sees it: ``medprune data index dmr``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medprune.workflows.pipelines import Pipeline

__all__ = ["PIPELINE", "index_dmr_command"]


def index_dmr_command(
    root: Path = typer.Argument(..., help="Root folder of a DMR-IR copy (layout: see data_manifests/README.md)."),
    out: Path = typer.Option(..., "--out", help="Manifest CSV to write."),
    exclusions: Optional[Path] = typer.Option(None, "--exclusions", help="File of patient ids / paths to exclude."),
    prefer: str = typer.Option("txt", "--prefer", help="txt (temperature matrices) or image, when both exist."),
) -> None:
    """Index a DMR-IR folder into a manifest, honouring an exclusions list."""
    from pipelines.thermography.dmr import index_dmr

    if prefer not in ("txt", "image"):
        raise typer.BadParameter(f"must be 'txt' or 'image', got {prefer!r}", param_hint="--prefer")
    manifest = index_dmr(root, out, exclusions=exclusions, prefer=prefer)  # type: ignore[arg-type]
    typer.echo(f"manifest: {manifest}")


PIPELINE = Pipeline("thermography", "Breast thermography (DMR-IR): Inception V3/V4/MV4 classification",
                    indexers={"dmr": index_dmr_command})
