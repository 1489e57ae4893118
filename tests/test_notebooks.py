"""The walkthrough notebooks run top to bottom on tiny settings, and are stored without outputs."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

#: What each notebook must print on tiny settings (besides the synthetic-data line).
EXPECTED = {
    "thermography_quickstart.ipynb": ["must be > 0"],  # the bad-value cell shows the validation message
    "compress_and_compare.ipynb": ["must be in [0, 1)", "fewer MACs", "max |PyTorch - ONNX Runtime|",
                                   "report:"],
}


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS
    assert sorted(EXPECTED) == [p.name for p in NOTEBOOKS]  # every notebook has its checks


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_on_tiny_settings(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDPRUNE_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "synthetic data: True" in text
    for expected in EXPECTED[path.name]:
        assert expected in text, expected
