"""``medprune sweep`` latency: one timing per distinct architecture, its measured spread, and the
"within the measured spread" verdict (deterministic cases use injected :class:`LatencyStats`)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import medprune.workflows.sweep as sweep_module
from medprune.compress.latency import LatencyStats
from medprune.config import config_from_dict
from medprune.report.sweep_plots import plot_frontier
from medprune.workflows.sweep import compare_latency, format_sweep, sweep_job
from tests.conftest import TINY_CONFIG, write_yaml


def _stats(*samples: float) -> LatencyStats:
    return LatencyStats.from_samples(list(samples))


def _point(criterion: str, ratio: float, arch: str) -> dict:
    return {"criterion": criterion, "ratio": ratio, "architecture": arch, "macs": 1000, "params": 10,
            "balanced_accuracy": 0.8, "worst_class_sensitivity": 0.7, "worst_class": "sick"}


def _case() -> tuple[dict, list[dict], dict[str, LatencyStats]]:
    """Base 'B' (IQR 9.5–10.5 ms), 'A' shared by l1/l2 r=0.30 (4.5–5.5), 'N' (9–11: overlaps the base),
    'C' (4–6: overlaps 'A', not the base)."""
    stats = {"B": _stats(9, 10, 11), "A": _stats(4, 5, 6), "N": _stats(8, 10, 12), "C": _stats(3, 5, 7)}
    base = {"macs": 4000, "params": 40, "architecture": "B", "balanced_accuracy": 0.9,
            "worst_class_sensitivity": 0.8, "worst_class": "sick"}
    points = [_point("l1", 0.3, "A"), _point("l2", 0.3, "A"), _point("l1", 0.1, "N"), _point("l1", 0.5, "C")]
    return base, points, stats


def test_compare_latency_shares_timings_and_says_what_is_within_the_spread() -> None:
    base, points, stats = _case()
    table = compare_latency(base, points, stats)
    assert [(row["key"], row["models"]) for row in table] == [
        ("B", ["base"]), ("A", ["l1 r=0.30", "l2 r=0.30"]), ("N", ["l1 r=0.10"]), ("C", ["l1 r=0.50"])]
    assert table[1]["ort"]["q1_ms"] == 4.5 and table[1]["ort"]["q3_ms"] == 5.5 and table[1]["ort"]["n"] == 3
    a1, a2, near, c = points
    assert base["ort_ms"] == 10.0 and base["ort_iqr_ms"] == [9.5, 10.5] and base["ort_spread_pct"] == 5.0
    # one architecture, one timing: identical numbers for both criteria
    for key in ("ort_ms", "ort_iqr_ms", "ort_spread_pct", "speedup", "speedup_interval"):
        assert a1[key] == a2[key], key
    assert a1["speedup"] == 2.0 and a1["speedup_interval"] == pytest.approx([9.5 / 5.5, 10.5 / 4.5])
    assert a1["within_spread_of_base"] is False
    assert a1["same_architecture_as"] == ["l2 r=0.30"] and a2["same_architecture_as"] == ["l1 r=0.30"]
    assert a1["within_spread_of"] == ["l1 r=0.50"]  # C's 4–6 ms overlaps A's 4.5–5.5 ms
    # N: 9–11 ms against the base's 9.5–10.5 ms: its speed-up interval includes 1.0
    assert near["speedup"] == 1.0 and near["speedup_interval"] == pytest.approx([9.5 / 11, 10.5 / 9])
    assert near["within_spread_of_base"] is True and near["within_spread_of"] == []
    assert c["within_spread_of_base"] is False and c["within_spread_of"] == ["l1 r=0.30", "l2 r=0.30"]
    assert c["same_architecture_as"] == []


def test_compare_latency_a_point_with_the_base_architecture_gets_the_base_timing() -> None:
    base, _, stats = _case()
    point = _point("sfp", 0.5, "B")
    compare_latency(base, [point], stats)
    assert point["ort_ms"] == base["ort_ms"] and point["speedup"] == 1.0
    assert point["within_spread_of_base"] is True and point["same_architecture_as"] == ["base"]
    with pytest.raises(KeyError, match="no timing for l1 r=0.50's architecture 'Z'"):
        compare_latency(base, [_point("l1", 0.5, "Z")], stats)


def _result(base: dict, points: list[dict], table: list[dict]) -> dict:
    return {"threads": 2, "batch": 1, "distinct_architectures": len(table), "base": base, "points": points,
            "latency": {"runtime": "onnxruntime CPU", "rounds": 3, "per_round": 1, "architectures": table}}


def test_format_sweep_shows_spread_interval_and_verdict() -> None:
    base, points, stats = _case()
    text = format_sweep(_result(base, points, compare_latency(base, points, stats)))
    lines = text.splitlines()
    assert "±" in lines[0] and "interval" in lines[0] and "latency" in lines[0]
    assert lines[1].split()[:6] == ["base", "B", "4,000", "10.00", "5%", "1.00"]
    l1, l2, near, c = lines[2:6]
    assert "l1 r=0.30" in l1 and "2.00" in l1 and "1.73–2.33" in l1 and " 10%" in l1
    assert l1.endswith("faster than base; within the measured spread of l1 r=0.50; "
                       "same architecture (one timing) as l2 r=0.30")
    assert l2.endswith("same architecture (one timing) as l1 r=0.30")
    assert near.endswith("within the measured spread of base") and "0.86–1.17" in near
    assert c.endswith("faster than base; within the measured spread of l1 r=0.30, l2 r=0.30")
    assert lines[6].startswith("4 distinct architectures among base and 4 setting(s), each timed once")
    assert "half the interquartile range" in lines[6]


def test_frontier_plot_draws_the_spread(tmp_path: Path) -> None:
    base, points, stats = _case()
    result = _result(base, points, compare_latency(base, points, stats))
    assert plot_frontier(result, tmp_path / "f.png").stat().st_size > 10_000
    # a sweep.json written before the spread was recorded still plots (no error bars)
    old = {"base": {k: base[k] for k in ("macs", "ort_ms", "balanced_accuracy", "worst_class_sensitivity")},
           "points": [{k: p[k] for k in ("criterion", "ratio", "macs", "ort_ms", "balanced_accuracy",
                                         "worst_class_sensitivity")} for p in points]}
    assert plot_frontier(old, tmp_path / "old.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A tiny sweep: l1 and l2 at two ratios (per-layer ratio, no safety back-off: the widths
    depend on the ratio only), candidates passed to the timer recorded."""
    root = tmp_path_factory.mktemp("sweep")
    data = copy.deepcopy(TINY_CONFIG)
    data["runtime"]["out_dir"] = str(root / "runs")
    data["optim"]["epochs"] = 1
    data["eval"]["n_bootstrap"] = 0
    data["compress"] = {"criterion": "l1", "ratio": 0.5, "calibration": {"batches": 1, "batch_size": 4},
                        "finetune": {"epochs": 0}, "safety": {"max_worst_class_drop": None}}
    data["bench"] = {"rounds": 3, "per_round": 1}
    path = write_yaml(root / "tiny.yaml", data)
    timed: list[list[str]] = []
    import medprune.compress.latency as latency_module

    real = latency_module.interleaved_latency

    def recording(candidates, **kw):
        timed.append([name.removesuffix("/onnxruntime") for name in candidates])
        return real(candidates, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(latency_module, "interleaved_latency", recording)
        outcome = sweep_job(config_from_dict(data, str(path)), ratios=[0.25, 0.6], criteria=["l1", "l2"])
    return outcome, timed


@pytest.mark.slow
def test_sweep_times_each_architecture_once(swept) -> None:
    outcome, timed = swept
    result = outcome.result
    points = {(p["criterion"], p["ratio"]): p for p in result["points"]}
    assert list(points) == [("l1", 0.25), ("l1", 0.6), ("l2", 0.25), ("l2", 0.6)]
    for r in (0.25, 0.6):
        l1, l2 = points["l1", r], points["l2", r]
        assert l1["macs"] == l2["macs"] and l1["params"] == l2["params"]  # really the same widths
        assert l1["architecture"] == l2["architecture"]
        assert l1["ort_ms"] == l2["ort_ms"] and l1["speedup_interval"] == l2["speedup_interval"]
        assert l1["same_architecture_as"] == [f"l2 r={r:.2f}"]
    arch = [result["base"]["architecture"], points["l1", 0.25]["architecture"], points["l1", 0.6]["architecture"]]
    assert len(set(arch)) == 3 and result["distinct_architectures"] == 3
    assert timed == [arch]  # one interleaved run, each architecture once, base first
    table = result["latency"]["architectures"]
    assert [row["key"] for row in table] == arch
    assert table[1]["models"] == ["l1 r=0.25", "l2 r=0.25"]
    for row in table:
        ort = row["ort"]
        assert ort["n"] == 3 and 0 < ort["min_ms"] <= ort["q1_ms"] <= ort["median_ms"] <= ort["q3_ms"] <= ort["max_ms"]
        assert ort["spread_pct"] >= 0
    for p in result["points"]:
        lo, hi = p["speedup_interval"]
        assert lo <= p["speedup"] <= hi and p["within_spread_of_base"] == (lo <= 1 <= hi)


@pytest.mark.slow
def test_sweep_json_and_table_carry_the_spread(swept) -> None:
    outcome, _ = swept
    on_disk = json.loads((outcome.out_dir / "sweep.json").read_text())
    assert on_disk["distinct_architectures"] == 3
    assert "interquartile range" in on_disk["latency"]["spread"]
    assert on_disk["latency"]["rounds"] == 3 and on_disk["latency"]["per_round"] == 1
    assert {"ort_iqr_ms", "ort_spread_pct", "speedup_interval", "within_spread_of_base", "within_spread_of",
            "same_architecture_as", "architecture"} <= set(on_disk["points"][0])
    assert on_disk["base"]["ort_iqr_ms"][0] <= on_disk["base"]["ort_ms"] <= on_disk["base"]["ort_iqr_ms"][1]
    text = format_sweep(on_disk)
    assert "3 distinct architectures among base and 4 setting(s), each timed once" in text
    assert text.count("same architecture (one timing) as") == 4
    assert outcome.plot.is_file() and outcome.plot.stat().st_size > 10_000
