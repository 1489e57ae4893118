"""Atomic writes keep the umask's file mode (mkstemp alone would leave 0600)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from medprune._io import atomic_torch_save, atomic_write, atomic_write_json, atomic_write_text, default_file_mode


@pytest.fixture
def umask():
    old = os.umask(0o022)
    try:
        yield lambda mask: os.umask(mask)
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_respect_the_umask(tmp_path: Path, umask, mask: int, expected: int) -> None:
    umask(mask)
    assert default_file_mode() == expected
    assert os.umask(mask) == mask  # reading the umask left it as it was
    written = [atomic_write_text(tmp_path / "a.txt", "x"), atomic_write_json(tmp_path / "b.json", {"a": 1}),
               atomic_torch_save(tmp_path / "c.pt", {"w": torch.zeros(2)})]
    assert [_mode(p) for p in written] == [expected] * 3
    # the same mode a plain open() gives a new file
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert _mode(plain) == expected


def test_writer_that_recreates_its_file_still_gets_the_mode(tmp_path: Path, umask) -> None:
    umask(0o022)

    def recreate(tmp: str) -> None:
        os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"data")
        os.close(fd)

    path = atomic_write(tmp_path / "d.bin", recreate)
    assert path.read_bytes() == b"data" and _mode(path) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["d.bin"]  # no temporary file left
