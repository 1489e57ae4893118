"""Turn plain YAML dicts into typed dataclasses, with errors that name the key path.

Every package's settings dataclasses use it, and :mod:`medprune.config` builds them. Each
dataclass field's type hint drives the conversion: ``int``, ``float``, ``bool``, ``str``,
``Literal[...]``, ``X | None``, ``list[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``,
``dict[str, Any]`` and nested dataclasses.
Range checks live in each dataclass's ``__post_init__`` and raise :class:`FieldError`; the loader
prefixes the key path so the final message reads ``file: optim.lr: must be > 0, got -1``.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin

from medprune.registry import suggest

__all__ = ["FieldError", "build", "to_plain", "check", "check_options"]


class FieldError(ValueError):
    """A problem with one config value; ``path`` is the key path relative to where it was raised."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message

    def under(self, prefix: str) -> "FieldError":
        """Return the same error with ``prefix`` prepended to its key path."""
        return FieldError(f"{prefix}.{self.path}" if self.path else prefix, self.message)


def check(condition: bool, key: str, message: str) -> None:
    """Raise :class:`FieldError` for ``key`` unless ``condition`` holds."""
    if not condition:
        raise FieldError(key, message)


def check_options(target: Any, options: Mapping[str, Any], key: str, what: str) -> None:
    """Every name in ``options`` must be a keyword argument of ``target`` (a function or a class's
    constructor) — medprune's one options-vs-signature check, used for model kwargs, criterion,
    schedule, task and phantom options alike.

    Raises :class:`FieldError` at ``<key>.<option>`` with close-match suggestions, ``what`` naming
    the kind of option, e.g. ``schedule_options.stpes: unknown option of schedule 'iterative'
    'stpes'; did you mean 'steps'?``. A target taking ``**kwargs`` accepts anything.
    """
    params = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [name for name, p in params.items()
                if name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for option in options:
        if option not in accepted:
            raise FieldError(f"{key}.{option}" if key else option, suggest(option, accepted, what))


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true/false"}.get(
            tp.__name__, tp.__name__
        )
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    return str(tp)


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Convert ``value`` to type ``tp`` or raise FieldError(key, ...)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise FieldError(key, f"must be {_type_name(tp)}, got null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key)
            except FieldError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise FieldError(key, f"must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        if isinstance(value, str):
            raise FieldError(key, suggest(value, [str(c) for c in choices], "value"))
        raise FieldError(key, f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise FieldError(key, f"must be a mapping, got {type(value).__name__} {value!r}")
        try:
            return build(tp, value)
        except FieldError as exc:
            raise exc.under(key) if key else exc
    if origin is list:
        (item,) = get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise FieldError(key, f"must be a list, got {value!r}")
        return [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise FieldError(key, f"must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise FieldError(key, f"must be a list of {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise FieldError(key, f"must be a mapping, got {value!r}")
        _, val_tp = get_args(tp) or (str, Any)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise FieldError(key, f"keys must be strings, got {k!r}")
            out[k] = _convert(val_tp, v, f"{key}.{k}")
        return out
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise FieldError(key, f"must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise FieldError(key, f"must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise FieldError(key, f"must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise FieldError(key, f"must be a string, got {value!r}")
    raise FieldError(key, f"unsupported type {tp!r}")  # pragma: no cover - programming error


def build(cls: type, data: dict[str, Any]) -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys are refused with suggestions."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise FieldError(str(unknown[0]), suggest(str(unknown[0]), list(fields), "key"))
    kwargs = {name: _convert(hints[name], value, name) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except FieldError:
        raise
    except TypeError as exc:  # a missing required key
        missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise FieldError(missing[0], "is required") from None
        raise FieldError("", str(exc)) from None


def to_plain(obj: Any) -> Any:
    """Dataclasses → dicts, tuples → lists: a YAML-safe structure."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj
