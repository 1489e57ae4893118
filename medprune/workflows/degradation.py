"""The degradation study of a run with ``data.degradation``: baselines and the level grid.

Endo, Tanaka & Okutomi (2020) classify degraded images better by giving the network the
degradation parameter q and estimating it when unknown; the claim is comparative, so a run that
trains the degradation-aware model (:mod:`medprune.models.degradation`) also trains, at the same
budget (the same data, backbone, optimiser and epochs), the models it must beat:

- ``clean`` — the backbone trained on clean images (what a team has before it thinks of
  degradation), evaluated on degraded ones;
- ``degraded`` — the backbone trained on degraded images without q (``injection: none``).

Each is an ordinary training run in ``<run dir>/baselines/<name>/`` (its own ``config.yaml``,
checkpoints, ``metrics.json``), resumed where it stopped. :func:`evaluate_grid` then evaluates
every model — the aware one with the true q (oracle) and with the estimated one (blind), the
compressed aware model likewise, and the baselines — on the test split at every level of
``data.degradation.grid`` and on the clean images, with patient-level intervals, and writes
``degradation/grid.json`` (:class:`~medprune.metrics.degradation.DegradationGrid`), ``grid.csv``
and one plot per degradation kind.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medprune._io import atomic_write, atomic_write_json
from medprune.config import ExperimentConfig, config_from_dict, load_config
from medprune.errors import ConfigError
from medprune.metrics.degradation import DegradationGrid, GridModel, GridPoint, grid_point_metrics

__all__ = ["BASELINES", "baseline_config", "train_baselines", "evaluate_grid", "grid_models", "GRID_DIR"]

log = logging.getLogger(__name__)

#: The folder of a run directory holding the grid evaluation.
GRID_DIR = "degradation"

#: The baselines a degradation study may train: name → what it changes in the aware config.
BASELINES: dict[str, str] = {
    "clean": "the backbone trained on clean images (data.degradation.train: false), without q",
    "degraded": "the backbone trained on the same degraded images without q (injection: none)",
}


def baseline_config(config: ExperimentConfig, name: str) -> ExperimentConfig:
    """The config of baseline ``name`` (:data:`BASELINES`): the aware config with q taken away
    (``model.kwargs.injection: none``, no estimator), trained on clean images for ``clean``; it runs
    in ``<run dir>/baselines/<name>/`` with everything else — data, split, optimiser, epochs — equal."""
    if name not in BASELINES:
        from medprune.registry import suggest

        raise ConfigError(f"{config.source}: data.degradation.baselines: {suggest(name, list(BASELINES), 'baseline')}")
    plain = config.to_dict()
    kwargs = dict(plain["model"]["kwargs"])
    kwargs.update(injection="none", estimator=False)
    kwargs.pop("mode", None)
    plain["model"]["kwargs"] = kwargs
    plain["model"]["pooling"] = None
    if name == "clean":
        plain["data"]["degradation"]["train"] = False
    plain["runtime"]["out_dir"] = str(config.run_dir / "baselines")
    plain["name"] = name
    plain["description"] = f"{BASELINES[name]} — baseline of {config.name}"
    # a baseline is compared as trained; compressing or exporting it is not part of the study
    plain["compress"]["ratio"] = 0.0
    plain["compress"]["layer_ratios"] = {}
    plain["compress"]["latency_target"] = None
    # the shared phantom stays where the aware run made it
    phantom = plain["data"].get("phantom")
    if phantom is not None and phantom.get("out") is None:
        phantom["out"] = str(config.run_dir / "phantom")
    return config_from_dict(plain, f"{config.source} (baseline {name})")


def _same_config(saved: Path, config: ExperimentConfig) -> bool:
    if not saved.is_file():
        return False
    try:
        return load_config(saved).to_dict() == config.to_dict()
    except ConfigError as exc:
        log.warning("%s: cannot read the saved config (%s); the baseline there is retrained", saved, exc)
        return False


def train_baselines(config: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """Train (or reuse, or resume) every baseline of ``data.degradation.baselines``; their test metrics."""
    from medprune.workflows.jobs import train
    from medprune.workflows.run import base_checkpoint

    assert config.data.degradation is not None
    out: dict[str, dict[str, Any]] = {}
    for name in config.data.degradation.baselines:
        sub = baseline_config(config, name)
        run_dir = sub.run_dir
        same = _same_config(run_dir / "config.yaml", sub)
        done = same and (run_dir / "metrics.json").is_file() and base_checkpoint(run_dir).is_file()
        if done:
            log.info("baseline %s: reusing %s", name, run_dir)
        else:
            resume = same and (run_dir / "checkpoints" / "last.pt").is_file()
            log.info("baseline %s: %s in %s", name, "resuming" if resume else "training", run_dir)
            train(sub, resume=resume, overwrite=not resume)
        out[name] = {"run_dir": str(run_dir), "model_file": str(base_checkpoint(run_dir))}
    return out


def grid_models(config: ExperimentConfig, final: tuple[str, Path] | None) -> list[tuple[GridModel, ExperimentConfig]]:
    """The models a grid compares, each with the config it loads under: the aware base model (oracle and, with an
    estimator, blind), the final compressed one likewise (``final``: its stage name and file), the baselines."""
    from medprune.workflows.helpers import load_model_file
    from medprune.workflows.run import base_checkpoint

    base_file = base_checkpoint(config.run_dir)
    probe = load_model_file(base_file, config, torch.device("cpu"))
    modes = ["oracle", "blind"] if getattr(probe, "estimator", None) is not None else ["oracle"]
    if getattr(probe, "mode", "none") == "none":
        modes = ["none"]
    out: list[tuple[GridModel, ExperimentConfig]] = []
    for mode in modes:
        out.append((GridModel(f"aware ({mode})", str(base_file), mode), config))
    if final is not None and final[0] != "base":
        for mode in modes:
            out.append((GridModel(f"compressed ({mode})", str(final[1]), mode, compressed=True), config))
    assert config.data.degradation is not None
    for name in config.data.degradation.baselines:
        sub = baseline_config(config, name)
        out.append((GridModel(f"{name}-trained", str(base_checkpoint(sub.run_dir)), "none"), sub))
    return out


def _estimator_mae(model: nn.Module, dataset: Any, batch_size: int, device: torch.device) -> float | None:
    """Mean absolute error of the model's estimate of q against the q each image was degraded with."""
    if getattr(model, "estimator", None) is None:
        return None
    from torch.utils.data import DataLoader

    errors = []
    model.eval()
    with torch.no_grad():
        for x, _, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            image, q = model.split_inputs(x.to(device))
            errors.append((model.estimate(image) - q).abs().mean(dim=1).cpu().numpy())
    return float(np.mean(np.concatenate(errors))) if errors else None


