"""The report of a segmentation run: task-driven rows, headline, sections and warnings; typed run/bench records.

Every test writes a run directory by hand as `medprune run` writes one for a segmentation config —
``metrics.json`` from :func:`medprune.metrics.segmentation_metrics` on synthetic masks, ``run.json``
as a :class:`RunRecord`, ``bench.json`` as a :class:`BenchResult`, ``metrics.jsonl`` with the
segmentation task's epoch record — and reads the report and ``report_warnings.json`` beside it.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from medprune.compress.latency import BenchEntry, BenchResult, LatencyStats
from medprune.metrics import SegmentationMetrics, write_segmentation_predictions_csv
from medprune.report import DEGENERATE_OUTPUT, HeadlineMetrics, plot_metric_by_class, sentence_label, write_report
from medprune.report._run_dir import PREDICTION_READERS, load_run_dir
from medprune.report._task_sections import EVALUATION_SECTIONS
from medprune.report.evaluation import plot_segmentation_overlays
from medprune.report.records import CompressedStage, RunRecord, StageRecord
from medprune.tasks import list_tasks, task_class

CLASSES = ["background", "tissue", "plaque"]
PRUNED = "pruned (l1, ratio 0.50)"
N, SIZE = 12, 24


def _masks(plaque_shift: int | None, tissue_shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Targets (a tissue band everywhere, a plaque square in every other image) and a prediction that
    shifts the band by ``tissue_shift`` rows and the square by ``plaque_shift`` (``None``: no plaque at all)."""
    target = np.zeros((N, SIZE, SIZE), dtype=np.int64)
    pred = np.zeros_like(target)
    target[:, 4:10, :] = 1
    pred[:, 4 + tissue_shift:10 + tissue_shift, :] = 1
    for i in range(0, N, 2):
        target[i, 14:20, 8:14] = 2
        if plaque_shift is not None:
            pred[i, 14 + plaque_shift:20 + plaque_shift, 8:14] = 2
    return pred, target


def _evaluate(folder: Path, plaque_shift: int | None, tissue_shift: int) -> dict:
    """``metrics.json`` (with ``task``, as a segmentation evaluation writes it) and the per-image scores CSV."""
    pred, target = _masks(plaque_shift, tissue_shift)
    metric = SegmentationMetrics(CLASSES, n_bootstrap=50, seed=0)
    metric.update(pred, target, patient_ids=[f"p{i // 2}" for i in range(N)], sample_ids=list(range(N)))
    metrics = {"split": "test", "synthetic_data": True, "task": "segmentation", **metric.aggregate()}
    _write(folder / "metrics.json", metrics)
    write_segmentation_predictions_csv(folder / "predictions.csv", metric.predictions())
    return metrics


