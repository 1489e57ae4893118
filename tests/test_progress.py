"""Progress bars draw on a terminal only: a redirected log gets no bar frames."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from medprune._progress import progress_bar
from tests.conftest import ROOT, write_yaml


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_bar_draws_on_a_terminal_and_not_in_a_file() -> None:
    for tty, drawn in ((True, True), (False, False)):
        stream = _Stream(tty)
        for _ in progress_bar(range(5), enabled=True, file=stream, desc="x"):
            pass
        assert ("5/5" in stream.getvalue()) is drawn
    stream = _Stream(True)
    list(progress_bar(range(5), enabled=False, file=stream))
    assert stream.getvalue() == ""  # runtime.progress: false wins on a terminal too


def test_redirected_training_log_has_no_bar_frames(tmp_path: Path, tiny_config_dict: dict) -> None:
    tiny_config_dict["runtime"]["progress"] = True
    tiny_config_dict["optim"]["epochs"] = 2
    path = write_yaml(tmp_path / "x.yaml", tiny_config_dict)
    proc = subprocess.run([sys.executable, "-m", "medprune.cli", "train", str(path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\r" not in proc.stderr and "it/s]" not in proc.stderr and "s/it]" not in proc.stderr
    assert "epoch 2/2" in proc.stderr  # the per-epoch log lines are still there
