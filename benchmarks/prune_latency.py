"""Pruning and latency: medprune's default pruning against Torch-Pruning's defaults, in measured CPU time.

Latency is not MACs (DESIGN.md §4 item 7). For each model and per-layer channel ratio (Torch-Pruning's
meaning: each prunable layer loses that share of its output channels) two pruned copies of one
randomly initialised model are built:

* ``medprune``      — ``prune_model(model, x, criterion="l2", ratio=r)`` with its defaults
                      (``round_to=8``, ``protect=("first_conv",)``, classifier always protected);
* ``torch_pruning`` — ``tp.pruner.BasePruner(model, x, importance=GroupMagnitudeImportance(p=2),
                      pruning_ratio=r, ignored_layers=[classifier]).step()`` (Torch-Pruning's defaults:
                      exact channel counts, first conv pruned too);

plus optional extra medprune settings for diagnosis (``--variants``, see ``VARIANTS``). Every model is
exported with ``export_onnx`` (parity-checked) and all candidates of one architecture — unpruned,
every variant, every ratio, PyTorch eager and ONNX Runtime — are timed in one process, interleaved
round-robin (:func:`medprune.compress.latency.interleaved_latency`, median of per-round minima),
batch 1, ``--threads`` threads for both runtimes. MACs come from one counter for all models
(:func:`medprune.models.count_macs`, conv + linear, one image).

Models: Inception V3 at 299 px with 3 input channels and 1000 classes (the ImageNet head, as in timm
and torchvision, so the numbers compare with theirs), and ResNet-56 (CIFAR) at 32 px, 10 classes;
width 1. The weights are random (Kaiming init, seed ``--seed``): latency of a dense model does not
depend on the values, and the L2 ranking only decides *which* channels go, not how many.

``faster_rcnn_r18`` (opt-in: ``--models faster_rcnn_r18``) is the IVOCT plaque detector of
``configs/ivoct/demo.yaml`` — torchvision Faster R-CNN on a timm ResNet-18 at width 1/4, six anchor
sizes on one map — on one grey 96x192 frame, random weights. Torch-Pruning's defaults get the
prediction layers (the RPN head's ``cls_logits``/``bbox_pred`` and the box predictor's
``cls_score``/``bbox_pred``) as ``ignored_layers``, the detector's equivalent of the classifier, and
trace the model as it is called (eval mode: a frame in, detections out). A pruner that raises, or
whose model no longer runs or exports, is recorded in the table as that failure, not dropped. A
detector's work depends on its outputs: how many proposals survive NMS decides how many the RoI head
processes, and with random weights that differs from model to model (on the same frame the unpruned
detector kept 16 proposals, its pruned copies 94-100). So that every candidate does the same work,
:func:`pin_workload` sets the NMS thresholds to 1.0 and the box score threshold to 0 (NMS still runs,
it just keeps every box): the RoI head always sees ``rpn_post_nms_top_n`` = 100 proposals and the
output holds ``max_detections`` rows — the detector's budget, what a frame full of candidates costs.
Each row records the RoI count it ran. The 1-minute load average (``uptime``) is recorded before and
after each model's timing.

    python benchmarks/prune_latency.py [--models inception_v3,resnet56_cifar] [--ratios 0.3,0.5,0.7]
                                       [--rounds 7] [--threads 2] [--quick]
    python benchmarks/prune_latency.py --models faster_rcnn_r18      # the CPU plaque detector
    # diagnosis: other medprune settings (see VARIANTS), ONNX Runtime with spinning threads
    python benchmarks/prune_latency.py --models inception_v3 --ort-spinning --variants medprune,medprune_rt1

Reported per row: MACs reduction (base MACs / pruned MACs), speed-up (base latency / pruned
latency) and latency efficiency = speed-up / MACs reduction, for ONNX Runtime and PyTorch.
Targets: medprune ORT efficiency >= 0.85 at every ratio; medprune PyTorch efficiency above
Torch-Pruning's at the same ratio. Prints a table and writes ``benchmarks/results/prune_latency.json``.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from _common import machine_info, parse_floats, parse_names, table, write_result
from medprune.compress import prune_model
from medprune.compress.export import export_onnx
from medprune.compress.latency import interleaved_latency, ort_runner, ort_session, torch_runner
from medprune.models import count_macs, create_model

ORT_EFFICIENCY_TARGET = 0.85


@dataclass(frozen=True)
class ModelSpec:
    """One benchmarked architecture: registry name and arguments, input ``(H, W)``, and how many calls
    per round suit its speed."""

    name: str
    size: tuple[int, int]
    num_classes: int
    per_round: int
    quick_size: tuple[int, int]
    in_chans: int = 3
    width: float = 1.0
    kwargs: Mapping[str, Any] = field(default_factory=dict)


#: The IVOCT demo detector's arguments (configs/ivoct/demo.yaml, model.kwargs).
DEMO_DETECTOR = {"backbone": "resnet18", "layout": "one_map", "anchor_sizes": (12, 16, 32, 64, 128, 256),
                 "fpn_channels": 256, "representation_size": 1024, "rpn_pre_nms_top_n": 300,
                 "rpn_post_nms_top_n": 100, "box_batch_size_per_image": 64, "max_detections": 16}

MODELS = {
    "inception_v3": ModelSpec("inception_v3", (299, 299), 1000, per_round=3, quick_size=(139, 139)),
    "resnet56_cifar": ModelSpec("resnet56_cifar", (32, 32), 10, per_round=20, quick_size=(32, 32)),
    "faster_rcnn_r18": ModelSpec("faster_rcnn", (96, 192), 2, per_round=20, quick_size=(64, 128), in_chans=1,
                                 width=0.25, kwargs=DEMO_DETECTOR),
}


def pin_workload(model: nn.Module) -> None:
    """Make a detector's work independent of its weights (see the module docstring); other models: no-op.

    Sets torchvision's own thresholds (``rpn.nms_thresh``, ``roi_heads.nms_thresh``/``score_thresh``),
    which pruned copies inherit; NMS runs as before but suppresses nothing.
    """
    detector = getattr(model, "detector", None)
    if detector is None:
        return
    detector.rpn.nms_thresh = 1.0
    detector.roi_heads.nms_thresh = 1.0
    detector.roi_heads.score_thresh = 0.0


def roi_count(model: nn.Module, x: torch.Tensor) -> int | None:
    """How many RoIs the detector's box head processes for ``x`` (``None`` for a model without one)."""
    detector = getattr(model, "detector", None)
    if detector is None:
        return None
    seen: list[int] = []
    handle = detector.roi_heads.box_head.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        handle.remove()
    return sum(seen)


