"""Shared fixtures: tiny configs on synthetic phantom data, small enough for 2 CPU cores."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# No network in tests: albumentations asks PyPI for its newest version on import unless told not to
# (medprune.data.augment sets this itself; tests that import albumentations directly need it too).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

#: A complete experiment on a tiny synthetic phantom; tests copy and adjust it.
TINY_CONFIG: dict[str, Any] = {
    "name": "tiny",
    "data": {
        "phantom": {"kind": "thermography", "patients": 12, "imbalance": 2.0, "views": 2, "size": [32, 40], "seed": 0},
        "classes": ["healthy", "sick"],
        "image_size": [40, 40],
        "channels": "gray",
        "augmentation": [{"name": "HorizontalFlip", "p": 0.5}],
        "split": {"val_fraction": 0.25, "test_fraction": 0.25, "seed": 0},
    },
    "model": {"name": "small_cnn", "kwargs": {"width": 0.25}},
    "optim": {"optimizer": "sgdm", "lr": 0.05, "batch_size": 4, "epochs": 3},
    "eval": {"n_bootstrap": 50},
    "runtime": {"seed": 0, "device": "cpu", "workers": 0, "progress": False},
}


#: A segmentation experiment on a tiny SYNTHETIC IVOCT phantom (stage 1 of the IVOCT pipeline).
TINY_SEGMENTATION_CONFIG: dict[str, Any] = {
    "name": "tiny_seg",
    "task": "segmentation",
    "data": {
        "phantom": {"kind": "ivoct", "patients": 8, "size": [48, 96], "seed": 0, "options": {"frames": 3}},
        "classes": ["background", "tissue", "plaque"],
        "label_classes": ["normal", "plaque"],
        "image_size": [48, 96],
        "channels": "gray",
        "augmentation": [{"name": "HorizontalFlip", "p": 0.5}],
        "split": {"val_fraction": 0.25, "test_fraction": 0.25, "seed": 0},
    },
    "model": {"name": "basic_unet", "kwargs": {"width": 0.125}},
    "optim": {"optimizer": "adam", "lr": 0.01, "batch_size": 4, "epochs": 2},
    "eval": {"n_bootstrap": 50},
    "runtime": {"seed": 0, "device": "cpu", "workers": 0, "progress": False},
}


@pytest.fixture(autouse=True, scope="session")
def _torch_threads() -> None:
    # Two pytest-xdist workers share 2 cores: one thread each avoids oversubscription.
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


@pytest.fixture
def tiny_config_dict(tmp_path: Path) -> dict[str, Any]:
    """A fresh copy of :data:`TINY_CONFIG` writing into ``tmp_path/runs``."""
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["runtime"]["out_dir"] = str(tmp_path / "runs")
    return cfg


@pytest.fixture
def tiny_seg_config_dict(tmp_path: Path) -> dict[str, Any]:
    """A fresh copy of :data:`TINY_SEGMENTATION_CONFIG` writing into ``tmp_path/runs``."""
    cfg = copy.deepcopy(TINY_SEGMENTATION_CONFIG)
    cfg["runtime"]["out_dir"] = str(tmp_path / "runs")
    return cfg


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
