"""Report warnings: each kind triggered by a minimal run directory, none on a clean one.

Every test writes a run directory by hand (as `medprune run` would), renders the report and reads
``report_warnings.json`` beside it — the machine-readable list the top of report.html mirrors.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from medprune.report import write_report
from tests.test_report_html import TWO, _evaluate, _make_run, _write

PRUNED = "pruned (taylor, ratio 0.50)"
QUANTIZED = "Direct Quantization 4-bit"
INT8 = f"{PRUNED} · INT8 ONNX"


def _report(root: Path) -> tuple[str, list[dict]]:
    text = write_report(root).read_text(encoding="utf-8")
    return text, json.loads((root / "report_warnings.json").read_text(encoding="utf-8"))


def _kinds(warnings: list[dict]) -> list[tuple[str, str | None]]:
    return [(w["kind"], w["model"]) for w in warnings]


def _edit(path: Path, **changes) -> None:
    obj = json.loads(path.read_text())
    obj.update(changes)
    _write(path, obj)


@pytest.fixture
def clean(tmp_path) -> Path:
    return _make_run(tmp_path / "run", TWO)


def test_clean_run_has_no_warnings(clean) -> None:
    text, warnings = _report(clean)
    assert warnings == []
    assert '<div class="ok">No warnings:' in text and 'class="warnings"' not in text
    assert 'class="gate' not in text and 'th class="failed"' not in text


def test_compressed_beats_base_outside_the_intervals(clean) -> None:
    base = _evaluate(clean, TWO, 0, 0.2)  # a weak base ...
    pruned = _evaluate(clean / "compressed", TWO, 1, 4.0)  # ... that compression "improves"
    assert pruned["ci"]["balanced_accuracy"][0] > base["ci"]["balanced_accuracy"][1]
    text, warnings = _report(clean)
    beats = [w for w in warnings if w["kind"] == "compressed_beats_base"]
    assert [w["model"] for w in beats] == [PRUNED]
    lo, hi = pruned["ci"]["balanced_accuracy"]
    blo, bhi = base["ci"]["balanced_accuracy"]
    assert f"balanced accuracy [{lo:.2f}, {hi:.2f}] vs base [{blo:.2f}, {bhi:.2f}]" in beats[0]["message"]
    assert beats[0]["message"].endswith("suspect the base model (under-trained or unstable training); "
                                        "check its training curve")
    assert "Compressed beats base</strong>: " + PRUNED in text
    # A compressed model inside the base's interval (the quantized one) is not flagged.
    assert QUANTIZED not in {w["model"] for w in warnings}


def test_single_class_for_base_stage_and_int8(clean) -> None:
    _evaluate(clean / "compressed", TWO, 1, 1.0, only=0)
    _evaluate(clean / "export" / "int8", TWO, 2, 1.0, only=1)
    text, warnings = _report(clean)
    single = [w for w in warnings if w["kind"] == "single_class"]
    assert [w["model"] for w in single] == [PRUNED, INT8]
    assert single[0]["message"].startswith(f"{PRUNED} predicts only 'healthy' for all 120 test images")
    assert single[1]["message"].startswith(f"{INT8} predicts only 'sick' for all 120 test images")
    # The INT8 model now has test metrics: its column shows them instead of "not evaluated".
    assert "not evaluated" not in text
    # The base collapsing is caught too.
    _evaluate(clean, TWO, 3, 1.0, only=1)
    assert ("single_class", "base") in _kinds(_report(clean)[1])


def test_small_sample_from_the_metrics_section(clean) -> None:
    notes = ["'sick' has 5 images from 2 patients: one error moves its sensitivity by 0.20",
             "the split has 12 patients, fewer than 20: its intervals are wide"]
    _edit(clean / "metrics.json", small_sample={"min_class_support": 10, "min_patients": 20, "classes": {"sick": 5},
                                                "split": True, "notes": notes})
    text, warnings = _report(clean)
    assert [(w["kind"], w["message"]) for w in warnings] == [("small_sample", n) for n in notes]
    assert "Class sick (support 60) — too few images to judge (5, fewer than 10; one error moves its sensitivity " \
           "by 0.20)" in text
    assert "split too small to judge" in text
    assert "derived from the supports" not in text


def test_small_sample_derived_for_an_older_metrics_json(clean) -> None:
    base = json.loads((clean / "metrics.json").read_text())
    for key in ("small_sample", "ci_method"):
        base.pop(key, None)
    base["per_class"]["sick"]["support"] = 5
    base["n_patients"] = 12
    _write(clean / "metrics.json", base)
    text, warnings = _report(clean)
    small = [w["message"] for w in warnings if w["kind"] == "small_sample"]
    assert small == ["'sick' has 5 test images (fewer than 10): one error moves its sensitivity by 0.20, so a "
                     "difference on it cannot be judged",
                     "the test split has 12 patients (fewer than 20): its intervals rest on too few patients to "
                     "judge a difference"]
    assert "too few images to judge (5, fewer than 10" in text and "derived from the supports" in text


def test_interval_methods_are_marked_in_the_table(clean) -> None:
    base = json.loads((clean / "metrics.json").read_text())
    base["ci_method"] = {key: "percentile_bootstrap" for key in base["ci"]}
    base["ci_method"]["per_class.sick.sensitivity"] = "clopper_pearson"
    base["ci_method"]["per_class.sick.auc"] = "percentile_bootstrap_degenerate"
    _write(clean / "metrics.json", base)
    for folder in ("compressed", "quantized"):  # no ci_method: an older file, no marks
        _edit(clean / folder / "metrics.json", ci_method={})
    text, _ = _report(clean)
    value, ci = base["per_class"]["sick"]["sensitivity"], base["ci"]["per_class.sick.sensitivity"]
    assert f'{value:.3f} <span class="ci">[{ci[0]:.3f}, {ci[1]:.3f}]</span><sup class="mark">†</sup>' in text
    assert text.count('<sup class="mark">') == 2
    assert "unless marked: † Clopper–Pearson exact binomial interval; § percentile bootstrap of zero width" in text


def test_unstable_training_is_warned_and_clean_logs_are_not(clean) -> None:
    def log(path: Path, val_losses: list[float]) -> None:
        rows = [{"epoch": i + 1, "train_loss": 0.7 - 0.02 * i, "val_loss": v, "val_balanced_accuracy": 0.6,
                 "val_worst_class_sensitivity": 0.4} for i, v in enumerate(val_losses)]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    log(clean / "metrics.jsonl", [0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3])
    log(clean / "compressed" / "finetune" / "metrics.jsonl", [0.5, 0.45, 0.4])
    assert _report(clean)[1] == []
    log(clean / "metrics.jsonl", [0.7, 97.5, 0.5, 0.45, 0.4, 0.35, 0.3])
    log(clean / "compressed" / "finetune" / "metrics.jsonl", [0.5, float("nan"), 0.4])
    _, warnings = _report(clean)
    unstable = [w for w in warnings if w["kind"] == "unstable_training"]
    assert [w["model"] for w in unstable] == ["base", PRUNED]
    assert unstable[0]["message"].startswith("base training (metrics.jsonl): val loss 97.5 at epoch 2 — more than "
                                             "10× its median 0.45")
    assert "compressed/finetune (metrics.jsonl): val loss nan at epoch 2" in unstable[1]["message"]


def _gate(status: str, **extra) -> dict:
    return {"status": status, "metric": "worst_class_sensitivity", "baseline": 0.9, "value": 0.7, "drop": 0.2,
            "limit": 0.05, "message": "worst-class sensitivity fell by 0.200 on validation (limit 0.050)",
            "warnings": [], **extra}


def test_failed_gate_banner_column_and_warnings(clean) -> None:
    small = ("validation has only 3 'sick' images: one error moves sensitivity by 0.33, more than the 0.05 limit; "
             "the gate cannot judge this split")
    summary = json.loads((clean / "compressed" / "prune_summary.json").read_text())
    summary["gate"] = _gate("failed", warnings=[small])
    _write(clean / "compressed" / "prune_summary.json", summary)
    run = json.loads((clean / "run.json").read_text())
    run["stages"]["prune"]["gate"] = summary["gate"]
    run["compressed_stages"][0]["gate_status"] = "failed"
    _write(clean / "run.json", run)
    (clean / "compressed" / "model.gate_failed.pt").write_bytes(b"")
    text, warnings = _report(clean)
    assert _kinds(warnings) == [("gate_failed", PRUNED), ("gate_warning", PRUNED)]
    assert warnings[0]["message"] == (f"{PRUNED} FAILED its safety gate — not for deployment: worst-class "
                                      "sensitivity fell by 0.200 on validation (limit 0.050)")
    assert warnings[1]["message"] == f"{PRUNED} safety gate: {small}"
    banner = re.search(r'<div class="gate">(.*?)</div>', text).group(1)
    assert f"<strong>{PRUNED}: FAILED its safety gate — not for deployment.</strong>" in banner
    assert "worst-class sensitivity fell by 0.200 on validation" in banner and "only 3 &#x27;sick&#x27;" in banner
    assert text.index('<div class="gate">') < text.index("<h2>Summary</h2>")  # at the top
    assert (f'<th class="failed">{PRUNED}<span class="tag">FAILED safety gate — not for deployment</span></th>'
            in text)
    assert f"The final compressed model, {PRUNED}, FAILED its safety gate and is not for deployment" in text


def test_failed_int8_gate_from_export_json_and_file(clean) -> None:
    export = json.loads((clean / "export" / "export.json").read_text())
    export["int8"]["gate"] = _gate("failed", message="INT8 worst-class sensitivity fell by 0.200")
    _write(clean / "export" / "export.json", export)
    _, warnings = _report(clean)
    assert _kinds(warnings) == [("gate_failed", INT8)]
    # Without any gate record, the file name alone says the gate failed.
    del export["int8"]["gate"]
    _write(clean / "export" / "export.json", export)
    (clean / "export" / "model.int8.gate_failed.onnx").write_bytes(b"")
    text, warnings = _report(clean)
    assert _kinds(warnings) == [("gate_failed", INT8)]
    assert "export/model.int8.gate_failed.onnx" in warnings[0]["message"]
    assert f'<th class="failed">{INT8}<span' in text


def test_accepted_unsafe_gate(clean) -> None:
    _write(clean / "quantized" / "quantize_summary.json", {"method": "direct", "bits": 4,
                                                           "gate": _gate("accepted_unsafe")})
    text, warnings = _report(clean)
    assert _kinds(warnings) == [("gate_accepted_unsafe", QUANTIZED)]
    assert warnings[0]["message"].startswith(f"{QUANTIZED} was accepted despite failing its safety gate "
                                             "(--accept-unsafe): worst-class sensitivity fell by 0.200")
    assert f'<div class="gate unsafe"><strong>{QUANTIZED}: accepted despite failing its safety gate ' \
           "(--accept-unsafe).</strong>" in text
    assert '<div class="gate">' not in text and "FAILED" not in text
    assert f'<th class="unsafe">{QUANTIZED}<span class="tag">accepted despite failing its safety gate' in text


def test_passed_gate_and_malformed_gate(clean) -> None:
    run = json.loads((clean / "run.json").read_text())
    run["stages"]["prune"]["gate"] = _gate("passed", value=0.89, drop=0.01, message=None)
    run["stages"]["quantize"]["gate"] = {"status": "broken"}
    _write(clean / "run.json", run)
    text, warnings = _report(clean)
    assert warnings == []
    assert "<td>—</td>" in text and '<td class="better">passed <span class="ci">worst_class_sensitivity 0.900 → ' \
                                    "0.890 (drop 0.010, limit 0.050)</span></td>" in text
    assert "run.json: stages.quantize.gate: gate.status must be one of passed, failed, accepted_unsafe, off, " \
           "got &#x27;broken&#x27;" in text
