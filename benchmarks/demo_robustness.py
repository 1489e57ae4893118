"""Does the demo recipe train a good base model whatever the seed?

SYNTHETIC data: the thermography phantom of ``configs/thermography/demo.yaml``; the numbers
describe the phantom, never clinical performance.

For each ``runtime.seed`` in ``--seeds`` the demo config's base model is trained exactly as
``medprune run`` trains it (the train stage only: best validation epoch kept, then evaluated on
the test split with patient-level bootstrap intervals). The phantom and the patient split stay
those of the config, so the spread over seeds is that of training alone (initialisation, batch
order, augmentation). Per seed it records test balanced accuracy with its CI, sick and healthy
sensitivity, the best epoch, the largest validation loss over the epochs (a stale BatchNorm
running estimate shows up there as a loss in the tens or hundreds) and the training seconds.

``--compress`` also runs the demo's compress stage on each trained model (prune, fine-tune, the
safety gate, test metrics; ``--criteria`` tries other criteria on the same base model): does the
demo pass its own gate whatever the seed?

``--compare-old`` also trains the recipe the demo shipped before it was made robust (``RECIPES``:
the anchor), seed for seed. ``--data-seeds`` adds a second table: the phantom and the split drawn
anew (``data.phantom.seed`` = ``data.split.seed`` = each value) at ``runtime.seed`` 0.

The machine is shared in most places this runs: the 1-minute load average (what ``uptime``
prints) is recorded before and after every run, and training seconds are only comparable at
similar load.

    python benchmarks/demo_robustness.py [--seeds 0,1,2,3,4] [--compare-old] [--data-seeds 1,2]
                                         [--compress [--criteria bn_scale,taylor,l1]]
                                         [--set optim.lr=0.02 ...] [--threads 2]

Prints a table per recipe (one row per seed, then mean ± std and min) and writes
``benchmarks/results/demo_robustness.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from _common import machine_info, mean_std, parse_names, table, write_result
import medprune

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "thermography" / "demo.yaml"

#: Recipe name → overrides applied to the demo config. ``old`` is the optimiser recipe shipped before
#: this benchmark existed (sgdm lr 0.05, batch 16, 15 epochs, 1 warm-up epoch, clip 5, no BatchNorm
#: recalibration): the anchor. It runs on today's phantom (200 patients) and model (channel_divisor 8),
#: so the comparison isolates the optimiser settings.
RECIPES: dict[str, list[str]] = {
    "demo": [],
    "old": ["optim.optimizer=sgdm", "optim.lr=0.05", "optim.momentum=0.9", "optim.weight_decay=0.0001",
            "optim.batch_size=16", "optim.epochs=15", "optim.schedule.name=cosine",
            "optim.schedule.warmup_epochs=1", "optim.grad_clip=5.0", "optim.bn_recalibration=false"],
}


def load() -> tuple[float, float, float]:
    """The load averages ``uptime`` prints (1, 5, 15 minutes)."""
    return os.getloadavg()


def run_one(args: argparse.Namespace, recipe: str, seed: int, data_seed: int | None, workdir: Path) -> dict[str, Any]:
    """Train one recipe with one seed (train stage only); return its record."""
    extra = list(RECIPES[recipe]) + (list(args.set) if recipe == "demo" else [])
    phantom_seed = 0 if data_seed is None else data_seed
    data = [] if data_seed is None else [f"data.phantom.seed={data_seed}", f"data.split.seed={data_seed}"]
    tag = f"{recipe}_seed{seed}" + ("" if data_seed is None else f"_data{data_seed}")
    cfg = medprune.load_config(args.config, [
        *extra, *data, f"name={tag}", f"runtime.seed={seed}", f"runtime.threads={args.threads}",
        "runtime.device=cpu", "runtime.progress=false", f"runtime.out_dir={workdir / 'runs'}",
        f"data.phantom.out={workdir / f'phantom_{recipe}_{phantom_seed}'}", f"eval.n_bootstrap={args.n_bootstrap}"])
    load_before = load()[0]
    cpu0 = time.process_time()
    outcome = medprune.train(cfg, overwrite=True)
    cpu_seconds = time.process_time() - cpu0
    history = outcome.result.history
    m = outcome.metrics or {}
    ci = m.get("ci", {}).get("balanced_accuracy") or [float("nan"), float("nan")]
    record = {
        "recipe": recipe, "seed": seed, "data_seed": data_seed,
        "balanced_accuracy": float(m["balanced_accuracy"]), "balanced_accuracy_ci": [float(c) for c in ci],
        "sick_sensitivity": float(m["per_class"]["sick"]["sensitivity"]),
        "healthy_sensitivity": float(m["per_class"]["healthy"]["sensitivity"]),
        "best_epoch": outcome.result.best_epoch, "epochs": len(history),
        "max_val_loss": max(float(r["val_loss"]) for r in history),
        "val_balanced_accuracy": [r["val_balanced_accuracy"] for r in history],
        "val_loss": [r["val_loss"] for r in history], "train_loss": [r["train_loss"] for r in history],
        "train_seconds": sum(float(r["seconds"]) for r in history), "total_seconds": outcome.seconds,
        "cpu_seconds": cpu_seconds,
        "test_images": int(m["n_samples"]), "test_patients": int(m["n_patients"]),
        "load_before": load_before, "load_after": load()[0],
    }
    if args.compress and recipe == "demo":
        record["compress"] = {name: compress_one(args, cfg, name, outcome.run_dir, workdir / f"{tag}_{name}")
                              for name in (parse_names(args.criteria) if args.criteria else [cfg.compress.criterion])}
    print(f"  {tag:<22} bacc {record['balanced_accuracy']:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]  "
          f"sick {record['sick_sensitivity']:.2f}  healthy {record['healthy_sensitivity']:.2f}  "
          f"best {record['best_epoch']:>2}  max val loss {record['max_val_loss']:.3g}  "
          f"{record['train_seconds']:.0f} s  (load {load_before:.1f} -> {record['load_after']:.1f})", flush=True)
    return record


def compress_one(args: argparse.Namespace, cfg: Any, criterion: str, run_dir: Path, out: Path) -> dict[str, Any]:
    """The demo's compress stage on the trained base model, with ``criterion``: gate verdict and test metrics."""
    from medprune.config import config_from_dict
    from medprune.workflows.prune import prune_job

    data = cfg.to_dict()
    data["compress"]["criterion"] = criterion
    if criterion != cfg.compress.criterion:
        data["compress"]["criterion_options"] = {}
    outcome = prune_job(config_from_dict(data, str(args.config)), run_dir / "checkpoints" / "best.pt", out)
    m, g = outcome.metrics, outcome.gate
    result = {"gate": g.status, "val_baseline": g.baseline, "val_value": g.value,
              "balanced_accuracy": float(m["balanced_accuracy"]),
              "worst_class_sensitivity": float(m["worst_class_sensitivity"]),
              "macs_reduction": outcome.summary.get("macs_reduction")}
    print(f"    {criterion:<12} gate {g.status:<6} (val worst-class sens. {g.baseline:.3f} -> {g.value:.3f})  "
          f"test bacc {result['balanced_accuracy']:.3f}  worst-class sens. {result['worst_class_sensitivity']:.3f}  "
          f"{result['macs_reduction']:.2f}x fewer MACs", flush=True)
    return result


