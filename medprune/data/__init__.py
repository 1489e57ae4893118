"""The data layer: manifests, sample readers, patient-level splits, phantoms, augmentation, dataset.

Typical use (what the trainer does)::

    samples = read_manifest("manifest.csv")
    bad = check_samples(samples, classes, options)        # every unusable row, before training
    parts = split_by_patient(samples, 0.15, 0.15, seed=0)  # no patient crosses splits
    train = ClassificationDataset(parts["train"], classes, (224, 224), "gray", options,
                                  augmentation=build_augmentation(specs), seed=0)

Phantoms (:func:`make_phantom`) are SYNTHETIC data sets for demos and tests.
"""

from medprune.data.augment import augmentation_names, build_augmentation, validate_augmentation
from medprune.data.dataset import ClassificationDataset, augmentation_seed
from medprune.data.manifest import (
    REQUIRED_COLUMNS,
    SPLITS,
    BadSample,
    Sample,
    check_samples,
    format_bad_samples,
    read_manifest,
    write_bad_samples,
    write_manifest,
)
from medprune.data.phantoms import PHANTOMS, make_phantom, make_thermography_phantom, phantom_kinds
from medprune.data.readers import (
    SUPPORTED_SUFFIXES,
    ReaderOptions,
    SampleReadError,
    read_sample,
    to_channels,
)
from medprune.data.splits import patient_labels, split_by_patient, split_summary

__all__ = [
    "PHANTOMS",
    "REQUIRED_COLUMNS",
    "SPLITS",
    "SUPPORTED_SUFFIXES",
    "BadSample",
    "ClassificationDataset",
    "ReaderOptions",
    "Sample",
    "SampleReadError",
    "augmentation_names",
    "augmentation_seed",
    "build_augmentation",
    "check_samples",
    "format_bad_samples",
    "make_phantom",
    "make_thermography_phantom",
    "patient_labels",
    "phantom_kinds",
    "read_manifest",
    "read_sample",
    "split_by_patient",
    "split_summary",
    "to_channels",
    "validate_augmentation",
    "write_bad_samples",
    "write_manifest",
]
