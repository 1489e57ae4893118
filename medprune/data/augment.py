"""Training augmentation built from config specs with albumentations.

A config lists transforms by their albumentations class name with keyword arguments::

    data:
      augmentation:
        - {name: HorizontalFlip, p: 0.5}
        - {name: Affine, rotate: [-10, 10], scale: [0.9, 1.1], p: 0.7}
        - {name: RandomBrightnessContrast, brightness_limit: 0.1, p: 0.3}

Only classes that subclass albumentations' ``BasicTransform`` are accepted — names are looked up
as attributes of the ``albumentations`` module, never evaluated. Unknown names and arguments
raise :class:`~medprune.errors.ConfigError` with close-match suggestions.

Images reach the augmentation as float32 in [0, 1], already resized to ``data.image_size``;
transforms that change the size are rejected by the dataset. Randomness is seeded per sample
by the datasets (:class:`~medprune.data.dataset.ManifestDataset`, ``Compose.set_random_seed``).

Segmentation passes image and mask through one call (``compose(image=..., mask=...)``), so a
flip, rotation or elastic warp moves both with the same draw, while intensity transforms
(brightness, noise, blur) touch the image only. albumentations warps masks with nearest-neighbour
interpolation and fills uncovered pixels with ``fill_mask`` (default 0, i.e. class 0); a
transform configured with another ``mask_interpolation`` would blend labels into values that
mean another class, so :func:`build_augmentation` with ``masks=True`` and the segmentation
dataset refuse it (:func:`check_mask_interpolation`).
"""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from medprune.errors import ConfigError
from medprune.registry import suggest

__all__ = [
    "albumentations",
    "augmentation_names",
    "build_augmentation",
    "check_mask_interpolation",
    "validate_augmentation",
]

logger = logging.getLogger(__name__)

# Not usable from a config: albumentations' abstract bases, transforms that take Python
# callables (Lambda), and tensor conversions (the dataset makes the tensor itself).
_EXCLUDED = {
    "BasicTransform",
    "DualTransform",
    "ImageOnlyTransform",
    "Transform3D",
    "Lambda",
    "ToTensorV2",
    "ToTensor3D",
}


def albumentations() -> ModuleType:
    """The ``albumentations`` module, imported without its update check.

    Importing albumentations asks PyPI for its newest version unless ``NO_ALBUMENTATIONS_UPDATE``
    is set: on a clinical network (or this project's CI) that is a network call, and a timeout,
    every time a config is validated or a training starts. A user who sets the variable keeps
    their value.
    """
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    return A


def augmentation_names() -> list[str]:
    """Sorted names of the albumentations transforms a config may use."""
    A = albumentations()
    from albumentations.core.transforms_interface import BasicTransform

    return sorted(
        name
        for name in dir(A)
        if name not in _EXCLUDED and isinstance(getattr(A, name), type) and issubclass(getattr(A, name), BasicTransform)
    )


def _transform_class(name: object, index: int) -> type:
    A = albumentations()

    if not isinstance(name, str) or not name:
        raise ConfigError(f"item {index}: 'name' must be an albumentations transform name, got {name!r}")
    names = augmentation_names()
    if name not in names:
        raise ConfigError(f"item {index}: {suggest(name, names, 'augmentation transform')}")
    return getattr(A, name)


def _check_arguments(cls: type, kwargs: dict[str, Any], index: int) -> None:
    """Reject arguments the transform does not take (albumentations only warns about them)."""
    parameters = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = [n for n, p in parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in kwargs:
        if key not in accepted:
            close = suggest(key, accepted, "argument")
            raise ConfigError(f"item {index} ({cls.__name__}): {close}")
    missing = [
        n
        for n, p in parameters.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and n not in kwargs
    ]
    if missing:
        raise ConfigError(f"item {index} ({cls.__name__}): missing required argument(s) {', '.join(missing)}")


def _build_one(spec: object, index: int) -> Any:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"item {index}: expected a mapping like {{name: HorizontalFlip, p: 0.5}}, got {spec!r}")
    kwargs = dict(spec)
    if "name" not in kwargs:
        raise ConfigError(f"item {index}: missing 'name' (an albumentations transform, e.g. HorizontalFlip)")
    cls = _transform_class(kwargs.pop("name"), index)
    _check_arguments(cls, kwargs, index)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # albumentations reports bad args as warnings
            return cls(**kwargs)
    except (ValueError, TypeError, UserWarning) as exc:
        raise ConfigError(f"item {index} ({cls.__name__}): {_describe(exc, kwargs)}") from None


