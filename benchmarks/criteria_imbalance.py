"""Pruning criteria on an imbalanced task: what each criterion costs the minority (sick) class.

SYNTHETIC data: the thermography phantom with 10 healthy patients per sick one
(``data.phantom.imbalance: 10``); the numbers describe the phantom, never clinical performance.

For each seed a small model is trained once (``optim.class_balance: weighted_loss``, fixed epoch
budget, best validation balanced accuracy kept). Then for every registered criterion the same
trained checkpoint goes through :func:`medprune.workflows.prune.prune_job` with only
``compress.criterion`` changed: one-shot pruning at the same per-layer ratio (so every criterion
removes the same number of channels from every layer — the same MACs reduction; the script checks
this and reports it), data-driven criteria calibrated on class-balanced training batches, then the
same fine-tuning; the safety gate is off (``compress.safety.max_worst_class_drop: null``) so every
criterion gets exactly the same treatment. The pruned model is evaluated on the test split.

The phantom and the patient split are the same for every seed (phantom seed 0, split seed 0), so
the spread over seeds is that of training (initialisation, sampling order, calibration draw), on
one test set.

    python benchmarks/criteria_imbalance.py [--seeds 0,1,2] [--criteria l2,taylor] [--epochs 30]
                                            [--finetune-epochs 3] [--quick]

Prints a table (criterion, MACs reduction, sick sensitivity and balanced accuracy, mean ± std over
seeds, beside the unpruned model) and writes ``benchmarks/results/criteria_imbalance.json``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from _common import machine_info, mean_std, parse_names, table, write_result
from medprune.compress.importance import list_criteria
from medprune.workflows.prune import prune_job
from medprune.config import config_from_dict
from medprune.workflows.jobs import train

MINORITY = "sick"


def experiment(args: argparse.Namespace, seed: int, workdir: Path, criterion: str = "l2") -> dict[str, Any]:
    """The config dict of one seed's run (the criterion only matters to ``prune_job``)."""
    return {
        "name": f"seed{seed}",
        "data": {
            "phantom": {"kind": "thermography", "patients": args.patients, "imbalance": args.imbalance,
                        "views": args.views, "size": [60, 80], "seed": 0, "out": str(workdir / "phantom")},
            "classes": ["healthy", MINORITY],
            "image_size": [args.size, args.size],
            "channels": "gray",
            "augmentation": [{"name": "HorizontalFlip", "p": 0.5}],
            "split": {"val_fraction": 0.2, "test_fraction": 0.3, "seed": 0},
        },
        "model": {"name": args.model, "kwargs": {"width": args.width}},
        "optim": {"optimizer": "sgdm", "lr": args.lr, "momentum": 0.9, "weight_decay": 1e-4,
                  "batch_size": args.batch_size, "epochs": args.epochs,
                  "schedule": {"name": "cosine", "warmup_epochs": 1}, "class_balance": "weighted_loss",
                  "early_stopping": {"metric": "balanced_accuracy"}, "grad_clip": 5.0},
        "eval": {"n_bootstrap": 0},
        "runtime": {"seed": seed, "device": "cpu", "workers": 0, "threads": args.threads,
                    "out_dir": str(workdir / "runs"), "progress": False},
        "compress": {
            "criterion": criterion, "schedule": "oneshot", "ratio": args.ratio, "round_to": args.round_to,
            "protect": ["first_conv"],
            "calibration": {"batches": args.calib_batches, "batch_size": 16, "split": "train", "seed": seed},
            "finetune": {"epochs": args.finetune_epochs, "lr": args.finetune_lr, "distill": {"enabled": False}},
            "safety": {"max_worst_class_drop": None},
        },
    }


def scores(metrics: dict[str, Any]) -> dict[str, float]:
    return {"sick_sensitivity": float(metrics["per_class"][MINORITY]["sensitivity"]),
            "balanced_accuracy": float(metrics["balanced_accuracy"])}


