"""Compression: structured pruning over Torch-Pruning, criteria, schedules, quantization, export, latency.

Public API::

    from medprune.compress import prune_model, list_criteria, save_model, load_model
    result = prune_model(model, example_inputs, criterion="beta_rank", ratio=0.5,
                         calibration=class_balanced_batches(train_set, batch_size=16, num_batches=16)())
"""

from medprune.compress import bpcp, sfp  # noqa: F401  (importing registers the schedules)
from medprune.compress.context import CompressContext, PruneOptions
from medprune.compress.calibration import class_balanced_batches
from medprune.compress.importance import CRITERIA, Criterion, create_criterion, list_criteria
from medprune.compress.quantize import materialize, packed_size_bytes, quantize_model
from medprune.compress.schedules import SCHEDULES, Schedule, create_schedule, list_schedules
from medprune.compress.serialize import load_model, save_model

# The pruning engine needs Torch-Pruning (and with it timm and torchvision): loaded when first used,
# so that validating a config — which only needs the criteria and schedules — stays quick.
_LAZY = {name: "medprune.compress.prune" for name in
         ("PruneResult", "keep_count", "prune_channels", "prune_model", "self_check")}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'medprune.compress' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "CRITERIA",
    "Criterion",
    "create_criterion",
    "list_criteria",
    "SCHEDULES",
    "Schedule",
    "create_schedule",
    "list_schedules",
    "CompressContext",
    "PruneOptions",
    "PruneResult",
    "prune_model",
    "prune_channels",
    "keep_count",
    "self_check",
    "class_balanced_batches",
    "save_model",
    "load_model",
    "quantize_model",
    "materialize",
    "packed_size_bytes",
]
