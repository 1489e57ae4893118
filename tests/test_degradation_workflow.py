"""The degradation study end to end: config checks, baselines at the same budget, the level grid,
two-input export and bench, predict with a given or an estimated q, and the report section."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from medprune.config import config_from_dict
from medprune.errors import ConfigError
from medprune.metrics.degradation import DegradationGrid
from medprune.workflows.degradation import baseline_config
from medprune.workflows.run import run_job
from tests.conftest import TINY_CONFIG, write_yaml

DEGRADATION = {"kinds": ["jpeg", "noise"], "ranges": {"jpeg": [5, 100], "noise": [0, 50]},
               "grid": {"jpeg": [50, 5], "noise": [40]}, "p_clean": 0.1}


def _data(root: Path) -> dict:
    data = copy.deepcopy(TINY_CONFIG)
    data["name"] = "tiny_degradation"
    data["runtime"]["out_dir"] = str(root / "runs")
    data["data"]["degradation"] = copy.deepcopy(DEGRADATION)
    data["model"] = {"name": "degradation_aware",
                     "kwargs": {"backbone": "small_cnn", "width": 0.25, "injection": "film"}}
    data["optim"].update(epochs=2, optimizer="adam", lr=0.003)
    data["compress"] = {"criterion": "l1", "ratio": 0.5, "calibration": {"batches": 2, "batch_size": 4},
                        "finetune": {"epochs": 1}, "safety": {"max_worst_class_drop": None}}
    data["bench"] = {"rounds": 3, "per_round": 1}
    return data


# ----------------------------------------------------------------------------- config


def test_config_fills_q_dim_and_refuses_mismatched_models(tmp_path) -> None:
    data = _data(tmp_path)
    config = config_from_dict(data, "deg.yaml")
    assert config.model_kwargs()["q_dim"] == 2  # one slot per kind
    plain = copy.deepcopy(data)
    plain["model"] = {"name": "small_cnn", "kwargs": {"width": 0.25}}
    with pytest.raises(ConfigError, match=r"deg.yaml: model.name: small_cnn takes the image only.*injection: none"):
        config_from_dict(plain, "deg.yaml")
    missing = copy.deepcopy(data)
    del missing["data"]["degradation"]
    with pytest.raises(ConfigError, match=r"deg.yaml: data.degradation: is required by model degradation_aware"):
        config_from_dict(missing, "deg.yaml")
    given = copy.deepcopy(data)
    given["model"]["kwargs"]["q_dim"] = 3
    with pytest.raises(ConfigError, match=r"model.kwargs.q_dim: is set from data.degradation"):
        config_from_dict(given, "deg.yaml")


def test_baselines_keep_the_budget_and_take_q_away(tmp_path) -> None:
    config = config_from_dict(_data(tmp_path), "deg.yaml")
    clean, degraded = baseline_config(config, "clean"), baseline_config(config, "degraded")
    for sub in (clean, degraded):
        assert sub.model.kwargs["injection"] == "none" and sub.model.kwargs["backbone"] == "small_cnn"
        assert sub.optim == config.optim and sub.data.split == config.data.split
        assert sub.run_dir.parent == config.run_dir / "baselines"
        assert sub.compress.ratio == 0.0
    assert clean.data.degradation.train is False and degraded.data.degradation.train is True
    assert clean.data.degradation.eval is True  # evaluated on degraded images all the same
    with pytest.raises(ConfigError, match="did you mean 'clean'"):
        baseline_config(config, "clen")


# ----------------------------------------------------------------------------- the run



@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("degradation")
    data = _data(root)
    path = write_yaml(root / "deg.yaml", data)
    outcome = run_job(config_from_dict(data, str(path)))
    return root, path, data, outcome


@pytest.mark.slow
def test_run_trains_baselines_compresses_and_evaluates_the_grid(finished) -> None:
    _, _, _, outcome = finished
    run = outcome.run_dir
    statuses = {k: v["status"] for k, v in outcome.stages.items()}
    assert statuses["baselines"] == statuses["degradation"] == statuses["prune"] == statuses["export"] == "done"
    for name in ("clean", "degraded"):
        assert (run / "baselines" / name / "metrics.json").is_file()
        assert (run / "baselines" / name / "checkpoints" / "best.pt").is_file()
    grid = DegradationGrid.from_dict(json.loads((run / "degradation" / "grid.json").read_text()))
    names = [m.name for m in grid.models]
    assert names == ["aware (oracle)", "aware (blind)", "compressed (oracle)", "compressed (blind)",
                     "clean-trained", "degraded-trained"]
    levels = ["clean", "jpeg=50", "jpeg=5", "noise=40"]
    assert len(grid.points) == len(names) * len(levels)
    for m in names:
        assert [p.level for p in grid.points if p.model == m] == levels
    # q of each level follows the kind's normalisation (JPEG: (100 - Q) / 100; noise: sigma / 50)
    assert [p.q for p in grid.points if p.model == names[0]] == pytest.approx([0.0, 0.5, 0.95, 0.8])
    # intervals and the estimator's error: blind points carry a MAE in [0, 1], oracle ones none
    for p in grid.points:
        ba = p.metrics["balanced_accuracy"]
        assert 0.0 <= ba <= 1.0
        low, high = p.ci["balanced_accuracy"]
        assert low <= ba + 1e-9 and ba <= high + 1e-9
        assert (p.estimator_mae is not None) == p.model.endswith("(blind)")
        if p.estimator_mae is not None:
            assert 0.0 <= p.estimator_mae <= 1.0
    # the compressed model is smaller
    macs = {m.name: m.macs for m in grid.models}
    assert macs["compressed (oracle)"] < macs["aware (oracle)"]
    assert (run / "degradation" / "grid.csv").read_text().count("\n") == len(grid.points) + 1
    assert (run / "degradation" / "degradation_jpeg.png").is_file()
    report = (run / "report.html").read_text()
    assert "<h2>Degradation</h2>" in report and "degraded-trained" in report and "estimator MAE" in report


@pytest.mark.slow
def test_grid_points_equal_an_evaluation_at_that_level(finished) -> None:
    """A grid point is the task's metrics of the model on the test split degraded at exactly that level."""
    from medprune.workflows.data import prepare_data
    from medprune.workflows.helpers import evaluate_model, load_model_file

    root, path, data, outcome = finished
    config = config_from_dict(data, str(path))
    grid = DegradationGrid.from_dict(json.loads((outcome.run_dir / "degradation" / "grid.json").read_text()))
    task = config.build_task()
    bundle = prepare_data(config, config.run_dir, task=task)
    test = bundle.datasets["test"].at_level("jpeg", 5)
    assert all(np.allclose(test.degradation_of(i).q, [0.95, 0.0]) for i in range(len(test)))
    model = load_model_file(outcome.run_dir / "checkpoints" / "best.pt", config, torch.device("cpu"))
    metrics = evaluate_model(model, test, config, root / "check", task=task)
    assert grid.point("aware (oracle)", "jpeg", 5.0).metrics["balanced_accuracy"] == pytest.approx(
        metrics["balanced_accuracy"])


