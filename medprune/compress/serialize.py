"""Save and load (possibly pruned) models as weights-only files.

A model file is a medprune checkpoint (``kind: weights``) whose ``model_spec`` holds the registry
name, its keyword arguments (a BPCP-shortened ResNet records ``keep_blocks`` there) and the width
of every layer (:func:`~medprune.models.structure.capture_structure`). Loading rebuilds the
registry model, resizes its layers and loads the state dict with ``torch.load(weights_only=True)``:
no pickled classes, no code, and the outputs equal the saved model's exactly. The same file works
with ``medprune evaluate --checkpoint``.

Example::

    medprune.save_model(pruned, "runs/demo/compressed/model.pt")
    model = medprune.load_model("runs/demo/compressed/model.pt")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from medprune.engine.checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from medprune.errors import CheckpointError
from medprune.models.structure import build_from_spec, capture_structure

__all__ = ["save_model", "load_model", "model_spec"]


def model_spec(model: nn.Module) -> dict[str, Any]:
    """The rebuildable description of ``model``: registry name, kwargs and layer widths."""
    spec = getattr(model, "medprune_spec", None)
    if not isinstance(spec, dict) or "name" not in spec:
        raise CheckpointError(f"cannot save a {type(model).__name__}: it was not built by medprune.create_model, "
                              "so it cannot be rebuilt from a name; save its state_dict with torch.save instead")
    return {**spec, "structure": capture_structure(model)}


def save_model(model: nn.Module, path: str | Path, *, extra: dict[str, Any] | None = None,
               input_size: Sequence[int] | None = None, classes: Sequence[str] | None = None) -> Path:
    """Write ``model`` (architecture record + state dict) to ``path`` atomically.

    ``input_size`` ``(C, H, W)`` and ``classes`` are recorded so the file is usable on its own —
    ``medprune export``, ``bench`` and ``predict`` need no config to know what the model eats and
    what its outputs mean; every model file medprune writes records both. ``extra`` adds plain
    (JSON-like) entries, e.g. the pruning summary.
    """
    payload: dict[str, Any] = {"kind": "weights",
                               "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                               "model_spec": model_spec(model), **(extra or {})}
    if input_size is not None:
        payload["input_size"] = [int(v) for v in input_size]
    if classes is not None:
        payload["classes"] = [str(c) for c in classes]
    return save_checkpoint(path, payload)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model saved by :func:`save_model` (or a trainer checkpoint); returned in eval mode.

    The input size and class names the file records are kept on the model as
    ``medprune_input_size`` ``(C, H, W)`` and ``medprune_classes``.
    """
    ckpt = load_checkpoint(path, map_location=map_location)
    spec = ckpt.get("model_spec")
    if spec is None:
        raise CheckpointError(f"{path}: holds weights without an architecture record; "
                              "load it into a model you build yourself (medprune.create_model + load_state_dict)")
    model = build_from_spec(spec, str(path))
    load_model_weights(model, ckpt, path)
    # what the file records of its inputs and outputs (every model file medprune writes does)
    if ckpt.get("input_size"):
        model.medprune_input_size = tuple(int(v) for v in ckpt["input_size"])
    if ckpt.get("classes"):
        model.medprune_classes = [str(c) for c in ckpt["classes"]]
    return model.to(map_location).eval()
