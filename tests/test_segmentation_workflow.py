"""Segmentation through the whole engine: train, evaluate, prune, calibrate, export, predict — one task layer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medprune.cli import main
from tests.conftest import write_yaml

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    import copy

    from tests.conftest import TINY_SEGMENTATION_CONFIG

    root = tmp_path_factory.mktemp("segrun")
    data = copy.deepcopy(TINY_SEGMENTATION_CONFIG)
    data["runtime"]["out_dir"] = str(root / "runs")
    data["compress"] = {"criterion": "l1", "ratio": 0.5, "finetune": {"epochs": 1},
                        "calibration": {"batches": 2, "batch_size": 4}, "safety": {"max_worst_class_drop": None}}
    data["bench"] = {"rounds": 3, "per_round": 1}
    path = write_yaml(root / "seg.yaml", data)
    assert main(["run", str(path)]) == 0
    return root, path, root / "runs" / "tiny_seg"


def test_run_trains_prunes_calibrates_exports_and_reports(seg_run) -> None:
    _, _, run = seg_run
    record = json.loads((run / "run.json").read_text())
    assert record["task"] == "segmentation"
    assert {k: v["status"] for k, v in record["stages"].items()} == {
        "train": "done", "baselines": "not_applicable", "pool": "not_applicable", "prune": "done",
        "quantize": "not_applicable",
        "calibrate": "done", "export": "done", "bench": "done", "degradation": "not_applicable",
        "report": "done"}
    for folder in (run, run / "compressed"):
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["task"] == "segmentation" and set(metrics["per_class"]) == {"tissue", "plaque"}
        assert 0.0 <= metrics["mean_dice"] <= 1.0 and "per_class.plaque.dice" in metrics["ci"]
        assert (folder / "predictions.csv").is_file() and (folder / "overlays.png").is_file()
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"val_mean_dice", "val_worst_class_dice", "val_dice_plaque"} <= set(lines[-1])
    summary = json.loads((run / "compressed" / "prune_summary.json").read_text())
    assert summary["macs_after"] < summary["macs_before"] and summary["gate"]["metric"] == "worst_class_dice"
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["kind"] == "background_threshold" and 0.05 <= calibration["threshold"] <= 0.95
    assert len(calibration["curve"]) == 19 and calibration["model"] == "compressed"
    assert (run / "calibration.png").is_file()
    export = json.loads((run / "export" / "export.json").read_text())
    assert export["fp32"]["passed"] and export["fp32"]["max_abs_diff"] < 1e-3
    bench = json.loads((run / "bench.json").read_text())
    assert bench["models"]["compressed"]["macs"] < bench["models"]["base"]["macs"]


def test_calibration_picks_the_best_threshold_of_its_curve(seg_run) -> None:
    _, _, run = seg_run
    calibration = json.loads((run / "calibration.json").read_text())
    best = max((d, -abs(t - 0.5)) for t, d in calibration["curve"] if d is not None)[0]
    assert calibration["foreground_dice"] == pytest.approx(best)
    assert dict(map(tuple, calibration["curve"]))[calibration["threshold"]] == pytest.approx(best)


def test_predict_from_the_config_writes_masks_overlays_and_background_removed_frames(seg_run, tmp_path,
                                                                                      capsys) -> None:
    _, path, run = seg_run
    frames = sorted((run / "phantom" / "frames").rglob("*.png"))[:2]
    out = tmp_path / "pred"
    args = ["predict", str(path), "--out", str(out)]
    for frame in frames:
        args += ["--input", str(frame)]
    assert main(args) == 0
    result = json.loads((out / "predictions.json").read_text())
    assert result["task"] == "segmentation" and result["model"].endswith("compressed/model.pt")
    assert result["calibration"]["kind"] == "background_threshold"
    for record, frame in zip(result["inputs"], frames):
        assert record["input"] == str(frame.resolve())
        assert sum(record["pixels"].values()) == 48 * 96
        assert sum(record["fraction"].values()) == pytest.approx(1.0)
        files = {Path(f).name.split("_", 1)[1] for f in record["files"]}
        assert files == {f"{frame.stem}_mask.png", f"{frame.stem}_overlay.png", f"{frame.stem}_background_removed.png"}
        mask = np.asarray(Image.open(out / record["files"][0]))
        assert mask.shape == (48, 96) and set(np.unique(mask)) <= {0, 1, 2}
        counts = np.bincount(mask.ravel(), minlength=3)
        assert counts.tolist() == [record["pixels"][c] for c in ("background", "tissue", "plaque")]
        removed = np.asarray(Image.open(out / record["files"][2]))
        assert removed.shape == (48, 96)
    assert "background threshold" in capsys.readouterr().out


def test_predict_with_a_model_file_alone_and_bad_inputs(seg_run, tmp_path, capsys) -> None:
    _, _, run = seg_run
    frame = sorted((run / "phantom" / "frames").rglob("*.png"))[0]
    out = tmp_path / "p2"
    assert main(["predict", str(run / "compressed" / "model.pt"), "--input", str(frame), "--out", str(out)]) == 0
    record = json.loads((out / "predictions.json").read_text())["inputs"][0]
    assert len(record["files"]) == 2  # no calibration travels with a bare model file
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    capsys.readouterr()
    assert main(["predict", str(run / "compressed" / "model.pt"), "--input", str(frame), "--input", str(broken),
                 "--out", str(tmp_path / "p3")]) == 2
    err = capsys.readouterr().err
    assert "1 input(s) cannot be read" in err and "broken.png (input 2)" in err and "Traceback" not in err
    assert not (tmp_path / "p3" / "predictions.json").exists()


def test_evaluate_a_segmentation_checkpoint(seg_run, tmp_path) -> None:
    _, path, run = seg_run
    out = tmp_path / "ev"
    assert main(["evaluate", str(path), "--checkpoint", str(run / "checkpoints" / "best.pt"), "--out", str(out)]) == 0
    again = json.loads((out / "metrics.json").read_text())
    trained = json.loads((run / "metrics.json").read_text())
    assert again["mean_dice"] == pytest.approx(trained["mean_dice"])
    assert again["per_class"] == trained["per_class"]


def test_predict_for_classification_gives_probabilities(tmp_path, tiny_config_dict) -> None:
    tiny_config_dict["optim"]["epochs"] = 1
    tiny_config_dict["compress"] = {"ratio": 0.0}
    tiny_config_dict["bench"] = {"enabled": False}
    path = write_yaml(tmp_path / "c.yaml", tiny_config_dict)
    assert main(["predict", str(path), "--input", "x.png", "--out", str(tmp_path / "p")]) == 2  # not trained yet
    assert main(["run", str(path)]) == 0
    images = sorted((Path(tiny_config_dict["runtime"]["out_dir"]) / "tiny" / "phantom").rglob("*.txt"))[:3]
    args = ["predict", str(path), "--out", str(tmp_path / "p")]
    for image in images:
        args += ["--input", str(image)]
    assert main(args) == 0
    result = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert result["task"] == "classification" and len(result["inputs"]) == 3
    for record in result["inputs"]:
        assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
        assert record["prediction"] == max(record["probabilities"], key=record["probabilities"].get)
        assert record["files"] == []


def test_sweep_speaks_the_segmentation_metrics(seg_run, capsys) -> None:
    _, path, run = seg_run
    assert main(["sweep", str(path), "--ratios", "0.25,0.5"]) == 0
    result = json.loads((run / "sweep" / "sweep.json").read_text())
    assert result["task"] == "segmentation"
    assert result["metrics"]["score"]["key"] == "mean_dice" and result["metrics"]["gate"]["key"] == "worst_class_dice"
    base = json.loads((run / "metrics.json").read_text())
    assert result["base"]["mean_dice"] == pytest.approx(base["mean_dice"])
    assert result["base"]["worst_class_dice"] == pytest.approx(base["worst_class_dice"])
    for point in result["points"]:
        metrics = json.loads((run / point["dir"] / "metrics.json").read_text())
        assert point["mean_dice"] == pytest.approx(metrics["mean_dice"])
        assert point["worst_class"] == min(metrics["per_class"], key=lambda c: metrics["per_class"][c]["dice"])
        assert point["macs"] < result["base"]["macs"]
    assert "mean Dice" in capsys.readouterr().out and (run / "sweep" / "frontier.png").is_file()
