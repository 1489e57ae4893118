"""Does knowing the degradation help? Degradation-aware classification vs its baselines, level by level.

SYNTHETIC data: the thermography phantom, JPEG-compressed, noisy or blurred at random levels
(``configs/degradation/demo.yaml``); the numbers describe the phantom, never clinical performance.

Endo, Tanaka & Okutomi (2020) claim a classifier given the degradation parameter q beats one trained
on degraded images without it (DESIGN.md §5). Arms, each trained at the same budget (same data,
backbone, optimiser, epochs, seed) and evaluated on the same test images at every level of the
config's grid (and on clean images):

* ``film`` / ``concat_fc`` / ``channel`` — the degradation-aware model with each injection mode,
  evaluated with the true q (``oracle``) and with its estimator's (``blind``);
* ``degraded-trained`` — the backbone trained on the degraded images without q;
* ``clean-trained`` — the backbone trained on clean images;
* ``compressed (film)`` — the FiLM model pruned (the config's ``compress`` settings) and fine-tuned.

Each seed is one ``medprune run`` of the FiLM config (it trains the two baselines, compresses and
evaluates the grid) plus one training + grid per other injection mode. Reported per model and
level, mean ± std over seeds: balanced accuracy and worst-class sensitivity; then, per aware
arm, the difference to ``degraded-trained`` averaged over the levels, per seed, and how many seeds
favour each (the paper's claim is that the aware model wins).

The machine is usually shared: the 1-minute load average (what ``uptime`` prints) is recorded
before and after every run.

    python benchmarks/degradation_compare.py [--seeds 0,1,2] [--epochs 12] [--modes film,concat_fc,channel]
                                             [--keep DIR] [--quick]

Prints the tables, writes ``benchmarks/results/degradation_compare.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine_info, mean_std, parse_floats, parse_names, table, write_result

from medprune.config import load_config
from medprune.metrics.degradation import DegradationGrid

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "degradation" / "demo.yaml"
MODES = ("film", "concat_fc", "channel")
METRICS = (("balanced_accuracy", "balanced acc."), ("worst_class_sensitivity", "worst-class sens."))


def arm_overrides(mode: str, seed: int, epochs: int, out: Path, quick: bool, first: bool) -> list[str]:
    """The config overrides of one arm: the injection mode, the seed, the budget, its own run directory.
    Only the ``first`` mode trains the baselines and is compressed, exported and timed."""
    over = [f"name=seed{seed}_{mode}", f"runtime.out_dir={out}", f"runtime.seed={seed}", f"optim.epochs={epochs}",
            f"model.kwargs.injection={mode}", "runtime.progress=false"]
    if not first:
        over += ["data.degradation.baselines=[]", "compress.ratio=0.0", "export.enabled=false", "bench.enabled=false"]
    else:
        over += ["bench.enabled=false"]
    if quick:
        over += ["data.phantom.patients=40", "data.image_size=[32,32]", "model.kwargs.width=0.25",
                 "eval.n_bootstrap=50", "compress.finetune.epochs=1",
                 "data.degradation.grid={jpeg: [50, 10], noise: [20, 50], blur: [1.5, 3.0]}"]
    return over


def run_arm(mode: str, seed: int, args: argparse.Namespace, out: Path, first: bool) -> tuple[DegradationGrid, dict]:
    from medprune.workflows.run import run_job

    config = load_config(args.config, arm_overrides(mode, seed, args.epochs, out, args.quick, first))
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    run_job(config, accept_unsafe=True)  # the compressed model is measured, whatever its gate says
    seconds = time.perf_counter() - t0
    grid = DegradationGrid.from_dict(json.loads((config.run_dir / "degradation" / "grid.json").read_text()))
    return grid, {"mode": mode, "seed": seed, "seconds": round(seconds, 1), "load_before": load0,
                  "load_after": os.getloadavg()[0], "run_dir": str(config.run_dir)}


def arm_name(mode: str, model: str) -> str:
    """``aware (oracle)`` of the FiLM run → ``film (oracle)``; baselines keep their names."""
    if model.startswith("aware "):
        return f"{mode} {model.removeprefix('aware ')}"
    if model.startswith("compressed "):
        return f"compressed {mode} {model.removeprefix('compressed ')}"
    return model


def collect(grids: dict[tuple[str, int], DegradationGrid]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """``{model: {level: {metric: [value per seed]}}}`` over every run."""
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for (mode, _seed), grid in sorted(grids.items(), key=lambda kv: kv[0][1]):
        for p in grid.points:
            name = arm_name(mode, p.model)
            for key, _ in METRICS:
                value = p.metrics.get(key)
                if value is not None:
                    out.setdefault(name, {}).setdefault(p.level, {}).setdefault(key, []).append(float(value))
    return out


def pm(values: list[float]) -> str:
    if not values:
        return "n/a"
    m, s = mean_std(values)
    return f"{m:.3f} ± {s:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--modes", default=",".join(MODES), help="injection modes; the first is also compressed")
    parser.add_argument("--keep", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="tiny settings: checks the script, measures nothing")
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default benchmarks/results/...)")
    args = parser.parse_args()
    seeds = [int(s) for s in parse_floats(args.seeds)]
    modes = parse_names(args.modes)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medprune-degradation-") as tmp:
        out = args.keep or Path(tmp)
        grids: dict[tuple[str, int], DegradationGrid] = {}
        runs = []
        for seed in seeds:
            for i, mode in enumerate(modes):
                grid, record = run_arm(mode, seed, args, out, first=(i == 0))
                grids[(mode, seed)] = grid
                runs.append(record)
                print(f"seed {seed} {mode}: {record['seconds']:.0f} s (load {record['load_before']:.1f} → "
                      f"{record['load_after']:.1f})", flush=True)
        values = collect(grids)
        first = grids[(modes[0], seeds[0])]
        levels = ["clean"] + [f"{k}={v:g}" for k in first.kinds for v in first.levels(k)]
    models = list(values)
    tables = {}
    for key, label in METRICS:
        rows = [[m] + [pm(values[m].get(lv, {}).get(key, [])) for lv in levels] for m in models]
        tables[key] = rows
        print(f"\n{label}, mean ± std over seeds {seeds} (test split; SYNTHETIC phantom)")
        print(table(["model", *levels], rows))
    # the paper's claim, per aware arm: mean over degraded levels minus the degraded-trained model's, per seed
    claims = []
    for m in models:
        if m in ("degraded-trained", "clean-trained"):
            continue
        for key, label in METRICS:
            diffs = []
            for s in range(len(seeds)):
                mine = [values[m][lv][key][s] for lv in levels[1:] if len(values[m].get(lv, {}).get(key, [])) > s]
                base = [values["degraded-trained"][lv][key][s] for lv in levels[1:]
                        if len(values.get("degraded-trained", {}).get(lv, {}).get(key, [])) > s]
                if mine and base and len(mine) == len(base):
                    diffs.append(sum(mine) / len(mine) - sum(base) / len(base))
            claims.append({"model": m, "metric": key, "diffs": diffs,
                           "wins": sum(d > 0 for d in diffs), "losses": sum(d < 0 for d in diffs)})
    print("\nmean over degraded levels, minus degraded-trained (per seed)")
    print(table(["model", "metric", "mean ± std", "seeds better / worse"],
                [[c["model"], c["metric"], pm(c["diffs"]), f"{c['wins']} / {c['losses']}"] for c in claims]))
    payload: dict[str, Any] = {"seeds": seeds, "modes": modes, "epochs": args.epochs, "quick": args.quick,
                               "levels": levels, "values": values, "claims": claims, "runs": runs,
                               "seconds": round(time.perf_counter() - t0, 1), "synthetic_data": True,
                               **machine_info()}
    print(f"\nwrote {write_result('degradation_compare', payload, args.out)}")


if __name__ == "__main__":
    main()
