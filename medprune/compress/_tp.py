"""Torch-Pruning, imported on first use.

``import torch_pruning`` imports timm and, through it, torchvision: seconds on a small CPU, paid by
every command that merely validates a config (the criteria and schedules register themselves on
import). The modules of this package take ``tp`` from here — a stand-in whose first attribute read
imports the real package — and keep every read of ``tp.<name>`` inside functions, so the
registries import without it. (An :class:`importlib.util.LazyLoader` module in ``sys.modules``
was tried first: Torch-Pruning's submodules read the half-loaded package and failed depending on
import order.)
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

__all__ = ["tp"]


class _TorchPruning:
    """Forwards attribute reads to ``torch_pruning``, importing it on the first one."""

    def _module(self) -> ModuleType:
        import torch_pruning

        return torch_pruning

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module(), name)


tp: Any = _TorchPruning()
