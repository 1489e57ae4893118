"""PyTorch datasets over manifest rows: the shared machinery, and image classification.

:class:`ManifestDataset` is what every task's dataset shares. Pipeline per item: the row's image
(:func:`~medprune.data.manifest.read_row_image`: :func:`~medprune.data.readers.read_sample` with
the row's DICOM ``frame``) → :func:`~medprune.data.readers.to_channels` → resize to
``image_size`` (area interpolation when shrinking, linear when enlarging) → degradation (with
``data.degradation``; :mod:`medprune.data.degrade`) → augmentation → ``(x - mean) / std`` →
``(C, H, W)`` float32 tensor. :class:`ClassificationDataset` adds the label (and, with a
degradation, appends the item's q as constant planes, :func:`~medprune.data.degrade.pack_q`);
:class:`~medprune.data.segmentation.SegmentationDataset` adds the mask, which moves with the image
through the same augmentation draw (the degradation touches the image only).

Augmentation randomness is seeded from ``(seed, epoch, index)``, so an item looks the same
whichever DataLoader worker loads it, however many workers there are, and a run resumed at
epoch e sees exactly the augmentations the original run saw. Call :meth:`~ManifestDataset.set_epoch`
before iterating each epoch (with ``persistent_workers=True`` the workers keep their own copy of
the dataset and miss the call, so leave that off). Degradations are drawn the same way
(:meth:`~medprune.data.degrade.Degrader.draw_for`): per epoch on a training split, once per item
on an evaluation split.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from medprune.data.degrade import DegradationDraw, Degrader, pack_q
from medprune.data.manifest import Sample, read_row_image
from medprune.data.readers import ReaderOptions, SampleReadError, to_channels
from medprune.errors import ConfigError, DataError

__all__ = ["ClassificationDataset", "ImageDataset", "ManifestDataset", "augmentation_seed"]

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


class ManifestDataset(torch.utils.data.Dataset):
    """The machinery every manifest-backed dataset shares; subclasses define ``__getitem__``.

    Args:
        samples: manifest rows (one split).
        image_size: ``(height, width)`` every image is resized to, before augmentation.
        channels: ``"gray"`` (C=1) or ``"color"`` (C=3, single-channel sources rendered through
            ``colormap``; see :func:`~medprune.data.readers.to_channels`).
        options: how raw values map to [0, 1].
        augmentation: an ``albumentations.Compose`` (training only) or ``None``.
        colormap: matplotlib colormap for ``channels="color"``.
        mean, std: normalisation, one value or one per channel.
        seed: base seed of the per-item augmentation seeds.
        degradation: a :class:`~medprune.data.degrade.Degrader` (from
            :func:`~medprune.data.degrade.build_degrader`, which decides from the split whether it
            draws per epoch and whether it is active) or ``None``: applied after resizing, before
            augmentation, to the image only.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        image_size: tuple[int, int],
        channels: Literal["gray", "color"],
        options: ReaderOptions | None = None,
        augmentation: Any | None = None,
        colormap: str = "inferno",
        mean: float | Sequence[float] = 0.5,
        std: float | Sequence[float] = 0.25,
        seed: int = 0,
        degradation: Degrader | None = None,
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
        self.degradation = degradation

    @property
    def q_dim(self) -> int:
        """Length of the degradation q vector (0 without a degradation)."""
        return 0 if self.degradation is None else self.degradation.q_dim

    def degradation_of(self, index: int) -> DegradationDraw | None:
        """Item ``index``'s degradation at the current epoch (``None`` without a degradation),
        without reading the image: a training split's changes with :meth:`set_epoch`, an
        evaluation split's does not."""
        self._check_index(index)
        if self.degradation is None:
            return None
        return self.degradation.draw_for_epoch(self.epoch, index)

    def at_level(self, kind: str | None, value: float | None = None) -> "ManifestDataset":
        """A shallow copy whose every item is degraded at exactly ``value`` of ``kind`` (``kind=None``:
        clean, q = 0): one point of the evaluation grid (``DegradationConfig.grid_of``)."""
        if self.degradation is None:
            raise ConfigError("data.degradation: this dataset has no degradation, so it has no levels")
        out = copy.copy(self)
        out.degradation = self.degradation.fixed(kind, value)
        return out

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

    def _label_indices(self, classes: Sequence[str]) -> list[int]:
        """Each row's ``label`` as its index in ``classes``; a label outside them names file and row."""
        index = {name: i for i, name in enumerate(classes)}
        labels = []
        for sample in self.samples:
            if sample.label not in index:
                raise DataError(
                    f"{sample.path} (row {sample.row}): label {sample.label!r} is not one of the classes "
                    f"{', '.join(classes)}"
                )
            labels.append(index[sample.label])
        return labels

    def _check_index(self, index: int) -> None:
        if not 0 <= index < len(self.samples):
            raise IndexError(f"index {index} out of range for {len(self.samples)} samples")

    @staticmethod
    def _row_error(sample: Sample, exc: SampleReadError) -> DataError:
        return DataError(f"{sample.path} (row {sample.row}): {exc.reason}")

    def _read_raw(self, index: int) -> np.ndarray:
        """Item ``index``'s image as read (row frame applied), before channels and resizing."""
        sample = self.samples[index]
        try:
            return read_row_image(sample, self.options)
        except SampleReadError as exc:
            raise self._row_error(sample, exc) from exc

    def _prepare(self, raw: np.ndarray) -> np.ndarray:
        """A read image as ``(H, W, C)`` float32 in [0, 1] at ``image_size``."""
        img = to_channels(raw, self.channels, self.colormap)
        return _resize(img, self.image_size).astype(np.float32, copy=False)

    def _degrade(self, index: int, image: np.ndarray) -> tuple[np.ndarray, DegradationDraw | None]:
        """Item ``index``'s image degraded by its draw (unchanged without a degradation)."""
        if self.degradation is None:
            return image, None
        draw = self.degradation.draw_for_epoch(self.epoch, index)
        return self.degradation.apply(image, draw), draw

    def _augment(
        self, index: int, image: np.ndarray, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """One seeded augmentation draw for item ``index``, applied to the image and (paired) mask."""
        if self.augmentation is None:
            return image, mask
        self.augmentation.set_random_seed(augmentation_seed(self.seed, self.epoch, index))
        out = self.augmentation(image=image) if mask is None else self.augmentation(image=image, mask=mask)
        img = np.asarray(out["image"], dtype=np.float32)
        if img.ndim == 2:
            img = img[:, :, None]
        expected = (*self.image_size, self.num_channels)
        if img.shape != expected:
            raise ConfigError(
                f"data.augmentation: changed the image from {expected} to {img.shape}; use transforms that keep "
                "the size and channels (crop-and-resize to data.image_size, no ToGray/ToRGB)"
            )
        if mask is None:
            return img, None
        moved = np.asarray(out["mask"])
        if moved.shape != self.image_size:
            raise ConfigError(
                f"data.augmentation: changed the mask from {self.image_size} to {moved.shape}; use transforms "
                "that keep the size (crop-and-resize to data.image_size)"
            )
        return img, moved

    def _to_tensor(self, img: np.ndarray) -> torch.Tensor:
        img = (img - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))


