"""Max vs average vs hybrid wavelet pooling: accuracy on clean and degraded images, and cost.

SYNTHETIC data: the thermography phantom (``data.phantom``); the numbers describe the phantom,
never clinical performance.

For each seed and each pooling variant (``VARIANTS``: a ``model.pooling`` value) the same small
model is trained with the same budget — same epochs, optimiser, schedule, class-weighted loss, best
validation balanced accuracy kept — on clean training images. The chosen checkpoint is rebuilt with
:func:`medprune.load_model` and evaluated on the test split three ways:

* ``clean`` — the test images as they are;
* ``noise`` — additive Gaussian noise, ``--noise`` standard deviation in units of the [0, 1]
  image range (albumentations ``GaussNoise``);
* ``blur``  — Gaussian blur of ``--blur`` pixels sigma (albumentations ``GaussianBlur``).

Degradations are applied to the *test* images only (train clean, test degraded: the question is
whether a pooling that keeps wavelet detail is more robust to a degradation it never saw). They
run on the [0, 1] image before normalisation, seeded per image, so every model sees exactly the
same degraded pixels. The phantom and the patient split are the same for every seed (phantom
seed 0, split seed 0): the spread over seeds is that of training, on one test set.

Cost per variant: parameters, MACs for one image (conv + linear, plus the fixed DWT's multiply-
accumulates, which conv/linear counters miss), and measured CPU latency at batch 1 in PyTorch
eager and ONNX Runtime (``--threads`` threads), all variants timed interleaved in one process
(:func:`medprune.compress.latency.interleaved_latency`, median of per-round minima).

    python benchmarks/pooling_compare.py [--seeds 0,1,2] [--variants max,avg,wavelet_gate,wavelet_concat]
                                         [--epochs 20] [--quick]

Prints a table (variant, balanced accuracy mean ± std over seeds per test condition, parameters,
MACs, latency) and writes ``benchmarks/results/pooling_compare.json``.
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
from torch import nn

from _common import machine_info, mean_std, parse_names, table, write_result
from medprune.compress import load_model
from medprune.compress.export import export_onnx
from medprune.compress.latency import interleaved_latency, ort_runner, torch_runner
from medprune.models import count_params, total_macs
from medprune.config import ExperimentConfig, config_from_dict
from medprune.data import ClassificationDataset, build_augmentation
from medprune.workflows.data import DataBundle, reader_options
from medprune.workflows.jobs import train
from medprune.engine.trainer import predict
from medprune.metrics import classification_metrics
from medprune.models.pooling import HybridWaveletPool2d

#: Variant name → ``model.pooling`` value.
VARIANTS: dict[str, Any] = {
    "max": "max",
    "avg": "avg",
    "wavelet_sum": {"kind": "wavelet_hybrid", "wavelet": "haar", "keep": "LL", "combine": "sum"},
    "wavelet_gate": {"kind": "wavelet_hybrid", "wavelet": "haar", "keep": "LL", "combine": "gate"},
    "wavelet_concat": {"kind": "wavelet_hybrid", "wavelet": "haar", "keep": "all", "combine": "concat"},
    "wavelet_db2_gate": {"kind": "wavelet_hybrid", "wavelet": "db2", "keep": "LL+HH", "combine": "gate"},
}
CONDITIONS = ("clean", "noise", "blur")


def experiment(args: argparse.Namespace, seed: int, variant: str, workdir: Path) -> dict[str, Any]:
    """The config dict of one (seed, variant) training run."""
    return {
        "name": f"{variant}_seed{seed}",
        "data": {
            "phantom": {"kind": "thermography", "patients": args.patients, "imbalance": args.imbalance,
                        "views": args.views, "size": [60, 80], "seed": 0, "out": str(workdir / "phantom")},
            "classes": ["healthy", "sick"],
            "image_size": [args.size, args.size],
            "channels": "gray",
            "augmentation": [{"name": "HorizontalFlip", "p": 0.5}],
            "split": {"val_fraction": 0.2, "test_fraction": 0.3, "seed": 0},
        },
        "model": {"name": args.model, "kwargs": {"width": args.width}, "pooling": VARIANTS[variant]},
        "optim": {"optimizer": "sgdm", "lr": args.lr, "momentum": 0.9, "weight_decay": 1e-4,
                  "batch_size": args.batch_size, "epochs": args.epochs,
                  "schedule": {"name": "cosine", "warmup_epochs": 1 if args.epochs > 1 else 0},
                  "class_balance": "weighted_loss", "early_stopping": {"metric": "balanced_accuracy"},
                  "grad_clip": 5.0},
        "eval": {"n_bootstrap": 0},
        "runtime": {"seed": seed, "device": "cpu", "workers": 0, "threads": args.threads,
                    "out_dir": str(workdir / "runs"), "progress": False},
    }


def degradation(args: argparse.Namespace, condition: str) -> list[dict[str, Any]]:
    """Albumentations specs of a test condition (applied with probability 1)."""
    if condition == "noise":
        return [{"name": "GaussNoise", "std_range": [args.noise, args.noise], "p": 1.0}]
    if condition == "blur":
        return [{"name": "GaussianBlur", "sigma_limit": [args.blur, args.blur], "blur_limit": 0, "p": 1.0}]
    return []


def degraded_test_set(cfg: ExperimentConfig, data: DataBundle, specs: list[dict[str, Any]]) -> ClassificationDataset:
    """The test split, passed through ``specs`` (seeded per image; the same pixels for every model)."""
    d = cfg.data
    return ClassificationDataset(data.samples["test"], classes=list(d.classes), image_size=tuple(d.image_size),
                                 channels=d.channels, options=reader_options(cfg),
                                 augmentation=build_augmentation(specs) if specs else None,
                                 colormap=d.colormap, mean=d.mean, std=d.std, seed=12345)


def macs_with_dwt(model: nn.Module, input_size: tuple[int, int, int]) -> tuple[int, int]:
    """``(conv + linear MACs, DWT MACs)`` for one image."""
    dwt = 0

    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
        nonlocal dwt
        dwt += module.wavelet_macs(output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, HybridWaveletPool2d)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_size))
    finally:
        for h in handles:
            h.remove()
    return total_macs(model, input_size), dwt


def run_one(args: argparse.Namespace, seed: int, variant: str, workdir: Path) -> tuple[dict[str, Any], nn.Module]:
    """Train one variant with one seed; return its test scores per condition and the rebuilt model."""
    t0 = time.perf_counter()
    cfg = config_from_dict(experiment(args, seed, variant, workdir), f"pooling_compare({variant}, seed={seed})")
    outcome = train(cfg, overwrite=True, evaluate_test=False)
    checkpoint = outcome.result.best_checkpoint or outcome.result.last_checkpoint
    model = load_model(checkpoint)  # the saved file, pooling swap replayed from its record
    scores: dict[str, float] = {}
    for condition in CONDITIONS:
        dataset = degraded_test_set(cfg, outcome.data, degradation(args, condition))
        preds = predict(model, dataset, cfg.build_task(), batch_size=64, device=torch.device("cpu")).payload
        metrics = classification_metrics(preds["labels"], preds["probs"], list(cfg.data.classes), n_bootstrap=0)
        scores[condition] = float(metrics["balanced_accuracy"])
    test = outcome.data.datasets["test"]
    record = {"seed": seed, "variant": variant, "seconds": time.perf_counter() - t0, "balanced_accuracy": scores,
              "test_images": len(test), "test_sick_images": sum(1 for v in test.labels if v == 1)}
    print(f"  seed {seed} {variant:<16} " + "  ".join(f"{c} {scores[c]:.3f}" for c in CONDITIONS)
          + f"  ({record['seconds']:.0f} s)", flush=True)
    return record, model


def measure_cost(args: argparse.Namespace, models: dict[str, nn.Module], workdir: Path) -> dict[str, dict[str, Any]]:
    """Parameters, MACs and interleaved PyTorch / ONNX Runtime latency of each variant's model."""
    input_size = (1, args.size, args.size)
    x = torch.randn(1, *input_size, generator=torch.Generator().manual_seed(0))
    runners, out = {}, {}
    for name, model in models.items():
        model.eval()
        macs, dwt = macs_with_dwt(model, input_size)
        path = workdir / "onnx" / f"{name}.onnx"
        exported = export_onnx(model, x, path)
        out[name] = {"params": count_params(model), "macs": macs + dwt, "dwt_macs": dwt,
                     "onnx_max_abs_diff": exported.max_abs_diff}
        runners[f"{name}/torch"] = torch_runner(model, x)
        runners[f"{name}/ort"] = ort_runner(path, x, threads=args.threads)
    stats = interleaved_latency(runners, rounds=args.rounds, per_round=5)
    for name in models:
        out[name]["torch_ms"] = stats[f"{name}/torch"].median_ms
        out[name]["ort_ms"] = stats[f"{name}/ort"].median_ms
    return out


