"""``medprune predict CONFIG_OR_MODEL --input FILE... --out DIR``: a model's answers on files a user points to.

The target is either an experiment config — then its run's final model (the last compressed
model that passed its safety gate, else the trained one) and the post-processing tuned on
validation (``calibration.json``: the segmentation background threshold) — or a model file, used
as it is with the config it records (every model file medprune writes records one).

The inputs go through the same readers, resizing and normalisation as training (and the same
one-line refusals for a file that cannot be read). What is written is the task's:

- classification: the probability of every class per image; a degradation-aware model
  (:mod:`medprune.models.degradation`) is given the inputs' degradation when the user knows it
  (``degradation="jpeg=30"``) and estimates it otherwise; either way the q it used is recorded;
- segmentation: a mask PNG (class indices), an overlay PNG and, with a calibrated threshold, the
  frame with its background removed, per image;
- detection: boxes, scores and the angular intervals they cover (wrap-aware) per frame, with the
  calibrated score threshold, and overlay PNGs on the polar frame and its Cartesian scan
  conversion; a two-stage config (``data.stage1``) runs stage 1's final model and background
  threshold on the raw frame first (:class:`~medprune.models.two_stage.TwoStageDetector`);

plus ``predictions.json`` for the batch. Example::

    outcome = predict_job(Path("configs/ivoct/segmentation_demo.yaml"), [Path("frame.png")], Path("out"))
    outcome.records[0]["present"]        # ['tissue', 'plaque']
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from medprune._io import atomic_write_json
from medprune.config import ExperimentConfig, apply_overrides, config_from_dict, load_config
from medprune.data import ImageDataset, SampleReadError
from medprune.engine.checkpoint import load_checkpoint
from medprune.errors import CheckpointError, ConfigError, DataError
from medprune.tasks import first_output
from medprune.workflows.data import reader_options
from medprune.workflows.helpers import configure_runtime, load_model_file, resolve_device

__all__ = ["PredictOutcome", "predict_job", "resolve_target"]

log = logging.getLogger(__name__)

_CONFIG_SUFFIXES = (".yaml", ".yml")


@dataclass
class PredictOutcome:
    """What ``medprune predict`` wrote: one record per input, the JSON, and which model answered."""

    out_dir: Path
    model_file: Path
    task: str
    records: list[dict[str, Any]]
    json_path: Path
    calibration: dict[str, Any] | None


def resolve_target(target: Path, overrides: Sequence[str] = ()) -> tuple[ExperimentConfig, Path, dict[str, Any] | None]:
    """``(config, model file, calibration)`` for a config (its run's final model) or a model file."""
    from medprune.workflows.run import CALIBRATION, final_model_file

    if target.suffix.lower() in _CONFIG_SUFFIXES:
        config = load_config(target, overrides)
        name, model = final_model_file(config)
        if not model.is_file():
            raise CheckpointError(f"{config.run_dir}: holds no trained model; run `medprune run {target}` first")
        calibration_path = config.run_dir / CALIBRATION
        calibration = None
        if calibration_path.is_file():
            calibration = json.loads(calibration_path.read_text(encoding="utf-8"))
            if calibration.get("model") not in (None, name):
                log.warning("%s was tuned on the %s model, the final model is %s; using it anyway",
                            calibration_path, calibration.get("model"), name)
        log.info("predicting with the %s model of %s: %s", name, config.run_dir, model)
        return config, model, calibration
    if not target.is_file():
        raise CheckpointError(f"{target}: no such model file or config")
    record = load_checkpoint(target).get("config")
    if not isinstance(record, dict):
        raise CheckpointError(f"{target}: records no config, so its inputs' size and preprocessing are unknown; "
                              "pass the experiment config instead")
    data = apply_overrides(record, overrides, f"{target} (its recorded config)") if overrides else record
    return config_from_dict(data, f"{target} (its recorded config)"), target, None


def degradation_q(config: ExperimentConfig, spec: str) -> tuple[str, float, list[float]]:
    """``(kind, value, q)`` of a ``KIND=VALUE`` degradation for ``config``'s degradation-aware model."""
    from medprune.data.degrade import degradation as degradation_kind

    deg = config.data.degradation
    if deg is None:
        raise ConfigError(f"--degradation: {config.source} trains no degradation-aware model (no data.degradation)")
    kind, sep, raw = spec.partition("=")
    kind = kind.strip()
    try:
        value = float(raw)
    except ValueError:
        value = None
    if not sep or value is None:
        raise ConfigError(f"--degradation: expected KIND=VALUE (e.g. jpeg=30), got {spec!r}")
    if kind not in deg.kinds:
        from medprune.registry import suggest

        raise ConfigError(f"--degradation: {suggest(kind, list(deg.kinds), 'degradation kind this model knows')}")
    q = [0.0] * deg.q_dim
    q[deg.kinds.index(kind)] = float(degradation_kind(kind).to_q(value))
    return kind, value, q


def predict_job(target: str | Path, inputs: Sequence[str | Path], out_dir: str | Path, *,
                overrides: Sequence[str] = (), degradation: str | None = None) -> PredictOutcome:
    """Run the target's model on ``inputs`` and write the task's outputs and ``predictions.json`` into ``out_dir``.

    Raises:
        DataError: one line per input that cannot be read (nothing is written then).
        ConfigError / CheckpointError: the target is not a usable config or model file, or ``degradation``
            is not ``KIND=VALUE`` of a kind the model knows.
    """
    config, model_file, calibration = resolve_target(Path(target), overrides)
    if not inputs:
        raise ConfigError("--input: give at least one image file")
    given = degradation_q(config, degradation) if degradation is not None else None
    configure_runtime(config)
    device = resolve_device(config)
    task = config.build_task()
    model = load_model_file(model_file, config, device)
    d = config.data
    stages = None
    if d.stage1 is not None:  # a two-stage detector: the raw frame goes through stage 1 first
        from medprune.workflows.two_stage import stage1_config, stage1_threshold, two_stage_model

        first = stage1_config(config)
        name, stage1_file, threshold = stage1_threshold(first)
        model = two_stage_model(config, model).to(device)
        d = first.data
        stages = {"stage1": {"config": first.source, "model": str(stage1_file), "background_threshold": threshold},
                  "stage2": {"config": config.source, "model": str(model_file)}}
    dataset = ImageDataset(list(inputs), tuple(d.image_size), d.channels, reader_options(config), colormap=d.colormap,
                           mean=d.mean, std=d.std)
    images, bad = [], []
    for i in range(len(dataset)):
        try:
            images.append(dataset.load(i))
        except SampleReadError as exc:  # (a DataError) the reader's reason alone
            bad.append(f"{dataset.paths[i]}: {exc.reason}")
        except DataError as exc:  # names the file and the input's position already
            bad.append(str(exc))
    if bad:
        raise DataError(f"{len(bad)} input(s) cannot be read:\n" + "\n".join(bad))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    takes_q = "q" in getattr(model, "input_names", ())  # the degradation-aware classifier: image and q
    if given is not None and not takes_q:
        raise ConfigError(f"--degradation: the model {model_file} does not take the degradation parameter")
    if takes_q and given is None and getattr(model, "estimator", None) is None:
        raise ConfigError(f"--degradation: the model {model_file} has no estimator of the degradation; give the "
                          f"inputs' degradation as KIND=VALUE (kinds: {', '.join(config.data.degradation.kinds)})")
    model.eval()
    with torch.no_grad():
        for i, image in enumerate(images):
            x = dataset[i][0][None].to(device)
            extra: dict[str, Any] = {}
            if takes_q:
                if given is not None:
                    q = torch.tensor([given[2]], dtype=x.dtype, device=device)
                    extra = {"degradation": {"kind": given[0], "value": given[1], "q": given[2], "source": "given"}}
                else:
                    q = model.estimate(x)
                    extra = {"degradation": {"q": [round(float(v), 4) for v in q[0]], "source": "estimated"}}
                logits = first_output(model(x, q))[0].cpu()
            else:
                logits = first_output(model(x))[0].cpu()
            name = f"{i:03d}_{Path(dataset.paths[i]).stem}"
            files = task.write_prediction_files(logits, image, name, out, calibration)
            found = {**task.describe_prediction(logits, image_size=tuple(d.image_size), calibration=calibration),
                     **extra}
            summary = task.summarize_prediction(found)
            if extra:  # the degradation the model was given or estimated
                used = extra["degradation"]
                summary += f"; q {', '.join(f'{v:.2f}' for v in used['q'])} ({used['source']})"
            records.append({"input": str(dataset.paths[i]), **found, "summary": summary,
                            "files": [str(f.relative_to(out)) for f in files]})
    result = {"model": str(model_file), "config": config.source, "task": task.name, "classes": list(task.classes),
              "calibration": {k: calibration[k] for k in ("kind", "threshold") if k in calibration}
              if calibration else None, **({"stages": stages} if stages else {}), "inputs": records}
    path = atomic_write_json(out / "predictions.json", result)
    return PredictOutcome(out_dir=out, model_file=Path(model_file), task=task.name, records=records, json_path=path,
                          calibration=calibration)
