"""Progress bars that show only on a terminal.

A tqdm bar redraws itself with carriage returns: on a terminal that is one live line, in a
redirected log (``medprune run ... 2> run.log``, a CI job, a scheduler's output file) every redraw
stays — about 140 KB of bar frames per run. :func:`progress_bar` draws only when asked *and*
stderr is a terminal (tqdm's ``disable=None``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

__all__ = ["progress_bar"]

T = TypeVar("T")


def progress_bar(iterable: Iterable[T], *, enabled: bool = True, **kwargs: Any) -> Any:
    """``tqdm(iterable, **kwargs)``, drawn only when ``enabled`` and stderr is a terminal."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=None if enabled else True, **kwargs)