class ClassificationDataset(ManifestDataset):
    """Samples → ``(image (C, H, W) float32, label index, item index)``.

    Args:
        samples: manifest rows (one split).
        classes: class names; a label's index in this list is its target.
        image_size, channels, options, augmentation, colormap, mean, std, seed, degradation: as for
            :class:`ManifestDataset`.

    The item index is returned so evaluation can map predictions back to samples and patients.
    With a degradation the image carries the item's q as D constant planes after its C channels
    (``(C + D, H, W)``, :func:`~medprune.data.degrade.pack_q`; the planes are not normalised), and
    :attr:`num_input_channels` is C + D: the input channels of the model.
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
        degradation: Degrader | None = None,
    ) -> None:
        super().__init__(samples, image_size, channels, options, augmentation, colormap, mean, std, seed, degradation)
        self.classes = list(classes)
        self._labels = self._label_indices(self.classes)

    @property
    def num_input_channels(self) -> int:
        """Channels of an item's tensor: the image's C plus the q planes' D."""
        return self.num_channels + self.q_dim

    @property
    def labels(self) -> list[int]:
        """Label index of every item, in item order."""
        return list(self._labels)

    def load(self, index: int) -> np.ndarray:
        """Item ``index`` as ``(H, W, C)`` float32 in [0, 1], resized but not augmented."""
        return self._prepare(self._read_raw(index))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        self._check_index(index)
        img, draw = self._degrade(index, self.load(index))
        img, _ = self._augment(index, img)
        x = self._to_tensor(img)
        if draw is not None:
            x = pack_q(x, draw.q)
        return x, self._labels[index], index


class ImageDataset(ManifestDataset):
    """Images without labels → ``(image (C, H, W) float32, 0, item index)``: what a deployed model is fed.

    ``medprune predict`` reads the files a user points to through this class, so they pass the
    same readers, the same resizing and the same normalisation as the images the model was
    trained and evaluated on (no augmentation). ``paths`` are the image files.
    """

    def __init__(self, paths: Sequence[str | Path], image_size: tuple[int, int], channels: Literal["gray", "color"],
                 options: ReaderOptions | None = None, colormap: str = "inferno",
                 mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.25) -> None:
        samples = [Sample(path=Path(p).resolve(), label="", patient_id=Path(p).stem, split=None, row=i + 1)
                   for i, p in enumerate(paths)]
        super().__init__(samples, image_size, channels, options, None, colormap, mean, std, 0)

    def load(self, index: int) -> np.ndarray:
        """Item ``index`` as ``(H, W, C)`` float32 in [0, 1], resized."""
        return self._prepare(self._read_raw(index))

    @staticmethod
    def _row_error(sample: Sample, exc: SampleReadError) -> DataError:
        return DataError(f"{sample.path} (input {sample.row}): {exc.reason}")  # no manifest, so no row

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        self._check_index(index)
        return self._to_tensor(self.load(index)), 0, index