def _write(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


def _entry(median: float, macs: int) -> BenchEntry:
    stats = {rt: LatencyStats.from_samples([median * f for f in (0.9, 0.95, 1.0, 1.0, 1.05, 1.1, 1.2)])
             for rt, median in (("torch", 2 * median), ("onnxruntime", median))}
    return BenchEntry(latency_ms=stats, params=macs // 100, macs=macs, file_bytes=macs // 20, onnx_bytes=macs // 21)


def _make_run(root: Path) -> Path:
    """Base (finds both classes) and a pruned model that never predicts plaque, with logs, bench and overlays."""
    base = _evaluate(root, plaque_shift=1, tissue_shift=0)
    _evaluate(root / "compressed", plaque_shift=None, tissue_shift=1)
    gate = {"status": "passed", "metric": "worst_class_dice", "baseline": 0.80, "value": 0.78, "drop": 0.02,
            "limit": 0.05, "message": "passed: validation worst class dice 0.800 -> 0.780 (drop 0.020 <= 0.05)",
            "warnings": []}
    record = RunRecord(name="tiny seg", config="seg.yaml", task="segmentation", synthetic_data=True,
                       stages={"train": StageRecord("done", 6.0), "prune": StageRecord("done", 4.5, gate=gate),
                               "bench": StageRecord("done", 1.0)},
                       compressed_stages=[CompressedStage("prune", PRUNED, "compressed", "passed")], final="compressed")
    _write(root / "run.json", record.to_dict())
    bench = BenchResult(models={"base": _entry(1.2, 6_000_000), "compressed": _entry(0.5, 2_400_000)},
                        input_size=[1, SIZE, SIZE], batch=1, threads=2, rounds=7, per_round=3,
                        machine={"processor": "Test CPU 9000"}, versions={"torch": "2.x"})
    _write(root / "bench.json", bench.to_dict())
    _write(root / "compressed" / "prune_summary.json", {"params_before": 60_000, "params_after": 24_000,
                                                        "macs_before": 6_000_000, "macs_after": 2_400_000,
                                                        "gate": gate, "events": []})
    rows = [{"epoch": e + 1, "lr": 0.01, "train_loss": 1.6 - 0.1 * e, "val_loss": 1.4 - 0.1 * e,
             "val_mean_dice": 0.5 + 0.05 * e, "val_worst_class_dice": 0.3 + 0.05 * e,
             "val_dice_tissue": 0.7 + 0.05 * e, "val_dice_plaque": 0.3 + 0.05 * e} for e in range(3)]
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    pred, target = _masks(1, 0)
    for folder in (root, root / "compressed"):
        plot_segmentation_overlays([target[0].astype(float)], [target[0]], [pred[0]], CLASSES, folder / "overlays.png")
    assert base["per_class"]["plaque"]["support"] == N // 2
    return root


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory) -> tuple[Path, str]:
    root = _make_run(tmp_path_factory.mktemp("seg") / "tiny_seg")
    return root, write_report(root).read_text(encoding="utf-8")


def _warnings(root: Path) -> list[dict]:
    return json.loads((root / "report_warnings.json").read_text(encoding="utf-8"))


def _data_uris(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def _cell(metrics: dict, key: str, value: float) -> str:
    lo, hi = metrics["ci"][key]
    return f'{value:.3f} <span class="ci">[{lo:.3f}, {hi:.3f}]</span>'


def test_every_registered_task_has_its_report_strategies() -> None:
    for name in list_tasks():
        task = task_class(name)
        lead = HeadlineMetrics.of(task)
        assert lead.gate.key == task.gate_metric and lead.score.key != task.gate_metric
        assert lead.per_class is task.per_class_metrics[0]
        assert name in EVALUATION_SECTIONS and name in DEGENERATE_OUTPUT and name in PREDICTION_READERS
    seg = task_class("segmentation")
    assert [sentence_label(s, seg) for s in (*seg.summary_metrics, *seg.per_class_metrics)] == [
        "mean Dice", "worst-class Dice", "Dice", "HD95 (px)", "sensitivity (pixels)", "PPV (pixels)"]


def test_table_rows_are_the_tasks_per_class_and_summary_metrics(seg_run) -> None:
    root, text = seg_run
    base = json.loads((root / "metrics.json").read_text())
    pruned = json.loads((root / "compressed" / "metrics.json").read_text())
    assert "background" not in base["per_class"] and "Class background" not in text
    for cls in ("tissue", "plaque"):
        assert f"Class {cls} (support {base['per_class'][cls]['support']})" in text
        assert _cell(base, f"per_class.{cls}.dice", base["per_class"][cls]["dice"]) in text
        assert _cell(base, f"per_class.{cls}.hd95", base["per_class"][cls]["hd95"]) in text
    assert text.count("<td>HD95 (px; lower is better)</td>") == 2 and text.count("<td>Dice</td>") == 2
    assert "<td>Mean Dice</td>" in text and "<td>Worst-class Dice</td>" in text
    assert _cell(base, "mean_dice", base["mean_dice"]) in text and _cell(pruned, "mean_dice", pruned["mean_dice"]) \
        in text
    # Tissue shifted by a row: Dice falls and HD95 rises outside the base's interval — both worse (red).
    hd = pruned["per_class"]["tissue"]["hd95"]
    assert pruned["ci"]["per_class.tissue.hd95"][0] > base["ci"]["per_class.tissue.hd95"][1]
    assert re.search(re.escape(f'<td class="worse">{_cell(pruned, "per_class.tissue.hd95", hd)}')
                     + r'(<sup class="mark">.</sup>)? ▲</td>', text)
    words = re.sub(r'src="data:image/png;base64,[^"]*"', "", text)
    for classification in ("balanced accuracy", "Balanced accuracy", "ECE", "Specificity", "AUC"):
        assert classification not in words
    assert "Files that could not be used" not in text  # the per-image scores CSVs are read, not refused


def test_headline_summary_and_curves_speak_dice(seg_run) -> None:
    root, text = seg_run
    base = json.loads((root / "metrics.json").read_text())
    pruned = json.loads((root / "compressed" / "metrics.json").read_text())
    headline = re.search(r'<p class="headline"><strong>(.*?)</strong></p>', text).group(1)
    assert headline == (f"worst-class Dice {base['worst_class_dice']:.2f} → {pruned['worst_class_dice']:.2f}, "
                        f"mean Dice {base['mean_dice']:.2f} → {pruned['mean_dice']:.2f} (base → {PRUNED})")
    assert f"Mean Dice went from {base['mean_dice']:.2f} [" in text
    assert pruned["per_class"]["plaque"]["dice"] == 0.0
    assert f"The compressed model&#x27;s worst class is plaque: its Dice went from " \
           f"{base['per_class']['plaque']['dice']:.2f} [" in text
    assert "Below: validation mean Dice and worst-class Dice per epoch." in text
    assert (root / "report_training_curves.png").read_bytes() in _data_uris(text)


def test_sections_dice_bar_and_overlays_no_roc(seg_run, tmp_path) -> None:
    root, text = seg_run
    images = _data_uris(text)
    assert "<h3>ROC</h3>" not in text and "<h3>Calibration</h3>" not in text and "Confusion matrix" not in text
    assert not (root / "report_roc.png").exists() and not (root / "report_reliability.png").exists()
    assert "<h3>Dice per class</h3>" in text and (root / "report_class_metric.png").read_bytes() in images
    assert "<h3>Overlays</h3>" in text
    assert (root / "overlays.png").read_bytes() in images
    assert (root / "compressed" / "overlays.png").read_bytes() in images
    assert f"Overlays — {PRUNED}" in text
    # The per-class Dice figure draws what metrics.json says, the summaries after the classes.
    base = json.loads((root / "metrics.json").read_text())
    plotted = plot_metric_by_class({"base": base}, ["tissue", "plaque"], tmp_path / "dice.png", metric="dice",
                                   label="Dice", summaries=[("mean Dice", "mean_dice"),
                                                            ("worst-class Dice", "worst_class_dice")])
    assert plotted.values == {"base / tissue": base["per_class"]["tissue"]["dice"],
                              "base / plaque": base["per_class"]["plaque"]["dice"],
                              "base / mean Dice": base["mean_dice"], "base / worst-class Dice": base["worst_class_dice"]}


def test_overlays_missing_are_said_missing(tmp_path) -> None:
    root = _make_run(tmp_path / "run")
    (root / "compressed" / "overlays.png").unlink()
    text = write_report(root).read_text(encoding="utf-8")
    assert (root / "overlays.png").read_bytes() in _data_uris(text)
    assert f"Overlays — {PRUNED}: not found." in text


def test_missed_class_warning_triggers_only_with_support(tmp_path) -> None:
    root = _make_run(tmp_path / "run")
    write_report(root)
    missed = [w for w in _warnings(root) if w["kind"] == "missed_class"]
    assert [w["model"] for w in missed] == [PRUNED]  # the base finds plaque; the pruned model never predicts it
    assert missed[0]["message"].startswith(f"{PRUNED} predicts no 'plaque' anywhere: not one pixel of any test "
                                           "image is labelled 'plaque' (Dice 0 and sensitivity 0 over the 6 test "
                                           "images that hold it)")
    assert "single_class" not in {w["kind"] for w in _warnings(root)}  # classification's check is not asked

    pruned_path = root / "compressed" / "metrics.json"
    pruned = json.loads(pruned_path.read_text())
    pruned["per_class"]["plaque"]["ppv"] = 0.0  # it labels plaque, but never where plaque is
    _write(pruned_path, pruned)
    text = write_report(root).read_text(encoding="utf-8")
    missed = [w for w in _warnings(root) if w["kind"] == "missed_class"]
    assert missed[0]["message"].startswith(f"{PRUNED} finds no 'plaque' anywhere: Dice 0 and sensitivity 0 over "
                                           "the 6 test images that hold it; the pixels it labels 'plaque' all lie "
                                           "outside it (PPV 0)")
    assert "<strong>Never finds a class</strong>" in text

    pruned["per_class"]["plaque"]["support"] = 0  # no plaque to find: Dice 0 means nothing missed
    _write(pruned_path, pruned)
    write_report(root)
    assert "missed_class" not in {w["kind"] for w in _warnings(root)}


def test_report_reads_typed_records(tmp_path) -> None:
    root = _make_run(tmp_path / "run")
    bench = json.loads((root / "bench.json").read_text())
    expected = bench["models"]["base"]["latency_ms"]["onnxruntime"]["median_ms"] / \
        bench["models"]["compressed"]["latency_ms"]["onnxruntime"]["median_ms"]
    del bench["speedup"]  # speed-ups come from BenchResult.speedup, not from this key
    _write(root / "bench.json", bench)
    data = load_run_dir(root)
    assert isinstance(data.bench, BenchResult) and isinstance(data.record, RunRecord)
    assert data.task.name == "segmentation" and data.classes == ["tissue", "plaque"]
    assert data.speedup("compressed", "onnxruntime") == pytest.approx(expected)
    assert data.final is not None and data.final.gate is not None and data.final.gate.metric == "worst_class_dice"
    text = write_report(root).read_text(encoding="utf-8")
    assert f"<td>{expected:.2f}×</td>" in text and f"is {expected:.2f}× faster on this CPU (Test CPU 9000" in text
    # A bench.json that is not a BenchResult is shown as a problem, the rest of the report still stands.
    _write(root / "bench.json", {"threads": 2})
    text = write_report(root).read_text(encoding="utf-8")
    assert "bench.json is not a benchmark result: missing key &#x27;models&#x27;" in text
    assert "Latency and file size were not measured (bench not run)." in text
    (root / "run.json").write_text('{"stages": {"train": {"seconds": 1}}}', encoding="utf-8")
    data = load_run_dir(root)
    assert data.record is None and "stage record without a status" in data.problems["run.json"]
    assert data.task.name == "segmentation"  # without a run record, metrics.json names the task


def test_cli_summaries_print_segmentation_numbers(seg_run, capsys) -> None:
    from medprune.cli import _run_summary, _summary

    root, _ = seg_run
    base = json.loads((root / "metrics.json").read_text())
    pruned = json.loads((root / "compressed" / "metrics.json").read_text())
    _run_summary(root)
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "balanced accuracy" not in out
    assert (f"base:       mean Dice {base['mean_dice']:.3f}; worst-class Dice {base['worst_class_dice']:.3f}; Dice "
            f"tissue {base['per_class']['tissue']['dice']:.3f}, plaque {base['per_class']['plaque']['dice']:.3f}") in out
    assert f"headline:   worst-class Dice {base['worst_class_dice']:.3f} → {pruned['worst_class_dice']:.3f}" in out
    assert "compressed: 2.50x fewer MACs, 2.40x faster on ONNX Runtime CPU, 2.40x on PyTorch (2 threads, batch 1)" \
        in out
    _summary(pruned, root / "compressed")
    out = capsys.readouterr().out
    lo, hi = pruned["ci"]["mean_dice"]
    assert f"  mean Dice                {pruned['mean_dice']:.3f} [{lo:.3f}, {hi:.3f}]" in out
    tissue = pruned["per_class"]["tissue"]
    assert f"  tissue       Dice {tissue['dice']:.3f} [" in out and f"HD95 (px) {tissue['hd95']:.3f} [" in out
    assert "sensitivity" not in out and f"metrics: {root / 'compressed' / 'metrics.json'}" in out
