"""Epoch-seeded samplers that shard across processes.

The order of every epoch is a pure function of ``(seed, epoch)``: a resumed run sees exactly the
batches the uninterrupted run would have seen, and every DDP replica draws the same permutation
before taking its own shard.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler

__all__ = ["EpochSampler", "ShardSampler", "inverse_frequency_weights"]


def inverse_frequency_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """Per-class weights ``N / (K · n_c)`` (1 for a balanced set); absent classes get weight 0."""
    counts = torch.bincount(torch.as_tensor(list(labels), dtype=torch.long), minlength=num_classes).double()
    weights = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights.float()


class EpochSampler(Sampler[int]):
    """Shuffled (or class-balanced) indices for one epoch, this rank's shard of them.

    With ``labels`` given, indices are drawn with replacement so every class is equally likely
    (a balanced sampler); otherwise a permutation. The epoch's list is padded by wrapping so all
    ranks get the same number of samples (DDP needs equal step counts).
    """

    def __init__(self, n: int, *, seed: int, labels: Sequence[int] | None = None, num_classes: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if n <= 0:
            raise ValueError("EpochSampler needs at least one sample")
        self.n = n
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.sample_weights: torch.Tensor | None = None
        if labels is not None:
            class_w = inverse_frequency_weights(labels, num_classes).double()
            self.sample_weights = class_w[torch.as_tensor(list(labels), dtype=torch.long)]
        self.per_rank = -(-n // world_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order ``__iter__`` yields."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.sample_weights is not None:
            order = torch.multinomial(self.sample_weights, self.n, replacement=True, generator=g)
        else:
            order = torch.randperm(self.n, generator=g)
        total = self.per_rank * self.world_size
        if total > self.n:
            order = torch.cat([order, order[: total - self.n]])
        return iter(order[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank


class ShardSampler(Sampler[int]):
    """In-order indices ``rank, rank + world, ...`` — every sample exactly once across ranks."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, n, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
