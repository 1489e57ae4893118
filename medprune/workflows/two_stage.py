"""Stage 1 feeds stage 2: the IVOCT two-stage detector's data and its one-model form.

A config with ``data.stage1: <segmentation config>`` trains on what stage 1 makes of the frames
(Li et al.: U-Net segmentation and a threshold remove noise and background, then Faster R-CNN
detects plaques on the cleaned frames). :func:`stage1_frames`:

1. runs (or reuses — the runner keeps every finished stage) the stage-1 experiment: ``medprune run``
   on its config, so it is trained, compressed, calibrated (its background threshold) and reported
   in its own run directory;
2. takes the stage-1 data's frames and patient split — the split is written into the derived
   manifest's ``split`` column, so a pullback stage 1 tested on is a test pullback of stage 2 too
   and neither stage ever trains on it;
3. writes every frame with its background removed by stage 1's final model at the calibrated
   threshold (8-bit PNG, at stage 1's ``image_size``), ``manifest.csv`` and ``boxes.json`` (the
   frames' boxes scaled to that size) under ``<run dir>/stage1/``; ``stage1.json`` records which
   stage-1 settings, model file and threshold made them. While they match, stage 1 is not visited
   again; when the stage-1 config changes, its run is continued (or refused, as ``medprune run``
   refuses changed training settings) and the frames are remade.

:func:`two_stage_model` joins the stage-1 final model and a detector into one
:class:`~medprune.models.two_stage.TwoStageDetector` for ``medprune predict``;
:func:`export_two_stage` writes it as one ONNX graph (``export/two_stage.onnx``), parity-checked.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medprune._io import atomic_write, atomic_write_json
from medprune.config import ExperimentConfig, load_config
from medprune.errors import ConfigError, DataError

__all__ = ["stage1_config", "stage1_frames", "stage1_threshold", "two_stage_model", "export_two_stage", "STAGE1_DIR"]

log = logging.getLogger(__name__)

#: The folder of a run directory holding the frames stage 1 cleaned.
STAGE1_DIR = "stage1"


def stage1_config(config: ExperimentConfig) -> ExperimentConfig:
    """The stage-1 experiment named by ``data.stage1`` (a segmentation config)."""
    if config.data.stage1 is None:
        raise ConfigError(f"{config.source}: data.stage1 is not set")
    first = load_config(config.data.stage1)
    if first.task != "segmentation":
        raise ConfigError(f"{config.source}: data.stage1: {config.data.stage1} is a {first.task} experiment; "
                          "stage 1 must be a segmentation one (its background threshold cleans the frames)")
    if first.data.channels != config.data.channels:
        raise ConfigError(f"{config.source}: data.channels: {config.data.channels} differs from stage 1's "
                          f"{first.data.channels}; both stages see the same frames")
    return first


def stage1_threshold(first: ExperimentConfig) -> tuple[str, Path, float]:
    """``(model name, model file, background threshold)`` of the finished stage-1 run."""
    from medprune.workflows.run import CALIBRATION, final_model_file

    name, model = final_model_file(first)
    calibration = first.run_dir / CALIBRATION
    if not model.is_file() or not calibration.is_file():
        raise DataError(f"{first.run_dir}: stage 1 has no final model and calibration.json; run "
                        f"`medprune run {first.source}` (a two-stage run does it first)")
    record = json.loads(calibration.read_text(encoding="utf-8"))
    if record.get("kind") != "background_threshold":
        raise DataError(f"{calibration}: holds no background threshold (kind {record.get('kind')!r})")
    return name, model, float(record["threshold"])


def _fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"file": str(path), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def stage1_frames(config: ExperimentConfig, run_dir: Path, *, run_first: bool = True) -> Path:
    """The derived manifest of stage-1-cleaned frames (made, or reused when current); see the module docstring."""
    from medprune.data.detection import frame_key, load_box_records
    from medprune.data.polar import write_boxes
    from medprune.data.manifest import write_manifest
    from medprune.tasks.segmentation import write_png
    from medprune.workflows.data import prepare_data
    from medprune.workflows.helpers import load_model_file

    from medprune.workflows.stages import digest

    first = stage1_config(config)
    out = Path(run_dir) / STAGE1_DIR
    manifest = out / "manifest.csv"
    stamp_file = out / "stage1.json"
    settings = digest(first.to_dict())

    def stamp() -> dict[str, Any]:
        name, model_file, threshold = stage1_threshold(first)
        return {"stage1_config": str(first.source), "stage1_settings": settings, "model": name,
                **_fingerprint(model_file), "threshold": threshold, "image_size": list(first.data.image_size)}

    if manifest.is_file() and stamp_file.is_file():
        old = json.loads(stamp_file.read_text())
        try:
            if old.get("stage1_settings") == settings and old == stamp():
                return manifest  # frames made by the current stage-1 model: stage 1 need not be visited
        except DataError:
            pass
    if run_first:
        from medprune.workflows.run import run_job

        log.info("stage 1: %s (reused where it is already done)", first.source)
        outcome = run_job(first)
        if outcome.gate_failures:
            log.warning("stage 1's compressed model failed its gate; its final model is the one that passed")
    current = stamp()
    name, model_file, threshold = current["model"], Path(current["file"]), current["threshold"]
    log.info("stage 1: removing the background of every frame (%s model, threshold %.2f) -> %s", name, threshold, out)
    data = prepare_data(first, first.run_dir)
    source_manifest = data.manifest
    boxes_file = Path(first.data.boxes) if first.data.boxes else source_manifest.parent / "boxes.json"
    if not boxes_file.is_file():
        raise DataError(f"{boxes_file}: stage 1's data has no boxes file for the detector (data.boxes)")
    records = load_box_records(boxes_file)
    model = load_model_file(model_file, first, torch.device("cpu"))
    from medprune.models.two_stage import TwoStageDetector

    d = first.data
    channels = 1 if d.channels == "gray" else 3
    cleaner = TwoStageDetector(model, torch.nn.Identity(), threshold, channels=channels, mean1=d.mean, std1=d.std,
                               mean2=0.0, std2=1.0).eval()
    h, w = d.image_size
    rows, frames = [], []
    with torch.no_grad():
        for split, dataset in data.datasets.items():
            for i, sample in enumerate(dataset.samples):
                img, _ = dataset.load(i)  # not augmented, whatever the split
                grey = cleaner.clean(dataset._to_tensor(img)[None])[0].mean(dim=0).numpy()
                rel = Path(split) / sample.patient_id / f"{len(rows):06d}_{sample.path.stem}.png"
                write_png(out / rel, (grey * 255).round().astype(np.uint8), atomic_write)
                record = records.get(frame_key(sample))
                if record is None:
                    raise DataError(f"{sample.path} (row {sample.row}): no record in {boxes_file}")
                sx, sy = w / record.width, h / record.height
                boxes = [(b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy) for b in record.boxes]
                frames.append(replace(record, path=rel.as_posix(), height=h, width=w, boxes=boxes, mask=""))
                rows.append({"path": rel.as_posix(), "label": sample.label, "patient_id": sample.patient_id,
                             "split": split, "source": os.path.relpath(sample.path, out)})
    write_boxes(out / "boxes.json", frames)
    write_manifest(manifest, rows)
    atomic_write_json(stamp_file, current)
    return manifest


def export_two_stage(config: ExperimentConfig, detector_file: Path, path: Path, *, frames: int = 16) -> Any:
    """Export stage 1 + threshold + the detector in ``detector_file`` as one ONNX graph at ``path``.

    The parity check runs ONNX Runtime against PyTorch on ``frames`` raw validation frames of stage 1's
    data (one per run: the graph takes one frame, :attr:`TwoStageDetector.export_batch`), comparing
    every box coordinate, score and label. Returns the :class:`~medprune.compress.export.ExportResult`.
    """
    from medprune.compress.export import export_onnx
    from medprune.workflows.data import prepare_data
    from medprune.workflows.helpers import load_model_file

    first = stage1_config(config)
    data = prepare_data(first, first.run_dir)
    split = "val" if "val" in data.datasets else "train"
    dataset = data.datasets[split]
    checks = [dataset._to_tensor(dataset.load(i)[0])[None] for i in range(min(frames, len(dataset)))]
    model = two_stage_model(config, load_model_file(detector_file, config, torch.device("cpu")))
    ec = config.export
    return export_onnx(model, checks[0], path, opset=ec.opset, rtol=ec.rtol, atol=ec.atol, check_inputs=checks[1:])


def two_stage_model(config: ExperimentConfig, detector: torch.nn.Module) -> torch.nn.Module:
    """The stage-1 final model + its threshold + ``detector`` as one :class:`TwoStageDetector` (eval mode)."""
    from medprune.models.two_stage import TwoStageDetector
    from medprune.workflows.helpers import load_model_file

    first = stage1_config(config)
    _, model_file, threshold = stage1_threshold(first)
    segmenter = load_model_file(model_file, first, torch.device("cpu"))
    d1, d2 = first.data, config.data
    return TwoStageDetector(segmenter, detector, threshold, channels=1 if d2.channels == "gray" else 3,
                            mean1=d1.mean, std1=d1.std, mean2=d2.mean, std2=d2.std).eval()
