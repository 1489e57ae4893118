"""The `medprune` command: help everywhere, one-line errors, train → evaluate end to end."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medprune.cli import main
from tests.conftest import ROOT, write_yaml

HELP_PATHS = [[], ["train"], ["evaluate"], ["validate"], ["models"], ["data"], ["data", "phantom"],
              ["data", "index"], ["data", "index", "dmr"]]


@pytest.mark.parametrize("argv", HELP_PATHS, ids=lambda a: " ".join(a) or "top")
def test_help_on_every_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage:" in out
    if not argv:
        for cmd in ("train", "evaluate", "validate", "models", "data"):
            assert cmd in out


def test_console_script_runs_as_a_process() -> None:
    proc = subprocess.run([sys.executable, "-m", "medprune.cli", "models"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0
    assert {"inception_v3", "inception_v4", "inception_mv4"} <= set(proc.stdout.split())


def test_bad_config_is_one_line_without_traceback(tmp_path: Path, tiny_config_dict: dict,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    tiny_config_dict["optim"]["lr"] = -1
    path = write_yaml(tmp_path / "x.yaml", tiny_config_dict)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"medprune: error: {path}: optim.lr: must be > 0, got -1"


def test_bad_override_and_validate(tmp_path: Path, tiny_config_dict: dict, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_yaml(tmp_path / "x.yaml", tiny_config_dict)
    assert main(["validate", str(path), "optim.epochs=2"]) == 0
    assert "epochs: 2" in capsys.readouterr().out
    assert main(["validate", str(path), "optim.epochs=zero"]) == 2
    assert "optim.epochs: must be an integer" in capsys.readouterr().err


def test_phantom_command_writes_synthetic_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ph"
    assert main(["data", "phantom", "thermography", "--out", str(out), "--patients", "8", "--imbalance", "3",
                 "--seed", "4"]) == 0
    assert "synthetic" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert len({r["patient_id"] for r in rows}) == 8
    assert {r["label"] for r in rows} == {"healthy", "sick"}


def test_train_then_evaluate_gives_the_same_numbers(tmp_path: Path, tiny_config_dict: dict,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = write_yaml(tmp_path / "x.yaml", tiny_config_dict)
    assert main(["train", str(path)]) == 0
    out = capsys.readouterr().out
    run = Path(tiny_config_dict["runtime"]["out_dir"]) / "tiny"
    assert str(run) in out and "balanced accuracy" in out and "SYNTHETIC" in out
    assert main(["train", str(path)]) == 2  # refuses to overwrite a finished run
    assert "--resume" in capsys.readouterr().err
    ev = tmp_path / "eval"
    assert main(["evaluate", str(path), "--checkpoint", str(run / "checkpoints" / "best.pt"), "--out", str(ev)]) == 0
    trained = json.loads((run / "metrics.json").read_text())
    evaluated = json.loads((ev / "metrics.json").read_text())
    for key in ("balanced_accuracy", "per_class", "confusion_matrix", "ci", "patient"):
        assert evaluated[key] == trained[key], key
    assert (ev / "roc.png").is_file() and (ev / "confusion_matrix.png").is_file()
    assert main(["evaluate", str(path), "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(ev)]) == 2
    assert "nope.pt: checkpoint not found" in capsys.readouterr().err


def _manifest_with_bad_rows(tmp_path: Path) -> Path:
    from medprune.data import make_phantom

    manifest = make_phantom("thermography", tmp_path / "ph", patients=8, imbalance=1.0, views=2, size=(32, 40), seed=0)
    (manifest.parent / "empty.txt").write_bytes(b"")
    (manifest.parent / "nan.txt").write_text("30.0 nan 31.0\n" * 20)
    with manifest.open("a", newline="") as fh:
        header = next(csv.reader(manifest.open()))
        writer = csv.DictWriter(fh, fieldnames=header)
        first = next(csv.DictReader(manifest.open()))
        writer.writerow({**first, "path": "empty.txt", "patient_id": "PX1"})
        writer.writerow({**first, "path": "nan.txt", "patient_id": "PX2"})
        writer.writerow({**first, "label": "tumour", "patient_id": "PX3"})
    return manifest


def test_bad_samples_stop_before_training_listing_every_row(tmp_path: Path, tiny_config_dict: dict,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _manifest_with_bad_rows(tmp_path)
    tiny_config_dict["data"].pop("phantom")
    tiny_config_dict["data"]["manifest"] = str(manifest)
    path = write_yaml(tmp_path / "x.yaml", tiny_config_dict)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "3 bad sample(s)" in err and "Traceback" not in err
    assert "empty.txt" in err and "nan.txt" in err and "tumour" in err
    run = Path(tiny_config_dict["runtime"]["out_dir"]) / "tiny"
    assert not (run / "checkpoints").exists()  # stopped before training
    assert main(["train", str(path), "data.on_bad_sample=skip", "optim.epochs=1"]) == 0
    rows = list(csv.DictReader((run / "bad_samples.csv").open()))
    assert len(rows) == 3 and all(r["reason"] for r in rows)
