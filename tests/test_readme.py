"""The README's Python snippet works as printed — twice, and beside an existing demo run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _python_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Python\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_python_snippet_runs_after_make_demo_and_again(tmp_path: Path) -> None:
    code = _python_block()
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    (tmp_path / "runs" / "thermography_demo" / "checkpoints").mkdir(parents=True)  # what `make demo` leaves
    (tmp_path / "runs" / "thermography_demo" / "checkpoints" / "last.pt").write_bytes(b"demo")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for attempt in (1, 2):  # the second run finds its own run directory from the first
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, f"attempt {attempt}: {proc.stderr[-3000:]}"
        printed = proc.stdout.split()
        assert 0.0 <= float(printed[0]) <= 1.0 and printed[-1] in ("clopper_pearson", "wilson",
                                                                     "percentile_bootstrap")
    assert (tmp_path / "runs" / "api_quickstart" / "metrics.json").is_file()
    assert (tmp_path / "runs" / "thermography_demo" / "checkpoints" / "last.pt").read_bytes() == b"demo"


def test_api_errors_name_the_keyword_arguments(tmp_path: Path, tiny_config_dict: dict) -> None:
    from medprune.config import config_from_dict
    from medprune.workflows.jobs import train
    from medprune.errors import CheckpointError

    cfg = config_from_dict(tiny_config_dict, "x.yaml")
    (cfg.run_dir / "checkpoints").mkdir(parents=True)
    (cfg.run_dir / "checkpoints" / "last.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"--resume \(resume=True in Python\).*--overwrite \(overwrite=True\)"):
        train(cfg)