def run_seed(args: argparse.Namespace, seed: int, criteria: list[str], workdir: Path) -> dict[str, Any]:
    """Train once, prune with every criterion; return per-criterion test scores of this seed."""
    t0 = time.perf_counter()
    cfg = config_from_dict(experiment(args, seed, workdir), f"criteria_imbalance(seed={seed})")
    trained = train(cfg, overwrite=True)
    checkpoint = trained.result.best_checkpoint or trained.result.last_checkpoint
    test = trained.data.datasets["test"]
    record: dict[str, Any] = {
        "seed": seed, "train_seconds": time.perf_counter() - t0,
        "test_images": len(test), "test_sick_images": sum(1 for v in test.labels if v == 1),
        "base": scores(trained.metrics), "criteria": {}}
    print(f"  seed {seed}: trained in {record['train_seconds']:.0f} s; test: {record['test_images']} images, "
          f"{record['test_sick_images']} sick; base sick sens. {record['base']['sick_sensitivity']:.3f}, "
          f"bal. acc. {record['base']['balanced_accuracy']:.3f}", flush=True)
    for name in criteria:
        t1 = time.perf_counter()
        ccfg = config_from_dict(experiment(args, seed, workdir, name), f"criteria_imbalance(seed={seed}, {name})")
        outcome = prune_job(ccfg, checkpoint, workdir / "pruned" / f"seed{seed}" / name)
        s = outcome.summary
        record["criteria"][name] = {**scores(outcome.metrics), "macs_before": s["macs_before"],
                                    "macs_after": s["macs_after"], "macs_reduction": s["macs_reduction"],
                                    "params_after": s["params_after"], "seconds": time.perf_counter() - t1}
        r = record["criteria"][name]
        print(f"  seed {seed}: {name:<22} MACs /{r['macs_reduction']:.2f}  sick sens. {r['sick_sensitivity']:.3f}  "
              f"bal. acc. {r['balanced_accuracy']:.3f}  ({r['seconds']:.0f} s)", flush=True)
    return record


def summarise(records: list[dict[str, Any]], criteria: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name in ["(unpruned)"] + criteria:
        per_seed = [rec["base"] if name == "(unpruned)" else rec["criteria"][name] for rec in records]
        sens = mean_std([p["sick_sensitivity"] for p in per_seed])
        bacc = mean_std([p["balanced_accuracy"] for p in per_seed])
        reductions = sorted({round(p.get("macs_reduction", 1.0), 4) for p in per_seed})
        rows.append({"criterion": name, "macs_reduction": reductions, "sick_sensitivity_mean": sens[0],
                     "sick_sensitivity_std": sens[1], "balanced_accuracy_mean": bacc[0],
                     "balanced_accuracy_std": bacc[1], "seeds": len(per_seed)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--criteria", default=",".join(list_criteria()))
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (the same budget every seed)")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--ratio", type=float, default=0.5, help="per-layer channel ratio (one-shot)")
    parser.add_argument("--round-to", type=int, default=8)
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--patients", type=int, default=330)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--imbalance", type=float, default=10.0, help="healthy patients per sick patient")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--calib-batches", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run: one seed, 2+1 epochs, 3 criteria")
    parser.add_argument("--keep", default=None, help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/criteria_imbalance.json)")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.finetune_epochs = args.seeds.split(",")[0], 2, 1
        if args.criteria == ",".join(list_criteria()):
            args.criteria = "l2,taylor,beta_rank"
    seeds = [int(s) for s in parse_names(args.seeds)]
    criteria = parse_names(args.criteria)
    unknown = [c for c in criteria if c not in list_criteria()]
    if unknown:
        parser.error(f"unknown criterion {unknown[0]!r}; available: {', '.join(list_criteria())}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.keep) if args.keep else Path(tmp)
        records = [run_seed(args, seed, criteria, workdir) for seed in seeds]
    total = time.perf_counter() - t0
    rows = summarise(records, criteria)

    print()
    print(f"SYNTHETIC thermography phantom, healthy:sick = {args.imbalance:g}:1, {args.patients} patients x "
          f"{args.views} views; {args.model} width {args.width} at {args.size} px, weighted loss, "
          f"{args.epochs} training epochs; one-shot per-layer ratio {args.ratio}, round_to {args.round_to}, "
          f"{args.finetune_epochs} fine-tuning epochs; test split: {records[0]['test_images']} images, "
          f"{records[0]['test_sick_images']} sick; mean ± std over seeds {seeds}.")
    body = [[r["criterion"], "/".join(f"{m:.2f}x" for m in r["macs_reduction"]),
             f"{r['sick_sensitivity_mean']:.3f} ± {r['sick_sensitivity_std']:.3f}",
             f"{r['balanced_accuracy_mean']:.3f} ± {r['balanced_accuracy_std']:.3f}"] for r in rows]
    print(table(["criterion", "MACs reduction", "sick sensitivity", "balanced accuracy"], body, "<>>>"))
    equal = len({m for r in rows[1:] for m in r["macs_reduction"]}) <= 1
    print(f"same MACs reduction for every criterion and seed: {'yes' if equal else 'NO'}; total {total:.0f} s")
    out = write_result("criteria_imbalance", {
        "benchmark": "criteria_imbalance", "data": "SYNTHETIC thermography phantom", "quick": args.quick,
        "settings": {k: v for k, v in vars(args).items() if k not in ("keep", "out")},
        "seeds": seeds, "criteria": criteria, "rows": rows, "per_seed": records,
        "equal_macs_reduction": equal, "total_seconds": total, **machine_info(args.threads)}, args.out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
