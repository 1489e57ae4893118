"""PyTorch dataset for image classification from manifest samples.

Pipeline per item: :func:`~medprune.data.readers.read_sample` → :func:`~medprune.data.readers.to_channels`
→ resize to ``image_size`` (area interpolation when shrinking, linear when enlarging) →
augmentation → ``(x - mean) / std`` → ``(C, H, W)`` float32 tensor.

Augmentation randomness is seeded from ``(seed, epoch, index)``, so an item looks the same
whichever DataLoader worker loads it, however many workers there are, and a run resumed at
epoch e sees exactly the augmentations the original run saw. Call :meth:`set_epoch` before
iterating each epoch (with ``persistent_workers=True`` the workers keep their own copy of the
dataset and miss the call, so leave that off).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from medprune.data.manifest import Sample
from medprune.data.readers import ReaderOptions, SampleReadError, read_sample, to_channels
from medprune.errors import ConfigError, DataError

__all__ = ["ClassificationDataset", "augmentation_seed"]

logger = logging.getLogger(__name__)


def augmentation_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed that depends only on ``(seed, epoch, index)`` (via ``numpy.random.SeedSequence``)."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(1)[0])


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    height, width = size
    if img.shape[:2] == (height, width):
        return img
    shrinking = height * width < img.shape[0] * img.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    out = cv2.resize(img, (width, height), interpolation=interpolation)
    return out[:, :, None] if out.ndim == 2 else out


def _per_channel(value: float | Sequence[float], channels: int, key: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, channels)
    if arr.size != channels:
        raise ConfigError(f"{key}: expected 1 or {channels} values for {channels} channel(s), got {arr.size}")
    return arr


class ClassificationDataset(torch.utils.data.Dataset):
    """Samples → ``(image (C, H, W) float32, label index, item index)``.

    Args:
        samples: manifest rows (one split).
        classes: class names; a label's index in this list is its target.
        image_size: ``(height, width)`` every image is resized to, before augmentation.
        channels: ``"gray"`` (C=1) or ``"color"`` (C=3, single-channel sources rendered through
            ``colormap``; see :func:`~medprune.data.readers.to_channels`).
        options: how raw values map to [0, 1].
        augmentation: an ``albumentations.Compose`` (training only) or ``None``.
        colormap: matplotlib colormap for ``channels="color"``.
        mean, std: normalisation, one value or one per channel.
        seed: base seed of the per-item augmentation seeds.

    The item index is returned so evaluation can map predictions back to samples and patients.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        classes: Sequence[str],
        image_size: tuple[int, int],
        channels: Literal["gray", "color"],
        options: ReaderOptions | None = None,
        augmentation: Any | None = None,
        colormap: str = "inferno",
        mean: float | Sequence[float] = 0.5,
        std: float | Sequence[float] = 0.25,
        seed: int = 0,
    ) -> None:
        if channels not in ("gray", "color"):
            raise ConfigError(f"data.channels: expected 'gray' or 'color', got {channels!r}")
        try:
            height, width = (int(v) for v in image_size)
        except (TypeError, ValueError):
            raise ConfigError(f"data.image_size: expected [height, width], got {image_size!r}") from None
        if height < 1 or width < 1:
            raise ConfigError(f"data.image_size: expected positive [height, width], got {list(image_size)}")
        self.samples = list(samples)
        self.classes = list(classes)
        self.image_size = (height, width)
        self.channels = channels
        self.num_channels = 1 if channels == "gray" else 3
        self.options = options or ReaderOptions()
        self.augmentation = augmentation
        self.colormap = colormap
        self.mean = _per_channel(mean, self.num_channels, "data.mean")
        self.std = _per_channel(std, self.num_channels, "data.std")
        if np.any(self.std <= 0):
            raise ConfigError(f"data.std: expected positive values, got {self.std.tolist()}")
        self.seed = int(seed)
        self.epoch = 0
        index = {name: i for i, name in enumerate(self.classes)}
        self._labels: list[int] = []
        for sample in self.samples:
            if sample.label not in index:
                raise DataError(
                    f"{sample.path} (row {sample.row}): label {sample.label!r} is not one of the classes "
                    f"{', '.join(self.classes)}"
                )
            self._labels.append(index[sample.label])

    @property
    def labels(self) -> list[int]:
        """Label index of every item, in item order."""
        return list(self._labels)

    @property
    def patient_ids(self) -> list[str]:
        """Patient id of every item, in item order (for patient-level metrics and bootstrap)."""
        return [s.patient_id for s in self.samples]

    @property
    def paths(self) -> list[Path]:
        """File of every item, in item order."""
        return [s.path for s in self.samples]

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (call before each epoch's iteration)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> np.ndarray:
        """Item ``index`` as ``(H, W, C)`` float32 in [0, 1], resized but not augmented."""
        sample = self.samples[index]
        try:
            img = read_sample(sample.path, self.options)
        except SampleReadError as exc:
            raise DataError(f"{sample.path} (row {sample.row}): {exc.reason}") from exc
        img = to_channels(img, self.channels, self.colormap)
        return _resize(img, self.image_size).astype(np.float32, copy=False)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        if not 0 <= index < len(self.samples):
            raise IndexError(f"index {index} out of range for {len(self.samples)} samples")
        img = self.load(index)
        if self.augmentation is not None:
            self.augmentation.set_random_seed(augmentation_seed(self.seed, self.epoch, index))
            img = np.asarray(self.augmentation(image=img)["image"], dtype=np.float32)
            if img.ndim == 2:
                img = img[:, :, None]
            if img.shape != (*self.image_size, self.num_channels):
                raise ConfigError(
                    f"data.augmentation: changed the image from {(*self.image_size, self.num_channels)} to "
                    f"{img.shape}; use transforms that keep the size and channels (crop-and-resize to "
                    "data.image_size, no ToGray/ToRGB)"
                )
        img = (img - self.mean) / self.std
        tensor = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))
        return tensor, self._labels[index], index