def print_compress_table(records: list[dict[str, Any]]) -> None:
    rows = []
    names = sorted({name for r in records for name in r.get("compress", {})})
    for name in names:
        runs = [(r["seed"], r["compress"][name]) for r in records if name in r.get("compress", {})]
        for seed, c in runs:
            rows.append([name, seed, c["gate"], f"{c['val_baseline']:.3f} -> {c['val_value']:.3f}",
                         f"{c['balanced_accuracy']:.3f}", f"{c['worst_class_sensitivity']:.3f}",
                         f"{c['macs_reduction']:.2f}x"])
        passed = sum(c["gate"] == "passed" for _, c in runs)
        mean, std = mean_std([c["balanced_accuracy"] for _, c in runs])
        rows.append([name, "all", f"{passed}/{len(runs)} passed", "", f"{mean:.3f}±{std:.3f}", "", ""])
    print()
    print("Compress stage on each seed's base model (gate: validation worst-class sensitivity, max drop 0.05)")
    print(table(["criterion", "seed", "gate", "val worst-class sens.", "test bacc", "test worst-class sens.",
                 "MACs"], rows))


def summary(records: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """Mean ± std and minimum of the test balanced accuracy, and whether every run reaches ``threshold``."""
    bacc = [r["balanced_accuracy"] for r in records]
    mean, std = mean_std(bacc)
    secs = mean_std([r["train_seconds"] for r in records])
    return {"runs": len(records), "bacc_mean": mean, "bacc_std": std, "bacc_min": min(bacc),
            "sick_mean": mean_std([r["sick_sensitivity"] for r in records])[0],
            "healthy_mean": mean_std([r["healthy_sensitivity"] for r in records])[0],
            "train_seconds_mean": secs[0], "train_seconds_std": secs[1],
            "all_reach_threshold": all(b >= threshold for b in bacc)}


def print_table(title: str, records: list[dict[str, Any]], recipes: list[str], key: str, threshold: float) -> None:
    print()
    print(title)
    rows = []
    for recipe in recipes:
        mine = [r for r in records if r["recipe"] == recipe]
        for r in mine:
            lo, hi = r["balanced_accuracy_ci"]
            rows.append([recipe, r[key], f"{r['balanced_accuracy']:.3f}", f"[{lo:.2f}, {hi:.2f}]",
                         f"{r['sick_sensitivity']:.2f}", f"{r['healthy_sensitivity']:.2f}", r["best_epoch"],
                         f"{r['max_val_loss']:.3g}", f"{r['train_seconds']:.0f}", f"{r['load_after']:.1f}"])
        s = summary(mine, threshold)
        rows.append([recipe, "mean±std", f"{s['bacc_mean']:.3f}±{s['bacc_std']:.3f}", f"min {s['bacc_min']:.3f}",
                     f"{s['sick_mean']:.2f}", f"{s['healthy_mean']:.2f}", "", "",
                     f"{s['train_seconds_mean']:.0f}", "all ≥ %.2f: %s" % (threshold, "yes" if s["all_reach_threshold"] else "NO")])
    print(table(["recipe", key.replace("_", " "), "test bacc", "95% CI", "sick sens", "healthy sens", "best ep",
                 "max val loss", "train s", "load"], rows))


def checkpoint(args: argparse.Namespace, records: list[dict[str, Any]], data_records: list[dict[str, Any]]) -> None:
    """Write the runs so far (``"partial": true``): an hour of training is not lost to a late failure."""
    write_result("demo_robustness", {"benchmark": "demo_robustness", "partial": True, "per_run": records,
                                     "per_data_run": data_records}, args.out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--seeds", default="0,1,2,3,4", help="runtime.seed values")
    parser.add_argument("--compare-old", action="store_true", help="also train the previous demo recipe (the anchor)")
    parser.add_argument("--data-seeds", default="", help="second table: phantom and split seeds, at runtime.seed 0")
    parser.add_argument("--compress", action="store_true", help="also run the compress stage on each demo model")
    parser.add_argument("--criteria", default="", help="with --compress: criteria to try (default: the config's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra override for the demo recipe (repeatable), to try a candidate recipe")
    parser.add_argument("--threshold", type=float, default=0.85, help="test balanced accuracy every seed must reach")
    parser.add_argument("--n-bootstrap", type=int, default=1000, help="patient-level bootstrap resamples for the CI")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", default=None, help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/demo_robustness.json)")
    args = parser.parse_args()
    seeds = [int(s) for s in parse_names(args.seeds)]
    data_seeds = [int(s) for s in parse_names(args.data_seeds)]
    recipes = ["demo", "old"] if args.compare_old else ["demo"]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    load_start = load()
    records: list[dict[str, Any]] = []
    data_records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.keep) if args.keep else Path(tmp)
        for seed in seeds:  # recipes interleaved per seed, so both see similar machine load
            for recipe in recipes:
                records.append(run_one(args, recipe, seed, None, workdir))
                checkpoint(args, records, data_records)
        for data_seed in data_seeds:
            for recipe in recipes:
                data_records.append(run_one(args, recipe, 0, data_seed, workdir))
                checkpoint(args, records, data_records)
    total = time.perf_counter() - t0
    load_end = load()

    cfg = medprune.load_config(args.config, args.set)
    o = cfg.optim
    print()
    print(f"SYNTHETIC thermography phantom ({cfg.data.phantom.patients} patients x {cfg.data.phantom.views} views, "
          f"healthy:sick {cfg.data.phantom.imbalance:g}:1); {cfg.model.name} {cfg.model.kwargs} at "
          f"{list(cfg.data.image_size)} px. demo recipe: {o.optimizer} lr {o.lr:g}, batch {o.batch_size}, "
          f"{o.epochs} epochs, {o.schedule.name} with {o.schedule.warmup_epochs} warm-up, clip {o.grad_clip}, "
          f"BN recalibration {o.bn_recalibration}" + (f" (+ {' '.join(args.set)})" if args.set else "")
          + f". {args.threads} threads; load average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end.")
    print_table(f"Test balanced accuracy by runtime.seed (phantom and split of the config; threshold {args.threshold:g})",
                records, recipes, "seed", args.threshold)
    if args.compress:
        print_compress_table(records)
    if data_records:
        print_table("By data seed (data.phantom.seed = data.split.seed; runtime.seed 0)", data_records, recipes,
                    "data_seed", args.threshold)
    print(f"total {total:.0f} s")
    out = write_result("demo_robustness", {
        "benchmark": "demo_robustness", "data": "SYNTHETIC thermography phantom", "config": str(args.config),
        "overrides": args.set, "recipes": {r: RECIPES[r] for r in recipes}, "seeds": seeds, "data_seeds": data_seeds,
        "threshold": args.threshold,
        "summary": {r: summary([x for x in records if x["recipe"] == r], args.threshold) for r in recipes},
        "data_summary": {r: summary([x for x in data_records if x["recipe"] == r], args.threshold)
                         for r in recipes} if data_records else None,
        "per_run": records, "per_data_run": data_records, "total_seconds": total,
        "load_average_start": list(load_start), "load_average_end": list(load_end),
        **machine_info(args.threads)}, args.out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
