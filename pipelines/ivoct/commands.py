"""The IVOCT pipeline as medprune's command line sees it: ``medprune data index cccv``."""

from __future__ import annotations

from pathlib import Path

import typer

from medprune.workflows.pipelines import Pipeline

__all__ = ["PIPELINE", "index_cccv_command"]


def index_cccv_command(
    root: Path = typer.Argument(..., help="Root folder of a CCCV2017-style IVOCT copy (our assumed layout: "
                                "pipelines/ivoct/README.md)."),
    out: Path = typer.Option(..., "--out", help="Folder to write manifest.csv, masks/ and boxes.json into."),
    annotations: str = typer.Option("annotations.csv", "--annotations", help="Annotation CSV (relative to ROOT)."),
    frames_dir: str = typer.Option("frames", "--frames-dir", help="Frames folder (relative to ROOT)."),
    tissue_threshold: int = typer.Option(60, "--tissue-threshold", min=0, max=255,
                                         help="8-bit level from which a pixel is tissue."),
    plaque_threshold: int = typer.Option(90, "--plaque-threshold", min=0, max=255,
                                         help="8-bit level from which a pixel inside a plaque arc is plaque."),
    catheter_depth: int = typer.Option(0, "--catheter-depth", min=0,
                                       help="Rows at the catheter that are always background."),
) -> None:
    """Index IVOCT frames and per-frame plaque arcs into a manifest, label maps (60/90 rule) and boxes."""
    from pipelines.ivoct.cccv import index_cccv

    manifest = index_cccv(root, out, annotations=annotations, frames_dir=frames_dir,
                          tissue_threshold=tissue_threshold, plaque_threshold=plaque_threshold,
                          catheter_depth=catheter_depth)
    typer.echo(f"manifest: {manifest}")


PIPELINE = Pipeline("ivoct", "IVOCT vulnerable-plaque detection: U-Net segmentation, then Faster R-CNN",
                    indexers={"cccv": index_cccv_command})
