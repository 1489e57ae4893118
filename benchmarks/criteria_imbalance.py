"""Which pruning criterion protects the minority class? Every criterion, pooled and class-conditional.

Two imbalanced data sets, each at two imbalances (majority images per minority image):

* ``phantom`` — SYNTHETIC thermograms with varied lesions (``lesions: varied``: hot spots of any
  size and contrast, clusters, diffuse warmth, rings, raised vascularity), healthy vs sick;
* ``digits`` — REAL images shipped with scikit-learn (``sklearn.datasets.load_digits``: 1797
  handwritten digits, 8×8 px, from UCI, CC BY 4.0; no download): the digit 8 (minority) vs every
  other digit, the eights subsampled to the imbalance.

Per data set × imbalance × seed a ``small_cnn`` is trained once (weighted loss, the same budget);
then every arm prunes a copy one-shot at each per-layer ratio (the same channels per layer for every
criterion, so the same MACs; checked and reported), calibrated on class-balanced training batches,
and is scored on the test split before and after ``--finetune-epochs`` of fine-tuning: minority
sensitivity and balanced accuracy. "Before" is after recomputing the BatchNorm statistics over the
training images (``torch.optim.swa_utils.update_bn``, weights untouched): with stale ones a pruned
model often predicts a single class whatever the criterion kept.

Arms: every registered criterion except ``class_conditional`` (``beta_rank`` in both variants), each
data-driven one also inside ``class_conditional`` (max over classes, ``cc:<name>``), and
``alloc:l1`` — worst-class-aware allocation
(:mod:`medprune.compress.allocation`) with l1 scores at the MACs of the uniform ratio.

Reported per data set, imbalance, ratio and fine-tuning: mean ± std over seeds and, paired over
seeds against ``l1``, the mean difference and the Wilcoxon signed-rank p-value (two-sided; with 5
seeds the smallest possible p is 0.0625, so no single cell can be "significant" at 0.05 — the
pooled test over every ratio and data set is printed too). The target (issue 13): some
imbalance-aware arm keeps minority sensitivity ≥ l1 + 0.05 at ratio 0.5 (½ MACs or less) before
fine-tuning, and is never significantly worse after it, on both data sets.

    python benchmarks/criteria_imbalance.py [--datasets phantom,digits] [--imbalances 10,20]
        [--ratios 0.3,0.5,0.7] [--seeds 0,1,2,3,4] [--arms l1,cc:taylor,...] [--finetune-epochs 3] [--quick]

Prints the tables, writes ``benchmarks/results/criteria_imbalance.json``.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from _common import machine_info, mean_std, parse_floats, parse_names, table, write_result

MINORITY = 1
DATASETS = ("phantom", "digits")
#: A channel is minority-selective when (m_minority − m_rest) / (|m_minority| + |m_rest|) exceeds this.
SELECTIVE = 0.5


# ----------------------------------------------------------------------------- data


def digits_manifest(out: Path, imbalance: float, seed: int = 0, minority_digit: int = 8) -> Path:
    """PNG files of sklearn's digits and a manifest: ``eight`` (subsampled to 1/imbalance of the rest) vs ``other``."""
    from PIL import Image
    from sklearn.datasets import load_digits

    manifest = out / "manifest.csv"
    if manifest.is_file():
        return manifest
    digits = load_digits()
    rng = np.random.default_rng(seed)
    minority = np.flatnonzero(digits.target == minority_digit)
    majority = np.flatnonzero(digits.target != minority_digit)
    keep = rng.choice(minority, size=min(len(minority), int(round(len(majority) / imbalance))), replace=False)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["path,label,patient_id"]
    for i in sorted(np.concatenate([majority, keep]).tolist()):
        name = f"d{i:04d}.png"
        Image.fromarray((digits.images[i] * (255.0 / 16.0)).round().astype(np.uint8)).save(out / name)
        lines.append(f"{name},{'eight' if digits.target[i] == minority_digit else 'other'},img{i:04d}")
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def experiment(args: argparse.Namespace, dataset: str, imbalance: float, seed: int, workdir: Path) -> dict[str, Any]:
    if dataset == "phantom":
        data = {"phantom": {"kind": "thermography", "patients": args.patients, "imbalance": imbalance, "views": 2,
                            "size": [60, 80], "seed": 0, "out": str(workdir / f"phantom_{imbalance:g}"),
                            "options": {"lesions": "varied"}},
                "classes": ["healthy", "sick"], "image_size": [args.size, args.size]}
    else:
        manifest = digits_manifest(workdir / f"digits_{imbalance:g}", imbalance)
        data = {"manifest": str(manifest), "classes": ["other", "eight"], "image_size": [32, 32]}
    data.update(channels="gray", augmentation=[{"name": "HorizontalFlip", "p": 0.5}] if dataset == "phantom" else [],
                split={"val_fraction": 0.2, "test_fraction": 0.3, "seed": 0})
    return {
        "name": f"{dataset}_{imbalance:g}_seed{seed}", "data": data,
        "model": {"name": "small_cnn", "kwargs": {"width": args.width}},
        "optim": {"optimizer": "adam", "lr": args.lr, "weight_decay": 1e-4, "batch_size": 32, "epochs": args.epochs,
                  "schedule": {"name": "cosine", "warmup_epochs": 1}, "class_balance": "weighted_loss",
                  "early_stopping": {"metric": "balanced_accuracy"}},
        "eval": {"n_bootstrap": 0},
        "runtime": {"seed": seed, "device": "cpu", "workers": 0, "out_dir": str(workdir / "runs"), "progress": False},
        "compress": {"criterion": "l1", "ratio": 0.5, "round_to": args.round_to, "protect": ["first_conv"],
                     "calibration": {"batches": args.calib_batches, "batch_size": 16, "split": "train", "seed": seed},
                     "finetune": {"epochs": args.finetune_epochs, "lr": args.finetune_lr,
                                  "distill": {"enabled": False}},
                     "safety": {"max_worst_class_drop": None}},
    }


