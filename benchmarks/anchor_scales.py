"""Anchor sizes of the IVOCT plaque detector: one vs three vs six sizes, one map vs a six-level FPN.

SYNTHETIC data: the IVOCT phantom (``medprune.data.phantom_ivoct``); the numbers describe the
phantom, never clinical performance, and say nothing about CCCV2017.

The claim under test (Li et al., MATEC 2019; DESIGN.md §5): Faster R-CNN with six anchor scales,
12² … 256² px, finds small plaques that coarser anchor sets miss. Rows (``VARIANTS``):

* ``one_map_1``  — one size (32 px) on the stride-4 map;
* ``one_map_3``  — three sizes (16, 64, 256);
* ``one_map_6``  — the paper's six sizes (12 … 256) on one map: **the reference row**;
* ``fpn6_6``     — the same six sizes, one per level of a six-level FPN (``layout: fpn6``).

Protocol. Stage 1 (BasicUNet + its validation-tuned background threshold, ``medprune run`` on a
segmentation config without compression) is trained **once**; every detector then trains on the
frames it cleaned (``data.stage1``), so all rows share the phantom, the cleaned frames and the
patient split. Equal training budget: the same epochs, batch size, optimiser and schedule for every
row; the best validation epoch (AP@0.5) is kept. ``runtime.seed`` (``--seeds``) changes the model's
initialisation, the batch order and the augmentation draws; the data stay fixed. Per run the test
split is predicted once and scored twice: at the score threshold tuned on validation (the detection
task's own ``calibrate``, what ``medprune run`` hands to ``medprune predict``) — the main table,
since detectors trained this briefly often score no box above 0.5 — and at the fixed 0.5.

Reported per row, mean ± std over seeds: test AP@0.5 (threshold-free), small-plaque recall
(``per_size.small.recall``: plaque arcs < 30°, found by a predicted arc with interval IoU >= 0.5)
and the total score (recall + precision + IoU)/3; and per row the paired difference to the
reference, seed by seed (same seed = same batch order and augmentation; the initialisation differs
with the architecture). The verdict on the claim compares small-plaque recall of the one-map rows.

The machine is usually shared: the 1-minute load average (what ``uptime`` prints) is recorded
before and after every run; training seconds compare only at similar load.

    python benchmarks/anchor_scales.py [--seeds 0,1,2] [--variants one_map_1,one_map_6] [--epochs 10]
                                       [--threads 1] [--keep DIR] [--quick]

Defaults (32 pullbacks x 8 frames at 64x128 px, stage 1 8 epochs, detectors 8 epochs, 4 rows x 3
seeds = 12 trainings) took 22 minutes on one core of a shared 2-core machine at load 4-5; ``--quick``
(10 pullbacks x 4 frames at 48x96, 1 epoch, seeds 0 and 1) about 1.5 minutes.

Prints the table and the verdict, writes ``benchmarks/results/anchor_scales.json``.
``benchmarks/two_stage_vs_direct.py`` reuses this file's setup (phantom, stage 1, detector recipe).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from _common import machine_info, mean_std, parse_names, table, write_result
import medprune

#: The paper's six anchor sizes (px), the reference.
PAPER_SIZES: tuple[int, ...] = (12, 16, 32, 64, 128, 256)

#: Row name → ``(layout, anchor sizes)`` of ``faster_rcnn``.
VARIANTS: dict[str, tuple[str, tuple[int, ...]]] = {
    "one_map_1": ("one_map", (32,)),
    "one_map_3": ("one_map", (16, 64, 256)),
    "one_map_6": ("one_map", PAPER_SIZES),
    "fpn6_6": ("fpn6", PAPER_SIZES),
}
REFERENCE = "one_map_6"

CLAIM = ("Li et al. (MATEC 2019): Faster R-CNN with six anchor scales (12^2 ... 256^2 px) on U-Net-cleaned "
         "IVOCT frames; the small scales are there for small plaques (recall 0.94, AP 83.4 % on CCCV2017).")


@dataclass(frozen=True)
class Setup:
    """Phantom, stage 1 and detector recipe shared by every run of a benchmark (equal budget)."""

    height: int = 64
    width: int = 128
    patients: int = 32
    frames: int = 8
    val_fraction: float = 0.2
    test_fraction: float = 0.4
    stage1_epochs: int = 8
    epochs: int = 8
    batch_size: int = 4
    lr: float = 0.002
    box_batch: int = 32
    threads: int = 1

    @classmethod
    def quick(cls, threads: int = 1) -> "Setup":
        """A smoke-run setup (a minute or two): tiny phantom, one epoch per model."""
        return cls(height=48, width=96, patients=10, frames=4, val_fraction=0.25, test_fraction=0.25,
                   stage1_epochs=1, epochs=1, threads=threads)

    def phantom(self, out: Path) -> dict[str, Any]:
        """``data.phantom`` of every config: one phantom, written once under ``out``."""
        return {"kind": "ivoct", "patients": self.patients, "size": [self.height, self.width], "seed": 0,
                "options": {"frames": self.frames}, "out": str(out)}

    def split(self) -> dict[str, Any]:
        return {"val_fraction": self.val_fraction, "test_fraction": self.test_fraction, "seed": 0}


def add_setup_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both IVOCT detector benchmarks share."""
    d = Setup()
    parser.add_argument("--seeds", default="0,1,2", help="runtime.seed values (init, batch order, augmentation)")
    parser.add_argument("--size", default=f"{d.height}x{d.width}", help="frame size HxW (polar: depth x angle)")
    parser.add_argument("--patients", type=int, default=d.patients, help="phantom pullbacks (patients)")
    parser.add_argument("--frames", type=int, default=d.frames, help="frames per pullback")
    parser.add_argument("--stage1-epochs", type=int, default=d.stage1_epochs, help="BasicUNet training epochs")
    parser.add_argument("--epochs", type=int, default=d.epochs, help="detector training epochs (every run)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate of the detector")
    parser.add_argument("--threads", type=int, default=d.threads, help="torch threads")
    parser.add_argument("--keep", default=None, help="keep phantom and run folders here (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny phantom, 1 epoch, seeds 0,1")


