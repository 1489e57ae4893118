"""The model registry: one name → constructor table and the factory that builds from it.

Every model medprune can train is a registered function with a typed signature, e.g.::

    @register_model("inception_v3", min_input_size=(75, 75))
    def inception_v3(num_classes: int = 2, in_chans: int = 3, width: float = 1.0,
                     pretrained: bool = False, drop_rate: float = 0.0) -> nn.Module: ...

:func:`create_model` checks the keyword arguments against that signature before calling it, so a
typo in a config's ``model.kwargs`` ends as a :class:`~medprune.errors.ConfigError` naming the
argument and listing the accepted ones, never as a bare ``TypeError``. It also stamps the model
with ``model.medprune_spec = {"name", "kwargs", "pretrained"}``, so checkpoints can rebuild the
architecture later with ``create_model(spec["name"], **spec["kwargs"])``.

Contract of a registered constructor (the model tests check it for every registered name):
keyword arguments ``num_classes``, ``in_chans``, ``width``, ``pretrained`` and ``drop_rate``; the
returned plain ``nn.Module`` gives logits ``(N, num_classes)`` (segmentation models:
``(N, num_classes, H, W)``) in eval mode and carries ``default_input_size`` and ``min_input_size`` as
``(C, H, W)``; the U-Nets also carry ``input_multiple``, the number ``H`` and ``W`` must be divisible by
(:func:`model_input_multiple` tells it without building the model; 1 where any size works).
"""

from __future__ import annotations

import difflib
import inspect
import logging
from typing import Any, Callable

from typing import TYPE_CHECKING

from medprune.errors import ConfigError
from medprune.registry import Registry

if TYPE_CHECKING:
    from torch import nn

__all__ = ["MODELS", "register_model", "create_model", "list_models", "model_signature", "model_min_input_size",
           "model_input_multiple", "model_task"]

logger = logging.getLogger(__name__)

MODELS = Registry("model")
"""Name → constructor of every model medprune can build."""

#: Smallest input ``(H, W)`` of each model, as a function of its keyword arguments.
_MIN_SIZES: dict[str, Callable[[dict[str, Any]], tuple[int, int]]] = {}
#: What each model's output is for: the name of a task (``classification``, ``segmentation``, ...).
_TASKS: dict[str, str] = {}
#: The number each model's input ``H`` and ``W`` must be divisible by, as a function of its keyword arguments.
_MULTIPLES: dict[str, Callable[[dict[str, Any]], int]] = {}
#: Argument checks of models that have them (values the constructor would refuse), run without building.
_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {}


def register_model(name: str, *, min_input_size: tuple[int, int] | Callable[[dict[str, Any]], tuple[int, int]],
                   task: str = "classification",
                   input_multiple: int | Callable[[dict[str, Any]], int] = 1,
                   check: Callable[[dict[str, Any]], None] | None = None) -> Callable[[Any], Any]:
    """Decorator registering a model constructor: ``@register_model("name", min_input_size=(75, 75))``.

    ``min_input_size`` is the smallest ``(H, W)`` the model runs on (a function of the keyword
    arguments when it depends on them), so a config asking for less is refused at load — naming
    ``data.image_size`` — instead of ending in a PyTorch traceback mid-training. The model tests
    check it against the built model's ``min_input_size`` for every registered name. ``task``
    says what the output is: ``classification`` logits ``(N, K)``, ``segmentation`` logits
    ``(N, K, H, W)``; a config pairs a model only with its task. ``input_multiple`` is the number
    ``H`` and ``W`` must be divisible by (MONAI's ``UNet`` halves its input four times with strided
    convolutions and concatenates each level with its upsampled twin, so it needs multiples of 16).
    ``check(arguments)`` refuses argument values the model cannot be built with (raising
    :class:`~medprune.errors.ConfigError` naming ``model.kwargs.<key>``) without building it:
    :func:`model_min_input_size` runs it, so a config is refused at load.
    """
    rule = min_input_size if callable(min_input_size) else (lambda kwargs, size=tuple(min_input_size): size)
    if not callable(input_multiple) and (isinstance(input_multiple, bool) or not isinstance(input_multiple, int)
                                         or input_multiple < 1):
        raise ValueError(f"register_model({name!r}): input_multiple must be an integer >= 1, got {input_multiple!r}")
    multiple = input_multiple if callable(input_multiple) else (lambda kwargs, m=input_multiple: m)

    def decorator(fn: Any) -> Any:
        MODELS.register(name)(fn)
        _MIN_SIZES[name] = rule  # type: ignore[assignment]
        _TASKS[name] = task
        _MULTIPLES[name] = multiple
        if check is not None:
            _CHECKS[name] = check
        return fn

    return decorator


