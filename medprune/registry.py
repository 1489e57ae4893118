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

    def register(self, name: str | F | None = None) -> Any:
        """Register a class or function — the one way every registry is filled.

        ``@REG.register`` takes the name from the object: a class's ``name`` attribute (criteria,
        schedules, tasks), else its ``__name__``; ``@REG.register("max")`` names it explicitly
        (a class whose ``name`` says otherwise is refused, so the two cannot drift apart).
        """
        if name is not None and not isinstance(name, str):  # used bare: @REG.register
            obj = name
            self.add(self.name_of(obj), obj)
            return obj

        def decorator(obj: F) -> F:
            own = self.name_of(obj)
            if name is not None and isinstance(obj, type) and getattr(obj, "name", None) and own != name:
                raise RegistryError(f"{self.kind} {obj.__name__} is named {own!r} but registered as {name!r}")
            self.add(name or own, obj)
            return obj

        return decorator

    @staticmethod
    def name_of(obj: Any) -> str:
        """The name an object registers under: a class's ``name`` attribute, else ``__name__``."""
        own = getattr(obj, "name", None) if isinstance(obj, type) else None
        return str(own or obj.__name__)

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