def setup_from_args(args: argparse.Namespace) -> Setup:
    if args.quick:
        return Setup.quick(args.threads)
    h, w = (int(v) for v in args.size.lower().split("x"))
    return Setup(height=h, width=w, patients=args.patients, frames=args.frames, stage1_epochs=args.stage1_epochs,
                 epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, threads=args.threads)


def start(args: argparse.Namespace) -> tuple[Setup, list[int], float, tuple[float, float, float]]:
    """The setup and seeds of a run, quiet logging, its thread count set; its start time and load."""
    setup, seeds = setup_from_args(args), seeds_from_args(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(setup.threads)
    return setup, seeds, time.perf_counter(), os.getloadavg()


def seeds_from_args(args: argparse.Namespace) -> list[int]:
    return [0, 1] if args.quick else [int(s) for s in parse_names(args.seeds)]


def load() -> float:
    """The 1-minute load average (``uptime``)."""
    return os.getloadavg()[0]


def _schedule(epochs: int) -> dict[str, Any]:
    return {"name": "cosine", "warmup_epochs": 1 if epochs > 2 else 0}


def _runtime(setup: Setup, workdir: Path, seed: int) -> dict[str, Any]:
    return {"seed": seed, "device": "cpu", "workers": 0, "progress": False, "out_dir": str(workdir / "runs"),
            "threads": setup.threads}


def stage1_config(setup: Setup, workdir: Path) -> Path:
    """Write the stage-1 segmentation config (BasicUNet, no compression, no export) and return its path."""
    config = {
        "name": "stage1_unet", "task": "segmentation", "task_options": {"include_background": False},
        "description": "benchmark stage 1: BasicUNet on the SYNTHETIC IVOCT phantom (background removal)",
        "data": {"phantom": setup.phantom(workdir / "phantom"), "classes": ["background", "tissue", "plaque"],
                 "label_classes": ["normal", "plaque"], "image_size": [setup.height, setup.width], "channels": "gray",
                 "mean": 0.2, "std": 0.2, "augmentation": [{"name": "HorizontalFlip", "p": 0.5}],
                 "split": setup.split()},
        "model": {"name": "basic_unet", "kwargs": {"width": 0.25}},
        "optim": {"optimizer": "adam", "lr": 0.01, "batch_size": 8, "epochs": setup.stage1_epochs,
                  "schedule": _schedule(setup.stage1_epochs), "class_balance": "none"},
        "eval": {"n_bootstrap": 0}, "runtime": _runtime(setup, workdir, 0),
        "compress": {"ratio": 0.0}, "export": {"enabled": False}, "bench": {"enabled": False},
    }
    path = workdir / "stage1.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def run_stage1(setup: Setup, workdir: Path) -> dict[str, Any]:
    """Train stage 1 once (``medprune run``: train, calibrate, report) and return its record."""
    path = stage1_config(setup, workdir)
    before, t0 = load(), time.perf_counter()
    outcome = medprune.run_job(medprune.load_config(path))
    seconds = time.perf_counter() - t0
    run_dir = outcome.run_dir
    metrics = json.loads((run_dir / "metrics.json").read_text())
    calibration = json.loads((run_dir / "calibration.json").read_text())
    per_class = metrics["per_class"]
    record = {"config": str(path), "run_dir": str(run_dir), "seconds": seconds, "load_before": before,
              "load_after": load(), "threshold": calibration["threshold"], "mean_dice": metrics["mean_dice"],
              "tissue_dice": per_class["tissue"]["dice"], "plaque_dice": per_class["plaque"]["dice"],
              "splits": json.loads((run_dir / "splits.json").read_text())}
    print(f"  stage 1 (BasicUNet, {setup.stage1_epochs} epochs): test tissue Dice {_fmt(record['tissue_dice'])}, "
          f"plaque Dice {_fmt(record['plaque_dice'])}, background threshold {record['threshold']:.2f}; "
          f"{seconds:.0f} s (load {before:.1f} -> {record['load_after']:.1f})", flush=True)
    return record


def detector_config(setup: Setup, workdir: Path, name: str, seed: int, *, layout: str = "one_map",
                    anchor_sizes: tuple[int, ...] = PAPER_SIZES, stage1: Path | None) -> dict[str, Any]:
    """The detector experiment: the demo's recipe (ResNet-18 at width 1/4) at ``setup``'s size and budget.

    ``stage1`` set: trains on the frames that stage-1 config cleaned (its split is written into them);
    ``None``: on the raw phantom frames, split by the same ``data.split`` as stage 1's.
    """
    if stage1 is not None:
        source: dict[str, Any] = {"stage1": str(stage1), "mean": 0.1, "std": 0.2}  # cleaned: background is 0
    else:
        source = {"phantom": setup.phantom(workdir / "phantom"), "split": setup.split(), "mean": 0.2, "std": 0.2}
    return {
        "name": name, "task": "detection", "task_options": {"score_threshold": 0.5, "max_boxes": 8},
        "data": {**source, "classes": ["background", "plaque"], "label_classes": ["normal", "plaque"],
                 "image_size": [setup.height, setup.width], "channels": "gray",
                 "augmentation": [{"name": "HorizontalFlip", "p": 0.5}]},
        "model": {"name": "faster_rcnn", "kwargs": {
            "backbone": "resnet18", "width": 0.25, "layout": layout, "anchor_sizes": list(anchor_sizes),
            "fpn_channels": 256, "representation_size": 1024, "rpn_pre_nms_top_n": 300, "rpn_post_nms_top_n": 100,
            "box_batch_size_per_image": setup.box_batch, "max_detections": 16}},
        "optim": {"optimizer": "adam", "lr": setup.lr, "batch_size": setup.batch_size, "epochs": setup.epochs,
                  "schedule": _schedule(setup.epochs), "class_balance": "none", "early_stopping": {"metric": "ap50"}},
        "eval": {"n_bootstrap": 0}, "runtime": _runtime(setup, workdir, seed),
    }


#: metrics.json keys every run record keeps (per threshold).
KEYS = ("ap50", "map", "recall", "precision", "iou", "total", "interval_recall", "interval_precision",
        "interval_total")


def _scores(metrics: dict[str, Any]) -> dict[str, Any]:
    small = metrics.get("per_size", {}).get("small", {})
    return {**{k: metrics.get(k) for k in KEYS}, "small_recall": small.get("recall"),
            "small_plaques": small.get("n_plaques"), "counts": metrics.get("counts")}


def train_detector(config: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Train one detector (train stage only), then score its best epoch on the test split.

    The test split is predicted once; its metrics are computed at the configured 0.5 and at the
    score threshold the detection task calibrates on validation.
    """
    from medprune.engine.checkpoint import load_checkpoint, load_model_weights
    from medprune.engine.trainer import predict

    path = workdir / "configs" / f"{config['name']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    cfg = medprune.load_config(path)
    before, t0 = load(), time.perf_counter()
    outcome = medprune.train(cfg, overwrite=True, evaluate_test=False)
    train_seconds = time.perf_counter() - t0
    best = outcome.result.best_checkpoint or outcome.result.last_checkpoint
    ckpt = load_checkpoint(best)
    model = outcome.model.cpu()
    load_model_weights(model, ckpt, best)
    task = cfg.build_task()
    task.frame_width = cfg.data.image_size[1]  # what task.dataset() sets: the columns spanning 360°
    device, batch = torch.device("cpu"), cfg.eval.batch_size or cfg.optim.batch_size
    calibration = task.calibrate(model, outcome.data.datasets["val"], device, batch)
    test = outcome.data.datasets["test"]
    evaluation = predict(model, test, task, batch_size=batch, device=device)
    patients = [test.patient_ids[i] for i in evaluation.indices]
    fixed = task.metrics(evaluation, patients, cfg.eval)
    task.score_threshold = calibration["threshold"]
    tuned = task.metrics(evaluation, patients, cfg.eval)
    history = outcome.result.history
    record = {
        "name": cfg.name, "seed": cfg.runtime.seed, "run_dir": str(outcome.run_dir), "best_epoch": ckpt.get("epoch"),
        "epochs": len(history), "val_ap50": [r.get("val_ap50") for r in history],
        "train_loss": [r.get("train_loss") for r in history],
        "threshold": calibration["threshold"], "calibrated": _scores(tuned), "at_0.5": _scores(fixed),
        "test_frames": int(tuned["n_samples"]), "test_patients": int(tuned["n_patients"]),
        "splits": json.loads((outcome.run_dir / "splits.json").read_text()),
        "train_seconds": sum(float(r["seconds"]) for r in history), "seconds": time.perf_counter() - t0,
        "setup_seconds": train_seconds - sum(float(r["seconds"]) for r in history),
        "load_before": before, "load_after": load(),
    }
    c = record["calibrated"]
    print(f"  {cfg.name:<22} AP50 {_fmt(c['ap50'])}  small recall {_fmt(c['small_recall'])}  total {_fmt(c['total'])}"
          f"  (thr {record['threshold']:.2f}; at 0.5: total {_fmt(record['at_0.5']['total'])})  best ep "
          f"{record['best_epoch']}/{record['epochs']}  {record['seconds']:.0f} s (load {before:.1f} -> "
          f"{record['load_after']:.1f})", flush=True)
    return record


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def values(records: list[dict[str, Any]], key: str, where: str = "calibrated") -> list[float]:
    """``key`` of each record (``nan`` where undefined, e.g. no small plaque detected or none present)."""
    return [float("nan") if r[where][key] is None else float(r[where][key]) for r in records]


def mean_std_defined(vals: list[float]) -> tuple[float, float, int]:
    """Mean and std over the defined values, and how many there were."""
    ok = [v for v in vals if not math.isnan(v)]
    if not ok:
        return float("nan"), float("nan"), 0
    m, s = mean_std(ok)
    return m, s, len(ok)


def pm(vals: list[float], digits: int = 3) -> str:
    m, s, n = mean_std_defined(vals)
    if n == 0:
        return "n/a"
    return f"{m:.{digits}f} ± {s:.{digits}f}" + ("" if n == len(vals) else f" ({n}/{len(vals)})")


def paired(a: list[float], b: list[float]) -> dict[str, Any]:
    """Seed-by-seed differences ``a - b``: mean, std, a paired t-test, and how many seeds favour ``a``."""
    diffs = [x - y for x, y in zip(a, b) if not (math.isnan(x) or math.isnan(y))]
    out: dict[str, Any] = {"diffs": diffs, "n": len(diffs), "mean": None, "std": None, "t": None, "p": None,
                           "a_better": sum(d > TIE for d in diffs), "b_better": sum(d < -TIE for d in diffs)}
    if not diffs:
        return out
    out["mean"], out["std"] = mean_std(diffs)
    if len(diffs) > 1 and out["std"] > 0:
        from scipy import stats

        result = stats.ttest_rel([x for x, y in zip(a, b) if not (math.isnan(x) or math.isnan(y))],
                                 [y for x, y in zip(a, b) if not (math.isnan(x) or math.isnan(y))])
        out["t"], out["p"] = float(result.statistic), float(result.pvalue)
    return out


def fmt_diff(p: dict[str, Any]) -> str:
    if p["mean"] is None:
        return "n/a"
    mean = 0.0 if abs(p["mean"]) < TIE else p["mean"]
    return f"{mean:+.3f} ± {p['std']:.3f} ({p['a_better']}/{p['n']} seeds up)"


METRICS = (("ap50", "AP@0.5"), ("small_recall", "small recall"), ("total", "total"))


def summary(records: list[dict[str, Any]], variants: list[str], reference: str) -> dict[str, Any]:
    """Per variant: mean/std of each metric (calibrated and at 0.5) and the paired difference to ``reference``."""
    by = {v: sorted((r for r in records if r["variant"] == v), key=lambda r: r["seed"]) for v in variants}
    out: dict[str, Any] = {}
    for v, runs in by.items():
        row: dict[str, Any] = {"runs": len(runs), "seconds_mean": mean_std([r["seconds"] for r in runs])[0]}
        for where in ("calibrated", "at_0.5"):
            for key, _ in METRICS + (("recall", ""), ("precision", "")):
                m, s, n = mean_std_defined(values(runs, key, where))
                row[f"{where}.{key}"] = {"mean": None if n == 0 else m, "std": None if n == 0 else s, "n": n}
                if v != reference and reference in by:
                    row[f"{where}.{key}"]["vs_reference"] = paired(values(runs, key, where),
                                                                   values(by[reference], key, where))
        out[v] = row
    return out


#: Fewest seeds for a "supports" verdict: with fewer, every seed agreeing is too weak a sign.
MIN_SEEDS = 3
#: Differences smaller than this are ties (a mean of 0.04 - 0.04 is not a win for either side).
TIE = 1e-9


def verdict(summ: dict[str, Any], reference: str, rivals: list[str], where: str = "calibrated") -> tuple[str, str]:
    """Does the six-size one-map row win on small-plaque recall against the one-map rows with fewer sizes?

    ``supports``: ahead of every rival on the mean and in every one of at least ``MIN_SEEDS`` seeds;
    ``does not support``: some rival is level or ahead on the mean; else ``inconclusive``.
    """
    key = f"{where}.small_recall"
    ref = summ.get(reference, {}).get(key, {})
    if ref.get("mean") is None or not rivals:
        return "inconclusive", "the reference has no small-plaque recall (no small plaque in test, or not run)"
    lines, beaten, clean = [], True, True
    for v in rivals:
        p = summ[v][key].get("vs_reference")
        if p is None or p["mean"] is None:
            return "inconclusive", f"{v} has no small-plaque recall to compare"
        # vs_reference holds rival - reference: the reference wins where it is negative
        test = "" if p["p"] is None else f", paired t-test p={p['p']:.2f}"
        lead = 0.0 if abs(p["mean"]) < TIE else -p["mean"]
        lines.append(f"{reference} - {v}: {lead:+.3f}, reference ahead in {p['b_better']}/{p['n']} seeds{test}")
        beaten &= p["mean"] < -TIE
        clean &= p["b_better"] == p["n"] and p["n"] >= MIN_SEEDS
    if beaten and clean:
        return "supports", "; ".join(lines)
    if beaten:
        return "inconclusive", "; ".join(lines) + f" — ahead on the mean, not in every one of >= {MIN_SEEDS} seeds"
    return "does not support", "; ".join(lines)


#: The verdict as the printed answer.
ANSWER = {"supports": "YES", "does not support": "NO", "inconclusive": "INCONCLUSIVE"}


def print_table(records: list[dict[str, Any]], summ: dict[str, Any], variants: list[str], reference: str,
                where: str, title: str) -> None:
    print()
    print(title)
    rows = []
    for v in variants:
        runs = sorted((r for r in records if r["variant"] == v), key=lambda r: r["seed"])
        layout, sizes = VARIANTS[v]
        row = [v + (" (ref)" if v == reference else ""), layout, ",".join(map(str, sizes))]
        for key, _ in METRICS:
            row.append(pm(values(runs, key, where)))
        found = [r[where]["small_recall"] * r[where]["small_plaques"] for r in runs
                 if r[where]["small_recall"] is not None]
        row.append(f"{mean_std(found)[0]:.1f}/{runs[0][where]['small_plaques']}" if found else "n/a")
        for key, _ in METRICS:
            p = summ[v][f"{where}.{key}"].get("vs_reference")
            row.append("—" if p is None else fmt_diff(p))
        row.append(f"{summ[v]['seconds_mean']:.0f}")
        rows.append(row)
    print(table(["variant", "layout", "anchor px"] + [label for _, label in METRICS] + ["small found"]
                + [f"Δ {label} vs ref" for _, label in METRICS] + ["s/run"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_arguments(parser)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"any of {', '.join(VARIANTS)}")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/anchor_scales.json)")
    args = parser.parse_args()
    variants = parse_names(args.variants)
    for v in variants:
        if v not in VARIANTS:
            parser.error(f"unknown variant {v!r}; available: {', '.join(VARIANTS)}")
    setup, seeds, t0, load_start = start(args)
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.keep) if args.keep else Path(tmp)
        stage1 = run_stage1(setup, workdir)
        for seed in seeds:  # variants interleaved per seed, so each sees similar machine load
            for v in variants:
                layout, sizes = VARIANTS[v]
                config = detector_config(setup, workdir, f"{v}_seed{seed}", seed, layout=layout, anchor_sizes=sizes,
                                         stage1=Path(stage1["config"]))
                records.append({"variant": v, **train_detector(config, workdir)})
                write_result("anchor_scales", {"benchmark": "anchor_scales", "partial": True, "per_run": records},
                             args.out)
    total, load_end = time.perf_counter() - t0, os.getloadavg()

    summ = summary(records, variants, REFERENCE)
    rivals = [v for v in variants if v != REFERENCE and VARIANTS[v][0] == "one_map"]
    verdict_word, why = verdict(summ, REFERENCE, rivals)
    verdict_05, why_05 = verdict(summ, REFERENCE, rivals, "at_0.5")
    test = records[0]
    small = "/".join(str(n) for n in sorted({r["calibrated"]["small_plaques"] for r in records} - {None})) or "no"
    print()
    print(f"SYNTHETIC IVOCT phantom: {setup.patients} pullbacks x {setup.frames} frames at {setup.height}x"
          f"{setup.width} px (polar; 30 deg = {setup.width / 12:.1f} columns); detectors trained on stage-1-cleaned "
          f"frames; test split {test['test_patients']} pullbacks / {test['test_frames']} frames, {small} small "
          f"(< 30 deg) plaques. faster_rcnn resnet18 width 0.25, {setup.epochs} epochs, batch {setup.batch_size}, "
          f"Adam lr {setup.lr:g}, cosine; seeds {seeds}; {setup.threads} thread(s); load {load_start[0]:.2f} at "
          f"start, {load_end[0]:.2f} at end.")
    print_table(records, summ, variants, REFERENCE, "calibrated",
                "Test split at the score threshold tuned on validation (mean ± std over seeds; Δ: paired, "
                "variant − reference, seed by seed)")
    print_table(records, summ, variants, REFERENCE, "at_0.5", "Same runs at the fixed score threshold 0.5 "
                "(AP@0.5 does not depend on it)")
    print()
    print("Claim: " + CLAIM)
    print(f"Does this run support it on small-plaque recall? {ANSWER[verdict_word]} at the validation-tuned "
          f"threshold ({why}); {ANSWER[verdict_05]} at 0.5 ({why_05}).")
    print(f"SYNTHETIC phantom data, {len(seeds)} seeds, {setup.epochs} epochs at {setup.height}x{setup.width} px: "
          "a statement about this phantom and this budget only, not about CCCV2017 or patients.")
    print(f"total {total:.0f} s")
    out = write_result("anchor_scales", {
        "benchmark": "anchor_scales", "data": "SYNTHETIC IVOCT phantom", "partial": False, "setup": asdict(setup),
        "seeds": seeds, "variants": {v: {"layout": VARIANTS[v][0], "anchor_sizes": list(VARIANTS[v][1])}
                                     for v in variants},
        "reference": REFERENCE, "claim": CLAIM, "verdict": verdict_word, "verdict_detail": why,
        "verdict_at_0.5": verdict_05, "verdict_at_0.5_detail": why_05,
        "stage1": stage1, "summary": summ, "per_run": records, "total_seconds": total,
        "load_average_start": list(load_start), "load_average_end": list(load_end),
        **machine_info(setup.threads)}, args.out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
