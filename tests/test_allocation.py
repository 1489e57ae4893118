"""Worst-class-aware allocation: the greedy budget rule by hand, and a real run that keeps its MACs budget."""

from __future__ import annotations

import copy
import json

import pytest

from medprune.compress.allocation import LayerProbe, allocate
from medprune.config import config_from_dict
from medprune.errors import ConfigError
from tests.conftest import TINY_CONFIG


def test_allocate_spends_the_budget_on_the_cheapest_drops_first() -> None:
    probes = [
        LayerProbe("a", 0.5, 100, 0.10), LayerProbe("a", 0.75, 150, 0.30),   # sensitive
        LayerProbe("b", 0.5, 100, 0.00), LayerProbe("b", 0.75, 160, 0.02),   # insensitive
        LayerProbe("c", 0.5, 50, -0.05), LayerProbe("c", 0.75, 80, 0.01),    # improved at 0.5: counts as 0
    ]
    ratios, saved, drop = allocate(probes, 200)
    # steps by drop per MAC: c@0.5 (0/50), b@0.5 (0/100), then c@0.75 (0.01/30 = 3.3e-4) vs b@0.75 (0.02/60)
    # tie broken by the bigger saving: b@0.75 → saved 50 + 160 = 210 >= 200
    assert ratios == {"c": 0.5, "b": 0.75} and saved == 210 and drop == pytest.approx(0.02)
    assert "a" not in ratios  # the sensitive layer keeps its width
    everything, saved_all, _ = allocate(probes, 10_000)  # more than all probes save: every layer at its largest
    assert everything == {"a": 0.75, "b": 0.75, "c": 0.75} and saved_all == 390
    assert allocate(probes, 0) == ({}, 0, 0.0)


def test_allocate_skips_a_ratio_that_rounds_to_the_same_width() -> None:
    """16 channels in multiples of 8: removing a quarter removes nothing, half removes 8 — the layer still
    progresses to 0.5 instead of stopping at its zero-saving first step."""
    probes = [LayerProbe("a", 0.25, 0, 0.0), LayerProbe("a", 0.5, 100, 0.1), LayerProbe("b", 0.5, 40, 0.0)]
    ratios, saved, drop = allocate(probes, 120)
    assert ratios == {"a": 0.5, "b": 0.5} and saved == 140 and drop == pytest.approx(0.1)


def test_allocation_config_is_checked(tiny_config_dict: dict) -> None:
    tiny_config_dict["compress"] = {"allocation": {"macs_keep": 1.5}}
    with pytest.raises(ConfigError, match=r"compress.allocation.macs_keep: must be in \(0, 1\)"):
        config_from_dict(tiny_config_dict, "a.yaml")
    tiny_config_dict["compress"] = {"allocation": {"candidates": [0.5, 1.0]}}
    with pytest.raises(ConfigError, match=r"compress.allocation.candidates\[1\]"):
        config_from_dict(tiny_config_dict, "a.yaml")
    tiny_config_dict["compress"] = {"allocation": {}, "layer_ratios": {"features.0*": 0.5}}
    with pytest.raises(ConfigError, match="compress.allocation: sets the per-layer ratios itself"):
        config_from_dict(tiny_config_dict, "a.yaml")


@pytest.mark.slow
def test_prune_job_allocates_per_layer_and_keeps_its_macs_budget(tmp_path) -> None:
    from medprune.workflows.jobs import train
    from medprune.workflows.prune import prune_job

    data = copy.deepcopy(TINY_CONFIG)
    data["runtime"]["out_dir"] = str(tmp_path / "runs")
    data["optim"]["epochs"] = 2
    data["compress"] = {"criterion": "l1", "allocation": {"macs_keep": 0.6, "candidates": [0.25, 0.5, 0.75]},
                        "finetune": {"epochs": 0}, "safety": {"max_worst_class_drop": None},
                        "calibration": {"batches": 2, "batch_size": 4}}
    config = config_from_dict(data, "alloc.yaml")
    trained = train(config)
    outcome = prune_job(config, trained.result.best_checkpoint, tmp_path / "pruned")
    record = json.loads((tmp_path / "pruned" / "allocation.json").read_text())
    summary = outcome.summary
    assert record["metric"] == "worst_class_sensitivity" and record["macs_keep"] == 0.6
    layers = {p["layer"] for p in record["probes"]}
    assert len(record["probes"]) == 3 * len(layers) and set(record["ratios"]) == layers
    assert summary["macs_after"] <= 0.6 * summary["macs_before"] + 1  # the budget holds on the real model
    assert record["measured_macs_saved"] == summary["macs_before"] - summary["macs_after"]
    assert summary["allocation"]["ratios"] == record["ratios"]
    chosen = {k: v for k, v in record["ratios"].items() if v > 0}
    assert chosen and set(chosen.values()) <= {0.25, 0.5, 0.75}
