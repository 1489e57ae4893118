"""Torch-Pruning, loaded on first use.

``import torch_pruning`` imports timm and, through it, torchvision: seconds on a small CPU, paid by
every command that merely validates a config (the criteria and schedules register themselves on
import). The modules of this package take ``tp`` from here — a module object that stays empty
until an attribute is first read (:class:`importlib.util.LazyLoader`) — and keep every read of
``tp.<name>`` inside functions, so the registries import without it.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

__all__ = ["tp"]


def _lazy(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


tp = _lazy("torch_pruning")
