"""HTML report of `medprune run`: self-contained, numbers from the run files, robust to missing parts."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from medprune.errors import DataError
from medprune.metrics import classification_metrics, write_predictions_csv
from medprune.metrics.classification import PER_CLASS_METRICS
from medprune.report import (
    TradeoffPoint,
    plot_confusion_matrix,
    plot_kept_channels,
    plot_latency_and_size,
    plot_per_class_metrics,
    plot_tradeoff,
    write_report,
)
from medprune.report.run_plots import _frontier
from medprune.tasks import ClassificationTask

TWO = ["healthy", "sick"]
THREE = ["normal", "benign", "malignant <grade 3>"]  # angle brackets: the report must escape them
BANNER = "SYNTHETIC phantom data — these numbers describe the phantom, not clinical performance"
DATA_URI = 'src="data:image/png;base64,'


def _metrics(classes: list[str], seed: int, signal: float, synthetic: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    n, k = 120, len(classes)
    y = (np.arange(n) // 4) % k  # one label per patient
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += signal
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    result = classification_metrics(y, probs, classes, patient_ids=[f"p{i // 4}" for i in range(n)],
                                    n_bootstrap=50, seed=seed)
    return {"split": "test", "synthetic_data": synthetic, **result}


def _evaluate(folder: Path, classes: list[str], seed: int, signal: float, *, only: int | None = None,
              n: int = 120, per_patient: int = 4) -> dict:
    """Write ``metrics.json`` and ``predictions.csv`` of a model into ``folder``; ``only``: predict one class."""
    rng = np.random.default_rng(seed)
    k = len(classes)
    y = (np.arange(n) // per_patient) % k
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += signal
    if only is not None:
        logits[:, only] += 50.0
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    pids = [f"p{i // per_patient}" for i in range(n)]
    metrics = {"split": "test", "synthetic_data": True,
               **classification_metrics(y, probs, classes, patient_ids=pids, n_bootstrap=50, seed=seed)}
    _write(folder / "metrics.json", metrics)
    write_predictions_csv(folder / "predictions.csv", np.arange(n), None, pids, y, probs, classes)
    return metrics


def _write(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


def _latency(median: float) -> dict:
    """A bench.json latency record (``LatencyStats.to_dict``: every field, the spread included)."""
    return {"median_ms": median, "mean_ms": median * 1.05, "min_ms": median * 0.9, "p10_ms": median * 0.95,
            "p90_ms": median * 1.2, "n": 7, "q1_ms": median * 0.97, "q3_ms": median * 1.1, "max_ms": median * 1.3}


def _make_run(root: Path, classes: list[str], *, synthetic: bool = True) -> Path:
    """A run directory as `medprune run` writes it: base, pruned (final) and quantized stages."""
    root.mkdir(parents=True)
    base = _metrics(classes, 0, 2.5, synthetic)
    _write(root / "metrics.json", base)
    (root / "config.yaml").write_text("name: tiny & small\nmodel: {name: small_cnn}\n", encoding="utf-8")
    plot_confusion_matrix(base["confusion_matrix"], classes, root / "confusion_matrix.png")
    for folder, seed, signal in (("compressed", 1, 1.2), ("quantized", 2, 1.1)):
        metrics = _metrics(classes, seed, signal, synthetic)
        _write(root / folder / "metrics.json", metrics)
        plot_confusion_matrix(metrics["confusion_matrix"], classes, root / folder / "confusion_matrix.png")
    plot_kept_channels({"conv1": (16, 8), "conv2": (32, 16)}, root / "compressed" / "kept_channels.png")
    _write(root / "compressed" / "prune_summary.json", {
        "criterion": "taylor", "schedule": "oneshot", "ratio": 0.5, "params_before": 40_000, "params_after": 11_000,
        "macs_before": 8_000_000, "macs_after": 2_000_000, "macs_reduction": 4.0,
        "safety_gate": "passed: validation worst-class sensitivity fell by 0.010 (limit 0.050)", "events": [],
        "synthetic_data": synthetic, "seconds": 12.0})
    _write(root / "run.json", {
        "name": "tiny & small", "config": "configs/tiny.yaml", "synthetic_data": synthetic,
        "stages": {"train": {"status": "done", "seconds": 30.5, "note": ""},
                   "pool": {"status": "not_applicable", "seconds": None, "note": "no pooling configured"},
                   "prune": {"status": "done", "seconds": 12.0, "note": ""},
                   "quantize": {"status": "done", "seconds": 3.0, "note": ""},
                   "export": {"status": "done", "seconds": 1.0, "note": ""},
                   "bench": {"status": "done", "seconds": 5.0, "note": ""},
                   "report": {"status": "running", "seconds": None, "note": ""}},
        "compressed_stages": [{"stage": "prune", "label": "pruned (taylor, ratio 0.50)", "dir": "compressed"},
                              {"stage": "quantize", "label": "Direct Quantization 4-bit", "dir": "quantized"}],
        "final": "compressed"})
    _write(root / "export" / "export.json", {
        "fp32": {"path": "export/model.onnx", "max_abs_diff": 3.2e-6, "max_rel_diff": 1e-5, "passed": True,
                 "seconds": 0.4},
        "int8": {"path": "export/model_int8.onnx", "max_abs_diff": 0.02, "max_rel_diff": 0.05, "passed": True,
                 "seconds": 0.8, "top1_agreement": 0.975}})
    # Speed-ups are BenchResult.speedup, the ratio of the medians (12 / 5 = 2.40×), whatever a stale
    # "speedup" key says.
    _write(root / "bench.json", {
        "input_size": [1, 40, 40], "batch": 1, "threads": 2, "method": "median of per-round minima",
        "machine": {"processor": "Test CPU 9000", "cpu_count": 2}, "versions": {"torch": "2.x", "onnxruntime": "1.x"},
        "models": {
            "base": {"params": 40_000, "macs": 8_000_000, "file_bytes": 1_200_000, "onnx_bytes": 1_150_000,
                     "latency_ms": {"torch": _latency(20.0), "onnxruntime": _latency(12.0)}},
            "compressed": {"params": 11_000, "macs": 2_000_000, "file_bytes": 390_000, "onnx_bytes": 380_000,
                           "latency_ms": {"torch": _latency(10.0), "onnxruntime": _latency(5.0)}},
            "compressed_int8": {"onnx_bytes": 120_000, "latency_ms": {"onnxruntime": _latency(4.0)}}},
        "speedup": {"compressed": {"torch": 2.0, "onnxruntime": 2.30}}})
    _write(root / "sweep" / "sweep.json", {
        "base": {"macs": 8_000_000, "ort_ms": 12.0, "balanced_accuracy": base["balanced_accuracy"],
                 "worst_class_sensitivity": base["worst_class_sensitivity"], "worst_class": classes[0]},
        "points": [{"criterion": "l1", "ratio": r, "macs": 8_000_000 * (1 - r) ** 2, "params": 1000,
                    "ort_ms": 12.0 * (1 - r), "balanced_accuracy": 0.9 - 0.3 * r * r,
                    "worst_class_sensitivity": 0.85 - 0.4 * r * r, "worst_class": classes[-1], "dir": f"sweep/l1_{r}"}
                   for r in (0.25, 0.5, 0.75)]})
    return root


@pytest.fixture(scope="module", params=[TWO, THREE], ids=["2-class", "3-class"])
def full_run(request, tmp_path_factory) -> tuple[Path, list[str], str]:
    root = _make_run(tmp_path_factory.mktemp("run") / "tiny", request.param)
    return root, request.param, write_report(root).read_text(encoding="utf-8")


def _data_uris(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def test_report_is_self_contained(full_run) -> None:
    root, _, text = full_run
    assert (root / "report.html").is_file()
    # Every image is inline: 4 drawn figures + kept channels + 3 confusion matrices, all valid PNGs.
    assert re.findall(r'src="([^"]*)"', text) and all(s.startswith("data:image/png;base64,")
                                                      for s in re.findall(r'src="([^"]*)"', text))
    images = _data_uris(text)
    assert len(images) == 8 and all(img[:8] == b"\x89PNG\r\n\x1a\n" for img in images)
    for forbidden in ("http://", "https://", "<script", "<link", "url(", "@import"):
        assert forbidden not in text
    drawn = sorted(p.name for p in root.glob("report_*.png"))
    assert drawn == ["report_latency_size.png", "report_per_class.png", "report_tradeoff_latency.png",
                     "report_tradeoff_macs.png"]
    assert all((root / name).read_bytes() in images for name in drawn)  # the kept files are what is embedded
    assert not list(root.glob(".*.tmp"))


def test_summary_numbers_come_from_the_run_files(full_run) -> None:
    root, classes, text = full_run
    base = json.loads((root / "metrics.json").read_text())
    pruned = json.loads((root / "compressed" / "metrics.json").read_text())
    summary = text[text.index('class="summary"'):text.index("</div>", text.index('class="summary"'))]
    # 2.40× is BenchResult.speedup (12 ms / 5 ms), not the stale 2.30× bench.json's "speedup" key holds.
    assert ("The final compressed model, pruned (taylor, ratio 0.50), is 2.40× faster on this CPU (Test CPU 9000; "
            "ONNX Runtime, 12 ms → 5 ms per image; PyTorch 2.00× faster)") in summary
    assert "3.08× smaller (1.14 MiB → 0.372 MiB)" in summary  # 1.2e6 / 3.9e5 bytes
    assert "4.00× fewer MACs (8 M → 2 M)" in summary
    ba, ba_ci = base["balanced_accuracy"], base["ci"]["balanced_accuracy"]
    assert (f"Balanced accuracy went from {ba:.2f} [{ba_ci[0]:.2f}, {ba_ci[1]:.2f}] "
            f"to {pruned['balanced_accuracy']:.2f}") in summary
    worst = min(classes, key=lambda c: (pruned["per_class"][c]["sensitivity"], classes.index(c)))
    assert f"worst class is {worst.replace('<', '&lt;').replace('>', '&gt;')}: its sensitivity went from " \
           f"{base['per_class'][worst]['sensitivity']:.2f}" in summary
    overlap = (ba_ci[0] <= pruned["ci"]["balanced_accuracy"][1] and pruned["ci"]["balanced_accuracy"][0] <= ba_ci[1])
    ba_sentence = summary[summary.index("Balanced accuracy went"):summary.index("The compressed model")]
    assert ("do not overlap" not in ba_sentence) == overlap
    assert "The other compressed stage (Direct Quantization 4-bit) is compared in the table below." in summary
    assert "Safety gate of pruned (taylor, ratio 0.50): passed: validation worst-class sensitivity fell by 0.010" \
        in summary


def test_banner_table_and_provenance(full_run) -> None:
    root, classes, text = full_run
    assert BANNER in text and "tiny &amp; small" in text and "tiny & small" not in text
    assert "<grade 3>" not in text and ("&lt;grade 3&gt;" in text) == (classes is THREE)
    base = json.loads((root / "metrics.json").read_text())
    cls = classes[-1]
    value, ci = base["per_class"][cls]["npv"], base["ci"][f"per_class.{cls}.npv"]
    assert f"{value:.3f} <span class=\"ci\">[{ci[0]:.3f}, {ci[1]:.3f}]</span>" in text
    # ▼ marks exactly the compressed cells below the base model's interval (the legend holds one more);
    # ECE (lower is better) has its row too, where ▼ is an improvement.
    expected = 0
    for folder in ("compressed", "quantized"):
        m = json.loads((root / folder / "metrics.json").read_text())
        rows = [(m[s.key], base["ci"][s.key]) for s in ClassificationTask.summary_metrics]
        rows += [(m["per_class"][c][q], base["ci"][f"per_class.{c}.{q}"]) for c in classes for q in PER_CLASS_METRICS]
        expected += sum(v is not None and c is not None and v < c[0] for v, c in rows)
    assert text.count("▼") == expected + 1 and expected > 0
    assert "pruned (taylor, ratio 0.50) · INT8 ONNX" in text and "<td>3.00×</td>" in text  # 12 ms / 4 ms
    assert "<td>97.5 %</td>" in text and "<td>3.2e-06</td>" in text  # INT8 top-1 agreement, FP32 parity
    assert "<td>not_applicable</td><td></td><td>no pooling configured</td>" in text
    assert "Test CPU 9000" in text and "name: tiny &amp; small" in text


def test_report_without_optional_files(tmp_path) -> None:
    root = _make_run(tmp_path / "run", TWO, synthetic=False)
    for name in ("bench.json", "export", "sweep", "run.json", "compressed/kept_channels.png"):
        path = root / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    (root / "report_latency_size.png").write_bytes(b"stale")  # from an earlier report with a bench
    text = write_report(root).read_text(encoding="utf-8")
    assert BANNER not in text
    assert "Latency and size: not run (bench.json not found)." in text
    assert "Latency and file size were not measured (bench not run)." in text
    assert "Export: not run (export/export.json not found)." in text
    assert "Pruning sweep: not run (sweep/sweep.json not found)." in text
    assert "Stage table: not run (run.json not found)." in text
    assert "Channels kept per layer: not run" in text
    # Without run.json the prune output folder is still found; MACs then come from prune_summary.json.
    assert "The final compressed model, pruned, needs 4.00× fewer MACs (8 M → 2 M)." in text
    assert not (root / "report_latency_size.png").exists()
    assert sorted(p.name for p in root.glob("report_*.png")) == ["report_per_class.png", "report_tradeoff_macs.png"]
    assert len(_data_uris(text)) == 4  # per-class, tradeoff, 2 confusion matrices


def test_base_only_and_broken_optional_file(tmp_path) -> None:
    root = tmp_path / "run"
    _write(root / "metrics.json", _metrics(THREE, 0, 2.0))
    (root / "bench.json").write_text("{ not json", encoding="utf-8")
    out = write_report(root, out=tmp_path / "elsewhere" / "r.html")
    text = out.read_text(encoding="utf-8")
    assert out == tmp_path / "elsewhere" / "r.html" and not (root / "report.html").exists()
    assert (root / "report_per_class.png").stat().st_size > 0
    assert "This report describes the base model only: no compression stage ran." in text
    assert 'bench.json could not be read: Expecting property name' in text  # shown, not hidden
    assert "config.yaml not found." in text


def test_speedup_without_recorded_value_comes_from_medians(tmp_path) -> None:
    root = _make_run(tmp_path / "run", TWO)
    bench = json.loads((root / "bench.json").read_text())
    del bench["speedup"]
    _write(root / "bench.json", bench)
    (root / "export" / "export.json").write_text("", encoding="utf-8")
    text = write_report(root).read_text(encoding="utf-8")
    assert "is 2.40× faster on this CPU (Test CPU 9000; ONNX Runtime, 12 ms → 5 ms per image" in text  # 12 / 5
    assert "<td>2.40×</td>" in text and "<td>3.00×</td>" in text
    assert "export/export.json could not be read: Expecting value" in text


def test_missing_base_metrics_names_the_file(tmp_path) -> None:
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "metrics.json")) + ": base model metrics not found"):
        write_report(tmp_path)
    (tmp_path / "metrics.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(DataError, match="metrics.json: expected a JSON object"):
        write_report(tmp_path)
    _write(tmp_path / "metrics.json", {"accuracy": 0.9})
    with pytest.raises(DataError, match="metrics.json: no per_class section"):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


# ----------------------------------------------------------------------------- plot functions


def _png_shape(path: Path) -> tuple[int, ...]:
    assert path.stat().st_size > 0 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(path)
    assert image[..., :3].std() > 0.05
    return image.shape


def test_per_class_plot_missing_values_and_bad_class(tmp_path) -> None:
    two = {"base": _metrics(TWO, 0, 2.0), "pruned": _metrics(TWO, 1, 1.0)}
    three = {"base": _metrics(THREE, 0, 2.0), "pruned": _metrics(THREE, 1, 1.0), "int4": _metrics(THREE, 2, 0.8)}
    three["int4"]["ci"] = {}  # no intervals: bars without error bars
    three["int4"]["per_class"][THREE[0]]["auc"] = None  # undefined value: "n/a"
    shape = _png_shape(plot_per_class_metrics(three, THREE, tmp_path / "three.png", metrics=("sensitivity", "auc")))
    assert shape[1] > 1.5 * shape[0]  # two panels side by side
    with pytest.raises(DataError, match="'base' has no per_class entry for class 'x'"):
        plot_per_class_metrics(two, ["healthy", "x"], tmp_path / "bad.png")


def test_tradeoff_plot_and_frontier(tmp_path) -> None:
    assert _frontier([8.0, 4.0, 2.0, 3.0, 1.0], [0.9, 0.88, 0.7, 0.6, 0.5]) == ([1.0, 2.0, 4.0, 8.0],
                                                                                [0.5, 0.7, 0.88, 0.9])
    points = [TradeoffPoint("base", "base", 8e6, 12.0, 0.9, 0.85, (0.85, 0.95), (0.7, 0.95)),
              TradeoffPoint("pruned", "stage", 2e6, 5.0, 0.88, 0.8, (0.8, 0.93), None),
              TradeoffPoint("no cost", "stage", None, None, 0.8, 0.7),
              *[TradeoffPoint(f"l1 {r}", "sweep", 8e6 * (1 - r), None, 0.9 - r / 4, 0.8 - r / 3)
                for r in (0.2, 0.4, 0.6)]]
    assert _png_shape(plot_tradeoff(points, tmp_path / "ms.png", x="ort_ms"))[1] > 400  # sweep points lack ort_ms
    with pytest.raises(DataError, match="x must be 'macs' or 'ort_ms'"):
        plot_tradeoff(points, tmp_path / "bad.png", x="params")
    with pytest.raises(DataError, match="no point has both ort_ms and a metric"):
        plot_tradeoff(points[2:], tmp_path / "bad.png", x="ort_ms")


def test_latency_and_size_plot(tmp_path) -> None:
    models = {"base": {"file_bytes": 1.2e6, "onnx_bytes": 1.1e6,
                       "latency_ms": {"torch": _latency(20.0), "onnxruntime": _latency(12.0)}},
              "pruned": {"file_bytes": 3.9e5, "onnx_bytes": 3.8e5,
                         "latency_ms": {"torch": _latency(10.0), "onnxruntime": _latency(5.0)}},
              "pruned INT8": {"onnx_bytes": 1.2e5, "latency_ms": {"onnxruntime": _latency(4.0)}}}
    assert _png_shape(plot_latency_and_size(models, tmp_path / "lat.png").path)[1] > 400
    assert _png_shape(plot_latency_and_size({"base": {"file_bytes": 1e6}}, tmp_path / "size_only.png").path)[0] > 100
    with pytest.raises(DataError, match="no model has a measured latency or a file size"):
        plot_latency_and_size({"base": {}}, tmp_path / "bad.png")
    with pytest.raises(DataError, match="no models"):
        plot_latency_and_size({}, tmp_path / "bad.png")


# ----------------------------------------------------------------------------- curves, ROC, calibration, latency


def _log(path: Path, val_losses: list[float]) -> None:
    rows = [{"epoch": i + 1, "lr": 0.01, "train_loss": 0.8 - 0.03 * i, "val_loss": v, "val_balanced_accuracy": 0.6,
             "val_worst_class_sensitivity": 0.4, "val_sensitivity_sick": 0.4} for i, v in enumerate(val_losses)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_curves_roc_and_calibration_sections(tmp_path) -> None:
    from medprune.report import plot_training_curves
    from medprune.report._run_dir import load_run_dir

    root = _make_run(tmp_path / "run", TWO)
    _log(root / "metrics.jsonl", [0.7, 97.5, 0.5, 0.45, 0.4, 0.35, 0.3])
    for folder in ("compressed/finetune_step10", "compressed/finetune_step2", "compressed/finetune",
                   "quantized/finetune"):
        _log(root / folder / "metrics.jsonl", [0.5, 0.45, 0.4])
    for folder, seed, signal in (("", 0, 2.5), ("compressed", 1, 1.2), ("quantized", 2, 1.1)):
        _evaluate(root / folder, TWO, seed, signal)
    text = write_report(root).read_text(encoding="utf-8")
    images = _data_uris(text)
    for name in ("report_training_curves.png", "report_roc.png", "report_reliability.png"):
        assert (root / name).read_bytes() in images
    assert len(images) == 11  # the 8 of a run without logs or predictions, and these 3
    assert "ROC of the minority class, sick (with two classes the other curve is its mirror)" in text

    # The curves figure holds the base training and every fine-tuning, in pipeline order.
    data = load_run_dir(root)
    logs = [log for model in data.models for log in model.logs]
    assert [log.label for log in logs] == ["base training", "compressed/finetune", "compressed/finetune_step2",
                                           "compressed/finetune_step10", "quantized/finetune"]
    plotted = plot_training_curves(logs, tmp_path / "curves.png")
    assert plotted.panels[0].yscale == "log"
    assert sum(s.endswith(("train loss", "val loss")) for s in plotted.panels[0].series) == 10
    assert plotted.values["base training / val_loss outliers"] == 1
    assert "97.5 at epoch 2" in json.loads((root / "report_warnings.json").read_text())[0]["message"]


def test_latency_one_panel_per_runtime(tmp_path) -> None:
    models = {"base": {"file_bytes": 1.2e6, "onnx_bytes": 1.1e6,
                       "latency_ms": {"torch": _latency(200.0), "onnxruntime": _latency(12.0)}},
              "pruned": {"file_bytes": 3.9e5, "onnx_bytes": 3.8e5,
                         "latency_ms": {"torch": _latency(100.0), "onnxruntime": _latency(5.0)}},
              "pruned · INT8 ONNX": {"onnx_bytes": 1.2e5, "latency_ms": {"onnxruntime": _latency(1.5)}}}
    plotted = plot_latency_and_size(models, tmp_path / "lat.png", speedups={"pruned": {"onnxruntime": 2.3}})
    torch_, ort, size = plotted.panels
    assert (torch_.title, ort.title, size.title) == ("PyTorch latency", "ONNX Runtime latency", "Size on disk")
    assert {p.yscale for p in plotted.panels} == {"linear"}  # each runtime on its own axis
    assert torch_.series == ("base", "pruned") and ort.series == ("base", "pruned", "pruned · INT8 ONNX")
    assert plotted.values["pruned / onnxruntime speed-up"] == 2.3  # bench.json's paired estimate wins
    assert plotted.values["pruned · INT8 ONNX / onnxruntime speed-up"] == 8.0  # 12 / 1.5
    assert plotted.values["pruned / torch speed-up"] == 2.0
    only_ort = plot_latency_and_size({"base": models["base"] | {"latency_ms": {"onnxruntime": _latency(3.0)}}},
                                     tmp_path / "ort.png")
    assert [p.title for p in only_ort.panels] == ["ONNX Runtime latency", "Size on disk"]