def summarise(records: list[dict[str, Any]], variants: list[str],
              cost: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for variant in variants:
        mine = [r for r in records if r["variant"] == variant]
        row: dict[str, Any] = {"variant": variant, "pooling": VARIANTS[variant], "seeds": len(mine), **cost[variant]}
        for condition in CONDITIONS:
            m, s = mean_std([r["balanced_accuracy"][condition] for r in mine])
            row[f"{condition}_mean"], row[f"{condition}_std"] = m, s
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default="max,avg,wavelet_gate,wavelet_concat",
                        help=f"pooling variants among {', '.join(VARIANTS)}")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs (the same budget for every run)")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--size", type=int, default=60, help="image size; 60 px gives odd maps (15, 7, 3) too")
    parser.add_argument("--patients", type=int, default=160)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--imbalance", type=float, default=3.0, help="healthy patients per sick patient")
    parser.add_argument("--noise", type=float, default=0.05, help="test noise std in units of the [0, 1] range")
    parser.add_argument("--blur", type=float, default=1.5, help="test blur sigma in pixels")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7, help="latency rounds (interleaved)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run: one seed, 2 epochs, 40 patients, 3 variants")
    parser.add_argument("--keep", default=None, help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/pooling_compare.json)")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.patients, args.rounds = args.seeds.split(",")[0], 2, 40, 3
        if args.variants == parser.get_default("variants"):
            args.variants = "max,avg,wavelet_gate"
    seeds = [int(s) for s in parse_names(args.seeds)]
    variants = parse_names(args.variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}; available: {', '.join(VARIANTS)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    records: list[dict[str, Any]] = []
    models: dict[str, nn.Module] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.keep) if args.keep else Path(tmp)
        for seed in seeds:
            for variant in variants:
                record, model = run_one(args, seed, variant, workdir)
                records.append(record)
                models.setdefault(variant, model)  # the first seed's model is timed
        cost = measure_cost(args, models, workdir)
    total = time.perf_counter() - t0
    rows = summarise(records, variants, cost)

    print()
    print(f"SYNTHETIC thermography phantom, healthy:sick = {args.imbalance:g}:1, {args.patients} patients x "
          f"{args.views} views; {args.model} width {args.width} at {args.size} px, {args.epochs} epochs, weighted "
          f"loss, trained on clean images; test split: {records[0]['test_images']} images, "
          f"{records[0]['test_sick_images']} sick, clean / noise std {args.noise} / blur sigma {args.blur} px; "
          f"balanced accuracy mean ± std over seeds {seeds}; latency batch 1, {args.threads} threads, interleaved.")
    body = [[r["variant"], *(f"{r[f'{c}_mean']:.3f} ± {r[f'{c}_std']:.3f}" for c in CONDITIONS),
             f"{r['params'] / 1e3:.1f}k", f"{r['macs'] / 1e6:.2f}", f"{r['torch_ms']:.2f}", f"{r['ort_ms']:.2f}"]
            for r in rows]
    print(table(["pooling", "clean", "noise", "blur", "params", "MMACs", "torch ms", "ORT ms"], body))
    print(f"total {total:.0f} s")
    out = write_result("pooling_compare", {
        "benchmark": "pooling_compare", "data": "SYNTHETIC thermography phantom", "quick": args.quick,
        "settings": {k: v for k, v in vars(args).items() if k not in ("keep", "out")},
        "seeds": seeds, "variants": {v: VARIANTS[v] for v in variants}, "conditions": list(CONDITIONS),
        "rows": rows, "per_run": records, "total_seconds": total, **machine_info(args.threads)}, args.out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
