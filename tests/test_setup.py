"""The two set-up commands: a CPU-only install through TORCH_INDEX (the default pulls the CUDA build)."""

from __future__ import annotations

import re
import subprocess

from packaging.specifiers import SpecifierSet

from tests.conftest import ROOT


def _dry_run(*args: str) -> list[str]:
    out = subprocess.run(["make", "-n", "install", "VENV=/nonexistent/venv", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return [line for line in out.splitlines() if "pip install" in line]


def test_torch_index_installs_the_cpu_build_first() -> None:
    lines = _dry_run("TORCH_INDEX=https://download.pytorch.org/whl/cpu")
    assert len(lines) == 2
    assert "--index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1" in lines[0]
    assert lines[1].endswith("torch==2.14.1 torchvision==0.29.1 -e '.[dev]'") and "--index-url" not in lines[1]
    # the CPU wheel's local version satisfies the pins of the second step, so pip keeps it
    for pin, cpu in (("==2.14.1", "2.14.1+cpu"), ("==0.29.1", "0.29.1+cpu")):
        assert SpecifierSet(pin).contains(cpu)


def test_default_install_is_one_step_from_the_pins() -> None:
    lines = _dry_run()
    assert len(lines) == 1 and "--index-url" not in lines[0]
    pins = re.findall(r"(torch|torchvision)==([\d.]+)", lines[0])
    assert dict(pins) == {"torch": "2.14.1", "torchvision": "0.29.1"}