def _describe(exc: Exception, kwargs: Mapping[str, Any]) -> str:
    """Name the offending argument of a pydantic validation error when it can be found.

    albumentations re-raises pydantic's ``ValidationError`` as a plain ``ValueError`` whose
    cause keeps the structured details.
    """
    for candidate in (exc, exc.__cause__):
        errors = getattr(candidate, "errors", None)
        if not callable(errors):
            continue
        try:
            details = list(errors())
        except (TypeError, ValueError):
            continue
        for detail in details:
            loc = detail.get("loc") or ()
            message = str(detail.get("msg", "")).strip()
            if loc and str(loc[0]) in kwargs:
                return f"invalid argument {loc[0]}={kwargs[str(loc[0])]!r}: {message}"
            if message:
                return f"invalid arguments {dict(kwargs)!r}: {message}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def build_augmentation(specs: Sequence[Mapping[str, Any]] | None, *, masks: bool = False, boxes: bool = False) -> Any:
    """Build an ``albumentations.Compose`` from ``specs``; ``None`` when there are none.

    Each spec is ``{"name": <albumentations class>, **kwargs}``; ``p`` is the transform's
    probability. Raises :class:`~medprune.errors.ConfigError` naming the item, the transform and
    the argument for unknown names, unknown or invalid arguments — and, with ``masks=True``
    (segmentation), for a ``mask_interpolation`` other than nearest. Messages start with
    ``item <index>`` so the config loader can prefix the key path
    (``data.augmentation: item 1 (Affine): ...``). With ``boxes=True`` (detection) the
    ``Compose`` also moves ``pascal_voc`` boxes (``x0, y0, x1, y1`` pixels) given as
    ``bboxes=..., labels=...``: boxes cut by the border are clipped, boxes left with under a
    quarter of their area are dropped.

    Example::

        aug = build_augmentation([{"name": "HorizontalFlip", "p": 0.5}], masks=True)
        aug.set_random_seed(0); out = aug(image=img, mask=mask)   # out["image"], out["mask"]
    """
    if specs is None:
        return None
    if isinstance(specs, (str, bytes, Mapping)) or not isinstance(specs, Sequence):
        raise ConfigError(f"expected a list of transforms like [{{name: HorizontalFlip, p: 0.5}}], got {specs!r}")
    if len(specs) == 0:
        return None
    A = albumentations()

    transforms = [_build_one(spec, index) for index, spec in enumerate(specs)]
    if masks:
        for index, transform in enumerate(transforms):
            check_mask_interpolation(transform, f"item {index}")
    logger.debug("augmentation: %s", ", ".join(type(t).__name__ for t in transforms))
    if boxes:
        return A.Compose(transforms, bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"],
                                                               min_visibility=0.25, clip=True))
    return A.Compose(transforms)


def validate_augmentation(specs: Sequence[Mapping[str, Any]] | None, *, masks: bool = False,
                          boxes: bool = False) -> None:
    """Build ``specs`` once and discard the result: raises ConfigError exactly as building would.

    The config loader calls this at load time so a typo fails before any data is read.
    """
    build_augmentation(specs, masks=masks, boxes=boxes)


def check_mask_interpolation(augmentation: Any, where: str = "data.augmentation") -> None:
    """Refuse any transform in ``augmentation`` (nested ``Compose``/``OneOf`` included) whose
    ``mask_interpolation`` is not nearest-neighbour: interpolating between labels 0 and 2 makes a
    1, which is another class. Raises :class:`~medprune.errors.ConfigError` starting with ``where``.
    """
    import cv2

    nearest = (cv2.INTER_NEAREST, cv2.INTER_NEAREST_EXACT)
    pending = [augmentation]
    while pending:
        transform = pending.pop()
        pending.extend(getattr(transform, "transforms", None) or [])
        # None: not set (a Compose leaves its transforms' own choice alone)
        value = getattr(transform, "mask_interpolation", None)
        if value is not None and value not in nearest:
            raise ConfigError(
                f"{where} ({type(transform).__name__}): mask_interpolation={value} blends class labels into "
                f"values of other classes; segmentation masks need {cv2.INTER_NEAREST} (nearest)"
            )
