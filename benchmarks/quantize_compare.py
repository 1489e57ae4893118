"""Quantization on the demo model: fp32 vs Direct Quantization (8/4/2-bit weights) vs ONNX Runtime INT8.

SYNTHETIC data: the thermography phantom of ``configs/thermography/demo.yaml`` (Inception V3 at
width 1/8, 112 px, grayscale); the numbers describe the phantom, never clinical performance.

The demo model is trained once (``medprune.workflows.jobs.train``, the config's recipe, or
``--epochs``), or read from ``--checkpoint``. Then, from that one fp32 model:

* ``dq_w{b}a{a}`` — :func:`medprune.compress.quantize_model` with ``b``-bit weights (8, 4, 2) and
  ``--act-bits`` activations, calibrated on class-balanced training batches, then fine-tuned
  (quantization-aware) through the trainer with the same budget for every bit width
  (``--finetune-epochs`` at ``--finetune-lr``, best validation epoch kept);
* ``int8_ort`` — ONNX Runtime post-training static INT8 (QDQ, per-channel weights) calibrated on
  the same batches (:func:`medprune.compress.int8.export_int8`, agreement reported, not enforced).

Reported on the test split: balanced accuracy and worst-class sensitivity (PyTorch for fp32/DQ,
ONNX Runtime for INT8), the ONNX file size, for DQ also the theoretical size with ``b``-bit packed
weight codes (:func:`~medprune.compress.quantize.packed_size_bytes`) — the DQ ONNX file stores
fake-quantized weights as fp32 and is **not** smaller than the fp32 file — the top-1 agreement of
each ONNX file with its PyTorch model on the test images, and ONNX Runtime CPU latency (batch 1,
``--threads`` threads, all files timed interleaved in one process, median of per-round minima).

    python benchmarks/quantize_compare.py [--checkpoint runs/thermography_demo/checkpoints/best.pt]
                                          [--bits 8,4,2] [--act-bits 8] [--finetune-epochs 3] [--quick]

Prints a table and writes ``benchmarks/results/quantize_compare.json``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import machine_info, table, write_result
from medprune.compress.calibration import class_balanced_batches
from medprune.compress.export import export_onnx
from medprune.compress.int8 import export_int8
from medprune.compress.latency import interleaved_latency, ort_runner, ort_session
from medprune.compress.quantize import packed_size_bytes, quantize_model
from medprune.config import ExperimentConfig, load_config
from medprune.engine.checkpoint import load_checkpoint, load_model_weights
from medprune.workflows.data import prepare_data
from medprune.workflows.jobs import train
from medprune.engine.trainer import predict
from medprune.workflows.helpers import config_trainer
from medprune.metrics import classification_metrics
from medprune.models.structure import build_from_spec

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "thermography" / "demo.yaml"


def scores(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, float]:
    m = classification_metrics(labels, probs, classes, n_bootstrap=0)
    sens = {c: m["per_class"][c]["sensitivity"] for c in classes}
    return {"balanced_accuracy": float(m["balanced_accuracy"]),
            "worst_class_sensitivity": float(min(v for v in sens.values() if v is not None)),
            "sensitivity": sens}


def torch_eval(model: torch.nn.Module, dataset: Any, cfg: ExperimentConfig) -> tuple[dict[str, float], np.ndarray]:
    preds = predict(model, dataset, cfg.build_task(), batch_size=32, device=torch.device("cpu")).payload
    return scores(preds["labels"], preds["probs"], list(cfg.data.classes)), preds["probs"]


def ort_probs(path: Path, images: list[torch.Tensor]) -> np.ndarray:
    session = ort_session(path)
    logits = np.concatenate([session.run(None, {"input": x.numpy()})[0] for x in images])
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def finetune(model: torch.nn.Module, cfg: ExperimentConfig, data: Any, args: argparse.Namespace,
             run_dir: Path) -> torch.nn.Module:
    optim = dataclasses.replace(cfg.optim, epochs=args.finetune_epochs, lr=args.finetune_lr,
                                schedule=dataclasses.replace(cfg.optim.schedule, warmup_epochs=0),
                                early_stopping=dataclasses.replace(cfg.optim.early_stopping, patience=None))
    trainer = config_trainer(model, data.datasets["train"], data.datasets["val"], cfg, run_dir,
                             torch.device("cpu"), optim=optim)
    result = trainer.fit()
    best = result.best_checkpoint or result.last_checkpoint
    load_model_weights(trainer.model, load_checkpoint(best), best)
    return trainer.model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--checkpoint", default=None, help="a trained demo checkpoint (default: train one here)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the config's)")
    parser.add_argument("--bits", default="8,4,2", help="Direct Quantization weight bit widths")
    parser.add_argument("--act-bits", type=int, default=8, choices=[2, 4, 8], help="activation bits of every DQ row")
    parser.add_argument("--finetune-epochs", type=int, default=3, help="QAT fine-tuning epochs (same for every row)")
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--calib-batches", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved latency rounds")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 40 patients, 2 training epochs, 1 fine-tuning epoch, 3 latency rounds")
    parser.add_argument("--keep", default=None, help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/quantize_compare.json)")
    args = parser.parse_args()
    bit_widths = [int(b) for b in args.bits.split(",") if b.strip()]
    if any(b not in (2, 4, 8) for b in bit_widths):
        parser.error(f"--bits: each must be 2, 4 or 8, got {args.bits}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.ERROR)  # ONNX Runtime's quantizer warns on the root logger ...
    logging.getLogger("medprune").setLevel(logging.WARNING)  # ... ours do not
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        overrides = [f"runtime.out_dir={work / 'runs'}", "runtime.progress=false", "runtime.device=cpu",
                     f"runtime.threads={args.threads}", "eval.n_bootstrap=0",
                     f"data.phantom.out={work / 'phantom'}"]
        if args.epochs is not None:
            overrides.append(f"optim.epochs={args.epochs}")
        if args.quick:
            overrides += ["data.phantom.patients=40", "optim.epochs=2"] if args.epochs is None else \
                ["data.phantom.patients=40"]
            args.finetune_epochs, args.rounds = 1, 3
        cfg = load_config(args.config, overrides)
        classes = list(cfg.data.classes)
        if args.checkpoint:
            ckpt = load_checkpoint(args.checkpoint)
            fp32 = build_from_spec(ckpt["model_spec"], args.checkpoint)
            load_model_weights(fp32, ckpt, args.checkpoint)
            data = prepare_data(cfg, cfg.run_dir)
            train_seconds = 0.0
        else:
            outcome = train(cfg, overwrite=True)
            fp32, data, train_seconds = outcome.model, outcome.data, outcome.seconds
        fp32 = fp32.cpu().eval()
        test = data.datasets["test"]
        test_images = [torch.stack([test[i][0] for i in range(s, min(s + 32, len(test)))])
                       for s in range(0, len(test), 32)]
        val = data.datasets["val"]
        val_images = [torch.stack([val[i][0] for i in range(min(len(val), 64))])]
        example = test_images[0][:1]
        calib = class_balanced_batches(data.datasets["train"], batch_size=16, num_batches=args.calib_batches,
                                       seed=0, num_classes=len(classes))
        print(f"fp32 model ready ({train_seconds:.0f} s training); test split {len(test)} images", flush=True)

        rows: dict[str, dict[str, Any]] = {}
        onnx_dir = work / "onnx"
        fp32_onnx = export_onnx(fp32, example, onnx_dir / "fp32.onnx")
        fp32_scores, _ = torch_eval(fp32, test, cfg)
        rows["fp32"] = {**fp32_scores, "onnx": str(fp32_onnx.path), "onnx_bytes": fp32_onnx.path.stat().st_size,
                        "packed_bytes": packed_size_bytes(fp32), "onnx_top1_agreement": 1.0,
                        "onnx_max_abs_diff": fp32_onnx.max_abs_diff, "seconds": 0.0}

        for bits in bit_widths:
            name = f"dq_w{bits}a{args.act_bits}"
            t1 = time.perf_counter()
            qmodel = quantize_model(copy.deepcopy(fp32), bits=bits, act_bits=args.act_bits, calibration=calib)
            quantize_seconds = time.perf_counter() - t1
            before, _ = torch_eval(qmodel, test, cfg)
            t2 = time.perf_counter()
            qmodel = finetune(qmodel, cfg, data, args, work / "finetune" / name)
            finetune_seconds = time.perf_counter() - t2
            after, probs = torch_eval(qmodel, test, cfg)
            exported = export_onnx(qmodel, example, onnx_dir / f"{name}.onnx", min_agreement=0.0,
                                   check_inputs=val_images)
            agree = float(np.mean(ort_probs(exported.path, test_images).argmax(1) == probs.argmax(1)))
            rows[name] = {**after, "before_finetune": before, "onnx": str(exported.path),
                          "onnx_bytes": exported.path.stat().st_size, "packed_bytes": packed_size_bytes(qmodel),
                          "onnx_top1_agreement": agree, "onnx_max_abs_diff": exported.max_abs_diff,
                          "quantize_seconds": quantize_seconds, "finetune_seconds": finetune_seconds,
                          "seconds": time.perf_counter() - t1}
            print(f"  {name}: bal. acc. {before['balanced_accuracy']:.3f} after quantization, "
                  f"{after['balanced_accuracy']:.3f} after {args.finetune_epochs} fine-tuning epoch(s) "
                  f"(quantize {quantize_seconds:.0f} s, fine-tune {finetune_seconds:.0f} s, "
                  f"total {rows[name]['seconds']:.0f} s)", flush=True)

        t1 = time.perf_counter()
        int8 = export_int8(fp32, calib, onnx_dir / "int8.onnx", example_inputs=example, check_inputs=val_images,
                           min_agreement=0.0)
        probs = ort_probs(int8.path, test_images)
        labels = np.array([int(test[i][1]) for i in range(len(test))])
        _, fp32_probs = torch_eval(fp32, test, cfg)
        rows["int8_ort"] = {**scores(labels, probs, classes), "onnx": str(int8.path), "onnx_bytes": int8.size_bytes,
                            "packed_bytes": None, "onnx_top1_agreement": float(np.mean(probs.argmax(1) ==
                                                                                        fp32_probs.argmax(1))),
                            "onnx_max_abs_diff": int8.max_abs_diff, "seconds": time.perf_counter() - t1}

        x = example.numpy()
        candidates = {name: ort_runner(ort_session(Path(row["onnx"]), args.threads), x) for name, row in rows.items()}
        latency = interleaved_latency(candidates, rounds=args.rounds, warmup=2, per_round=5)
        for name, stats in latency.items():
            rows[name]["ort_ms"] = stats.median_ms
            rows[name]["ort_latency"] = stats.to_dict()
    total = time.perf_counter() - t0

    print()
    print(f"SYNTHETIC thermography phantom ({cfg.data.phantom.patients} patients), {cfg.model.name} "
          f"{cfg.model.kwargs}, {cfg.data.image_size} px; test split {len(test)} images. DQ rows: "
          f"{args.act_bits}-bit activations, {args.finetune_epochs} QAT epoch(s) at lr {args.finetune_lr}; "
          f"ORT CPU latency batch 1, {args.threads} threads, interleaved, median of {args.rounds} round minima.")
    body = []
    for name, r in rows.items():
        packed = f"{r['packed_bytes'] / 1e3:.0f}" if r["packed_bytes"] is not None else "-"
        body.append([name, f"{r['balanced_accuracy']:.3f}", f"{r['worst_class_sensitivity']:.3f}",
                     f"{r['onnx_bytes'] / 1e3:.0f}", packed, f"{r['onnx_top1_agreement']:.3f}", f"{r['ort_ms']:.2f}"])
    print(table(["model", "bal. acc.", "worst-class sens.", "ONNX kB", "packed kB", "ONNX top-1 agree", "ORT ms"],
                body))
    print("DQ ONNX files hold fake-quantized weights in fp32 (not smaller, and the Div/Clip/Round/Mul "
          "activation ops cost time); 'packed kB' is the theoretical size with b-bit weight codes. "
          f"Total {total:.0f} s.")
    out = write_result("quantize_compare", {
        "benchmark": "quantize_compare", "data": "SYNTHETIC thermography phantom", "quick": args.quick,
        "settings": {k: v for k, v in vars(args).items() if k not in ("keep", "out")},
        "config": cfg.to_dict(), "train_seconds": train_seconds, "rows": rows, "total_seconds": total,
        **machine_info(args.threads)}, args.out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