# ----------------------------------------------------------------------------- arms


def arms(names: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(label, criterion, options)`` per arm label: ``<criterion>``, ``beta_rank:code``, ``cc:<criterion>``,
    ``alloc:<criterion>`` (the allocation arms are pruned by :func:`run_arm` itself)."""
    out = []
    for label in names:
        kind, _, rest = label.partition(":")
        if kind == "cc":
            base, _, variant = rest.partition(":")
            options = {"base": base, "combine": "max", "base_options": {"variant": variant} if variant else {}}
            out.append((label, "class_conditional", options))
        elif kind == "alloc":
            out.append((label, rest, {}))
        else:
            out.append((label, kind, {"variant": rest} if rest else {}))
    return out


def default_arms() -> list[str]:
    from medprune.compress.importance import create_criterion, list_criteria

    plain = [c for c in list_criteria() if c != "class_conditional"]
    data_driven = [c for c in plain if create_criterion(c).data_driven]
    return (plain + ["beta_rank:code"] + [f"cc:{c}" for c in data_driven] + ["cc:beta_rank:code", "alloc:l1"])


def scores(model: Any, dataset: Any, task: Any) -> dict[str, float]:
    from medprune.engine.trainer import predict

    evaluation = predict(model, dataset, task, batch_size=64, device=torch.device("cpu"))
    m = task.metrics(evaluation, None, None)
    return {"minority_sensitivity": float(m["per_class"][task.classes[MINORITY]]["sensitivity"]),
            "balanced_accuracy": float(m["balanced_accuracy"])}


def run_base(args: argparse.Namespace, dataset: str, imbalance: float, seed: int, workdir: Path,
             labels: list[str]) -> dict[str, Any]:
    from medprune.compress.allocation import refresh_batchnorm
    from medprune.compress.context import CompressContext, PruneOptions
    from medprune.compress.importance import create_criterion
    from medprune.config import config_from_dict
    from medprune.models.cost import total_macs
    from medprune.workflows.helpers import calibration_batches, example_batch, finetune, validation_metrics
    from medprune.workflows.jobs import train

    t0 = time.perf_counter()
    config = config_from_dict(experiment(args, dataset, imbalance, seed, workdir), f"criteria_imbalance({dataset})")
    trained = train(config, overwrite=True)
    data, task, model = trained.data, config.build_task(), trained.model.eval()
    test = data.datasets["test"]
    example = example_batch(data.datasets["val"])
    calib = calibration_batches(config, data, task)
    train_sample = list(DataLoader(data.datasets["train"], batch_size=64, shuffle=False))  # BatchNorm refreshes
    record: dict[str, Any] = {
        "dataset": dataset, "imbalance": imbalance, "seed": seed, "train_seconds": round(time.perf_counter() - t0, 1),
        "test_images": len(test), "test_minority": sum(1 for v in test.labels if v == MINORITY),
        "base": scores(model, test, task), "macs": int(total_macs(model, example)), "arms": {}}
    print(f"{dataset} 1:{imbalance:g} seed {seed}: trained in {record['train_seconds']:.0f} s; test "
          f"{record['test_images']} images, {record['test_minority']} minority; base minority sens. "
          f"{record['base']['minority_sensitivity']:.3f}, bal. acc. {record['base']['balanced_accuracy']:.3f}",
          flush=True)
    from medprune.compress.importance import channel_selectivity

    selectivity = channel_selectivity(model, calib(), MINORITY)
    selective = {layer: set(torch.nonzero(v > SELECTIVE).flatten().tolist()) for layer, v in selectivity.items()}
    record["selective_channels"] = {layer: sorted(v) for layer, v in selective.items()}
    uniform_macs: dict[float, int] = {}
    for label, name, options in arms(labels):
        for ratio in args.ratios:
            t1 = time.perf_counter()
            pruned = copy.deepcopy(model)
            crit = create_criterion(name, **options)
            ctx = CompressContext(model=pruned, example_inputs=example, criterion=crit,
                                  options=PruneOptions(ratio=ratio, round_to=args.round_to, protect=("first_conv",)),
                                  calibration=calib if crit.data_driven else None,
                                  evaluate=lambda m: validation_metrics(m, data, config, torch.device("cpu"), task),
                                  task=task)
            if label.startswith("alloc:"):
                from medprune.compress.allocation import worst_class_allocation

                keep = uniform_macs.get(ratio, record["macs"] // 2) / record["macs"]
                ratios, _ = worst_class_allocation(ctx, pruned, macs_keep=min(0.95, max(0.05, keep)),
                                                   candidates=(0.25, 0.5, 0.75),
                                                   refresh=lambda m: refresh_batchnorm(m, train_sample))
                result = ctx.prune(pruned, ratio=0.0, layer_ratios=ratios)
            else:
                result = ctx.prune(pruned)
                uniform_macs.setdefault(ratio, int(result.macs_after))
            # Pruning leaves the next layers' BatchNorm statistics stale: without fresh ones the pruned model
            # often predicts one class, which measures BatchNorm, not the criterion. PyTorch's update_bn
            # recomputes them over the training images (weights untouched) for every arm alike.
            refresh_batchnorm(pruned, train_sample)
            before = scores(pruned.eval(), test, task)
            kept = {layer: len(chans - set(result.removed.get(layer, []))) for layer, chans in selective.items()}
            n_before = _n_selective(pruned, calib)
            tuned = finetune(pruned, data, config, workdir / "ft", epochs=args.finetune_epochs, task=task,
                             device=torch.device("cpu"))
            after = scores(tuned.eval(), test, task)
            record["arms"].setdefault(label, {})[f"{ratio:g}"] = {
                "macs_after": int(result.macs_after), "before": before, "after": after,
                "selective_kept": kept, "selective_before_ft": n_before,
                "selective_after_ft": _n_selective(tuned, calib),
                "seconds": round(time.perf_counter() - t1, 1)}
        row = record["arms"][label]
        print("  " + f"{label:<28}" + "  ".join(
            f"r{r}: {v['before']['minority_sensitivity']:.2f}->{v['after']['minority_sensitivity']:.2f}"
            for r, v in row.items()), flush=True)
    return record


def _n_selective(model: Any, calib: Any) -> int:
    """How many channels of ``model`` fire mostly for the minority class (selectivity > :data:`SELECTIVE`)."""
    from medprune.compress.importance import channel_selectivity

    return int(sum(int((v > SELECTIVE).sum()) for v in channel_selectivity(model, calib(), MINORITY).values()))


# ----------------------------------------------------------------------------- statistics


def wilcoxon(diffs: list[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (``None`` when every difference is 0)."""
    from scipy.stats import wilcoxon as test

    if not diffs or all(abs(d) < 1e-12 for d in diffs):
        return None
    return float(test(diffs, zero_method="zsplit").pvalue)


def summarise(records: list[dict[str, Any]], labels: list[str], ratios: list[float]) -> list[dict[str, Any]]:
    rows = []
    groups = sorted({(r["dataset"], r["imbalance"]) for r in records})
    for dataset, imbalance in groups:
        recs = [r for r in records if r["dataset"] == dataset and r["imbalance"] == imbalance]
        for ratio in ratios:
            key = f"{ratio:g}"
            for when in ("before", "after"):
                ref = [r["arms"]["l1"][key][when] for r in recs] if "l1" in labels else None
                for label in labels:
                    vals = [r["arms"][label][key][when] for r in recs]
                    sens = [v["minority_sensitivity"] for v in vals]
                    bacc = [v["balanced_accuracy"] for v in vals]
                    diffs = [a - b["minority_sensitivity"] for a, b in zip(sens, ref)] if ref else []
                    rows.append({"dataset": dataset, "imbalance": imbalance, "ratio": ratio, "finetune": when,
                                 "arm": label, "minority_sensitivity": mean_std(sens),
                                 "balanced_accuracy": mean_std(bacc), "vs_l1": mean_std(diffs) if diffs else None,
                                 "p_vs_l1": wilcoxon(diffs), "diffs": diffs,
                                 "macs_after": sorted({r["arms"][label][key]["macs_after"] for r in recs})})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--imbalances", default="10,20")
    parser.add_argument("--ratios", default="0.3,0.5,0.7")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--arms", default=None, help="default: every criterion, cc:<data-driven>, alloc:l1")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--finetune-lr", type=float, default=0.001)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--size", type=int, default=64, help="phantom image size")
    parser.add_argument("--patients", type=int, default=600, help="phantom patients")
    parser.add_argument("--round-to", type=int, default=8)
    parser.add_argument("--calib-batches", type=int, default=8)
    parser.add_argument("--keep", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="tiny settings: checks the script, measures nothing")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    labels = parse_names(args.arms) if args.arms else default_arms()
    if args.quick:
        args.epochs, args.finetune_epochs, args.patients, args.size = 2, 1, 120, 32
        args.seeds, args.ratios, args.imbalances = "0,1", "0.5", "10"
        labels = labels if args.arms else ["l1", "cc:info_capacity", "alloc:l1"]
    if "l1" not in labels:
        labels = ["l1", *labels]  # the reference of the paired tests
    args.ratios = parse_floats(args.ratios)
    seeds = [int(s) for s in parse_floats(args.seeds)]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=UserWarning)
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    records = []
    with tempfile.TemporaryDirectory(prefix="medprune-criteria-") as tmp:
        workdir = args.keep or Path(tmp)
        for dataset in parse_names(args.datasets):
            for imbalance in parse_floats(args.imbalances):
                for seed in seeds:
                    records.append(run_base(args, dataset, imbalance, seed, workdir, labels))
    rows = summarise(records, labels, args.ratios)
    for (dataset, imbalance) in sorted({(r["dataset"], r["imbalance"]) for r in rows}):
        for when in ("before", "after"):
            print(f"\n{dataset} 1:{imbalance:g}, {when} fine-tuning: minority sensitivity mean ± std over seeds "
                  f"{seeds} / balanced accuracy mean; vs l1: mean paired sensitivity difference (Wilcoxon p)")
            body = []
            for label in labels:
                cells = [label]
                for ratio in args.ratios:
                    r = next(x for x in rows if (x["dataset"], x["imbalance"], x["ratio"], x["finetune"], x["arm"])
                             == (dataset, imbalance, ratio, when, label))
                    m, s = r["minority_sensitivity"]
                    vs = "" if r["vs_l1"] is None or label == "l1" else (
                        f" ({r['vs_l1'][0]:+.3f}, p {r['p_vs_l1']:.2f})" if r["p_vs_l1"] is not None else " (=)")
                    cells.append(f"{m:.3f} ± {s:.3f} / {r['balanced_accuracy'][0]:.3f}{vs}")
                body.append(cells)
            print(table(["arm", *[f"ratio {r:g}" for r in args.ratios]], body))
    pooled = {}
    for label in labels:
        if label == "l1":
            continue
        for when in ("before", "after"):
            diffs = [d for r in rows if r["arm"] == label and r["finetune"] == when for d in r["diffs"]]
            pooled[f"{label}/{when}"] = {"mean": mean_std(diffs), "p": wilcoxon(diffs), "n": len(diffs)}
    print("\npooled over data sets, imbalances, ratios and seeds: minority sensitivity minus l1")
    print(table(["arm", "before FT", "after FT"],
                [[label] + [f"{pooled[f'{label}/{w}']['mean'][0]:+.3f} (p {pooled[f'{label}/{w}']['p'] or 1:.3f}, "
                            f"n {pooled[f'{label}/{w}']['n']})" for w in ("before", "after")]
                 for label in labels if label != "l1"]))
    print("\nwhere the damage goes: share of the unpruned model's minority-selective channels (selectivity > "
          f"{SELECTIVE}) each arm keeps, all layers, mean over seeds and data sets; the layer losing most at "
          f"ratio {args.ratios[len(args.ratios) // 2]:g}; minority-selective channels before → after fine-tuning")
    damage = []
    mid = f"{args.ratios[len(args.ratios) // 2]:g}"
    for label in labels:
        cells = [label]
        for ratio in args.ratios:
            shares = []
            for rec in records:
                total = sum(len(v) for v in rec["selective_channels"].values())
                if total:
                    shares.append(sum(rec["arms"][label][f"{ratio:g}"]["selective_kept"].values()) / total)
            cells.append(f"{np.mean(shares):.2f}" if shares else "n/a")
        lost: dict[str, float] = {}
        for rec in records:
            for layer, chans in rec["selective_channels"].items():
                if chans:
                    share = rec["arms"][label][mid]["selective_kept"][layer] / len(chans)
                    lost[layer] = lost.get(layer, 0.0) + 1 - share
        worst = max(lost, key=lost.get) if lost else "n/a"
        before_ft = np.mean([rec["arms"][label][mid]["selective_before_ft"] for rec in records])
        after_ft = np.mean([rec["arms"][label][mid]["selective_after_ft"] for rec in records])
        cells += [f"{worst} ({lost.get(worst, 0) / len(records):.2f} lost)", f"{before_ft:.1f} → {after_ft:.1f}"]
        damage.append(cells)
    print(table(["arm", *[f"kept @ {r:g}" for r in args.ratios], f"most lost @ {mid}", f"selective @ {mid}"], damage))
    payload = {"benchmark": "criteria_imbalance", "quick": args.quick, "seeds": seeds, "arms": labels,
               "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "rows": rows, "pooled": pooled, "per_seed": records, "seconds": round(time.perf_counter() - t0, 1),
               "load_before": load0, "load_after": os.getloadavg()[0], **machine_info()}
    print(f"\nwrote {write_result('criteria_imbalance', payload, args.out)}")


if __name__ == "__main__":
    main()
