"""Training checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts — nothing that needs
arbitrary unpickling — so loading one never executes code::

    {"format": "medprune.checkpoint/1", "kind": "train" | "weights",
     "epoch": completed epochs, "model": state_dict, "model_spec": {"name", "kwargs"},
     "optimizer", "scheduler", "scaler", "rng": {"torch", "cuda"},
     "best": {"metric", "value", "epoch"}, "bad_epochs", "stopped", "history": [epoch records],
     "config": resolved config}
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medprune._io import atomic_torch_save
from medprune.errors import CheckpointError

__all__ = ["CHECKPOINT_FORMAT", "save_checkpoint", "load_checkpoint", "load_model_weights", "capture_rng", "restore_rng"]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "medprune.checkpoint/1"


def capture_rng() -> dict[str, Any]:
    """The global torch RNG states (CPU and every CUDA device) as tensors."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore_rng(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng` captured."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus the format tag) to ``path`` atomically."""
    data = {"format": CHECKPOINT_FORMAT, **payload}
    return atomic_torch_save(path, data)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a medprune checkpoint with ``weights_only=True``; errors name the file and the reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint is empty (0 bytes)")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (not a torch.save archive)")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused to load: it holds objects that would need arbitrary code to "
                              f"unpickle ({str(exc).splitlines()[0]})") from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a medprune checkpoint (a dict), got {type(data).__name__}")
    if data.get("format") != CHECKPOINT_FORMAT:
        if all(isinstance(v, torch.Tensor) for v in data.values()):
            # A bare state_dict (e.g. from a plain PyTorch loop): accept it as weights.
            return {"format": CHECKPOINT_FORMAT, "kind": "weights", "model": data}
        raise CheckpointError(f"{path}: not a medprune checkpoint (format {data.get('format')!r})")
    if "model" not in data:
        raise CheckpointError(f"{path}: checkpoint has no model weights")
    return data


def load_model_weights(model: nn.Module, checkpoint: dict[str, Any], source: str | Path = "<checkpoint>") -> None:
    """Load the checkpoint's model state into ``model``; a mismatch names the first differing keys."""
    state = checkpoint["model"]
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}")
        if shape:
            k = shape[0]
            parts.append(f"shape of {k}: checkpoint {list(state[k].shape)} vs model {list(own[k].shape)}")
        spec = checkpoint.get("model_spec")
        hint = f" (checkpoint was made for {spec['name']} {spec.get('kwargs')})" if spec else ""
        raise CheckpointError(f"{source}: weights do not fit the model{hint}: " + "; ".join(parts))
    model.load_state_dict(state)
