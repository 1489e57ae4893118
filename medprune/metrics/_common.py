"""What classification and segmentation metrics share: input checks, options, interval rules, notes.

Both metric modules validate the same kinds of input (class names, per-item ids, the bootstrap and
small-sample options), pick each interval's method by one rule, and write the same
``small_sample`` section. Each of those lives here once, so a fix or a new option reaches both.
Wording that differs between the two (a classification *sample* is a segmentation *image*) is a
parameter, not a second copy.

This module is the package's private machinery: :mod:`medprune.metrics.classification` and
:mod:`medprune.metrics.segmentation` import it; nothing outside :mod:`medprune.metrics` should.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medprune.errors import DataError
from medprune.metrics import _exact as ex
from medprune.registry import suggest

__all__: list[str] = []

SMALL_SAMPLE_METHODS = tuple(ex.METHODS)
"""Names accepted for ``small_sample_method`` (the closed-form interval methods)."""


# ----------------------------------------------------------------------------- inputs


def to_numpy(x: Any) -> np.ndarray:
    """Accept numpy arrays, torch tensors (any device, with grad) and sequences."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def check_classes(classes: Sequence[str], too_few: str = "need at least 2 class names, got {names!r}") -> list[str]:
    """Class names as a list: at least two, non-empty strings, no duplicates.

    ``too_few`` is the message after ``classes:`` when fewer than two are given, formatted with
    ``names``; segmentation says that background needs a name too. A single string is one name,
    not a sequence of one-letter names.
    """
    names = [classes] if isinstance(classes, str) else list(classes)
    if len(names) < 2:
        raise DataError("classes: " + too_few.format(names=names))
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise DataError(f"classes[{i}]: class names must be non-empty strings, got {name!r}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"classes: duplicate class names {dupes}")
    return names


def check_ids(ids: Any, n: int, name: str, item: str = "sample") -> np.ndarray:
    """``n`` ids as an object array of non-empty strings; ``item`` names what each id belongs to.

    Example: ``check_ids(pids, 40, "patient_ids", item="image")`` fails with
    ``patient_ids: image 7 has no id (None)``.
    """
    if isinstance(ids, (str, bytes)):
        raise DataError(f"{name}: expected one id per {item}, got a single string {ids!r}")
    # tolist() turns numpy scalars into Python ones, so a float32 NaN is caught as a missing id.
    values = list(to_numpy(ids).tolist()) if hasattr(ids, "detach") or isinstance(ids, np.ndarray) else list(ids)
    if len(values) != n:
        raise DataError(f"{name}: has {len(values)} entries but there are {n} {item}s")
    out = []
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)) or str(v) == "":
            raise DataError(f"{name}: {item} {i} has no id ({v!r})")
        out.append(str(v))
    return np.asarray(out, dtype=object)


def check_unique_ids(sample_ids: np.ndarray, item: str = "sample") -> None:
    """Refuse sample ids seen more than once (a padded distributed sampler's duplicates)."""
    uniq, counts = np.unique(sample_ids.astype(str), return_counts=True)
    if (counts > 1).any():
        dupes = uniq[counts > 1]
        raise DataError(
            f"sample_ids: {dupes.size} {item}(s) seen more than once, e.g. {dupes[:5].tolist()}; "
            "drop the padding duplicates of a distributed sampler before updating"
        )


# ----------------------------------------------------------------------------- options