def output_layers(model: nn.Module) -> list[nn.Module]:
    """The layers whose outputs are the predictions (kept intact by both pruners): the final linear layer of
    a classifier; a Faster R-CNN's RPN head and box predictor layers."""
    detector = getattr(model, "detector", None)
    if detector is not None:
        rpn, box = detector.rpn.head, detector.roi_heads.box_predictor
        return [rpn.cls_logits, rpn.bbox_pred, box.cls_score, box.bbox_pred]
    return [model.get_classifier() if hasattr(model, "get_classifier") else model.fc]


def _medprune(**overrides: Any) -> Callable[[nn.Module, torch.Tensor, float], None]:
    def prune(model: nn.Module, x: torch.Tensor, ratio: float) -> None:
        prune_model(model, x, **{"criterion": "l2", "ratio": ratio, **overrides})
    return prune


def _torch_pruning(model: nn.Module, x: torch.Tensor, ratio: float) -> None:
    pruner = tp.pruner.BasePruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=ratio, ignored_layers=output_layers(model))
    pruner.step()


#: Variant name → ``prune(model, x, ratio)``. The first two are the comparison; the rest diagnose
#: where medprune's latency efficiency comes from (select them with ``--variants``).
VARIANTS: dict[str, Callable[[nn.Module, torch.Tensor, float], None]] = {
    "medprune": _medprune(),
    "torch_pruning": _torch_pruning,
    "medprune_rt16": _medprune(round_to=16),
    "medprune_rt32": _medprune(round_to=32),
    "medprune_rt1": _medprune(round_to=None),
    "medprune_noprotect": _medprune(protect=()),
}


