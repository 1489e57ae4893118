"""``medprune run`` and ``medprune sweep``: every stage writes its outputs, a rerun reuses them,
a changed setting redoes what depends on it, and the sweep draws a frontier from one trained model."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from medprune.cli import main
from medprune.config import config_from_dict
from medprune.errors import ConfigError
from medprune.workflows.run import STAGE_NAMES, run_job
from medprune.workflows.sweep import sweep_job
from tests.conftest import TINY_CONFIG, write_yaml

pytestmark = pytest.mark.slow


def _data(root: Path, **compress) -> dict:
    data = copy.deepcopy(TINY_CONFIG)
    data["runtime"]["out_dir"] = str(root / "runs")
    # The gate is off here: these tests are about stages, and a 6-image validation split cannot
    # gate anything (tests/test_safety_gate.py covers the gate in runs).
    data["compress"] = {"criterion": "l1", "ratio": 0.5, "calibration": {"batches": 2, "batch_size": 4},
                        "finetune": {"epochs": 1}, "safety": {"max_worst_class_drop": None}, **compress}
    data["bench"] = {"rounds": 3, "per_round": 1}
    return data


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    data = _data(root)
    path = write_yaml(root / "tiny.yaml", data)
    outcome = run_job(config_from_dict(data, str(path)))
    return root, path, data, outcome


def _statuses(run_dir: Path) -> dict[str, str]:
    record = json.loads((run_dir / "run.json").read_text())
    return {k: v["status"] for k, v in record["stages"].items()}


def test_run_writes_every_stage(finished):
    _, _, _, outcome = finished
    run_dir = outcome.run_dir
    assert list(outcome.stages) == STAGE_NAMES
    assert {k: s["status"] for k, s in outcome.stages.items()} == {
        "train": "done", "baselines": "not_applicable", "pool": "not_applicable", "prune": "done",
        "quantize": "not_applicable",
        "calibrate": "not_applicable", "export": "done",
        "bench": "done", "degradation": "not_applicable", "report": "done"}
    assert outcome.final == "prune"
    for name in ("metrics.json", "checkpoints/best.pt", "compressed/model.pt", "compressed/metrics.json",
                 "compressed/base/metrics.json", "compressed/kept_channels.png", "export/model.onnx",
                 "export/export.json", "bench.json", "report.html", "config.yaml", "run.json"):
        assert (run_dir / name).is_file(), name
    bench = json.loads((run_dir / "bench.json").read_text())
    base, comp = bench["models"]["base"], bench["models"]["compressed"]
    assert comp["macs"] < base["macs"] / 1.8 and comp["params"] < base["params"] / 2
    assert set(bench["speedup"]["compressed"]) == {"torch", "onnxruntime"}
    assert bench["speedup"]["compressed"]["onnxruntime"] > 0
    export = json.loads((run_dir / "export" / "export.json").read_text())
    assert export["fp32"]["passed"] is True and export["fp32"]["max_abs_diff"] < 1e-4
    record = json.loads((run_dir / "run.json").read_text())
    assert record["final"] == "compressed" and record["synthetic_data"] is True
    assert record["compressed_stages"][0]["dir"] == "compressed"
    html = (run_dir / "report.html").read_text()
    assert "SYNTHETIC" in html.upper() and "data:image/png;base64" in html


def test_rerun_reuses_every_stage_and_a_lost_output_is_redone(finished):
    root, path, data, outcome = finished
    outputs = ("checkpoints/best.pt", "compressed/model.pt", "export/model.onnx", "bench.json")
    stamps = {name: (outcome.run_dir / name).stat().st_mtime_ns for name in outputs}
    again = run_job(config_from_dict(data, str(path)))
    assert {s["status"] for s in again.stages.values()} == {"reused", "not_applicable"}
    assert {name: (outcome.run_dir / name).stat().st_mtime_ns for name in outputs} == stamps  # nothing redone
    # A run killed during export: its output is missing; train and prune are reused, the rest redone.
    (outcome.run_dir / "export" / "model.onnx").unlink()
    third = run_job(config_from_dict(data, str(path)))
    assert _statuses(third.run_dir) == {"train": "reused", "baselines": "not_applicable", "pool": "not_applicable",
                                        "prune": "reused",
                                        "quantize": "not_applicable", "calibrate": "not_applicable", "export": "done",
                                        "bench": "done", "degradation": "not_applicable", "report": "done"}


def test_changed_compress_setting_redoes_prune_and_later(finished, tmp_path):
    root, path, data, outcome = finished
    changed = copy.deepcopy(data)
    changed["compress"]["ratio"] = 0.25
    again = run_job(config_from_dict(changed, str(path)))
    assert again.stages["train"]["status"] == "reused"
    assert all(again.stages[s]["status"] == "done" for s in ("prune", "export", "bench", "report"))
    summary = json.loads((again.run_dir / "compressed" / "prune_summary.json").read_text())
    assert summary["ratio"] == 0.25
    # back to the original setting for the other tests
    run_job(config_from_dict(data, str(path)))


def test_changed_training_setting_refuses_instead_of_deleting(finished):
    root, path, data, outcome = finished
    changed = copy.deepcopy(data)
    changed["optim"]["lr"] = 0.01
    with pytest.raises(ConfigError, match=r"optim\.lr.*--force train"):
        run_job(config_from_dict(changed, str(path)))
    assert (outcome.run_dir / "checkpoints" / "best.pt").is_file()


def test_cli_force_redoes_a_stage_and_what_follows(finished, capsys):
    root, path, data, outcome = finished
    assert main(["run", str(path), "--force", "export"]) == 0
    text = capsys.readouterr().out
    assert "train reused" in text and "prune reused" in text and "export done" in text and "report done" in text
    assert "fewer MACs" in text and "SYNTHETIC" in text and "report:" in text
    assert main(["run", str(path), "--force", "nosuchstage"]) == 2
    assert "unknown stage" in capsys.readouterr().err


def test_run_adopts_a_model_trained_by_medprune_train(tmp_path):
    data = _data(tmp_path, ratio=0.0)
    path = write_yaml(tmp_path / "tiny.yaml", data)
    assert main(["train", str(path)]) == 0
    best = tmp_path / "runs" / "tiny" / "checkpoints" / "best.pt"
    stamp = best.stat().st_mtime_ns
    outcome = run_job(config_from_dict(data, str(path)))
    assert outcome.stages["train"]["status"] == "reused" and best.stat().st_mtime_ns == stamp
    # ratio 0: nothing to prune; the base model is exported and benched on its own.
    assert outcome.stages["prune"]["status"] == "not_applicable" and outcome.final is None
    bench = json.loads((outcome.run_dir / "bench.json").read_text())
    assert list(bench["models"]) == ["base"] and bench["speedup"] == {}
    assert (outcome.run_dir / "report.html").is_file()


def test_sweep_draws_the_frontier_from_one_trained_model(finished):
    root, path, data, outcome = finished
    best = outcome.run_dir / "checkpoints" / "best.pt"
    stamp = best.stat().st_mtime_ns
    sweep = sweep_job(config_from_dict(data, str(path)), ratios=[0.25, 0.6])
    assert best.stat().st_mtime_ns == stamp  # the trained model was reused
    points = sweep.result["points"]
    assert [p["ratio"] for p in points] == [0.25, 0.6]
    assert points[1]["macs"] < points[0]["macs"] < sweep.result["base"]["macs"]
    assert all(p["ort_ms"] > 0 and 0 <= p["worst_class_sensitivity"] <= 1 for p in points)
    assert sweep.plot.is_file() and sweep.plot.stat().st_size > 10_000
    assert json.loads((sweep.out_dir / "sweep.json").read_text())["points"][0]["criterion"] == "l1"
    pruned = [sweep.out_dir.parent / p["dir"] / name for p in points for name in ("model.pt", "prune_summary.json")]
    stamps = [f.stat().st_mtime_ns for f in pruned]
    again = sweep_job(config_from_dict(data, str(path)), ratios=[0.25, 0.6])
    assert [f.stat().st_mtime_ns for f in pruned] == stamps  # finished settings were reused, not pruned again
    assert [p["macs"] for p in again.result["points"]] == [p["macs"] for p in points]
    # The sweep kept what medprune run recorded: a later run reuses every stage.
    after = run_job(config_from_dict(data, str(path)))
    assert after.stages["prune"]["status"] == "reused" and after.stages["report"]["status"] == "reused"


def test_sweep_cli_rejects_bad_ratios(finished, capsys):
    root, path, data, outcome = finished
    assert main(["sweep", str(path), "--ratios", "0.3,abc"]) == 2
    assert "--ratios" in capsys.readouterr().err
    assert main(["sweep", str(path), "--ratios", "1.5"]) == 2
    assert "(0, 1)" in capsys.readouterr().err


def _copy_run(finished, tmp_path: Path, **compress) -> tuple[dict, Path]:
    """The finished run's directory copied under tmp_path, and a config with ``compress`` changes."""
    import shutil

    root, path, data, outcome = finished
    changed = copy.deepcopy(data)
    changed["runtime"]["out_dir"] = str(tmp_path / "runs")
    changed["compress"].update(compress)
    shutil.copytree(outcome.run_dir, tmp_path / "runs" / outcome.run_dir.name)
    return changed, write_yaml(tmp_path / "tiny.yaml", changed)


