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

    python benchmarks/prune_latency.py [--models inception_v3,resnet56_cifar] [--ratios 0.3,0.5,0.7]
                                       [--rounds 7] [--threads 2] [--quick]
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
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
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
    """One benchmarked architecture: input size, head, and how many calls per round suit its speed."""

    name: str
    size: int
    num_classes: int
    per_round: int
    quick_size: int


MODELS = {
    "inception_v3": ModelSpec("inception_v3", 299, 1000, per_round=3, quick_size=139),
    "resnet56_cifar": ModelSpec("resnet56_cifar", 32, 10, per_round=20, quick_size=32),
}


def classifier(model: nn.Module) -> nn.Module:
    """The final linear layer (kept intact by both pruners)."""
    return model.get_classifier() if hasattr(model, "get_classifier") else model.fc


def _medprune(**overrides: Any) -> Callable[[nn.Module, torch.Tensor, float], None]:
    def prune(model: nn.Module, x: torch.Tensor, ratio: float) -> None:
        prune_model(model, x, **{"criterion": "l2", "ratio": ratio, **overrides})
    return prune


def _torch_pruning(model: nn.Module, x: torch.Tensor, ratio: float) -> None:
    pruner = tp.pruner.BasePruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=ratio, ignored_layers=[classifier(model)])
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


def total_macs(model: nn.Module, size: int) -> int:
    return sum(count_macs(model, (3, size, size)).values())


def bench_architecture(spec: ModelSpec, size: int, ratios: list[float], variants: list[str], args: argparse.Namespace,
                       onnx_dir: Path) -> dict[str, Any]:
    """Prune, export and time every candidate of one architecture; return its JSON record."""
    torch.manual_seed(args.seed)
    base = create_model(spec.name, num_classes=spec.num_classes, in_chans=3, width=1.0).eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(args.seed))
    models: dict[tuple[str, float], nn.Module] = {("base", 0.0): base}
    prune_s: dict[tuple[str, float], float] = {}
    for ratio in ratios:
        for variant in variants:
            model = copy.deepcopy(base)
            t0 = time.perf_counter()
            VARIANTS[variant](model, x, ratio)
            prune_s[(variant, ratio)] = time.perf_counter() - t0
            models[(variant, ratio)] = model.eval()
            print(f"  {spec.name}: pruned {variant} at {ratio} in {prune_s[(variant, ratio)]:.1f} s", flush=True)

    candidates: dict[str, Callable[[], None]] = {}
    parity: dict[tuple[str, float], float | None] = {}
    for key, model in models.items():
        path = onnx_dir / f"{spec.name}_{key[0]}_{key[1]}.onnx"
        parity[key] = export_onnx(model, x, path).max_abs_diff
        candidates[f"{key[0]}@{key[1]}|torch"] = torch_runner(model, x)
        session = ort_session(path, args.threads, spinning=args.ort_spinning)
        candidates[f"{key[0]}@{key[1]}|ort"] = ort_runner(session, x)
    per_round = args.per_round or (1 if args.quick else spec.per_round)
    print(f"  {spec.name}: timing {len(candidates)} candidates, {args.rounds} rounds x {per_round} calls",
          flush=True)
    t0 = time.perf_counter()
    stats = interleaved_latency(candidates, rounds=args.rounds, warmup=args.warmup, per_round=per_round)
    timing_s = time.perf_counter() - t0

    base_macs = total_macs(base, size)
    base_ms = {rt: stats[f"base@0.0|{rt}"].median_ms for rt in ("ort", "torch")}
    rows = []
    for (variant, ratio), model in models.items():
        macs = total_macs(model, size)
        row: dict[str, Any] = {"model": spec.name, "variant": variant, "ratio": ratio, "macs": macs,
                               "params": sum(p.numel() for p in model.parameters()),
                               "macs_reduction": base_macs / macs, "onnx_max_abs_diff": parity[(variant, ratio)],
                               "prune_seconds": prune_s.get((variant, ratio))}
        for rt in ("ort", "torch"):
            s = stats[f"{variant}@{ratio}|{rt}"]
            row[f"{rt}_ms"] = s.to_dict()
            row[f"{rt}_speedup"] = base_ms[rt] / s.median_ms
            row[f"{rt}_efficiency"] = row[f"{rt}_speedup"] / row["macs_reduction"]
        rows.append(row)
    _judge(rows)
    return {"model": spec.name, "input": [1, 3, size, size], "num_classes": spec.num_classes,
            "per_round": per_round, "timing_seconds": timing_s, "rows": rows}


def _judge(rows: list[dict[str, Any]]) -> None:
    """Add the target verdicts to the medprune rows (``None`` where a target does not apply)."""
    tp_eff = {r["ratio"]: r["torch_efficiency"] for r in rows if r["variant"] == "torch_pruning"}
    for r in rows:
        r["ort_target_pass"] = r["ort_efficiency"] >= ORT_EFFICIENCY_TARGET if r["variant"] == "medprune" else None
        r["torch_target_pass"] = (r["torch_efficiency"] > tp_eff[r["ratio"]]
                                  if r["variant"] == "medprune" and r["ratio"] in tp_eff else None)


def _verdict(flag: bool | None) -> str:
    return "" if flag is None else ("PASS" if flag else "FAIL")


def format_rows(rows: list[dict[str, Any]]) -> str:
    headers = ["model", "variant", "ratio", "GMACs", "MACs red.", "ORT ms", "ORT speed-up", "ORT eff.",
               "PT ms", "PT speed-up", "PT eff.", f"ORT eff>={ORT_EFFICIENCY_TARGET}", "PT eff>TP"]
    body = []
    for r in rows:
        body.append([r["model"], r["variant"], "-" if r["variant"] == "base" else f"{r['ratio']:.1f}",
                     f"{r['macs'] / 1e9:.3f}", f"{r['macs_reduction']:.2f}x",
                     f"{r['ort_ms']['median_ms']:.1f}", f"{r['ort_speedup']:.2f}x", f"{r['ort_efficiency']:.2f}",
                     f"{r['torch_ms']['median_ms']:.1f}", f"{r['torch_speedup']:.2f}x",
                     f"{r['torch_efficiency']:.2f}", _verdict(r["ort_target_pass"]),
                     _verdict(r["torch_target_pass"])])
    return table(headers, body, "<<" + ">" * 11)


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
            records.append(bench_architecture(spec, spec.quick_size if args.quick else spec.size, ratios,
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
