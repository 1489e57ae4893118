"""Reading headline numbers back from a ``metrics.json``, for every task.

Example::

    worst_class(metrics)                 # ('sick', 0.778): lowest sensitivity (classification)
    worst_class(metrics, "dice")         # ('plaque', 0.61): lowest Dice (segmentation)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["worst_class"]


def worst_class(metrics: Mapping[str, Any], key: str = "sensitivity",
                classes: Sequence[str] | None = None) -> tuple[str | None, float | None]:
    """The class with the lowest ``per_class.<class>.<key>`` and that value.

    Classes are read in ``classes`` order (default: the order of ``per_class``); ties go to the
    first; classes whose value is undefined (``None``) are skipped; ``(None, None)`` when none is
    defined.
    """
    per_class = metrics.get("per_class") or {}
    order = list(classes) if classes is not None else list(per_class)
    defined = [(float(v), i, c) for i, c in enumerate(order)
               if (v := (per_class.get(c) or {}).get(key)) is not None]
    if not defined:
        return None, None
    value, _, name = min(defined)
    return name, value
