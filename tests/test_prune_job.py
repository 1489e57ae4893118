"""Schedules (SFP, iterative with the safety gate), distillation, and the `medprune prune` / `bench` job."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from medprune.cli import main
from medprune.compress import CompressContext, PruneOptions, create_criterion, create_schedule, load_model
from medprune.compress.sfp import SFPHook, hard_prune_zeroed
from medprune.config import config_from_dict
from medprune.engine.trainer import Distillation
from medprune.models import create_model
from tests.conftest import write_yaml


# --------------------------------------------------------------------------- SFP
class _Net(nn.Module):
    """conv3x3-BN-ReLU → conv1x1-BN-ReLU → GAP → linear: every consumer folds exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.c2, self.b2 = nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        return self.fc(x.mean((2, 3)))


def _randomize_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g))  # positive: zeroed filters still emit


def test_sfp_zeroes_exact_counts_and_the_hard_prune_equals_the_soft_model():
    torch.manual_seed(0)
    model = _Net()
    with torch.no_grad():
        _randomize_bn(model)
    x = torch.randn(4, 1, 10, 10)
    hook = SFPHook(model, x, create_criterion("l2"), ratio=0.5, round_to=None, protect=())
    assert hook.apply() == 16  # 8 of 16 in each of the two prunable groups
    zero_rows = (model.c1.weight.flatten(1).abs().sum(1) == 0).sum()
    assert int(zero_rows) == 8
    model.eval()
    soft = model(x)
    result, change = hard_prune_zeroed(model, x, protect=())
    assert model.c1.out_channels == 8 and model.c2.in_channels == 8 and model.fc.in_features == 8
    assert model.c2.bias is not None  # what the removed channels emitted, folded
    torch.testing.assert_close(model(x), soft, rtol=1e-5, atol=1e-5)
    assert change < 1e-5
    assert result.macs_after < result.macs_before


def test_sfp_schedule_regrows_and_removes_with_training(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet56_cifar", num_classes=3, in_chans=1, width=0.5, blocks_per_stage=1)
    with torch.no_grad():
        _randomize_bn(model)  # a trained net's BN shifts: a zeroed filter's channel still passes gradient
    x = torch.randn(4, 1, 16, 16)
    y = torch.tensor([0, 1, 2, 0])
    regrown = []

    def finetune(m, epochs, hooks, tag):
        opt = torch.optim.SGD(m.parameters(), lr=0.05)
        for _ in range(epochs):
            m.train()
            for _ in range(3):
                opt.zero_grad()
                nn.functional.cross_entropy(m(x), y).backward()
                opt.step()
            zero_before = sum(int((mm.weight.flatten(1).abs().sum(1) == 0).sum()) for mm in m.modules()
                              if isinstance(mm, nn.Conv2d))
            regrown.append(zero_before)
            for h in hooks:
                h.after_train_epoch(None)
        return m

    ctx = CompressContext(model=model, example_inputs=x, criterion=create_criterion("l2"),
                          options=PruneOptions(ratio=0.5, round_to=None, protect=()), finetune=finetune)
    out = create_schedule("sfp", epochs=2)(ctx)
    assert regrown[0] == 0  # zeroed filters received gradient and regrew during the epoch
    assert out.stage1[0].conv1.out_channels == 4  # 8 -> 4
    assert any(e["event"] == "sfp_hard_prune" for e in ctx.events)
    out.eval()
    assert out(x).shape == (4, 3)


# --------------------------------------------------------------------------- iterative + safety gate
def test_iterative_backs_off_the_step_that_crosses_the_safety_gate():
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=2, in_chans=1, width=0.5)
    x = torch.randn(2, 1, 32, 32)
    sensitivities = iter([0.90, 0.88, 0.70, 0.60])  # baseline, step 1 (ok), step 2 (drop 0.2), never reached

    def evaluate(m):
        return {"worst_class_sensitivity": next(sensitivities), "balanced_accuracy": 0.9}

    ctx = CompressContext(model=model, example_inputs=x, criterion=create_criterion("l1"),
                          options=PruneOptions(ratio=0.6, round_to=None), evaluate=evaluate,
                          max_worst_class_drop=0.05, gate_action="backoff")
    out = create_schedule("iterative", steps=3)(ctx)
    kinds = [e["event"] for e in ctx.events]
    assert kinds == ["baseline", "prune", "safety_gate", "prune", "safety_gate", "safety_backoff"]
    # the returned model is the one after step 1: 20 % of 16 channels removed from features.1.0.0
    assert out.features[1][0][0].out_channels == 32 - round(32 * 0.2)
    assert ctx.events[4]["passed"] is False and ctx.events[4]["drop"] == pytest.approx(0.2)


def test_distillation_pulls_the_student_towards_the_teacher():
    torch.manual_seed(0)
    teacher = nn.Linear(4, 3)
    distill = Distillation(teacher, alpha=1.0, temperature=2.0)
    x = torch.randn(8, 4)
    assert float(distill.loss(teacher(x), x)) == pytest.approx(0.0, abs=1e-6)
    student = nn.Linear(4, 3)
    assert float(distill.loss(student(x), x).detach()) > 0.01
    assert all(not p.requires_grad for p in teacher.parameters())


