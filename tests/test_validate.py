"""`medprune validate`: reports a missing manifest or missing listed files, and imports lightly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medprune.cli import main
from tests.conftest import ROOT, write_yaml


def _with_manifest(tiny_config_dict: dict, manifest: Path) -> dict:
    tiny_config_dict["data"].pop("phantom")
    tiny_config_dict["data"]["manifest"] = str(manifest)
    return tiny_config_dict


def test_validate_reports_a_missing_manifest(tmp_path: Path, tiny_config_dict: dict,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = write_yaml(tmp_path / "x.yaml", _with_manifest(tiny_config_dict, tmp_path / "nope.csv"))
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"medprune: error: {path}: data.manifest: {tmp_path / 'nope.csv'}: " \
                                               "file not found"


def test_validate_reports_listed_files_that_do_not_exist(tmp_path: Path, tiny_config_dict: dict,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from medprune.data import make_phantom

    manifest = make_phantom("thermography", tmp_path / "ph", patients=6, imbalance=1.0, views=2, size=(32, 40), seed=0)
    path = write_yaml(tmp_path / "x.yaml", _with_manifest(tiny_config_dict, manifest))
    assert main(["validate", str(path)]) == 0
    assert "12 samples from 6 patients, every listed file exists" in capsys.readouterr().out
    first = next(p for p in sorted((tmp_path / "ph").rglob("*.txt")))
    first.unlink()
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: data.manifest: {manifest}: 1 of 12 listed file(s) do not exist, e.g. {first}" in err
    manifest.write_text("path,label\nx.txt,sick\n")
    assert main(["validate", str(path)]) == 2
    assert "data.manifest:" in (err := capsys.readouterr().err) and "missing required column(s) patient_id" in err


def test_validate_summarises_its_sources(tmp_path: Path, tiny_config_dict: dict,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = write_yaml(tmp_path / "x.yaml", tiny_config_dict)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "data.phantom: SYNTHETIC thermography phantom, 12 patients x 2 views" in out and out.rstrip().endswith(
        f"{path}: ok")


def test_validate_imports_no_heavy_libraries(tmp_path: Path, tiny_config_dict: dict) -> None:
    """It took 5 s because the registry imported timm and torchvision (and Torch-Pruning imports both)."""
    path = write_yaml(tmp_path / "x.yaml", tiny_config_dict)
    probe = ("import sys, json; from medprune.cli import main; code = main(['validate', sys.argv[1]]); "
             "heavy = ('timm', 'torchvision', 'torch_pruning', 'onnx', 'onnxruntime', 'monai', 'tensorboard'); "
             "loaded = [m for m in heavy if type(sys.modules.get(m)).__name__ == 'module']; "
             "print(json.dumps({'code': code, 'loaded': loaded}), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    result = json.loads(proc.stderr.strip().splitlines()[-1])
    assert result == {"code": 0, "loaded": []}
