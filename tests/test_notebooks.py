"""The walkthrough notebooks run top to bottom on tiny settings, and are stored executed (as documents)."""

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
    "degradation_aware.ipynb": ["epoch 0, item 7", "baselines: ['clean', 'degraded']", "estimator MAE per level",
                                "'source': 'given'", "'source': 'estimated'", "two inputs: ['image', 'q']",
                                "max |PyTorch - ONNX Runtime|", "report:"],
    "ivoct_two_stage.ipynb": ["stage 1:", "recall of small plaques", "fewer MACs", "background_threshold",
                              "on a raw frame: max |PyTorch - ONNX Runtime|", "report:"],
}

#: The model line each notebook prints at its full settings (the tests' tiny settings print another).
FULL_MODEL = {
    "thermography_quickstart.ipynb": ("inception_v3 {'width': 0.125", "small_cnn {"),
    "compress_and_compare.ipynb": ("inception_v3 {'width': 0.125", "small_cnn {"),
    "degradation_aware.ipynb": ("degradation_aware {'backbone': 'small_cnn', 'width': 0.5", "'width': 0.25"),
    "ivoct_two_stage.ipynb": ("faster_rcnn {'backbone': 'resnet18', 'width': 0.25", "'width': 0.125"),
}


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS
    assert sorted(EXPECTED) == sorted(FULL_MODEL) == [p.name for p in NOTEBOOKS]  # every notebook has its checks


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_executed_as_a_document(path: Path) -> None:
    """Shipped with the outputs of one top-to-bottom run at full settings (notebooks/execute.py)."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.get("execution_count") for c in code] == list(range(1, len(code) + 1))
    assert all(c.get("outputs") for c in code)
    outputs = [o for c in code for o in c["outputs"]]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # its plots, embedded
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "synthetic data: True" in text
    # the full settings, not the tests' tiny ones: each notebook prints its model line (name, kwargs)
    full, tiny = FULL_MODEL[path.name]
    assert full in text and tiny not in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_writes_its_own_run(path: Path) -> None:
    """The quick-start notebook used to overwrite runs/thermography_demo, the run `make demo` makes."""
    source = "".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    assert f'"name=notebook_{path.stem.replace("thermography_", "")}"' in source
    assert '"name=thermography_demo"' not in source


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_on_tiny_settings(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDPRUNE_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "synthetic data: True" in text
    assert "Traceback" not in text
    for expected in EXPECTED[path.name]:
        assert expected in text, expected