def model_task(name: str) -> str:
    """The task model ``name`` was registered for (``classification``, ``segmentation``, ...)."""
    MODELS.get(name)  # unknown names raise with suggestions
    return _TASKS[name]


def model_min_input_size(name: str, **kwargs: Any) -> tuple[int, int]:
    """The smallest ``(H, W)`` model ``name`` built with ``kwargs`` accepts, without building it."""
    fn = MODELS.get(name)
    arguments = dict(_check_kwargs(name, inspect.signature(fn), kwargs).arguments)
    if name in _CHECKS:
        _CHECKS[name](arguments)
    h, w = _MIN_SIZES[name](arguments)
    return int(h), int(w)


def model_input_multiple(name: str, **kwargs: Any) -> int:
    """The number model ``name`` built with ``kwargs`` needs its input ``H`` and ``W`` divisible by (1: any size)."""
    fn = MODELS.get(name)
    arguments = dict(_check_kwargs(name, inspect.signature(fn), kwargs).arguments)
    return int(_MULTIPLES[name](arguments))


def list_models(task: str | None = None) -> list[str]:
    """Sorted names of the registered models (of one ``task`` if given), e.g. ``['inception_mv4', ...]``."""
    return [n for n in MODELS.names() if task is None or _TASKS[n] == task]


def model_signature(name: str) -> inspect.Signature:
    """Signature of model ``name``'s constructor, with annotations resolved to real types.

    The config validator uses it to check ``model.kwargs`` at load time. Unknown names raise
    :class:`~medprune.errors.RegistryError` with close-match suggestions.
    """
    return inspect.signature(MODELS.get(name), eval_str=True)


def _check_kwargs(name: str, signature: inspect.Signature, kwargs: dict[str, Any]) -> inspect.BoundArguments:
    params = signature.parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = [p for p, spec in params.items() if spec.kind in (spec.KEYWORD_ONLY, spec.POSITIONAL_OR_KEYWORD)]
    if not accepts_any:
        for key in kwargs:
            if key not in accepted:
                close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"model {name!r}: unknown argument {key!r}{hint} "
                                  f"Accepted: {', '.join(accepted)}")
    try:
        bound = signature.bind(**kwargs)
    except TypeError as exc:  # a required argument is missing
        raise ConfigError(f"model {name!r}: {exc}. Accepted: {', '.join(accepted)}") from None
    bound.apply_defaults()
    return bound


def _plain(value: Any) -> Any:
    """Tuples → lists (recursively), so a spec survives a YAML or JSON round trip unchanged."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword arguments ``kwargs``.

    Raises :class:`~medprune.errors.RegistryError` (with suggestions) for an unknown name and
    :class:`~medprune.errors.ConfigError` naming the argument for one the constructor does not
    accept. The returned model carries ``model.medprune_spec``: ``kwargs`` holds every argument
    with its default filled in, ``pretrained`` forced to ``False`` (a rebuild gets its weights from
    the checkpoint, not from a download); the top-level ``pretrained`` key records whether this
    build started from pretrained weights.

    Example::

        model = create_model("inception_v3", num_classes=2, in_chans=1, width=0.25)
        twin = create_model(model.medprune_spec["name"], **model.medprune_spec["kwargs"])
    """
    fn = MODELS.get(name)
    bound = _check_kwargs(name, inspect.signature(fn), kwargs)
    arguments = dict(bound.arguments)
    for param in inspect.signature(fn).parameters.values():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update(arguments.pop(param.name, {}))
    model = fn(**arguments)
    pretrained = bool(arguments.get("pretrained", False))
    if "pretrained" in arguments:
        arguments["pretrained"] = False
    model.medprune_spec = {"name": name, "kwargs": _plain(arguments), "pretrained": pretrained}
    logger.debug("built model %s with %s", name, arguments)
    return model
