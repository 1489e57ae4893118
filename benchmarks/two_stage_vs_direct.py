"""Does stage 1 help? The IVOCT plaque detector on U-Net-cleaned frames vs on the raw frames.

SYNTHETIC data: the IVOCT phantom (``medprune.data.phantom_ivoct``); the numbers describe the
phantom, never clinical performance.

Li et al. (MATEC 2019) clean every frame with a U-Net and a threshold before Faster R-CNN detects
plaques (DESIGN.md §5). Two arms, the same detector recipe and training budget
(``anchor_scales.py``'s setup: ResNet-18 at width 1/4, six anchor sizes on one map):

* ``cleaned`` — ``data.stage1``: trains and is tested on the frames stage 1 (BasicUNet + its
  validation-tuned background threshold, trained **once**) cleaned;
* ``raw``     — the same phantom read directly (``data.phantom``), split by the same
  ``data.split`` as stage 1's.

The two arms must see the same patients in every split, or the comparison is void: the benchmark
compares each run's ``splits.json`` (patient ids per split) with stage 1's and stops with an error
when one differs. ``runtime.seed`` (``--seeds``) changes the initialisation, batch order and
augmentation draws; the data stay fixed, and the same seed gives both arms the same batch order and
the same initial weights (same architecture), so the comparison is paired seed by seed.

Per run the test split is predicted once and scored at the score threshold tuned on validation
(the detection task's ``calibrate``, as ``medprune run`` does; main table) and at the fixed 0.5.
Reported, mean ± std over seeds: AP@0.5, recall, precision, total (recall + precision + IoU)/3 and
interval_total (the same on angular arcs); then cleaned − raw per seed, its mean ± std, a paired
t-test (few seeds: a weak test) and how many seeds favour each arm.

The machine is usually shared: the 1-minute load average (what ``uptime`` prints) is recorded
before and after every run; training seconds compare only at similar load.

    python benchmarks/two_stage_vs_direct.py [--seeds 0,1,2] [--epochs 10] [--threads 1] [--keep DIR] [--quick]

Defaults (``anchor_scales.py``'s: 2 arms x 3 seeds = 6 trainings) took 6 minutes on one core of a shared
2-core machine at load 3; ``--quick`` under a minute.

Prints the tables, writes ``benchmarks/results/two_stage_vs_direct.json``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from _common import machine_info, table, write_result
from anchor_scales import (add_setup_arguments, detector_config, fmt_diff, mean_std_defined, paired, pm, run_stage1,
                           start, train_detector, values)

ARMS = ("cleaned", "raw")
METRICS = (("ap50", "AP@0.5"), ("recall", "recall"), ("precision", "precision"), ("total", "total"),
           ("interval_total", "interval total"))


def split_mismatches(stage1_splits: dict[str, list[str]], records: list[dict[str, Any]]) -> list[str]:
    """One line per run whose patient split differs from stage 1's (empty: every split matches)."""
    problems = []
    for r in records:
        for name in ("train", "val", "test"):
            mine, ref = sorted(r["splits"].get(name, [])), sorted(stage1_splits.get(name, []))
            if mine != ref:
                extra, missing = sorted(set(mine) - set(ref)), sorted(set(ref) - set(mine))
                problems.append(f"{r['name']}: {name} split differs from stage 1's (extra {extra[:5]}, "
                                f"missing {missing[:5]})")
    return problems


def summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm and threshold: mean/std of each metric; cleaned − raw paired by seed."""
    by = {a: sorted((r for r in records if r["arm"] == a), key=lambda r: r["seed"]) for a in ARMS}
    out: dict[str, Any] = {}
    for where in ("calibrated", "at_0.5"):
        for key, _ in METRICS:
            entry: dict[str, Any] = {}
            for arm, runs in by.items():
                m, s, n = mean_std_defined(values(runs, key, where))
                entry[arm] = {"mean": None if n == 0 else m, "std": None if n == 0 else s, "n": n}
            entry["cleaned_minus_raw"] = paired(values(by["cleaned"], key, where), values(by["raw"], key, where))
            out[f"{where}.{key}"] = entry
    return out


def print_tables(records: list[dict[str, Any]], summ: dict[str, Any], where: str, title: str) -> None:
    by = {a: sorted((r for r in records if r["arm"] == a), key=lambda r: r["seed"]) for a in ARMS}
    print()
    print(title)
    rows = []
    for key, label in METRICS:
        p = summ[f"{where}.{key}"]["cleaned_minus_raw"]
        test = "n/a" if p["p"] is None else f"t={p['t']:+.2f}, p={p['p']:.3f}"
        per_seed = " ".join(f"{d:+.3f}" for d in p["diffs"]) or "n/a"
        rows.append([label, pm(values(by["cleaned"], key, where)), pm(values(by["raw"], key, where)), fmt_diff(p),
                     per_seed, test])
    print(table(["metric", "cleaned (stage 1)", "raw", "Δ cleaned − raw", "Δ per seed", "paired t-test"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_arguments(parser)
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/two_stage_vs_direct.json)")
    args = parser.parse_args()
    setup, seeds, t0, load_start = start(args)
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.keep) if args.keep else Path(tmp)
        stage1 = run_stage1(setup, workdir)
        for seed in seeds:  # arms interleaved per seed, so both see similar machine load
            for arm in ARMS:
                config = detector_config(setup, workdir, f"{arm}_seed{seed}", seed,
                                         stage1=Path(stage1["config"]) if arm == "cleaned" else None)
                records.append({"arm": arm, **train_detector(config, workdir)})
                write_result("two_stage_vs_direct", {"benchmark": "two_stage_vs_direct", "partial": True,
                                                     "per_run": records}, args.out)
                problems = split_mismatches(stage1["splits"], records[-1:])
                if problems:
                    raise SystemExit("the arms do not share the patient split; the comparison is void:\n"
                                     + "\n".join(problems))
    total, load_end = time.perf_counter() - t0, os.getloadavg()

    summ = summary(records)
    test_ids = stage1["splits"]["test"]
    frames = sorted({(r["arm"], r["test_frames"]) for r in records})
    print()
    print(f"SYNTHETIC IVOCT phantom: {setup.patients} pullbacks x {setup.frames} frames at {setup.height}x"
          f"{setup.width} px. Stage 1: BasicUNet, test tissue Dice {stage1['tissue_dice']:.3f}, plaque Dice "
          f"{stage1['plaque_dice']:.3f}, background threshold {stage1['threshold']:.2f}. Detector: faster_rcnn "
          f"resnet18 width 0.25, six anchor sizes on one map, {setup.epochs} epochs, batch {setup.batch_size}, "
          f"Adam lr {setup.lr:g}; seeds {seeds}; {setup.threads} thread(s); load {load_start[0]:.2f} at start, "
          f"{load_end[0]:.2f} at end.")
    print(f"Patient split identical in every run and equal to stage 1's (checked per run): test pullbacks "
          f"{', '.join(test_ids)}; test frames per arm {frames}.")
    print_tables(records, summ, "calibrated", "Test split at the score threshold tuned on validation "
                 "(mean ± std over seeds; Δ paired by seed)")
    print_tables(records, summ, "at_0.5", "Same runs at the fixed score threshold 0.5 (AP@0.5 does not depend on it)")
    print(f"total {total:.0f} s")
    out = write_result("two_stage_vs_direct", {
        "benchmark": "two_stage_vs_direct", "data": "SYNTHETIC IVOCT phantom", "partial": False,
        "setup": asdict(setup), "seeds": seeds, "arms": list(ARMS), "splits_match": True,
        "test_patients": test_ids, "stage1": stage1, "summary": summ, "per_run": records, "total_seconds": total,
        "load_average_start": list(load_start), "load_average_end": list(load_end),
        **machine_info(setup.threads)}, args.out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
