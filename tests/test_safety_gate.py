"""The safety gate: a failed gate exits 3, keeps the model under a name that says so, marks run.json
and the report; --accept-unsafe overrides and is recorded; INT8 is gated on per-class metrics."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from medprune.cli import main
from medprune.compress import load_model
from medprune.compress.gate import GateResult, gate_file, judge_gate
from medprune.errors import EXIT_GATE
from tests.conftest import TINY_CONFIG, write_yaml


def _metrics(worst: float, support: dict[str, int] | None = None) -> dict:
    support = support or {"healthy": 40, "sick": 20}
    return {"worst_class_sensitivity": worst, "balanced_accuracy": worst,
            "per_class": {c: {"sensitivity": worst, "support": n} for c, n in support.items()}}


# --------------------------------------------------------------------------- the verdict
def test_judge_gate_numbers_and_messages() -> None:
    ok = judge_gate(_metrics(0.90), _metrics(0.87), 0.05)
    assert ok.status == "passed" and ok.drop == pytest.approx(0.03) and ok.warnings == []
    bad = judge_gate(_metrics(0.90), _metrics(0.70), 0.05, what="the pruned model")
    assert bad.failed and bad.drop == pytest.approx(0.20)
    assert bad.message == ("validation worst class sensitivity of the pruned model fell from 0.900 to 0.700 "
                           "(drop 0.200, limit 0.05)")
    assert judge_gate(_metrics(0.9), _metrics(0.1), None).status == "off"
    undefined = judge_gate(_metrics(0.9), {"worst_class_sensitivity": None}, 0.05)
    assert undefined.failed and "undefined" in undefined.message  # never passes blind
    accepted = bad.accepted()
    assert accepted.status == "accepted_unsafe" and accepted.message.startswith("accepted despite failing")
    assert GateResult.from_dict(accepted.to_dict()) == accepted


def test_gate_says_when_validation_is_too_small_to_judge() -> None:
    from medprune.compress.gate import task_gate
    from medprune.tasks import create_task

    task = create_task("classification", ["healthy", "sick"])
    gate = task_gate(_metrics(1.0, {"healthy": 30, "sick": 3}), _metrics(1.0, {"healthy": 30, "sick": 3}), 0.05, task)
    assert gate.status == "passed"
    assert gate.warnings == ["validation has only 3 'sick' images: one error moves its sensitivity by 0.33, more "
                             "than the 0.05 limit; the gate cannot judge this class at that resolution (use a "
                             "larger validation split)"]
    none = task_gate(_metrics(1.0, {"healthy": 30, "sick": 0}), _metrics(1.0), 0.05, task)
    assert any("no 'sick' images" in w for w in none.warnings)


def test_failed_files_say_so() -> None:
    failed = GateResult("failed")
    assert gate_file(Path("d/model.pt"), failed) == Path("d/model.gate_failed.pt")
    assert gate_file(Path("d/model.int8.onnx"), failed) == Path("d/model.int8.gate_failed.onnx")
    assert gate_file(Path("d/model.pt"), GateResult("accepted_unsafe")) == Path("d/model.pt")
    assert gate_file(Path("d/model.pt"), None) == Path("d/model.pt")


# --------------------------------------------------------------------------- prune, run, export
class _Validation:
    """Stands in for the validation pass: the source model scores ``base``, compressed ones ``after``."""

    def __init__(self, base: float, after: float) -> None:
        self.base, self.after, self.calls = base, after, 0

    def __call__(self, *args) -> dict:  # (model, data, config, device, task)
        self.calls += 1
        return _metrics(self.base if self.calls == 1 else self.after, {"healthy": 4, "sick": 2})


def _patch_validation(monkeypatch, fake) -> None:
    """Replace the validation pass wherever the workflows call it."""
    import medprune.workflows.helpers as helpers
    import medprune.workflows.prune as prune

    monkeypatch.setattr(helpers, "validation_metrics", fake)
    monkeypatch.setattr(prune, "validation_metrics", fake)


def _config(root: Path, **compress) -> Path:
    data = copy.deepcopy(TINY_CONFIG)
    data["runtime"]["out_dir"] = str(root / "runs")
    data["compress"] = {"criterion": "l1", "ratio": 0.5, "finetune": {"epochs": 0}, **compress}
    data["bench"] = {"rounds": 3, "per_round": 1}
    return write_yaml(root / "tiny.yaml", data)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from medprune.config import load_config
    from medprune.workflows.jobs import train

    root = tmp_path_factory.mktemp("gate")
    path = _config(root)
    outcome = train(load_config(path))
    return root, path, outcome.run_dir / "checkpoints" / "best.pt"


@pytest.mark.slow
def test_prune_failing_the_gate_exits_3_and_keeps_the_model_as_gate_failed(trained, monkeypatch, capsys) -> None:
    import medprune.workflows.helpers as job

    root, path, ckpt = trained
    out = root / "pruned"
    _patch_validation(monkeypatch, _Validation(0.9, 0.6))
    assert main(["prune", str(path), "--checkpoint", str(ckpt), "--out", str(out)]) == EXIT_GATE
    captured = capsys.readouterr()
    assert "safety gate: FAILED: validation worst class sensitivity of the pruned model fell from 0.900 to 0.600" \
        in captured.out
    assert "warning: validation has only 2 'sick' images" in captured.out
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("medprune: safety gate FAILED: ") and "model.gate_failed.pt" in last
    assert not (out / "model.pt").exists() and (out / "model.gate_failed.pt").is_file()
    summary = json.loads((out / "prune_summary.json").read_text())
    assert summary["gate"]["status"] == "failed" and summary["model_file"] == "model.gate_failed.pt"
    assert summary["gate"]["drop"] == pytest.approx(0.3)
    assert load_model(out / "model.gate_failed.pt") is not None  # the work is kept
    # --accept-unsafe: the same model is the deliverable, and the override is recorded
    _patch_validation(monkeypatch, _Validation(0.9, 0.6))
    assert main(["prune", str(path), "--checkpoint", str(ckpt), "--out", str(out), "--accept-unsafe"]) == 0
    assert (out / "model.pt").is_file() and not (out / "model.gate_failed.pt").exists()
    summary = json.loads((out / "prune_summary.json").read_text())
    assert summary["gate"]["status"] == "accepted_unsafe"
    import torch

    assert torch.load(out / "model.pt", weights_only=True)["gate"]["status"] == "accepted_unsafe"


@pytest.mark.slow
def test_every_schedule_is_gated(trained, monkeypatch) -> None:
    """SFP never checked the gate at all; now the job judges whatever a schedule returns."""
    import medprune.workflows.helpers as job
    from medprune.workflows.prune import prune_job
    from medprune.config import load_config

    root, path, ckpt = trained
    for schedule, options in (("sfp", {"epochs": 1}), ("oneshot", {})):
        _patch_validation(monkeypatch, _Validation(0.9, 0.5))
        cfg = load_config(path, ["compress.criterion=l2", f"compress.schedule={schedule}",
                                 f"compress.schedule_options={json.dumps(options)}"])
        outcome = prune_job(cfg, ckpt, root / f"p_{schedule}")
        assert outcome.gate.failed and outcome.model_file.name == "model.gate_failed.pt", schedule


@pytest.mark.slow
def test_run_with_a_failed_gate_skips_export_marks_the_run_and_exits_3(tmp_path, monkeypatch, capsys) -> None:
    import medprune.workflows.helpers as job

    path = _config(tmp_path)
    run_dir = tmp_path / "runs" / "tiny"
    _patch_validation(monkeypatch, _Validation(0.9, 0.6))
    assert main(["run", str(path)]) == EXIT_GATE
    record = json.loads((run_dir / "run.json").read_text())
    stages = {k: v["status"] for k, v in record["stages"].items()}
    assert stages["prune"] == "done" and stages["export"] == "skipped" and stages["report"] == "done"
    assert record["stages"]["prune"]["gate"]["status"] == "failed"
    assert record["compressed_stages"][0]["gate_status"] == "failed" and record["final"] is None
    assert not (run_dir / "export" / "model.onnx").exists()  # nothing deployable was written
    assert (run_dir / "compressed" / "model.gate_failed.pt").is_file()
    bench = json.loads((run_dir / "bench.json").read_text())
    assert "compressed" in bench["models"]  # what it would have bought is still measured
    assert "FAILED its safety gate" in (run_dir / "report.html").read_text()
    assert "not for deployment" in capsys.readouterr().err
    # a rerun reuses the stage (no new pruning) and still refuses
    _patch_validation(monkeypatch, _Validation(0.9, 0.6))
    stamp = (run_dir / "compressed" / "model.gate_failed.pt").stat().st_mtime_ns
    assert main(["run", str(path)]) == EXIT_GATE
    assert (run_dir / "compressed" / "model.gate_failed.pt").stat().st_mtime_ns == stamp
    # --accept-unsafe redoes the stage keeping its model, records the override, and ships it
    _patch_validation(monkeypatch, _Validation(0.9, 0.6))
    assert main(["run", str(path), "--accept-unsafe"]) == 0
    record = json.loads((run_dir / "run.json").read_text())
    assert record["stages"]["prune"]["gate"]["status"] == "accepted_unsafe" and record["accept_unsafe"] is True
    assert record["final"] == "compressed" and (run_dir / "export" / "model.onnx").is_file()
    assert "accepted despite failing its safety gate" in (run_dir / "report.html").read_text()


@pytest.mark.slow
def test_int8_is_gated_on_per_class_validation_metrics(trained, monkeypatch, capsys) -> None:
    """Top-1 agreement alone passed an INT8 graph that lost 15 points of balanced accuracy."""
    import medprune.workflows.helpers as job
    from medprune.tasks import Evaluation

    root, path, ckpt = trained

    def one_class(onnx_path, dataset, task, threads=None):  # an INT8 graph that only ever says "healthy"
        n = len(dataset)
        labels = np.array([int(dataset[i][1]) for i in range(n)])
        probs = np.tile([0.9, 0.1], (n, 1))
        return Evaluation(indices=np.arange(n), loss=0.0, payload={"probs": probs, "labels": labels})

    monkeypatch.setattr(job, "onnx_evaluation", one_class)
    _patch_validation(monkeypatch, lambda *a: _metrics(0.9, {"healthy": 4, "sick": 2}))
    out = root / "x" / "model.onnx"
    code = main(["export", str(ckpt), "--out", str(out), "--int8", "--config", str(path),
                 "--int8-min-agreement", "0"])
    assert code == EXIT_GATE
    assert (root / "x" / "model.int8.gate_failed.onnx").is_file() and not (root / "x" / "model.int8.onnx").exists()
    assert "worst class sensitivity of the INT8 model fell from 0.900 to 0.000" in capsys.readouterr().out
    assert main(["export", str(ckpt), "--out", str(out), "--int8", "--config", str(path),
                 "--int8-min-agreement", "0", "--accept-unsafe"]) == 0
    assert (root / "x" / "model.int8.onnx").is_file()
