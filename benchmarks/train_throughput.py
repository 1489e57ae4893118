"""Training throughput: medprune's Trainer against a minimal hand-written PyTorch loop.

Same model, same data (the synthetic thermography phantom), same batch size, same optimiser, in one
process with the two loops' epochs interleaved (single timings on a small CPU vary by ±30 %).
A medprune epoch includes everything the engine adds per epoch: the epoch-seeded sampler, loss
bookkeeping, replica buffer sync (a no-op on one process) and the atomic ``last.pt`` checkpoint.

    python benchmarks/train_throughput.py [--model inception_v3] [--width 0.25] [--size 96] [--rounds 7]

Prints a table and writes ``benchmarks/results/train_throughput.json``. Target: ratio >= 0.9.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from medprune.config import config_from_dict
from medprune.engine.checkpoint import save_checkpoint
from medprune.workflows.data import prepare_data
from medprune.workflows.helpers import build_model
from medprune.workflows.helpers import config_trainer as Trainer


def hand_loop_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> int:
    """The loop a user would write by hand: no checkpoints, no logging."""
    model.train()
    seen = 0
    for x, y, _ in loader:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        seen += len(y)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="inception_v3")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_throughput.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = config_from_dict({
            "name": "throughput",
            "data": {"phantom": {"patients": args.patients, "views": 3, "size": [60, 80]}, "channels": "gray",
                     "image_size": args.size, "split": {"val_fraction": 0.2, "test_fraction": 0.0}},
            "model": {"name": args.model, "kwargs": {"width": args.width}},
            "optim": {"optimizer": "sgdm", "lr": 0.01, "batch_size": args.batch_size, "epochs": args.rounds},
            "runtime": {"device": "cpu", "out_dir": tmp, "progress": False},
        }, "benchmark")
        data = prepare_data(cfg, cfg.run_dir)
        train_set = data.datasets["train"]
        # Decode the images once so both loops measure training, not file reading.
        cache = [train_set[i] for i in range(len(train_set))]

        class Cached(torch.utils.data.Dataset):
            labels = train_set.labels

            def __len__(self) -> int:
                return len(cache)

            def __getitem__(self, i: int):
                return cache[i]

        torch.manual_seed(0)
        model_a = build_model(cfg)
        model_b = copy.deepcopy(model_a)
        trainer = Trainer(model_a, Cached(), data.datasets["val"], cfg, cfg.run_dir, torch.device("cpu"))
        hand_loader = DataLoader(Cached(), batch_size=args.batch_size, shuffle=True)
        hand_opt = torch.optim.SGD(model_b.parameters(), lr=0.01, momentum=0.9)

        hand_loop_epoch(model_b, hand_loader, hand_opt)  # warm-up both
        trainer.train_one_epoch()
        rows = []
        for r in range(args.rounds):
            t0 = time.perf_counter()
            n_hand = hand_loop_epoch(model_b, hand_loader, hand_opt)
            t_hand = time.perf_counter() - t0
            t0 = time.perf_counter()
            trainer.train_one_epoch()
            trainer.epoch += 1
            save_checkpoint(cfg.run_dir / "checkpoints" / "last.pt", trainer.state())
            t_mp = time.perf_counter() - t0
            n_mp = len(trainer.sampler)
            rows.append({"round": r, "hand_img_s": n_hand / t_hand, "medprune_img_s": n_mp / t_mp,
                         "ratio": (n_mp / t_mp) / (n_hand / t_hand)})

    hand = statistics.median(r["hand_img_s"] for r in rows)
    mp = statistics.median(r["medprune_img_s"] for r in rows)
    ratio = statistics.median(r["ratio"] for r in rows)
    print(f"model {args.model} width {args.width} at {args.size}px, batch {args.batch_size}, "
          f"{len(cache)} training images (synthetic phantom), {torch.get_num_threads()} threads")
    print(f"{'round':>5} {'hand img/s':>11} {'medprune img/s':>15} {'ratio':>7}")
    for r in rows:
        print(f"{r['round']:>5} {r['hand_img_s']:>11.2f} {r['medprune_img_s']:>15.2f} {r['ratio']:>7.3f}")
    print(f"{'median':>5} {hand:>11.2f} {mp:>15.2f} {ratio:>7.3f}   (target >= 0.90)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "width": args.width, "size": args.size,
                               "batch_size": args.batch_size, "threads": torch.get_num_threads(),
                               "rounds": rows, "median_hand_img_s": hand, "median_medprune_img_s": mp,
                               "median_ratio": ratio, "target": 0.9, "meets_target": ratio >= 0.9}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