def total_macs(model: nn.Module, spec: ModelSpec, size: tuple[int, int]) -> int:
    return sum(count_macs(model, (spec.in_chans, *size)).values())


def _failure(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}{'…' if len(text) > 300 else ''}"


def bench_architecture(spec: ModelSpec, key: str, size: tuple[int, int], ratios: list[float], variants: list[str],
                       args: argparse.Namespace, onnx_dir: Path) -> dict[str, Any]:
    """Prune, export and time every candidate of one architecture; return its JSON record.

    A candidate whose pruning, forward or export raises is kept as a failed row (``failed``: where and
    the error), not timed: that a pruner cannot handle the model is the result for that row.
    """
    torch.manual_seed(args.seed)
    base = create_model(spec.name, num_classes=spec.num_classes, in_chans=spec.in_chans, width=spec.width,
                        **spec.kwargs).eval()
    pin_workload(base)
    x = torch.randn(1, spec.in_chans, *size, generator=torch.Generator().manual_seed(args.seed))
    models: dict[tuple[str, float], nn.Module] = {("base", 0.0): base}
    prune_s: dict[tuple[str, float], float] = {}
    failed: dict[tuple[str, float], str] = {}
    for ratio in ratios:
        for variant in variants:
            model = copy.deepcopy(base)
            t0 = time.perf_counter()
            step = "pruning"
            try:
                VARIANTS[variant](model, x, ratio)
                step = "forward of the pruned model"
                with torch.no_grad():
                    model.eval()(x)  # the pruned model must still run as deployed
            except Exception as exc:  # recorded as this row's result (and printed), not hidden
                failed[(variant, ratio)] = f"{step}: {_failure(exc)}"
                print(f"  {key}: {variant} at {ratio} FAILED after {time.perf_counter() - t0:.1f} s: "
                      f"{failed[(variant, ratio)]}", flush=True)
                continue
            prune_s[(variant, ratio)] = time.perf_counter() - t0
            models[(variant, ratio)] = model.eval()
            print(f"  {key}: pruned {variant} at {ratio} in {prune_s[(variant, ratio)]:.1f} s", flush=True)

    candidates: dict[str, Callable[[], None]] = {}
    parity: dict[tuple[str, float], float | None] = {}
    for k, model in list(models.items()):
        path = onnx_dir / f"{key}_{k[0]}_{k[1]}.onnx"
        try:
            parity[k] = export_onnx(model, x, path).max_abs_diff
        except Exception as exc:  # recorded as this row's result (and printed), not hidden
            if k == ("base", 0.0):
                raise
            failed[k] = f"ONNX export: {_failure(exc)}"
            print(f"  {key}: {k[0]} at {k[1]} exported model FAILED: {failed[k]}", flush=True)
            del models[k]
            continue
        candidates[f"{k[0]}@{k[1]}|torch"] = torch_runner(model, x)
        session = ort_session(path, args.threads, spinning=args.ort_spinning)
        candidates[f"{k[0]}@{k[1]}|ort"] = ort_runner(session, x)
    per_round = args.per_round or (1 if args.quick else spec.per_round)
    print(f"  {key}: timing {len(candidates)} candidates, {args.rounds} rounds x {per_round} calls",
          flush=True)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    stats = interleaved_latency(candidates, rounds=args.rounds, warmup=args.warmup, per_round=per_round)
    timing_s = time.perf_counter() - t0
    load_after = os.getloadavg()[0]

    base_macs = total_macs(base, spec, size)
    base_ms = {rt: stats[f"base@0.0|{rt}"].median_ms for rt in ("ort", "torch")}
    rows = []
    for ratio in [0.0, *ratios]:
        for variant in (["base"] if ratio == 0.0 else variants):
            if (variant, ratio) in failed:
                rows.append({"model": key, "variant": variant, "ratio": ratio, "failed": failed[(variant, ratio)]})
                continue
            model = models[(variant, ratio)]
            macs = total_macs(model, spec, size)
            row: dict[str, Any] = {"model": key, "variant": variant, "ratio": ratio, "macs": macs,
                                   "params": sum(p.numel() for p in model.parameters()),
                                   "macs_reduction": base_macs / macs, "onnx_max_abs_diff": parity[(variant, ratio)],
                                   "prune_seconds": prune_s.get((variant, ratio)), "rois": roi_count(model, x),
                                   "failed": None}
            for rt in ("ort", "torch"):
                s = stats[f"{variant}@{ratio}|{rt}"]
                row[f"{rt}_ms"] = s.to_dict()
                row[f"{rt}_speedup"] = base_ms[rt] / s.median_ms
                row[f"{rt}_efficiency"] = row[f"{rt}_speedup"] / row["macs_reduction"]
            rows.append(row)
    _judge(rows)
    return {"model": key, "registry_name": spec.name, "kwargs": {**spec.kwargs, "width": spec.width},
            "input": [1, spec.in_chans, *size], "num_classes": spec.num_classes, "per_round": per_round,
            "timing_seconds": timing_s, "load_average_before": load_before, "load_average_after": load_after,
            "rows": rows}


