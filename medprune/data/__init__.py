"""The data layer: manifests, sample and mask readers, patient-level splits, phantoms, augmentation, datasets.

Typical use (what the trainer does)::

    samples = read_manifest("manifest.csv")
    bad = check_samples(samples, classes, options)        # every unusable row, before training
    parts = split_by_patient(samples, 0.15, 0.15, seed=0)  # no patient crosses splits
    train = ClassificationDataset(parts["train"], classes, (224, 224), "gray", options,
                                  augmentation=build_augmentation(specs), seed=0)

Segmentation manifests add a ``mask`` column (and, for multi-frame DICOM, a per-row ``frame``)::

    values = MaskValues.build(mask_classes, mask_values)   # data.mask_values, or class i = value i
    bad = check_samples(samples, label_classes, options, masks=values)
    train = SegmentationDataset(parts["train"], mask_classes, (256, 256), "gray", options,
                                augmentation=build_augmentation(specs, masks=True), seed=0,
                                label_classes=label_classes, values=values)

Degradation-aware classification (``data.degradation``) degrades each image with a seeded JPEG /
noise / blur level and appends its severity q as constant planes (:mod:`medprune.data.degrade`)::

    train = ClassificationDataset(parts["train"], classes, (224, 224), "gray", options,
                                  degradation=build_degrader(config, train=True))
    x, y, i = train[0]                                     # (1 + q_dim, 224, 224)
    grid = test.at_level("jpeg", 30)                       # every item at quality 30, q = 0.7

Phantoms (:func:`make_phantom`) are SYNTHETIC data sets for demos and tests.
"""

from medprune.data.augment import (
    augmentation_names,
    build_augmentation,
    check_mask_interpolation,
    validate_augmentation,
)
from medprune.data.degrade import (
    DEGRADATIONS,
    Degradation,
    DegradationDraw,
    Degrader,
    build_degrader,
    degradation,
    pack_q,
    unpack_q,
)
from medprune.data.dataset import ClassificationDataset, ImageDataset, ManifestDataset, augmentation_seed
from medprune.data.manifest import (
    REQUIRED_COLUMNS,
    SPLITS,
    BadSample,
    Sample,
    check_samples,
    format_bad_samples,
    read_manifest,
    read_row_image,
    read_row_mask,
    write_bad_samples,
    write_manifest,
)
from medprune.data.phantoms import PHANTOMS, make_phantom, make_thermography_phantom, phantom_kinds
from medprune.data.readers import (
    MASK_SUFFIXES,
    SUPPORTED_SUFFIXES,
    MaskValues,
    ReaderOptions,
    SampleReadError,
    mask_to_classes,
    read_mask,
    read_sample,
    to_channels,
    uses_dicom_reader,
)
from medprune.data.detection import DetectionDataset, load_box_records
from medprune.data.segmentation import SegmentationDataset, resize_mask
from medprune.data.splits import patient_labels, split_by_patient, split_summary

__all__ = [
    "DEGRADATIONS",
    "MASK_SUFFIXES",
    "PHANTOMS",
    "REQUIRED_COLUMNS",
    "SPLITS",
    "SUPPORTED_SUFFIXES",
    "BadSample",
    "ClassificationDataset",
    "Degradation",
    "DegradationDraw",
    "Degrader",
    "DetectionDataset",
    "ImageDataset",
    "ManifestDataset",
    "MaskValues",
    "ReaderOptions",
    "Sample",
    "SampleReadError",
    "SegmentationDataset",
    "augmentation_names",
    "augmentation_seed",
    "build_augmentation",
    "build_degrader",
    "check_mask_interpolation",
    "check_samples",
    "degradation",
    "format_bad_samples",
    "load_box_records",
    "make_phantom",
    "make_thermography_phantom",
    "mask_to_classes",
    "pack_q",
    "patient_labels",
    "phantom_kinds",
    "read_manifest",
    "read_mask",
    "read_row_image",
    "read_row_mask",
    "read_sample",
    "resize_mask",
    "split_by_patient",
    "split_summary",
    "to_channels",
    "unpack_q",
    "uses_dicom_reader",
    "validate_augmentation",
    "write_bad_samples",
    "write_manifest",
]
