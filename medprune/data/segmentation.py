"""PyTorch dataset for semantic segmentation from manifest rows with a ``mask`` column.

Pipeline per item, beside the image pipeline of :class:`~medprune.data.dataset.ManifestDataset`:
the row's mask (:func:`~medprune.data.manifest.read_row_mask`: the same DICOM ``frame`` as the
image when the mask is multi-frame DICOM too; its size must equal the image's) → raw values to
class indices through :class:`~medprune.data.readers.MaskValues` (``data.mask_values``) →
**nearest-neighbour** resize to ``image_size`` (labels are never interpolated) → the *same*
augmentation draw as the image (``compose(image=..., mask=...)``: flips, rotations and elastic
warps move both; intensity transforms touch the image only) → ``(H, W)`` int64 tensor.

Each row also keeps its frame-level ``label`` (e.g. ``normal``/``plaque`` for an IVOCT frame) as
an index into ``label_classes``: :attr:`SegmentationDataset.labels` lets calibration and sampling
balance frames with and without the lesion.

Example::

    values = MaskValues.build(["background", "tissue", "plaque"], {"background": 0, "tissue": 60,
                                                                    "plaque": [90, 255]})
    train = SegmentationDataset(parts["train"], values.classes, (256, 256), "gray", options,
                                augmentation=build_augmentation(specs, masks=True), seed=0,
                                label_classes=["normal", "plaque"], values=values)
    image, mask, index = train[0]        # (1, 256, 256) float32, (256, 256) int64 in 0..2
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

import numpy as np
import torch

from medprune.data.augment import check_mask_interpolation
from medprune.data.dataset import ManifestDataset
from medprune.data.degrade import Degrader
from medprune.data.manifest import Sample, read_row_mask
from medprune.data.readers import MaskValues, ReaderOptions, SampleReadError
from medprune.errors import ConfigError, DataError

__all__ = ["SegmentationDataset", "resize_mask"]


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map to ``(height, width)``: every output pixel copies
    the input pixel under its centre, so no value appears that was not there.

    Pixel centres are aligned the way OpenCV's area/linear resizing of the image aligns them
    (``src = (dst + 0.5) * scale - 0.5``, rounded to the nearest pixel), so mask and image stay
    registered.
    """
    height, width = size
    if mask.shape[:2] == (height, width):
        return mask
    rows = np.minimum(((np.arange(height) + 0.5) * (mask.shape[0] / height)).astype(np.int64), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * (mask.shape[1] / width)).astype(np.int64), mask.shape[1] - 1)
    return mask[rows[:, None], cols[None, :]]


def _mask_values(classes: Sequence[str], values: MaskValues | Mapping[str, Any] | None) -> MaskValues:
    if values is None or isinstance(values, Mapping):
        return MaskValues.build(classes, values)
    if not isinstance(values, MaskValues):
        raise ConfigError(f"data.mask_values: expected a mapping like {{background: 0, plaque: 1}}, got {values!r}")
    if list(values.classes) != list(classes):
        raise ConfigError(
            f"{values.key}: classes {', '.join(values.classes)} differ from the mask classes {', '.join(classes)}"
        )
    return values


class SegmentationDataset(ManifestDataset):
    """Samples with masks → ``(image (C, H, W) float32, mask (H, W) int64, item index)``.

    Args:
        samples: manifest rows (one split); every row needs a ``mask``.
        classes: mask class names; a pixel's target is its class's index in this list.
        image_size, channels, options, augmentation, colormap, mean, std, seed: as for
            :class:`~medprune.data.dataset.ManifestDataset`; ``augmentation`` moves image and
            mask together and must keep nearest-neighbour mask interpolation.
        degradation: as for :class:`~medprune.data.dataset.ManifestDataset`: degrades the image,
            never the mask; no q planes are appended (segmentation models do not take q).
        label_classes: the frame-level ``label`` classes (e.g. ``["normal", "plaque"]``); a
            row's label must be one of them.
        values: which raw mask values make each class — a :class:`~medprune.data.readers.MaskValues`
            over ``classes``, a ``{class: value or [values]}`` mapping, or ``None`` for class
            ``i`` = value ``i``.

    Raises :class:`~medprune.errors.DataError` naming file and row for a row without a mask or
    with a label outside ``label_classes``, and :class:`~medprune.errors.ConfigError` for a value
    map that does not fit ``classes`` or an augmentation that would interpolate labels.
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
        *,
        label_classes: Sequence[str],
        values: MaskValues | Mapping[str, Any] | None = None,
        degradation: Degrader | None = None,
    ) -> None:
        super().__init__(samples, image_size, channels, options, augmentation, colormap, mean, std, seed,
                         degradation)
        self.values = _mask_values(classes, values)
        self.classes = list(self.values.classes)
        self.num_classes = len(self.classes)
        self.label_classes = list(label_classes)
        self._labels = self._label_indices(self.label_classes)
        for sample in self.samples:
            if sample.mask is None:
                raise DataError(
                    f"{sample.path} (row {sample.row}): no mask: the manifest's mask column is missing or empty "
                    "in this row"
                )
        if augmentation is not None:
            check_mask_interpolation(augmentation)

    @property
    def labels(self) -> list[int]:
        """Frame-level label of every item as an index into :attr:`label_classes`, in item order."""
        return list(self._labels)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``index`` resized, not augmented: image ``(H, W, C)`` float32 in [0, 1] and mask
        ``(H, W)`` int64 class indices."""
        sample = self.samples[index]
        raw = self._read_raw(index)
        try:
            mask = read_row_mask(sample, self.options, self.values, raw.shape)
        except SampleReadError as exc:
            raise self._row_error(sample, exc) from exc
        return self._prepare(raw), resize_mask(mask, self.image_size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        self._check_index(index)
        image, mask = self.load(index)
        image, _ = self._degrade(index, image)  # the image only: labels are never degraded
        # int32: the widest integer type OpenCV warps (albumentations would narrow int64 itself).
        image, augmented = self._augment(index, image, mask.astype(np.int32))
        moved = cast(np.ndarray, augmented)  # a mask went in, so a mask comes out
        if moved.size and (int(moved.min()) < 0 or int(moved.max()) >= self.num_classes):
            bad = sorted({int(v) for v in np.unique(moved) if not 0 <= v < self.num_classes})
            raise ConfigError(
                f"data.augmentation: filled the mask with {', '.join(map(str, bad))}, which is not a class index "
                f"(0..{self.num_classes - 1}); set the transform's fill_mask to a class index"
            )
        return self._to_tensor(image), torch.from_numpy(moved.astype(np.int64)), index
