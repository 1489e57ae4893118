"""Class-balanced calibration batches for data-driven pruning criteria.

Medical data sets are imbalanced (a rare "sick" class); statistics collected on a plain sample of
them describe the majority class. :func:`class_balanced_batches` draws samples with replacement
with weight 1/count(class), so every present class has the same expected share of the
calibration data, and draws them from a local seeded generator, so every call yields the same
batches (the criterion sees identical data before each pruning step).

Example::

    batches = class_balanced_batches(train_set, batch_size=32, num_batches=16, seed=0)
    criterion.calibrate(model, batches())
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from medprune.data.sampling import inverse_frequency_weights
from medprune.errors import DataError

__all__ = ["class_balanced_batches"]

log = logging.getLogger(__name__)


def _labels(dataset: Dataset) -> list[int]:
    labels = getattr(dataset, "labels", None)
    if labels is None:  # a plain data set: read each item's label once
        labels = [int(dataset[i][1]) for i in range(len(dataset))]  # type: ignore[arg-type]
    return [int(v) for v in labels]


def _images_and_targets(items: list[tuple[Any, ...]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, targets)``: class indices ``(N,)`` for classification, masks ``(N, H, W)`` for segmentation."""
    images = torch.stack([torch.as_tensor(item[0]) for item in items])
    targets = torch.stack([torch.as_tensor(item[1], dtype=torch.long) for item in items])
    return images, targets


def class_balanced_batches(dataset: Dataset, *, batch_size: int, num_batches: int, seed: int = 0,
                           num_classes: int | None = None, num_workers: int = 0,
                           labels: Sequence[int] | None = None,
                           ) -> Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """Return a zero-argument callable yielding ``num_batches`` class-balanced ``(images, targets)``.

    Args:
        dataset: yields ``(image, target, ...)`` items (e.g. a ``ClassificationDataset``, whose
            ``labels`` property is used so no image is read to find the labels; a
            ``SegmentationDataset``, whose items carry masks).
        labels: the stratum of every item to balance over (a task's ``balance_labels``: the class,
            or a segmentation frame's label — with and without the lesion); default: the data
            set's ``labels``.
        batch_size: samples per batch.
        num_batches: batches per call.
        seed: seeds the local generator; the same seed gives the same batches on every call.
        num_classes: expected number of classes; a class with no sample is logged and the
            draw balances over the classes present.
        num_workers: DataLoader worker processes reading the images.

    Raises:
        DataError: the data set is empty or a label is outside ``[0, num_classes)``.
    """
    if batch_size < 1 or num_batches < 1:
        raise DataError(f"calibration needs batch_size >= 1 and num_batches >= 1, got {batch_size} and {num_batches}")
    labels = [int(v) for v in labels] if labels is not None else _labels(dataset)
    if not labels:
        raise DataError("calibration data set is empty: class-balanced batches need at least one sample")
    bad = [i for i, v in enumerate(labels) if v < 0 or (num_classes is not None and v >= num_classes)]
    if bad:
        raise DataError(f"calibration sample {bad[0]} has label {labels[bad[0]]}, outside "
                        f"[0, {num_classes if num_classes is not None else 'inf'})")
    k = num_classes if num_classes is not None else max(labels) + 1
    counts = torch.bincount(torch.as_tensor(labels), minlength=k)
    missing = [c for c in range(k) if counts[c] == 0]
    if missing:
        log.warning("calibration data has no sample of class(es) %s; balancing over the %d present classes",
                    missing, k - len(missing))
    weights = inverse_frequency_weights(labels, k).double()[torch.as_tensor(labels)]
    total = batch_size * num_batches

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(seed)
        order = torch.multinomial(weights, total, replacement=True, generator=g).tolist()
        loader = DataLoader(dataset, batch_size=batch_size, sampler=order, num_workers=num_workers,
                            collate_fn=_images_and_targets)
        yield from loader

    return batches
