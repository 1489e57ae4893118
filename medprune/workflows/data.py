"""An experiment's data, once: manifest (or phantom) → every sample checked → patient split → datasets.

Every workflow (train, evaluate, prune, export, predict, run, sweep) starts from
:func:`prepare_data`. The task decides what a bad sample is and builds each split's data set
(classification images, segmentation images with masks); this module only orchestrates.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medprune._io import atomic_write_json
from medprune.config import ExperimentConfig
from medprune.data import (ReaderOptions, Sample, format_bad_samples, make_phantom, read_manifest, split_by_patient,
                           write_bad_samples)
from medprune.engine.distributed import DistInfo, barrier
from medprune.errors import DataError

__all__ = ["DataBundle", "SPLITS", "prepare_data", "reader_options"]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class DataBundle:
    """The data of one experiment, split by patient and wrapped in the task's data sets."""

    manifest: Path
    samples: dict[str, list[Sample]]
    datasets: dict[str, Any]
    bad_samples: list[Any]
    synthetic: bool

    def eval_split(self) -> str:
        """The split final metrics are computed on: ``test``, else ``val``."""
        return "test" if "test" in self.datasets else "val"


def _manifest_path(config: ExperimentConfig, run_dir: Path, dist_info: DistInfo) -> tuple[Path, bool]:
    if config.data.stage1 is not None:  # the frames stage 1 cleaned (run, or reused, first)
        from medprune.workflows.two_stage import stage1_config, stage1_frames

        manifest = stage1_frames(config, run_dir) if dist_info.is_main else Path(run_dir) / "stage1" / "manifest.csv"
        barrier(dist_info)
        return manifest, stage1_config(config).data.manifest is None
    if config.data.manifest is not None:
        return Path(config.data.manifest), False
    ph = config.data.phantom
    assert ph is not None  # guaranteed by DataConfig validation
    out = Path(ph.out) if ph.out else run_dir / "phantom"
    manifest = out / "manifest.csv"
    stamp = out / "phantom_spec.json"
    spec = {"kind": ph.kind, **{k: list(v) if isinstance(v, tuple) else v for k, v in ph.generator_kwargs().items()}}
    if dist_info.is_main:
        current = json.loads(stamp.read_text()) if stamp.exists() else None
        if not manifest.exists() or current != spec:
            # A phantom made with other settings is regenerated, never silently reused.
            log.info("generating synthetic %s phantom data in %s", ph.kind, out)
            make_phantom(ph.kind, out, **ph.generator_kwargs())
            atomic_write_json(stamp, spec)
    barrier(dist_info)
    return manifest, True


def reader_options(config: ExperimentConfig) -> ReaderOptions:
    """Reader options from the config's data section."""
    d = config.data
    return ReaderOptions(temperature_window=tuple(d.temperature_window),
                         dicom_window=tuple(d.dicom_window) if d.dicom_window else None, dicom_frame=d.dicom_frame)


def prepare_data(config: ExperimentConfig, run_dir: str | Path, dist_info: DistInfo = DistInfo(),
                 task: Any = None) -> DataBundle:
    """Read the manifest (or make the phantom), check every sample, split by patient, build data sets.

    Bad samples stop the job here — before any training — with every bad row listed, unless
    ``data.on_bad_sample: skip``, which drops them and writes ``bad_samples.csv``.
    """
    run_dir = Path(run_dir)
    task = task or config.build_task()
    manifest, synthetic = _manifest_path(config, run_dir, dist_info)
    samples = read_manifest(manifest)
    options = reader_options(config)
    data = task.resolve_data(config.data, manifest)
    bad = task.check_samples(samples, data, options, config.runtime.progress)
    if bad:
        if config.data.on_bad_sample == "error":
            raise DataError(f"{manifest}: {len(bad)} bad sample(s); fix or exclude them, or set "
                            f"data.on_bad_sample: skip\n" + format_bad_samples(bad, manifest))
        if dist_info.is_main:
            write_bad_samples(bad, run_dir / "bad_samples.csv")
        log.warning("skipping %d bad sample(s), listed in %s", len(bad), run_dir / "bad_samples.csv")
        bad_rows = {(b.path, b.row) for b in bad}
        samples = [s for s in samples if (s.path, s.row) not in bad_rows]
    if not samples:
        raise DataError(f"{manifest}: no usable samples left")
    split = config.data.split
    parts = split_by_patient(samples, split.val_fraction, split.test_fraction, split.seed)
    if not parts["train"]:
        raise DataError(f"{manifest}: the training split is empty")
    datasets = {name: task.dataset(parts[name], data, options, train=name == "train", seed=config.runtime.seed)
                for name in SPLITS if parts[name]}
    return DataBundle(manifest=manifest, samples=parts, datasets=datasets, bad_samples=bad, synthetic=synthetic)
