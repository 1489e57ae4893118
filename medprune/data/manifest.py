"""Manifests: the CSV list of samples an experiment trains and evaluates on.

Schema (header row required, UTF-8, comma-separated)::

    path,label,patient_id,split,view
    P0001/frontal.txt,healthy,P0001,,frontal

* ``path`` — the sample file, relative to the manifest's folder (or absolute).
* ``label`` — the class name; it must be one of the experiment's ``classes``.
* ``patient_id`` — every row needs one: splits and bootstrap intervals are per patient.
* ``split`` (optional) — ``train``, ``val``, ``test`` or empty (= assigned by
  :func:`~medprune.data.splits.split_by_patient`).
* ``mask`` (optional, segmentation) — the mask file, relative to the manifest like ``path``
  → :attr:`Sample.mask` (``None`` when the column is absent or empty).
* ``frame`` (optional) — the frame of a multi-frame DICOM image (and of its mask when that is
  multi-frame DICOM too), overriding ``data.dicom_frame``: an IVOCT pullback is one DICOM file
  listed once per frame. Kept as written in :attr:`Sample.extras` (DMR manifests use the column
  for the file stem) and read as an index by :attr:`Sample.frame` only for files the DICOM reader
  reads, where a value that is not an integer >= 0 is that row's refusal.
* any other column (``view``, ``protocol``, ...) is kept as a string in :attr:`Sample.extras`.

Bad samples (unreadable files or masks, labels outside ``classes``) are found by
:func:`check_samples` before training, so a run either stops listing *every* bad row or, with
``data.on_bad_sample: skip``, drops them and records them with :func:`write_bad_samples`.
:func:`read_row_image` and :func:`read_row_mask` read one row's files the way the check and the
datasets do (row frame, mask size and value checks).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medprune._io import atomic_write_text
from medprune._progress import progress_bar
from medprune.data.readers import (
    MaskValues,
    ReaderOptions,
    SampleReadError,
    mask_to_classes,
    read_mask,
    read_sample,
    uses_dicom_reader,
)
from medprune.errors import DataError

__all__ = [
    "REQUIRED_COLUMNS",
    "SPLITS",
    "BadSample",
    "Sample",
    "check_samples",
    "format_bad_samples",
    "read_manifest",
    "read_row_image",
    "read_row_mask",
    "write_bad_samples",
    "write_manifest",
]

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("path", "label", "patient_id")
SPLITS = ("train", "val", "test")
_PATH_COLUMNS = ("path", "mask")
_PROGRESS_THRESHOLD = 200


@dataclass(frozen=True)
class Sample:
    """One manifest row.

    Attributes:
        path: absolute path of the sample file.
        label: class name as written in the manifest.
        patient_id: patient the sample belongs to (splits never separate a patient's samples).
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` when unassigned.
        row: 1-based data row number in the manifest (the header is row 0), for messages.
        extras: every other column, as strings (``frame`` included; see :attr:`frame`).
        mask: absolute path of the segmentation mask, or ``None`` (no ``mask`` column, or empty).
    """

    path: Path
    label: str
    patient_id: str
    split: str | None
    row: int
    extras: dict[str, str] = field(default_factory=dict, hash=False, compare=True)
    mask: Path | None = None

    @property
    def frame(self) -> int | None:
        """The ``frame`` column as a frame index; ``None`` when the column is absent or empty.

        Raises :class:`~medprune.data.readers.SampleReadError` naming the file when the value is not
        an integer >= 0. Readers consult it only for files the DICOM reader reads, so a ``frame``
        column holding names (DMR's file stems) does not disturb other formats.
        """
        text = self.extras.get("frame", "").strip()
        if not text:
            return None
        if not re.fullmatch(r"[0-9]+", text):
            raise SampleReadError(self.path, f"frame {text!r} is not a frame index (an integer >= 0)")
        return int(text)

    def as_row(self) -> dict[str, Any]:
        """The sample as a manifest row for :func:`write_manifest` (``split`` empty if unset)."""
        return {
            "path": self.path,
            "label": self.label,
            "patient_id": self.patient_id,
            "split": self.split or "",
            **({"mask": self.mask} if self.mask is not None else {}),
            **self.extras,
        }


@dataclass(frozen=True)
class BadSample:
    """A manifest row that cannot be used, with the reason (for messages and ``bad_samples.csv``)."""

    path: Path
    row: int
    reason: str


def read_manifest(path: str | os.PathLike[str]) -> list[Sample]:
    """Parse a manifest CSV into :class:`Sample` objects with absolute paths.

    Raises :class:`~medprune.errors.DataError` naming the file (and row) for a missing file, a
    missing required column, an empty manifest, a row with too many/few fields, an empty
    ``path``/``label``/``patient_id``, or a ``split`` value other than train/val/test/empty.
    Sample files are not opened here; :func:`check_samples` does that.
    """
    manifest = Path(path)
    if not manifest.is_file():
        raise DataError(f"{manifest}: manifest not found")
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{manifest}: cannot read manifest ({exc})") from exc
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or not any(h.strip() for h in header):
        raise DataError(f"{manifest}: empty manifest (expected a header with {', '.join(REQUIRED_COLUMNS)})")
    columns = [h.strip() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(f"{manifest}: missing required column(s) {', '.join(missing)}; found {', '.join(columns)}")
    duplicated = [c for c, n in Counter(columns).items() if n > 1]
    if duplicated:
        raise DataError(f"{manifest}: duplicated column(s) {', '.join(duplicated)}")
    root = manifest.parent
    samples: list[Sample] = []
    for values in reader:
        if not any(v.strip() for v in values):
            continue
        row = len(samples) + 1
        if len(values) != len(columns):
            raise DataError(f"{manifest} row {row}: {len(values)} fields, but the header has {len(columns)}")
        record = {c: v.strip() for c, v in zip(columns, values, strict=True)}
        samples.append(_parse_row(manifest, root, row, record))
    if not samples:
        raise DataError(f"{manifest}: empty manifest (header only, no samples)")
    _warn_duplicates(manifest, samples)
    return samples


def _parse_row(manifest: Path, root: Path, row: int, record: dict[str, str]) -> Sample:
    for column in REQUIRED_COLUMNS:
        if not record[column]:
            raise DataError(f"{manifest} row {row}: empty {column}")
    split_value = record.get("split", "").lower() or None
    if split_value is not None and split_value not in SPLITS:
        raise DataError(
            f"{manifest} row {row}: bad split {record['split']!r}; expected one of {', '.join(SPLITS)} or empty"
        )
    mask = record.get("mask", "")
    extras = {k: v for k, v in record.items() if k not in REQUIRED_COLUMNS and k not in ("split", "mask")}
    return Sample(
        path=_resolve(root, record["path"]),
        label=record["label"],
        patient_id=record["patient_id"],
        split=split_value,
        row=row,
        extras=extras,
        mask=_resolve(root, mask) if mask else None,
    )


def _resolve(root: Path, value: str) -> Path:
    file_path = Path(value).expanduser()
    if not file_path.is_absolute():
        file_path = root / file_path
    return Path(os.path.abspath(file_path))


def _warn_duplicates(manifest: Path, samples: Sequence[Sample]) -> None:
    counts = Counter(s.path for s in samples)
    repeated = [p for p, n in counts.items() if n > 1]
    if repeated:
        logger.warning("%s: %d file(s) listed more than once, e.g. %s", manifest, len(repeated), repeated[0])


def write_manifest(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``rows`` (dicts with at least path/label/patient_id) as a manifest CSV, atomically.

    Absolute ``path`` and ``mask`` values are written relative to the manifest's folder (POSIX
    separators) so the data folder can be moved with its manifest; relative ones are taken as
    already relative to it.
    Columns: ``path, label, patient_id``, then ``split`` and other keys in first-seen order;
    missing values are written empty.
    """
    target = Path(path)
    root = Path(os.path.abspath(target.parent))
    columns = list(REQUIRED_COLUMNS)
    for record in rows:
        for key in record:
            if key not in columns:
                columns.append(key)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for number, record in enumerate(rows, start=1):
        missing = [c for c in REQUIRED_COLUMNS if record.get(c) in (None, "")]
        if missing:
            raise DataError(f"{target}: row {number} to write has no {', '.join(missing)}")
        values = [_format_value(record.get(c), c, root) for c in columns]
        writer.writerow(values)
    return atomic_write_text(target, buffer.getvalue())


def _format_value(value: Any, column: str, root: Path) -> str:
    if value is None:
        return ""
    if column in _PATH_COLUMNS and value != "":
        file_path = Path(value)
        if file_path.is_absolute():
            try:
                file_path = Path(os.path.relpath(file_path, root))
            except ValueError:  # another drive on Windows: keep it absolute
                pass
        return file_path.as_posix()
    return str(value)


def read_row_image(sample: Sample, options: ReaderOptions | None = None) -> np.ndarray:
    """The row's image: :func:`~medprune.data.readers.read_sample` with the row's ``frame``.

    Raises :class:`~medprune.data.readers.SampleReadError` naming the image file (also for a
    ``frame`` value that is not a frame index, on a file read as DICOM).
    """
    frame = sample.frame if uses_dicom_reader(sample.path) else None
    return read_sample(sample.path, options, frame)


def read_row_mask(
    sample: Sample,
    options: ReaderOptions | None = None,
    values: MaskValues | None = None,
    shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """The row's mask, ``(H, W)`` int64: raw values, or class indices when ``values`` is given.

    ``shape`` is the image's (its first two entries, height and width, must be the mask's). The
    mask is read with the row's ``frame`` when it is DICOM. Raises
    :class:`~medprune.data.readers.SampleReadError` naming the *image* file (the row), with a
    reason that names the mask file: no mask in this row, unreadable mask, size differing from
    the image, values no class claims.
    """
    if sample.mask is None:
        raise SampleReadError(sample.path, "no mask: the manifest's mask column is missing or empty in this row")
    try:
        frame = sample.frame if uses_dicom_reader(sample.mask) else None
        raw = read_mask(sample.mask, options, frame)
        if shape is not None and raw.shape != tuple(shape[:2]):
            raise SampleReadError(
                sample.mask, f"size {raw.shape[0]}x{raw.shape[1]} differs from the image's {shape[0]}x{shape[1]} "
                "(height x width)"
            )
        return raw if values is None else mask_to_classes(raw, values, sample.mask)
    except SampleReadError as exc:
        raise SampleReadError(sample.path, f"mask {sample.mask}: {exc.reason}") from exc


def check_samples(
    samples: Iterable[Sample], classes: Sequence[str], options: ReaderOptions | None = None, *,
    progress: bool = True, masks: bool | MaskValues | Mapping[str, int | Sequence[int]] = False,
) -> list[BadSample]:
    """Read every sample (and mask) and return *all* bad rows (empty list = all good).

    A row is bad when :func:`~medprune.data.readers.read_sample` refuses it (missing, zero-byte,
    unreadable, corrupt, not an image, an undecodable DICOM transfer syntax, wrong shape,
    NaN/inf, a ``frame`` that is no index or out of range) or its label is not in ``classes``;
    the reason is one line. With ``masks`` (segmentation) each row's mask is read too
    (:func:`read_row_mask`): a row without a mask, an unreadable mask or one whose size differs
    from the image is bad; with a value map (:class:`~medprune.data.readers.MaskValues` or a
    ``{class: value(s)}`` mapping) so is a mask holding values no class claims. Collecting every
    problem at once spares the user one failed run per bad file. The reader turns any exception a
    third-party library raises on a file (pydicom, Pillow, numpy, codec plugins) into that file's
    :class:`~medprune.data.readers.SampleReadError`, so one odd file cannot abort the check;
    an exception of any other type is a bug in medprune and propagates. A tqdm progress bar is
    shown for more than 200 samples unless ``progress`` is false (``runtime.progress``).
    """
    options = options or ReaderOptions()
    values = masks if isinstance(masks, MaskValues) else None
    if isinstance(masks, Mapping):
        values = MaskValues.build(None, masks)
    check_masks = masks is not False and masks is not None
    items = list(samples)
    allowed = set(classes)
    bad: list[BadSample] = []
    bar = progress_bar(items, enabled=progress and len(items) > _PROGRESS_THRESHOLD, desc="checking samples",
                       unit="file")
    for sample in bar:
        reasons: list[str] = []
        if sample.label not in allowed:
            reasons.append(f"label {sample.label!r} is not one of the classes {', '.join(classes)}")
        reasons += _file_problems(sample, options, check_masks, values)
        if reasons:
            bad.append(BadSample(path=sample.path, row=sample.row, reason="; ".join(reasons)))
    if bad:
        logger.warning("%d of %d samples are bad", len(bad), len(items))
    return bad


def _file_problems(sample: Sample, options: ReaderOptions, masks: bool, values: MaskValues | None) -> list[str]:
    """What is wrong with the row's image (and mask), one reason per file."""
    if any(p is not None and uses_dicom_reader(p) for p in (sample.path, sample.mask if masks else None)):
        try:
            _ = sample.frame  # validated once: a bad frame value is the row's problem, not each file's
        except SampleReadError as exc:
            return [exc.reason]
    problems = []
    shape = None
    try:
        shape = read_row_image(sample, options).shape
    except SampleReadError as exc:
        problems.append(exc.reason)
    except DataError as exc:
        problems.append(" ".join(str(exc).split()))
    if masks:
        try:
            read_row_mask(sample, options, values, shape)
        except SampleReadError as exc:
            problems.append(exc.reason)
    return problems


def format_bad_samples(bad: Sequence[BadSample], manifest_path: str | os.PathLike[str] | None = None) -> str:
    """One line per bad sample, ``<file> (row N): <reason>``.

    ``<file>`` is shown relative to the manifest's folder when it lies inside it (rows refer to
    that manifest), otherwise absolute.
    """
    root = Path(os.path.abspath(Path(manifest_path).parent)) if manifest_path is not None else None
    lines = []
    for item in bad:
        shown: Path = item.path
        if root is not None:
            try:
                shown = item.path.relative_to(root)
            except ValueError:
                pass
        lines.append(f"{shown} (row {item.row}): {item.reason}")
    return "\n".join(lines)


def write_bad_samples(bad: Sequence[BadSample], path: str | os.PathLike[str]) -> Path:
    """Write ``bad`` as CSV (``path,row,reason``, absolute paths) atomically; returns the path."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "row", "reason"])
    for item in bad:
        writer.writerow([str(item.path), item.row, item.reason])
    return atomic_write_text(path, buffer.getvalue())
