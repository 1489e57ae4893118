"""One registry mechanism for models, criteria, poolings and pipelines.

A :class:`Registry` maps a name to a constructor. Duplicate names raise; an unknown name raises a
:class:`~medprune.errors.RegistryError` that suggests the closest registered names, e.g.
``unknown model 'inception_v5'; did you mean 'inception_v4'? Available: inception_mv4, ...``.

Example::

    MODELS = Registry("model")

    @MODELS.register("tiny")
    def tiny(num_classes: int = 2) -> nn.Module: ...

    MODELS.create("tiny", num_classes=3)
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Iterator, TypeVar

from medprune.errors import RegistryError

__all__ = ["Registry", "suggest"]

F = TypeVar("F", bound=Callable[..., Any])


def suggest(name: str, choices: list[str] | tuple[str, ...], kind: str = "name") -> str:
    """Return ``unknown <kind> '<name>'; did you mean ...? Available: ...`` for an error message."""
    options = sorted(choices)
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} {name!r}{hint} Available: {', '.join(options) or '(none)'}"


class Registry:
    """Name → constructor table with duplicate protection and close-match suggestions."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str | None = None) -> Callable[[F], F]:
        """Decorator registering ``fn`` under ``name`` (default: the function's ``__name__``)."""

        def decorator(fn: F) -> F:
            self.add(name or fn.__name__, fn)
            return fn

        return decorator

    def add(self, name: str, fn: Callable[..., Any]) -> None:
        """Register ``fn`` under ``name``; a name may be registered once only."""
        if name in self._entries:
            raise RegistryError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = fn

    def get(self, name: str) -> Callable[..., Any]:
        """Return the constructor registered as ``name`` or raise with suggestions."""
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(suggest(name, list(self._entries), self.kind)) from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Build the object registered as ``name``."""
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
