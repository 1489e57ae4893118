"""Atomic file writes: a crash never leaves half a file behind.

The temporary file comes from :func:`tempfile.mkstemp`, which creates it with mode 0600; before it
replaces the target it gets the mode an ordinary ``open(path, "w")`` would have given it
(0666 minus the process umask), so a run directory shared with a team stays readable.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "atomic_torch_save", "default_file_mode", "read_json"]


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666`` minus the process umask."""
    # os.umask can only be read by setting it; it is put back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then move the temporary file onto ``path`` with ``os.replace``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        # After the write: a writer may have replaced the file (ONNX Runtime's quantizer does).
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    return atomic_write(path, write)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")


def atomic_torch_save(path: str | os.PathLike[str], obj: Any) -> Path:
    """``torch.save`` to ``path`` atomically."""
    import torch  # here, not at the top: the ground layer is imported by commands that never save tensors

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def read_json(path: str | os.PathLike[str], what: str) -> Any:
    """The JSON document at ``path``; a missing or unreadable file raises
    :class:`~medprune.errors.DataError` naming the file and ``what`` it should have been."""
    from medprune.errors import DataError

    file = Path(path)
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{file}: {what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{file}: cannot read {what} ({exc})") from None
