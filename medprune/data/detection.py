"""PyTorch dataset for object detection: manifest rows + a boxes file (``boxes.json``).

The boxes come from a :func:`~medprune.data.polar.write_boxes` file (the IVOCT phantom and the
CCCV adapter write one beside their manifest): per frame its plaque arcs and ``x0, y0, x1, y1``
pixel boxes, keyed by the frame's file and DICOM frame. A frame without plaque has a record with no
boxes — an empty target, which torchvision's detectors accept; a manifest row with no record at all
is a bad sample (its targets are unknown, not empty).

Pipeline per item, beside the image pipeline of :class:`~medprune.data.dataset.ManifestDataset`:
boxes scaled from the frame's own size to ``image_size`` → the *same* augmentation draw as the
image (albumentations ``BboxParams(format="pascal_voc")``: flips and affine warps move the boxes;
a box pushed out of the frame is dropped, one cut by the border is clipped) → a padded target
``(max_boxes, 5)`` float32, rows ``[label, x0, y0, x1, y1]`` with label ``-1`` for padding, so the
default collate stacks a batch. Each row also keeps its frame-level ``label`` (``normal`` /
``plaque``) for class-balanced sampling and pruning calibration.

Example::

    boxes = load_box_records("phantom/boxes.json")
    ds = DetectionDataset(samples, ["background", "plaque"], (96, 192), "gray", boxes=boxes,
                          label_classes=["normal", "plaque"], augmentation=build_augmentation(specs, boxes=True))
    image, target, index = ds[0]        # (1, 96, 192), (16, 5)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from medprune.data.dataset import ManifestDataset
from medprune.data.degrade import Degrader
from medprune.data.manifest import Sample
from medprune.data.polar import FrameBoxes, read_boxes
from medprune.data.readers import ReaderOptions, SampleReadError
from medprune.errors import ConfigError, DataError

__all__ = ["DetectionDataset", "BoxRecords", "load_box_records", "box_key", "frame_key", "frame_boxes_error",
           "PLAQUE_LABEL"]

#: The box label of the one object class (index 1 of ``data.classes``; 0 is the background).
PLAQUE_LABEL = 1

#: ``(resolved file path, frame or None)`` → that frame's record.
BoxRecords = Mapping[tuple[str, int | None], FrameBoxes]


def box_key(path: str | os.PathLike[str], frame: int | None) -> tuple[str, int | None]:
    """The lookup key of a frame: its resolved file path and its DICOM frame (``None`` for single-frame files)."""
    return str(Path(path).resolve()), frame


def load_box_records(path: str | os.PathLike[str]) -> dict[tuple[str, int | None], FrameBoxes]:
    """Read a boxes file into :data:`BoxRecords`: each record's ``path`` is relative to the file's folder.

    A record's ``frame`` names a DICOM frame only for DICOM files; for image files (one frame each)
    the key's frame is ``None``, as a manifest row without a ``frame`` column has.
    """
    file = Path(path)
    out: dict[tuple[str, int | None], FrameBoxes] = {}
    for record in read_boxes(file):
        target = file.parent / record.path
        frame = record.frame if target.suffix.lower() in ("", ".dcm", ".dicom") else None
        key = box_key(target, frame)
        if key in out:
            raise DataError(f"{file}: two records for {record.path}" + (f" frame {frame}" if frame is not None else ""))
        out[key] = record
    return out


class DetectionDataset(ManifestDataset):
    """Samples with boxes → ``(image (C, H, W) float32, target (max_boxes, 5) float32, item index)``.

    Args:
        samples: manifest rows (one split).
        classes: ``data.classes``: the background and one object class (``[background, plaque]``).
        image_size, channels, options, augmentation, colormap, mean, std, seed: as for
            :class:`~medprune.data.dataset.ManifestDataset`; ``augmentation`` must be built with
            ``boxes=True`` so boxes move with the image.
        degradation: as for :class:`~medprune.data.dataset.ManifestDataset`: degrades the image,
            never the boxes; no q planes are appended (detectors do not take q).
        boxes: the frames' records (:func:`load_box_records`).
        label_classes: the frame-level ``label`` classes (e.g. ``["normal", "plaque"]``).
        max_boxes: the padded target's length; a frame with more boxes is a bad sample.

    Raises :class:`~medprune.errors.DataError` naming file and row for a row without a boxes record,
    with more than ``max_boxes`` boxes, or with a label outside ``label_classes``.
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
        boxes: BoxRecords,
        label_classes: Sequence[str],
        max_boxes: int = 16,
        degradation: Degrader | None = None,
    ) -> None:
        super().__init__(samples, image_size, channels, options, augmentation, colormap, mean, std, seed,
                         degradation)
        if len(classes) != 2:
            raise ConfigError(f"data.classes: detection takes the background and one object class, e.g. "
                              f"[background, plaque]; got {list(classes)}")
        self.classes = list(classes)
        self.label_classes = list(label_classes)
        self._labels = self._label_indices(self.label_classes)
        self.max_boxes = int(max_boxes)
        self.records: list[FrameBoxes] = []
        for sample in self.samples:
            error = frame_boxes_error(sample, boxes, self.max_boxes)
            if error:
                raise DataError(f"{sample.path} (row {sample.row}): {error}")
            self.records.append(boxes[frame_key(sample)])

    @property
    def labels(self) -> list[int]:
        """Frame-level label of every item as an index into :attr:`label_classes`, in item order."""
        return list(self._labels)

    @property
    def widths(self) -> list[int]:
        """Every frame's width at ``image_size`` (the columns that span 360° for angular metrics)."""
        return [self.image_size[1]] * len(self)

    def boxes(self, index: int) -> np.ndarray:
        """Item ``index``'s boxes ``(M, 4)`` at ``image_size``, not augmented."""
        record = self.records[index]
        h, w = self.image_size
        scale = np.array([w / record.width, h / record.height] * 2, dtype=np.float32)
        out = np.asarray(record.boxes, dtype=np.float32).reshape(-1, 4) * scale
        return np.clip(out, 0.0, np.array([w, h, w, h], dtype=np.float32))

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``index`` resized, not augmented: image ``(H, W, C)`` float32 in [0, 1] and boxes ``(M, 4)``."""
        return self._prepare(self._read_raw(index)), self.boxes(index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        self._check_index(index)
        image, boxes = self.load(index)
        image, _ = self._degrade(index, image)  # the image only: boxes are never degraded
        if self.augmentation is not None:
            self.augmentation.set_random_seed(_seed(self, index))
            out = self.augmentation(image=image, bboxes=boxes, labels=np.full(len(boxes), PLAQUE_LABEL))
            image = np.asarray(out["image"], dtype=np.float32)
            if image.ndim == 2:
                image = image[:, :, None]
            if image.shape != (*self.image_size, self.num_channels):
                raise ConfigError(f"data.augmentation: changed the image to {image.shape}; use transforms that keep "
                                  "the size and channels")
            boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        boxes = boxes[(boxes[:, 2] - boxes[:, 0] >= 1.0) & (boxes[:, 3] - boxes[:, 1] >= 1.0)]
        target = np.full((self.max_boxes, 5), -1.0, dtype=np.float32)
        target[: len(boxes), 0] = PLAQUE_LABEL
        target[: len(boxes), 1:] = boxes
        return self._to_tensor(image), torch.from_numpy(target), index


def _seed(dataset: ManifestDataset, index: int) -> int:
    from medprune.data.dataset import augmentation_seed

    return augmentation_seed(dataset.seed, dataset.epoch, index)


def frame_key(sample: Sample) -> tuple[str, int | None]:
    """The boxes-file key of a manifest row (see :func:`load_box_records`)."""
    try:
        frame = sample.frame
    except SampleReadError:
        frame = None
    if frame is not None and sample.path.suffix.lower() not in ("", ".dcm", ".dicom"):
        frame = None  # a frame column naming frames of a pullback, the files themselves single-frame
    return box_key(sample.path, frame)


def frame_boxes_error(sample: Sample, boxes: BoxRecords, max_boxes: int) -> str | None:
    """Why ``sample`` cannot be a detection item (no record, too many boxes, a degenerate box), or ``None``."""
    record = boxes.get(frame_key(sample))
    if record is None:
        return ("no record in the boxes file (a frame without plaque needs a record with no boxes; "
                "its targets are unknown, not empty)")
    if len(record.boxes) > max_boxes:
        return f"{len(record.boxes)} boxes, more than task_options.max_boxes ({max_boxes})"
    for box in record.boxes:
        x0, y0, x1, y1 = box
        if not (np.all(np.isfinite(box)) and x1 > x0 and y1 > y0):
            return f"degenerate box {list(box)} (need x0 < x1 and y0 < y1)"
    return None
