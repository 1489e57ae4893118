"""medprune: train, compress and evaluate medical imaging models for point-of-care hardware.

Quick tour::

    import medprune
    cfg = medprune.load_config("configs/thermography/demo.yaml")
    outcome = medprune.train(cfg)                 # runs/<name>/ : checkpoints, metrics.json, plots
    run = medprune.run_job(cfg)                   # train → prune → export → bench → report.html
    medprune.list_models()                        # ['inception_mv4', 'inception_v3', 'inception_v4']
    model = medprune.create_model("inception_v3", num_classes=2, in_chans=1, width=0.25)

Public names are imported on first use, so ``import medprune`` stays cheap and a sub-package can
be used on its own.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ExperimentConfig": "medprune.config",
    "load_config": "medprune.config",
    "save_config": "medprune.config",
    "create_model": "medprune.models",
    "list_models": "medprune.models",
    "replace_pooling": "medprune.models",
    "list_poolings": "medprune.models",
    "HybridWaveletPool2d": "medprune.models",
    "Registry": "medprune.registry",
    "train": "medprune.workflows.jobs",
    "evaluate": "medprune.workflows.jobs",
    "classification_metrics": "medprune.metrics",
    "prune_model": "medprune.compress",
    "list_criteria": "medprune.compress",
    "list_schedules": "medprune.compress",
    "save_model": "medprune.compress",
    "load_model": "medprune.compress",
    "quantize_model": "medprune.compress",
    "materialize": "medprune.compress",
    "packed_size_bytes": "medprune.compress",
    "export_int8": "medprune.compress.int8",
    "run_job": "medprune.workflows.run",
    "sweep_job": "medprune.workflows.sweep",
    "predict_job": "medprune.workflows.predict",
    "list_tasks": "medprune.tasks",
    "detection_metrics": "medprune.metrics.detection",
    "MedpruneError": "medprune.errors",
    "ConfigError": "medprune.errors",
    "DataError": "medprune.errors",
    "CheckpointError": "medprune.errors",
    "PruningError": "medprune.errors",
    "QuantizationError": "medprune.errors",
    "RegistryError": "medprune.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'medprune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