def _judge(rows: list[dict[str, Any]]) -> None:
    """Add the target verdicts to the medprune rows (``None`` where a target does not apply).

    Where Torch-Pruning failed at a ratio, medprune's PyTorch target has nothing to beat: ``None``,
    and the failed row says why.
    """
    tp_eff = {r["ratio"]: r["torch_efficiency"] for r in rows if r["variant"] == "torch_pruning" and not r["failed"]}
    for r in rows:
        ok = r["variant"] == "medprune" and not r["failed"]
        r["ort_target_pass"] = r["ort_efficiency"] >= ORT_EFFICIENCY_TARGET if ok else None
        r["torch_target_pass"] = r["torch_efficiency"] > tp_eff[r["ratio"]] if ok and r["ratio"] in tp_eff else None


def _verdict(flag: bool | None) -> str:
    return "" if flag is None else ("PASS" if flag else "FAIL")


def format_rows(rows: list[dict[str, Any]]) -> str:
    headers = ["model", "variant", "ratio", "GMACs", "MACs red.", "ORT ms", "ORT speed-up", "ORT eff.",
               "PT ms", "PT speed-up", "PT eff.", f"ORT eff>={ORT_EFFICIENCY_TARGET}", "PT eff>TP"]
    tp_failed = {(r["model"], r["ratio"]) for r in rows if r["variant"] == "torch_pruning" and r["failed"]}
    body = []
    for r in rows:
        if r["failed"]:
            body.append([r["model"], r["variant"], f"{r['ratio']:.1f}", "FAILED"] + [""] * 9)
            continue
        body.append([r["model"], r["variant"], "-" if r["variant"] == "base" else f"{r['ratio']:.1f}",
                     f"{r['macs'] / 1e9:.3f}", f"{r['macs_reduction']:.2f}x",
                     f"{r['ort_ms']['median_ms']:.1f}", f"{r['ort_speedup']:.2f}x", f"{r['ort_efficiency']:.2f}",
                     f"{r['torch_ms']['median_ms']:.1f}", f"{r['torch_speedup']:.2f}x",
                     f"{r['torch_efficiency']:.2f}", _verdict(r["ort_target_pass"]),
                     "n/a: TP failed" if r["variant"] == "medprune" and (r["model"], r["ratio"]) in tp_failed
                     else _verdict(r["torch_target_pass"])])
    text = table(headers, body, "<<" + ">" * 11)
    failures = [f"  {r['model']} {r['variant']} at {r['ratio']:.1f}: {r['failed']}" for r in rows if r["failed"]]
    rois = sorted({(r["model"], r["rois"]) for r in rows if not r["failed"] and r["rois"] is not None})
    notes = [f"RoIs per frame through the box head (workload pinned): {rois}"] if rois else []
    if failures:
        notes += ["Failed (the result for that row):"] + failures
    return "\n".join([text, *notes])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="inception_v3,resnet56_cifar", help=f"any of {', '.join(MODELS)}")
    parser.add_argument("--ratios", default="0.3,0.5,0.7", help="per-layer channel ratios")
    parser.add_argument("--variants", default="medprune,torch_pruning", help=f"any of {', '.join(VARIANTS)}")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--per-round", type=int, default=None, help="calls per round (default: per model)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ort-spinning", action="store_true",
                        help="let ONNX Runtime's idle threads spin (medprune's ort_session default: off)")
    parser.add_argument("--quick", action="store_true", help="smoke run: small inputs, 2 rounds of 1 call")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/prune_latency.json)")
    args = parser.parse_args()
    if args.quick:
        args.rounds = min(args.rounds, 2)
    models = parse_names(args.models)
    variants = parse_names(args.variants)
    for name, known, what in [(m, MODELS, "model") for m in models] + [(v, VARIANTS, "variant") for v in variants]:
        if name not in known:
            parser.error(f"unknown {what} {name!r}; available: {', '.join(known)}")
    ratios = parse_floats(args.ratios)
    torch.set_num_threads(args.threads)

    t_start = time.perf_counter()
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            spec = MODELS[name]
            records.append(bench_architecture(spec, name, spec.quick_size if args.quick else spec.size, ratios,
                                              variants, args, Path(tmp)))
    rows = [r for rec in records for r in rec["rows"]]
    print()
    print(f"Batch 1, {args.threads} threads, random weights; MACs reduction = base/pruned MACs; speed-up = "
          f"base/pruned median latency; eff. = speed-up / MACs reduction. PT = PyTorch eager, ORT = ONNX "
          f"Runtime CPU (thread spinning {'on' if args.ort_spinning else 'off'}). {args.rounds} rounds, "
          f"interleaved per model.")
    print(f"Targets: medprune ORT eff. >= {ORT_EFFICIENCY_TARGET} at every ratio; medprune PT eff. > "
          f"torch_pruning's at the same ratio.")
    print(format_rows(rows))
    for rec in records:
        print(f"  {rec['model']}: input {rec['input']}, timing {rec['timing_seconds']:.0f} s at load average "
              f"{rec['load_average_before']:.2f} -> {rec['load_average_after']:.2f} (uptime, 1 min)")
    verdicts = [r[k] for r in rows for k in ("ort_target_pass", "torch_target_pass") if r[k] is not None]
    total = time.perf_counter() - t_start
    print(f"targets met: {sum(verdicts)}/{len(verdicts)}; total {total:.0f} s")
    out = write_result("prune_latency", {
        "benchmark": "prune_latency", "quick": args.quick, "ratios": ratios, "variants": variants,
        "rounds": args.rounds, "warmup": args.warmup, "threads": args.threads, "seed": args.seed,
        "ort_spinning": args.ort_spinning,
        "method": "median of per-round minima, all candidates of one model interleaved round-robin in one process",
        "targets": {"medprune_ort_efficiency_min": ORT_EFFICIENCY_TARGET,
                    "medprune_torch_efficiency": "greater than torch_pruning's at the same ratio"},
        "all_targets_met": all(verdicts), "total_seconds": total, "models": records,
        **machine_info(args.threads)}, args.out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