def evaluate_grid(config: ExperimentConfig, data: Any, task: Any, device: torch.device,
                  final: tuple[str, Path] | None, out_dir: Path) -> DegradationGrid:
    """Evaluate every model of :func:`grid_models` at every grid level and on clean images (see the module
    docstring); writes ``grid.json``, ``grid.csv`` and the plots into ``out_dir``."""
    from medprune.data.degrade import degradation as degradation_kind
    from medprune.engine.trainer import predict
    from medprune.models.cost import total_macs
    from medprune.report.degradation_plots import plot_degradation_grid
    from medprune.workflows.helpers import load_model_file

    deg = config.data.degradation
    assert deg is not None
    split = data.eval_split()
    dataset = data.datasets[split]
    levels: list[tuple[str | None, float | None]] = [(None, None)]
    levels += [(kind, float(v)) for kind in deg.kinds for v in deg.grid_of(kind)]
    batch = config.eval.batch_size or config.optim.batch_size
    settings = config.eval
    models = grid_models(config, final)
    entries, points = [], []
    example = dataset[0][0][None]
    for entry, model_config in models:
        model = load_model_file(entry.file, model_config, device)
        if entry.mode != "none":
            model.mode = entry.mode
        model.eval()
        macs = int(total_macs(model, example.to(device)))
        entries.append(GridModel(entry.name, entry.file, entry.mode, entry.compressed, macs))
        log.info("degradation grid: %s over %d levels", entry.name, len(levels))
        for kind, value in levels:
            at = dataset.at_level(kind, value)
            evaluation = predict(model, at, task, batch_size=batch, device=device, workers=0, progress=False,
                                 desc=f"{entry.name} {kind or 'clean'}")
            patients = [at.patient_ids[i] for i in evaluation.indices]
            metrics = task.metrics(evaluation, patients, settings)
            values, ci = grid_point_metrics(metrics, list(task.classes))
            mae = _estimator_mae(model, at, batch, device) if entry.mode == "blind" else None
            q = 0.0 if kind is None else float(degradation_kind(kind).to_q(value))
            points.append(GridPoint(entry.name, kind, value, q, values, ci, mae))
    grid = DegradationGrid(classes=list(task.classes), kinds=list(deg.kinds),
                           units={k: degradation_kind(k).unit for k in deg.kinds}, split=split,
                           items=len(dataset), models=entries, points=points, synthetic_data=bool(data.synthetic))
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "grid.json", grid.to_dict())
    _write_csv(grid, out_dir / "grid.csv")
    plot_degradation_grid(grid, out_dir)
    return grid


def _write_csv(grid: DegradationGrid, path: Path) -> None:
    buffer = io.StringIO()
    keys = sorted({k for p in grid.points for k in p.metrics})
    writer = csv.writer(buffer)
    writer.writerow(["model", "kind", "value", "q", *keys, *[f"{k}_low" for k in keys], *[f"{k}_high" for k in keys],
                     "estimator_mae"])
    for p in grid.points:
        writer.writerow([p.model, p.kind or "clean", "" if p.value is None else p.value, f"{p.q:.4f}",
                         *["" if p.metrics.get(k) is None else f"{p.metrics[k]:.4f}" for k in keys],
                         *[f"{p.ci[k][0]:.4f}" if k in p.ci else "" for k in keys],
                         *[f"{p.ci[k][1]:.4f}" if k in p.ci else "" for k in keys],
                         "" if p.estimator_mae is None else f"{p.estimator_mae:.4f}"])
    atomic_write(path, lambda tmp: Path(tmp).write_text(buffer.getvalue(), encoding="utf-8"))
