"""Pruning wall time per criterion: how long scoring and surgery take on Inception V3 (299 px).

For every registered criterion a fresh copy of one randomly initialised Inception V3 (width 1,
3 input channels, 1000 classes, 299 px) is pruned with ``prune_model(..., ratio=0.5)`` and its
defaults (``round_to=8``, ``protect=("first_conv",)``, self-check on), example batch 2. Data-driven
criteria get ``--calib-batches`` batches of ``--calib-batch-size`` random images with random labels
(the time does not depend on the values). Reported per criterion:

* ``prune_model`` — the whole call (calibration included for data-driven criteria, plus MAC
  counting, graph tracing in train mode, scoring, surgery and the forward/backward self-check);
* ``calibrate`` — the part of that call spent in ``criterion.calibrate`` (timed inside the same
  call, by wrapping the criterion object's method, so the two numbers share one run's conditions);
* ``without calibration`` = prune_model − calibrate: scoring + surgery + checks.

The first pruning in a process pays one-time costs (oneDNN kernel generation for every new layer
shape, Torch-Pruning's first trace); a warm-up prune of a throwaway copy runs first and is reported
on its own line. Torch-Pruning's ``BasePruner`` with ``GroupMagnitudeImportance(p=2)`` at the same
ratio is timed as a reference (no calibration, no self-check, exact channel counts).

    python benchmarks/prune_time.py [--criteria l2,taylor] [--repeats 1] [--calib-batches 4]

Prints a table and writes ``benchmarks/results/prune_time.json``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Any

import torch
import torch_pruning as tp

from _common import machine_info, parse_names, table, write_result
from medprune.compress import prune_model
from medprune.compress.importance import Criterion, create_criterion, list_criteria
from medprune.models import create_model

NUM_CLASSES = 1000


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _time_calibration(crit: Criterion) -> list[float]:
    """Record the wall time of every ``crit.calibrate`` call (prune_model calibrates internally)."""
    spent: list[float] = []
    calibrate = crit.calibrate

    def timed(*args: Any, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        try:
            calibrate(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - t0)

    crit.calibrate = timed  # type: ignore[method-assign]
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--criteria", default=",".join(list_criteria()))
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per criterion (median reported)")
    parser.add_argument("--calib-batches", type=int, default=4)
    parser.add_argument("--calib-batch-size", type=int, default=8)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/prune_time.json)")
    args = parser.parse_args()
    criteria = parse_names(args.criteria)
    unknown = [c for c in criteria if c not in list_criteria()]
    if unknown:
        parser.error(f"unknown criterion {unknown[0]!r}; available: {', '.join(list_criteria())}")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    torch.set_num_threads(args.threads)

    t_start = time.perf_counter()
    torch.manual_seed(args.seed)
    base = create_model("inception_v3", num_classes=NUM_CLASSES, in_chans=3, width=1.0)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(2, 3, args.size, args.size, generator=g)
    calibration = [(torch.randn(args.calib_batch_size, 3, args.size, args.size, generator=g),
                    torch.randint(0, NUM_CLASSES, (args.calib_batch_size,), generator=g))
                   for _ in range(args.calib_batches)]

    t0 = time.perf_counter()
    prune_model(copy.deepcopy(base), x, criterion="l2", ratio=args.ratio)
    warmup_s = time.perf_counter() - t0
    print(f"  warm-up prune (l2, first in process): {warmup_s:.1f} s", flush=True)

    rows: list[dict[str, Any]] = []
    for name in criteria:
        data_driven = create_criterion(name).data_driven
        calib_s, total_s, reported_s = [], [], []
        macs_reduction = None
        for _ in range(args.repeats):
            crit = create_criterion(name)
            spent = _time_calibration(crit)
            model = copy.deepcopy(base)
            t0 = time.perf_counter()
            result = prune_model(model, x, criterion=crit, ratio=args.ratio,
                                 calibration=calibration if data_driven else None)
            total_s.append(time.perf_counter() - t0)
            calib_s.append(sum(spent))
            reported_s.append(result.seconds)
            macs_reduction = result.macs_reduction
            del model, result, crit
        row = {"criterion": name, "data_driven": data_driven, "calibrate_s": _median(calib_s),
               "prune_model_s": _median(total_s), "prune_result_seconds": _median(reported_s),
               "macs_reduction": macs_reduction, "runs": {"calibrate_s": calib_s, "prune_model_s": total_s}}
        row["without_calibration_s"] = _median([t - c for t, c in zip(total_s, calib_s)])
        rows.append(row)
        print(f"  {name}: {row['prune_model_s']:.1f} s (calibrate {row['calibrate_s']:.1f} s)", flush=True)

    tp_s = []
    for _ in range(args.repeats):
        model = copy.deepcopy(base)
        t0 = time.perf_counter()
        pruner = tp.pruner.BasePruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                      pruning_ratio=args.ratio, ignored_layers=[model.get_classifier()])
        pruner.step()
        tp_s.append(time.perf_counter() - t0)
        del model, pruner
    total = time.perf_counter() - t_start

    print()
    print(f"Inception V3 width 1, {args.size} px, 3 channels, {NUM_CLASSES} classes, example batch {x.shape[0]}, "
          f"per-layer ratio {args.ratio}, {args.threads} threads; data-driven criteria: {args.calib_batches} "
          f"calibration batches x {args.calib_batch_size} random images; median of {args.repeats} run(s) after "
          f"a warm-up prune of {warmup_s:.1f} s.")
    body = [[r["criterion"], "yes" if r["data_driven"] else "no",
             f"{r['calibrate_s']:.2f}" if r["data_driven"] else "-", f"{r['without_calibration_s']:.2f}",
             f"{r['prune_model_s']:.2f}", f"{r['macs_reduction']:.2f}x"]
            for r in rows]
    body.append(["torch_pruning (reference)", "no", "-", f"{_median(tp_s):.2f}", f"{_median(tp_s):.2f}", ""])
    print(table(["criterion", "data-driven", "calibrate s", "without calib. s", "prune_model s", "MACs red."],
                body, "<<>>>>"))
    print(f"total {total:.0f} s")
    out = write_result("prune_time", {
        "benchmark": "prune_time", "model": "inception_v3", "width": 1.0,
        "input": [x.shape[0], 3, args.size, args.size],
        "num_classes": NUM_CLASSES, "ratio": args.ratio, "repeats": args.repeats,
        "calibration": {"batches": args.calib_batches, "batch_size": args.calib_batch_size, "data": "random images"},
        "warmup_prune_s": warmup_s, "rows": rows, "torch_pruning_reference_s": tp_s, "total_seconds": total,
        **machine_info(args.threads)}, args.out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