@pytest.mark.slow
def test_export_has_two_named_inputs_matching_pytorch(finished) -> None:
    from medprune.workflows.helpers import load_model_file

    root, path, data, outcome = finished
    run = outcome.run_dir
    record = json.loads((run / "export" / "export.json").read_text())
    assert record["fp32"]["passed"] is True
    session = ort.InferenceSession(str(run / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "q"]
    config = config_from_dict(data, str(path))
    model = load_model_file(run / "compressed" / "model.pt", config, torch.device("cpu")).eval()
    g = torch.Generator().manual_seed(1)
    image, q = torch.randn(3, 1, 40, 40, generator=g), torch.rand(3, 2, generator=g)
    got = session.run(None, {"image": image.numpy(), "q": q.numpy()})[0]
    with torch.no_grad():
        want = model(image, q).numpy()
    assert np.allclose(got, want, atol=1e-4)
    # the benchmark fed both inputs of the two-input graphs (base and compressed) to ONNX Runtime
    bench = json.loads((run / "bench.json").read_text())
    assert set(bench["models"]) == {"base", "compressed"}
    for entry in bench["models"].values():
        assert entry["latency_ms"]["onnxruntime"]["median_ms"] > 0


@pytest.mark.slow
def test_predict_with_given_and_estimated_degradation(finished, tmp_path) -> None:
    from PIL import Image

    from medprune.workflows.predict import predict_job

    root, path, _, outcome = finished
    frame = tmp_path / "frame.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)).save(frame)
    given = predict_job(path, [frame, frame], tmp_path / "given", degradation="jpeg=30")  # two: each line names q
    assert given.records[1]["summary"] == given.records[0]["summary"]
    d = given.records[0]["degradation"]
    assert d["source"] == "given" and d["q"] == pytest.approx([0.7, 0.0])
    assert given.records[0]["summary"].endswith("; q 0.70, 0.00 (given)")
    estimated = predict_job(path, [frame], tmp_path / "estimated")
    e = estimated.records[0]["degradation"]
    assert e["source"] == "estimated" and len(e["q"]) == 2 and all(0.0 <= v <= 1.0 for v in e["q"])
    assert estimated.records[0]["summary"].endswith("(estimated)")
    assert sum(given.records[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ConfigError, match="did you mean 'jpeg'"):
        predict_job(path, [frame], tmp_path / "bad", degradation="jepg=30")
    with pytest.raises(ConfigError, match="KIND=VALUE"):
        predict_job(path, [frame], tmp_path / "bad", degradation="jpeg")


@pytest.mark.slow
def test_rerun_reuses_the_baselines_and_the_grid(finished) -> None:
    root, path, data, outcome = finished
    stamp = (outcome.run_dir / "baselines" / "clean" / "checkpoints" / "best.pt").stat().st_mtime_ns
    again = run_job(config_from_dict(data, str(path)))
    assert again.stages["baselines"]["status"] == "reused" and again.stages["degradation"]["status"] == "reused"
    assert (outcome.run_dir / "baselines" / "clean" / "checkpoints" / "best.pt").stat().st_mtime_ns == stamp
    # a run killed while the second baseline was evaluated: the first is reused, the second resumed
    (outcome.run_dir / "baselines" / "baselines.json").unlink()
    (outcome.run_dir / "baselines" / "degraded" / "metrics.json").unlink()
    third = run_job(config_from_dict(data, str(path)))
    assert third.stages["baselines"]["status"] == "done" and third.stages["degradation"]["status"] == "done"
    assert (outcome.run_dir / "baselines" / "clean" / "checkpoints" / "best.pt").stat().st_mtime_ns == stamp
    assert (outcome.run_dir / "baselines" / "degraded" / "metrics.json").is_file()


# ----------------------------------------------------------------------------- export, INT8, bench


def _aware(injection: str = "film"):
    from medprune.models import create_model

    torch.manual_seed(0)
    model = create_model("degradation_aware", num_classes=2, in_chans=1, width=0.25, injection=injection, q_dim=2)
    return model.eval()


def _packed(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    image, q = torch.randn(n, 1, 32, 32, generator=g), torch.rand(n, 2, generator=g)
    return torch.cat([image, q[:, :, None, None].expand(-1, -1, 32, 32)], dim=1)


@pytest.mark.parametrize("injection", ["film", "concat_fc", "channel"])
def test_export_onnx_names_both_inputs_and_packed_feed_splits_a_batch(injection, tmp_path) -> None:
    from medprune.compress.export import export_onnx, packed_feed

    model = _aware(injection)
    x = _packed(3)
    result = export_onnx(model, x, tmp_path / "m.onnx", check_inputs=[_packed(2, seed=1)])
    assert result.passed and result.max_abs_diff < 1e-4
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "q"]
    feed = packed_feed(session, x)
    assert feed["image"].shape == (3, 1, 32, 32) and np.allclose(feed["q"], x[:, 1:, 0, 0].numpy())
    with torch.no_grad():
        assert np.allclose(session.run(None, feed)[0], model(x).numpy(), atol=1e-4)
    # blind mode: one input, the estimator inside the graph
    model.mode = "blind"
    export_onnx(model, x, tmp_path / "blind.onnx")
    blind = ort.InferenceSession(str(tmp_path / "blind.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in blind.get_inputs()] == ["image"]
    with torch.no_grad():
        assert np.allclose(blind.run(None, packed_feed(blind, x))[0], model(x[:, :1]).numpy(), atol=1e-4)


def test_int8_and_bench_feed_both_inputs(tmp_path) -> None:
    from medprune.compress.export import export_onnx
    from medprune.compress.int8 import export_int8
    from medprune.compress.latency import bench_models

    model = _aware("film")
    batches = [(_packed(4, seed=s), torch.zeros(4, dtype=torch.long)) for s in range(3)]
    result = export_int8(model, batches, tmp_path / "m.int8.onnx", min_agreement=0.0)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "q"]  # calibrated on both inputs
    assert 0.0 <= result.top1_agreement <= 1.0 and result.samples == 12
    fp32 = export_onnx(model, _packed(2), tmp_path / "m.onnx").path
    bench = bench_models({"base": model}, {"base": fp32, "int8": result.path}, _packed(1), rounds=3, per_round=1)
    assert bench.models["base"].latency_ms["onnxruntime"].median_ms > 0
    assert bench.models["int8"].latency_ms["onnxruntime"].median_ms > 0


# ----------------------------------------------------------------------------- the grid record and its figures


def _grid() -> DegradationGrid:
    from medprune.metrics.degradation import GridModel, GridPoint

    points = []
    for name, base in (("aware (oracle)", 0.9), ("degraded-trained", 0.8)):
        points.append(GridPoint(name, None, None, 0.0, {"balanced_accuracy": base, "worst_class_sensitivity": base - 0.1},
                                {"balanced_accuracy": [base - 0.1, min(1.0, base + 0.05)]}))
        for i, quality in enumerate((50.0, 10.0)):
            value = base - 0.1 * (i + 1)
            points.append(GridPoint(name, "jpeg", quality, (100 - quality) / 100,
                                    {"balanced_accuracy": value, "worst_class_sensitivity": value - 0.1},
                                    {"balanced_accuracy": [value - 0.1, value + 0.05]},
                                    0.05 if name.startswith("aware") else None))
    return DegradationGrid(classes=["healthy", "sick"], kinds=["jpeg"], units={"jpeg": "JPEG quality Q"}, split="test",
                           items=20, models=[GridModel("aware (oracle)", "a.pt", "oracle", macs=10),
                                             GridModel("degraded-trained", "b.pt", "none", macs=10)],
                           points=points, synthetic_data=True)


def test_grid_record_round_trips_and_draws_what_it_holds(tmp_path) -> None:
    from medprune.report.degradation_plots import degradation_section, plot_degradation_grid

    grid = _grid()
    again = DegradationGrid.from_dict(json.loads(json.dumps(grid.to_dict())))
    assert again == grid
    assert grid.levels("jpeg") == [50.0, 10.0]
    series = grid.series("aware (oracle)", "jpeg", "balanced_accuracy")
    assert [q for q, _, _ in series] == [0.0, 0.5, 0.9]
    assert [v for _, v, _ in series] == pytest.approx([0.9, 0.8, 0.7])
    assert [c for _, _, c in series] == [pytest.approx((0.8, 0.95)), pytest.approx((0.7, 0.85)),
                                         pytest.approx((0.6, 0.75))]
    assert grid.mean_over_levels("degraded-trained", "balanced_accuracy") == pytest.approx(0.65)
    (plotted,) = plot_degradation_grid(grid, tmp_path)
    assert plotted.path.name == "degradation_jpeg.png" and plotted.path.is_file()
    assert [p.title for p in plotted.panels] == ["Balanced accuracy vs jpeg", "Worst-class sensitivity vs jpeg"]
    assert plotted.panels[0].series == ("aware (oracle)", "degraded-trained")
    assert plotted.values["degraded-trained / jpeg=10 / balanced_accuracy"] == pytest.approx(0.6)
    assert plotted.values["aware (oracle) / clean / worst_class_sensitivity"] == pytest.approx(0.8)
    html = "".join(degradation_section(grid, tmp_path, None))
    assert "0.900 [0.800, 0.950]" in html and "jpeg=10" in html and "SYNTHETIC" in html
    assert "not run" in "".join(degradation_section(None, tmp_path, None))


def test_bench_file_reads_the_packed_size_of_a_two_input_graph(tmp_path) -> None:
    """``medprune bench model.onnx`` on an (image, q) graph: the input size counts q's planes behind the image."""
    from medprune.compress.export import export_onnx
    from medprune.compress.latency import bench_file

    model = _aware("film")
    path = export_onnx(model, _packed(2), tmp_path / "m.onnx").path
    result = bench_file(path, rounds=3, per_round=1)
    assert list(result["input_size"]) == [3, 32, 32]  # 1 image channel + q_dim 2
    assert result["latency_ms"]["onnxruntime"]["median_ms"] > 0