def test_run_swaps_pooling_then_prunes_then_quantizes(finished, tmp_path):
    from medprune.compress import load_model
    from medprune.compress.quantize import quantized_layers

    data, path = _copy_run(finished, tmp_path, pooling={"kind": "wavelet_hybrid", "combine": "gate"},
                           quantize={"method": "direct", "bits": 4, "finetune": {"epochs": 1}})
    outcome = run_job(config_from_dict(data, str(path)))
    assert outcome.stages["train"]["status"] == "reused"  # the copied model, not a new training
    assert [outcome.stages[s]["status"] for s in ("pool", "prune", "quantize")] == ["done"] * 3
    assert outcome.final == "quantize"
    run_dir = outcome.run_dir
    pruned = json.loads((run_dir / "compressed" / "prune_summary.json").read_text())
    assert (run_dir / "pooled" / "metrics.json").is_file()
    model = load_model(run_dir / "quantized" / "model.pt")
    layers = quantized_layers(model)
    assert layers and all(len(set(layer.quantized_weight().flatten().tolist())) <= 16 for layer in layers.values())
    assert any(t["kind"] == "pooling" for t in model.medprune_spec["transforms"])
    bench = json.loads((run_dir / "bench.json").read_text())
    assert bench["models"]["quantized"]["macs"] == pruned["macs_after"]
    record = json.loads((run_dir / "run.json").read_text())
    assert [s["dir"] for s in record["compressed_stages"]] == ["pooled", "compressed", "quantized"]
    assert record["final"] == "quantized"
    # Changing only the quantization redoes quantize and what follows, not pooling or pruning.
    data["compress"]["quantize"]["bits"] = 8
    again = run_job(config_from_dict(data, str(path)))
    assert [again.stages[s]["status"] for s in ("pool", "prune", "quantize", "export")] == \
        ["reused", "reused", "done", "done"]


def test_run_int8_export_is_evaluated_and_timed(finished, tmp_path):
    data, path = _copy_run(finished, tmp_path, quantize={"method": "int8"})
    outcome = run_job(config_from_dict(data, str(path)))
    assert outcome.stages["quantize"]["status"] == "not_applicable"
    run_dir = outcome.run_dir
    export = json.loads((run_dir / "export" / "export.json").read_text())
    assert export["int8"]["passed"] is True and export["int8"]["top1_agreement"] >= 0.9
    int8_metrics = json.loads((run_dir / "export" / "int8" / "metrics.json").read_text())
    assert set(int8_metrics["per_class"]) == {"healthy", "sick"}
    assert (run_dir / "export" / "int8" / "predictions.csv").is_file()  # the report's ROC draws INT8 too
    assert export["int8"]["gate"]["status"] == "off"  # recorded even when off
    bench = json.loads((run_dir / "bench.json").read_text())
    assert bench["models"]["compressed_int8"]["latency_ms"]["onnxruntime"]["median_ms"] > 0
    assert set(bench["speedup"]["compressed_int8"]) == {"onnxruntime"}
    assert "onnx_int8" in outcome.files
