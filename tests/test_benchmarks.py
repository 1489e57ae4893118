"""The benchmarks are not run by the suite (they take minutes to hours), but each must still load
against today's library and their shared record must be writable: a renamed library helper once
broke every benchmark at its very last step, after a 16-minute run, with nothing written."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))


@pytest.fixture()
def common(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("_common", BENCHMARKS / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_machine_record_and_result_file(common, tmp_path) -> None:
    info = common.machine_info(2)
    assert info["threads"] == 2 and info["machine"] and "torch" in info["versions"]
    out = common.write_result("x", {"rows": [1, 2], **info}, tmp_path / "x.json")
    assert json.loads(out.read_text())["rows"] == [1, 2]
    assert common.mean_std([1.0, 3.0])[0] == pytest.approx(2.0)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_benchmark_loads_and_explains_itself(script) -> None:
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300,
                          cwd=BENCHMARKS.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