# --------------------------------------------------------------------------- the job and the CLI
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from medprune.workflows.jobs import train
    from tests.conftest import TINY_CONFIG
    import copy

    data = copy.deepcopy(TINY_CONFIG)
    root = tmp_path_factory.mktemp("prunejob")
    data["runtime"]["out_dir"] = str(root / "runs")
    data["compress"] = {"criterion": "taylor", "ratio": 0.5, "calibration": {"batches": 2, "batch_size": 4},
                        "finetune": {"epochs": 1, "distill": {"enabled": True}}}
    path = write_yaml(root / "tiny.yaml", data)
    outcome = train(config_from_dict(data, str(path)))
    return path, outcome.run_dir / "checkpoints" / "best.pt", root


def test_prune_cli_writes_model_metrics_and_plots(trained, capsys):
    config, ckpt, root = trained
    out = root / "pruned"
    assert main(["prune", str(config), "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "MACs" in text and "safety gate" in text and "SYNTHETIC" in text
    for name in ("model.pt", "metrics.json", "base/metrics.json", "kept_channels.json", "kept_channels.png",
                 "sensitivity_base_vs_pruned.png", "prune_summary.json"):
        assert (out / name).is_file(), name
    base = json.loads((out / "base" / "metrics.json").read_text())
    pruned = json.loads((out / "metrics.json").read_text())
    assert set(base) == set(pruned)  # same schema as evaluate
    summary = json.loads((out / "prune_summary.json").read_text())
    assert summary["macs_after"] < summary["macs_before"] and summary["criterion"] == "taylor"
    kept = json.loads((out / "kept_channels.json").read_text())
    assert kept["features.1.0.0"] == {"before": 16, "after": 8}
    model = load_model(out / "model.pt")
    assert model.features[1][0][0].out_channels == 8
    # the same file works with `medprune evaluate --checkpoint`
    assert main(["evaluate", str(config), "--checkpoint", str(out / "model.pt"), "--out", str(root / "ev")]) == 0
    again = json.loads((root / "ev" / "metrics.json").read_text())
    assert again["balanced_accuracy"] == pytest.approx(pruned["balanced_accuracy"])


def test_bench_cli_reports_both_runtimes(trained, capsys):
    _, _, root = trained
    model_file = root / "pruned" / "model.pt"
    if not model_file.exists():
        pytest.skip("needs the prune test's output")
    assert main(["bench", str(model_file), "--input-size", "1", "40", "40", "--rounds", "3"]) == 0
    result = json.loads((model_file.parent / "model.pt.bench.json").read_text())
    assert result["params"] > 0 and result["macs"] > 0
    assert result["latency_ms"]["torch"]["median_ms"] > 0 and result["latency_ms"]["onnxruntime"]["median_ms"] > 0


def test_compress_config_errors_name_the_key(tiny_config_dict, tmp_path, capsys):
    tiny_config_dict["compress"] = {"criterion": "beta_rnak"}
    path = write_yaml(tmp_path / "bad.yaml", tiny_config_dict)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml: compress.criterion" in err and "beta_rank" in err
    tiny_config_dict["compress"] = {"schedule": "iterative", "schedule_options": {"stpes": 2}}
    write_yaml(path, tiny_config_dict)
    assert main(["validate", str(path)]) == 2
    assert "compress.schedule_options.stpes" in capsys.readouterr().err


def test_latency_target_search_measures_onnx_runtime_until_the_target(tmp_path):
    from medprune.workflows.prune import search_latency_ratio
    from medprune.config import LatencyTargetConfig

    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=2, in_chans=1)
    x = torch.randn(2, 1, 64, 64)
    ctx = CompressContext(model=model, example_inputs=x, criterion=create_criterion("l2"),
                          options=PruneOptions(round_to=8))
    target = LatencyTargetConfig(speedup=1.3, step=0.3, max_ratio=0.9, repeats=5)
    ratio, record = search_latency_ratio(model, x, ctx, target, tmp_path)
    assert record["target_ms"] == pytest.approx(record["base_ms"] / 1.3)
    assert [s["ratio"] for s in record["steps"]] == pytest.approx([0.3, 0.6, 0.9][:len(record["steps"])])
    assert ratio == record["steps"][-1]["ratio"]
    macs = [s["macs"] for s in record["steps"]]
    assert macs == sorted(macs, reverse=True)  # each step prunes more
    if record["met"]:
        assert record["steps"][-1]["ms"] <= record["target_ms"]
        assert all(s["ms"] > record["target_ms"] for s in record["steps"][:-1])
    else:
        assert ratio == pytest.approx(0.9)
    assert model.features[1][0][0].out_channels == 64  # the search prunes copies, never the model


def test_every_model_file_records_input_size_and_classes_and_exports_alone(trained, tmp_path, capsys):
    """`medprune export` refused the pipeline's own compressed/model.pt: it recorded no input size."""
    config, ckpt, root = trained
    out = root / "pruned_for_export"
    assert main(["prune", str(config), "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    for path in (ckpt, ckpt.parent / "last.pt", out / "model.pt"):
        record = torch.load(path, weights_only=True)
        assert record["input_size"] == [1, 40, 40] and record["classes"] == ["healthy", "sick"], path
    capsys.readouterr()
    assert main(["export", str(out / "model.pt"), "--out", str(tmp_path / "m.onnx")]) == 0
    assert "input 1x40x40" in capsys.readouterr().out
    assert (tmp_path / "m.onnx").is_file()
    assert main(["bench", str(out / "model.pt"), "--rounds", "3", "--json", str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["input_size"] == [1, 40, 40]
