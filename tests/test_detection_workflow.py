"""The two-stage IVOCT detector through the whole engine: stage 1 run or reused, cleaned frames,
detector trained, pruned, calibrated, exported (both stages as one graph), predicted, reported."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medprune.cli import main
from tests.conftest import TINY_SEGMENTATION_CONFIG, write_yaml

pytestmark = pytest.mark.slow

#: Stage 2 on the tiny stage-1 experiment (its file is written beside this one as seg.yaml).
TINY_DETECTION_CONFIG = {
    "name": "tiny_det",
    "task": "detection",
    "task_options": {"max_boxes": 6},
    "data": {"stage1": "seg.yaml", "classes": ["background", "plaque"], "label_classes": ["normal", "plaque"],
             "image_size": [48, 96], "channels": "gray", "mean": 0.1, "std": 0.2,
             "augmentation": [{"name": "HorizontalFlip", "p": 0.5}]},
    "model": {"name": "faster_rcnn", "kwargs": {
        "backbone": "resnet18", "width": 0.125, "fpn_channels": 128, "representation_size": 256,
        "rpn_pre_nms_top_n": 50, "rpn_post_nms_top_n": 20, "box_batch_size_per_image": 16, "max_detections": 5}},
    "optim": {"optimizer": "adam", "lr": 0.002, "batch_size": 4, "epochs": 2},
    "eval": {"n_bootstrap": 50},
    "runtime": {"seed": 0, "device": "cpu", "workers": 0, "progress": False},
    "compress": {"criterion": "l1", "ratio": 0.5, "finetune": {"epochs": 1}, "calibration": {"batches": 2, "batch_size": 4},
                 "safety": {"max_worst_class_drop": None}},
    "bench": {"rounds": 3, "per_round": 1},
}


def write_two_stage(root: Path) -> Path:
    """seg.yaml (stage 1) and det.yaml (stage 2) under ``root``, both writing into ``root/runs``."""
    seg = copy.deepcopy(TINY_SEGMENTATION_CONFIG)
    seg["runtime"]["out_dir"] = str(root / "runs")
    seg["compress"] = {"criterion": "l1", "ratio": 0.5, "finetune": {"epochs": 1},
                       "calibration": {"batches": 2, "batch_size": 4}, "safety": {"max_worst_class_drop": None}}
    seg["bench"] = {"rounds": 3, "per_round": 1}
    write_yaml(root / "seg.yaml", seg)
    det = copy.deepcopy(TINY_DETECTION_CONFIG)
    det["runtime"]["out_dir"] = str(root / "runs")
    return write_yaml(root / "det.yaml", det)


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory):
    root = tmp_path_factory.mktemp("twostage")
    path = write_two_stage(root)
    assert main(["run", str(path)]) == 0
    return root, path, root / "runs" / "tiny_det"


def _statuses(run: Path) -> dict[str, str]:
    return {k: v["status"] for k, v in json.loads((run / "run.json").read_text())["stages"].items()}


def test_two_stage_run_trains_stage_one_then_the_detector_on_its_cleaned_frames(two_stage) -> None:
    root, _, run = two_stage
    seg_run = root / "runs" / "tiny_seg"
    assert _statuses(seg_run)["calibrate"] == "done"
    assert {k: v for k, v in _statuses(run).items()} == {
        "train": "done", "baselines": "not_applicable", "pool": "not_applicable", "prune": "done",
        "quantize": "not_applicable",
        "calibrate": "done", "export": "done", "bench": "done", "degradation": "not_applicable",
        "report": "done"}
    # the cleaned frames keep stage 1's patient split: no pullback stage 1 tested on is trained on here
    seg_split = json.loads((seg_run / "splits.json").read_text())
    import csv

    rows = list(csv.DictReader((run / "stage1" / "manifest.csv").open()))
    for split in ("train", "val", "test"):
        assert sorted({r["patient_id"] for r in rows if r["split"] == split}) == sorted(seg_split[split])
    stamp = json.loads((run / "stage1" / "stage1.json").read_text())
    threshold = json.loads((seg_run / "calibration.json").read_text())["threshold"]
    assert stamp["threshold"] == threshold and stamp["model"] == "compressed"
    # a cleaned frame is the raw frame where stage 1 keeps it and 0 elsewhere
    row = next(r for r in rows if r["split"] == "test")
    cleaned = np.asarray(Image.open(run / "stage1" / row["path"]))
    raw = np.asarray(Image.open((run / "stage1" / row["source"]).resolve()))
    kept = cleaned > 0
    assert 0 < kept.mean() < 1 and np.abs(cleaned[kept].astype(int) - raw[kept].astype(int)).max() <= 1


def _strict(text: str) -> dict:
    """JSON as other tools read it: NaN and Infinity are not JSON."""
    return json.loads(text, parse_constant=lambda token: pytest.fail(f"{token} in a JSON file"))


def test_detection_metrics_hold_every_key_with_pullback_intervals(two_stage) -> None:
    _, _, run = two_stage
    for line in (run / "metrics.jsonl").read_text().splitlines():  # no validation loss: null, not NaN
        record = _strict(line)
        assert record["val_loss"] is None and record["val_ap50"] is not None
    for folder in (run, run / "compressed"):
        metrics = _strict((folder / "metrics.json").read_text())
        assert metrics["task"] == "detection" and metrics["bootstrap_unit"] == "patient"
        for key in ("ap50", "map", "recall", "precision", "iou", "total", "interval_recall", "interval_precision",
                    "interval_iou", "interval_total"):
            assert key in metrics and key in metrics["ci"], key
        assert set(metrics["per_size"]) == {"small", "medium", "large"}
        assert metrics["per_class"]["plaque"]["support"] == metrics["counts"]["n_frames_with_plaque"] > 0
        frames = json.loads((folder / "predictions.json").read_text())["frames"]
        assert len(frames) == metrics["n_frames"]
    summary = json.loads((run / "compressed" / "prune_summary.json").read_text())
    assert summary["macs_after"] < summary["macs_before"] and summary["gate"]["metric"] == "recall"
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["kind"] == "score_threshold" and len(calibration["curve"]) == 19


def test_both_stages_export_to_onnx_matching_pytorch(two_stage) -> None:
    _, _, run = two_stage
    export = json.loads((run / "export" / "export.json").read_text())
    for part in ("fp32", "two_stage"):
        assert export[part]["passed"] and export[part]["max_abs_diff"] < 1e-3, part
    import onnxruntime as ort

    session = ort.InferenceSession(str(run / "export" / "two_stage.onnx"))
    (inp,) = session.get_inputs()
    assert inp.shape == [1, 1, 48, 96]  # one raw frame in
    out = session.run(None, {inp.name: np.zeros((1, 1, 48, 96), np.float32)})[0]
    assert out.shape == (1, 5, 6)  # [x0, y0, x1, y1, score, label] x max_detections
    bench = json.loads((run / "bench.json").read_text())
    assert bench["models"]["compressed"]["macs"] < bench["models"]["base"]["macs"]
    assert "Recall by plaque size" in (run / "report.html").read_text()


def test_predict_runs_both_stages_and_writes_boxes_intervals_and_overlays(two_stage, tmp_path, capsys) -> None:
    root, path, _ = two_stage
    frames = sorted((root / "runs" / "tiny_seg" / "phantom" / "frames").rglob("*.png"))[:2]
    args = ["predict", str(path), "--out", str(tmp_path / "pred")]
    for f in frames:
        args += ["--input", str(f)]
    assert main(args) == 0
    result = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert result["task"] == "detection" and result["calibration"]["kind"] == "score_threshold"
    assert result["stages"]["stage1"]["background_threshold"] == pytest.approx(
        json.loads((root / "runs" / "tiny_seg" / "calibration.json").read_text())["threshold"])
    for record in result["inputs"]:
        assert len(record["boxes"]) == len(record["scores"]) and all(s >= result["calibration"]["threshold"]
                                                                    for s in record["scores"])
        assert all(0 <= a < 360 and 0 <= b <= 360 for a, b in record["intervals_deg"])
        polar = np.asarray(Image.open(tmp_path / "pred" / record["files"][0]))
        cart = np.asarray(Image.open(tmp_path / "pred" / record["files"][1]))
        assert polar.shape == (48, 96, 3) and cart.shape == (96, 96, 3)
    assert "score threshold" in capsys.readouterr().out


def test_a_second_run_reuses_both_stages(two_stage, caplog) -> None:
    root, path, run = two_stage
    files = [run / "stage1" / "stage1.json", root / "runs" / "tiny_seg" / "run.json"]
    before = [f.stat().st_mtime_ns for f in files]
    with caplog.at_level("INFO", logger="medprune"):
        assert main(["run", str(path)]) == 0
    reused = [r.getMessage() for r in caplog.records if "reusing" in r.getMessage()]
    assert sum("tiny_det" in m for m in reused) == 6  # train, prune, calibrate, export, bench, report
    # the cleaned frames were made by stage 1's current model: stage 1 is not even visited
    assert not any("tiny_seg" in m for m in reused)
    assert [f.stat().st_mtime_ns for f in files] == before
