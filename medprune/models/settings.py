"""Settings of the model layer: which registry model, its arguments, and a pooling swap.

``model:`` in an experiment config (:mod:`medprune.config` assembles the sections).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medprune.schema import FieldError, check_options
from medprune.registry import suggest

__all__ = ["ModelConfig", "pooling_spec", "check_pooling"]


@dataclass
class ModelConfig:
    """A registry model name and its keyword arguments (``num_classes``/``in_chans`` come from data).

    ``pooling`` swaps every downsampling pool of the model (:func:`medprune.models.replace_pooling`):
    a registered pooling name (``max``, ``avg``, ``wavelet_hybrid``) or a mapping with ``kind`` and
    that pooling's options, e.g. ``{kind: wavelet_hybrid, wavelet: haar, keep: LL, combine: gate}``.
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: bool = False
    pooling: str | dict[str, Any] | None = None

    def __post_init__(self) -> None:
        from medprune.models import MODELS, list_models

        if self.name not in list_models():
            raise FieldError("name", suggest(self.name, list_models(), "model"))
        if "pretrained" in self.kwargs:
            raise FieldError("kwargs.pretrained", "set model.pretrained instead")
        check_options(MODELS.get(self.name), self.kwargs, "kwargs", f"argument of {self.name}")
        check_pooling(self.pooling)

    def pooling_spec(self) -> tuple[str | None, dict[str, Any]] | None:
        """``(kind, options)`` of ``pooling``, or ``None`` when the model keeps its own pools."""
        return pooling_spec(self.pooling)


def pooling_spec(pooling: str | dict[str, Any] | None) -> tuple[str | None, dict[str, Any]] | None:
    """``(kind, options)`` of a ``pooling`` config value, or ``None`` when no pool is swapped."""
    if pooling is None:
        return None
    if isinstance(pooling, str):
        return pooling, {}
    options = dict(pooling)
    return options.pop("kind", None), options


def check_pooling(pooling: str | dict[str, Any] | None) -> None:
    spec = pooling_spec(pooling)
    if spec is None:
        return
    from medprune.models.pooling import list_poolings, pooling_problem

    if spec[0] is None:
        raise FieldError("pooling.kind", f"is required, one of {', '.join(list_poolings())}")
    problem = pooling_problem(*spec)
    if problem is not None:
        key, message = problem
        raise FieldError("pooling" if isinstance(pooling, str) else f"pooling.{key}", message)
