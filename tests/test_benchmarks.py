"""The benchmarks are not run by the suite (they take minutes to hours), but each must still load
against today's library and their shared record must be writable: a renamed library helper once
broke every benchmark at its very last step, after a 16-minute run, with nothing written."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))


@pytest.fixture()
def common(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("_common", BENCHMARKS / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_machine_record_and_result_file(common, tmp_path) -> None:
    info = common.machine_info(2)
    assert info["threads"] == 2 and info["machine"] and "torch" in info["versions"]
    out = common.write_result("x", {"rows": [1, 2], **info}, tmp_path / "x.json")
    assert json.loads(out.read_text())["rows"] == [1, 2]
    assert common.mean_std([1.0, 3.0])[0] == pytest.approx(2.0)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_benchmark_loads_and_explains_itself(script) -> None:
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300,
                          cwd=BENCHMARKS.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def _load(name: str, monkeypatch) -> object:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_ivoct_detector_benchmarks_build_valid_configs_and_pair_seeds(monkeypatch, tmp_path) -> None:
    """anchor_scales.py and two_stage_vs_direct.py write their configs at run time: each must validate today."""
    import medprune
    from medprune.config import config_from_dict

    anchors = _load("anchor_scales", monkeypatch)
    setup = anchors.Setup.quick()
    stage1 = anchors.stage1_config(setup, tmp_path)
    assert medprune.load_config(stage1).task == "segmentation"
    for variant, (layout, sizes) in anchors.VARIANTS.items():
        for source in (stage1, None):  # cleaned frames, and the raw phantom (two_stage_vs_direct's raw arm)
            cfg = config_from_dict(
                anchors.detector_config(setup, tmp_path, variant, 0, layout=layout, anchor_sizes=sizes, stage1=source))
            assert cfg.model.kwargs["anchor_sizes"] == list(sizes) and cfg.model.kwargs["layout"] == layout
            assert (cfg.data.stage1 is None) == (source is None)
    p = anchors.paired([0.5, 0.7, float("nan")], [0.4, 0.8, 0.1])
    assert p["n"] == 2 and p["mean"] == pytest.approx(0.0) and (p["a_better"], p["b_better"]) == (1, 1)

    direct = _load("two_stage_vs_direct", monkeypatch)
    split = {"train": ["PB1", "PB2"], "val": ["PB3"], "test": ["PB4"]}
    same = {"name": "raw_seed0", "splits": dict(split)}
    moved = {"name": "raw_seed1", "splits": {**split, "val": ["PB4"], "test": ["PB3"]}}
    assert direct.split_mismatches(split, [same]) == []
    assert [line.split(":")[0] for line in direct.split_mismatches(split, [moved])] == ["raw_seed1", "raw_seed1"]