def check_int_option(name: str, value: Any, minimum: int, hint: str = "") -> int:
    """``value`` as an int, or a :class:`DataError` unless it is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"{name}: must be an integer >= {minimum}{hint}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class IntervalOptions:
    """The validated interval and small-sample options every level of an evaluation shares."""

    level: float
    min_defined_fraction: float
    exact_below: int
    small_sample_method: str
    min_class_support: int
    min_patients: int


def check_interval_options(
    n_bootstrap: Any,
    ci: Any,
    min_defined_fraction: Any,
    exact_below: Any,
    small_sample_method: Any,
    min_class_support: Any,
    min_patients: Any,
) -> IntervalOptions:
    """Validate the options both metric families take; each error names its option.

    ``n_bootstrap`` is checked but not kept: the caller draws the replicates.
    """
    check_int_option("n_bootstrap", n_bootstrap, 0, " (0 disables intervals)")
    if isinstance(ci, bool) or not isinstance(ci, (float, int)) or not 0.0 < float(ci) < 1.0:
        raise DataError(f"ci: confidence level must lie strictly between 0 and 1 (e.g. 0.95), got {ci!r}")
    if isinstance(min_defined_fraction, bool) or not isinstance(min_defined_fraction, (float, int)) or not (
        0.0 <= float(min_defined_fraction) <= 1.0
    ):
        raise DataError(f"min_defined_fraction: must lie in [0, 1], got {min_defined_fraction!r}")
    switch = " (0 switches it off)"
    exact = check_int_option("exact_below", exact_below, 0, switch)
    class_support = check_int_option("min_class_support", min_class_support, 0, switch)
    patients = check_int_option("min_patients", min_patients, 0, switch)
    if small_sample_method not in SMALL_SAMPLE_METHODS:
        raise DataError(
            "small_sample_method: " + suggest(str(small_sample_method), SMALL_SAMPLE_METHODS, "interval method")
        )
    return IntervalOptions(
        level=float(ci),
        min_defined_fraction=float(min_defined_fraction),
        exact_below=exact,
        small_sample_method=str(small_sample_method),
        min_class_support=class_support,
        min_patients=patients,
    )


# ----------------------------------------------------------------------------- results


def none_if_nan(x: float) -> float | None:
    """``None`` for ``NaN`` and ``inf`` (JSON has neither), else a plain float."""
    return None if math.isnan(float(x)) or math.isinf(float(x)) else float(x)


def zero_width(interval: list[float] | None) -> bool:
    """Whether an interval exists and has no width (the bootstrap saw one value only)."""
    return interval is not None and interval[1] - interval[0] <= 0.0


def bootstrap_method(interval: list[float] | None) -> str | None:
    """The ``ci_method`` of a percentile bootstrap interval; ``None`` where there is none."""
    if interval is None:
        return None
    return "percentile_bootstrap_degenerate" if zero_width(interval) else "percentile_bootstrap"


def use_closed_form(boot: list[float] | None, at_bound: bool, units: int, exact_below: int) -> bool:
    """Whether a proportion's closed-form interval replaces its bootstrap one.

    It does when fewer than ``exact_below`` units carry the denominator, or when the bootstrap
    degenerates: no interval, zero width, or a point estimate of exactly 0 or 1 (``at_bound``).
    """
    return units < exact_below or boot is None or at_bound or zero_width(boot)


def plural(n: int, word: str) -> str:
    """``"1 patient"``, ``"3 patients"``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def small_sample_section(
    flagged: dict[str, int],
    notes: list[str],
    n_units: int,
    n_samples: int,
    unit_name: str,
    opts: IntervalOptions,
) -> dict[str, Any]:
    """The ``small_sample`` section of one level, from its flagged classes and their notes.

    Adds the split's note when it has fewer than ``min_patients`` units (patients, or images when
    ``unit_name`` is ``"sample"``: no patient ids).
    """
    split = n_units < opts.min_patients
    if split:
        if unit_name == "patient":
            held = plural(n_units, "patient")
        else:
            held = plural(n_samples, "image") + " (no patient ids)"
        notes = notes + [
            f"the split has {held}, fewer than {opts.min_patients}: its intervals are wide and a difference "
            "between two models on it is weak evidence"
        ]
    return {
        "min_class_support": opts.min_class_support,
        "min_patients": opts.min_patients,
        "classes": flagged,
        "split": bool(split),
        "notes": notes,
    }
