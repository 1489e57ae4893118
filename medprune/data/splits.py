"""Patient-level train/val/test splits.

A patient contributes many images (views, dynamic frames); putting some in train and others in
test leaks the patient's anatomy into the evaluation. :func:`split_by_patient` therefore assigns
whole patients, stratified by each patient's label so the minority class appears in every split.

Rules:

* a ``split`` given in the manifest is honoured as is; a patient whose rows name two different
  splits is an error;
* a patient with some rows given and others empty gets all rows in the given split;
* the remaining (unassigned) patients are split by ``val_fraction`` / ``test_fraction`` —
  fractions of those patients, per class — with a seeded shuffle, so the result depends only
  on the seed and the manifest's content, not on row order.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from medprune.data.manifest import SPLITS, Sample
from medprune.errors import ConfigError, DataError

__all__ = ["patient_labels", "split_by_patient", "split_summary"]

logger = logging.getLogger(__name__)


def patient_labels(samples: Iterable[Sample]) -> dict[str, str]:
    """Each patient's label: its images' label, the most frequent one if mixed (ties: first by name).

    Mixed labels are logged as a warning: they usually mean a patient id was reused.
    """
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for sample in samples:
        counts[sample.patient_id][sample.label] += 1
    labels: dict[str, str] = {}
    mixed = []
    for patient, counter in counts.items():
        best = max(counter.values())
        labels[patient] = min(label for label, n in counter.items() if n == best)
        if len(counter) > 1:
            mixed.append(patient)
            logger.debug("patient %s has mixed labels %s; stratified as %r", patient, dict(counter), labels[patient])
    if mixed:
        # normal for pullbacks and studies (frames with and without the lesion): one line, not one per patient
        logger.info("%d of %d patients have images of different labels (e.g. %s); each is stratified by its "
                    "most frequent label", len(mixed), len(counts), ", ".join(mixed[:3]))
    return labels


def split_by_patient(
    samples: Sequence[Sample], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[Sample]]:
    """Split ``samples`` into ``{"train", "val", "test"}`` so that no patient crosses splits.

    Manifest ``split`` values are honoured; unassigned patients are shuffled with
    ``numpy.random.default_rng(seed)`` within each class (a stratified group split: stratum =
    patient label, group = patient) and the first ``round(n * test_fraction)`` go to test, the
    next ``round(n * val_fraction)`` to val, the rest to train. A class with enough patients
    (one per requested split plus one for train) always gets at least one patient in every split
    whose fraction is > 0; a class with fewer stays in train (logged), except that a requested
    split left empty by rounding takes one patient from the largest class. A fraction of 0 gives
    an empty split. Samples keep manifest order within each split.

    Raises :class:`~medprune.errors.ConfigError` for fractions outside [0, 1) or summing to >= 1,
    and :class:`~medprune.errors.DataError` when a patient is given two splits in the manifest or
    when no split is given and there are fewer patients than requested splits (train + each
    split with a fraction > 0). When the manifest gives some splits, a handful of leftover
    patients is split as well as it can be (possibly all to train) instead.

    Example::

        parts = split_by_patient(read_manifest("manifest.csv"), 0.15, 0.15, seed=0)
        len(parts["test"])
    """
    _check_fractions(val_fraction, test_fraction)
    given = _given_splits(samples)
    unassigned = sorted({s.patient_id for s in samples} - set(given))
    assignment = dict(given)
    if unassigned:
        pending = set(unassigned)
        labels = patient_labels(s for s in samples if s.patient_id in pending)
        assignment.update(_assign(unassigned, labels, val_fraction, test_fraction, seed, strict=not given))
    result: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    for sample in samples:
        result[assignment[sample.patient_id]].append(sample)
    logger.info("patient split: %s", split_summary(result))
    return result


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for key, value in (("data.val_fraction", val_fraction), ("data.test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise ConfigError(f"{key}: expected a fraction in [0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction:g} leaves no training "
            "patients; their sum must be < 1"
        )


def _given_splits(samples: Sequence[Sample]) -> dict[str, str]:
    seen: dict[str, dict[str, int]] = defaultdict(dict)
    for sample in samples:
        if sample.split is not None:
            seen[sample.patient_id].setdefault(sample.split, sample.row)
    given: dict[str, str] = {}
    for patient, splits in seen.items():
        if len(splits) > 1:
            where = ", ".join(f"{name} (row {row})" for name, row in sorted(splits.items(), key=lambda kv: kv[1]))
            raise DataError(
                f"patient {patient} is assigned to several splits in the manifest: {where}; "
                "a patient's images must all be in one split"
            )
        given[patient] = next(iter(splits))
    return given


def _assign(
    patients: list[str],
    labels: dict[str, str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    strict: bool,
) -> dict[str, str]:
    fractions = {"test": test_fraction, "val": val_fraction}
    requested = [name for name, f in fractions.items() if f > 0]
    if strict and len(patients) < len(requested) + 1:
        raise DataError(
            f"cannot split {len(patients)} unassigned patient(s) into train and {'/'.join(requested)}: "
            f"need at least {len(requested) + 1}; add patients, set data.val_fraction/data.test_fraction to 0, "
            "or fill the manifest's split column"
        )
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[str]] = defaultdict(list)
    for patient in patients:
        by_class[labels[patient]].append(patient)
    assignment: dict[str, str] = {}
    pools: dict[str, list[str]] = {}
    for label in sorted(by_class):
        members = [by_class[label][i] for i in rng.permutation(len(by_class[label]))]
        counts = _class_counts(len(members), fractions, requested)
        if any(counts[name] == 0 for name in requested):
            logger.warning(
                "class %r has %d unassigned patient(s): too few for every split; some splits get none",
                label,
                len(members),
            )
        start = 0
        for name in ("test", "val"):
            for patient in members[start : start + counts[name]]:
                assignment[patient] = name
            start += counts[name]
        pools[label] = members[start:]
        for patient in pools[label]:
            assignment[patient] = "train"
    _fill_empty_splits(assignment, pools, requested)
    return assignment


def _class_counts(n: int, fractions: dict[str, float], requested: list[str]) -> dict[str, int]:
    counts = {name: int(round(n * fractions[name])) for name in fractions}
    if n >= len(requested) + 1:
        for name in requested:
            counts[name] = max(counts[name], 1)
    while counts["test"] + counts["val"] > n - 1 and counts["test"] + counts["val"] > 0:
        largest = max(("test", "val"), key=lambda k: counts[k])
        counts[largest] -= 1
    return counts


def _fill_empty_splits(assignment: dict[str, str], pools: dict[str, list[str]], requested: list[str]) -> None:
    """Give each requested split one patient if rounding left it empty, taking from the largest pool.

    A class's last training patient is only taken when no class can spare one, and then loudly:
    a tiny cohort should still produce the splits it asked for.
    """
    for name in requested:
        if any(split == name for split in assignment.values()):
            continue
        label = max(sorted(pools), key=lambda k: len(pools[k]))
        if sum(len(p) for p in pools.values()) < 2:
            logger.warning("split %r is empty: only one training patient is left", name)
            continue
        if len(pools[label]) < 2:
            logger.warning("split %r takes the only training patient of class %r", name, label)
        assignment[pools[label].pop()] = name


def split_summary(splits: dict[str, list[Sample]]) -> dict[str, dict[str, Any]]:
    """Per split: number of patients, of samples, and samples per label — for logs and reports.

    Example: ``{"train": {"patients": 28, "samples": 84, "labels": {"healthy": 63, "sick": 21}}, ...}``
    """
    return {
        name: {
            "patients": len({s.patient_id for s in items}),
            "samples": len(items),
            "labels": dict(sorted(Counter(s.label for s in items).items())),
        }
        for name, items in splits.items()
    }
