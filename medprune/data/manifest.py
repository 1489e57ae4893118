"""Manifests: the CSV list of samples an experiment trains and evaluates on.

Schema (header row required, UTF-8, comma-separated)::

    path,label,patient_id,split,view
    P0001/frontal.txt,healthy,P0001,,frontal

* ``path`` — the sample file, relative to the manifest's folder (or absolute).
* ``label`` — the class name; it must be one of the experiment's ``classes``.
* ``patient_id`` — every row needs one: splits and bootstrap intervals are per patient.
* ``split`` (optional) — ``train``, ``val``, ``test`` or empty (= assigned by
  :func:`~medprune.data.splits.split_by_patient`).
* any other column (``view``, ``frame``, ...) is kept as a string in :attr:`Sample.extras`.

Bad samples (unreadable files, labels outside ``classes``) are found by :func:`check_samples`
before training, so a run either stops listing *every* bad row or, with
``data.on_bad_sample: skip``, drops them and records them with :func:`write_bad_samples`.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medprune._io import atomic_write_text
from medprune._progress import progress_bar
from medprune.data.readers import ReaderOptions, SampleReadError, read_sample
from medprune.errors import DataError

__all__ = [
    "REQUIRED_COLUMNS",
    "SPLITS",
    "BadSample",
    "Sample",
    "check_samples",
    "format_bad_samples",
    "read_manifest",
    "write_bad_samples",
    "write_manifest",
]

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("path", "label", "patient_id")
SPLITS = ("train", "val", "test")
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
        extras: every other column, as strings.
    """

    path: Path
    label: str
    patient_id: str
    split: str | None
    row: int
    extras: dict[str, str] = field(default_factory=dict, hash=False, compare=True)

    def as_row(self) -> dict[str, Any]:
        """The sample as a manifest row for :func:`write_manifest` (``split`` empty if unset)."""
        return {
            "path": self.path,
            "label": self.label,
            "patient_id": self.patient_id,
            "split": self.split or "",
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
    file_path = Path(record["path"]).expanduser()
    if not file_path.is_absolute():
        file_path = root / file_path
    extras = {k: v for k, v in record.items() if k not in REQUIRED_COLUMNS and k != "split"}
    return Sample(
        path=Path(os.path.abspath(file_path)),
        label=record["label"],
        patient_id=record["patient_id"],
        split=split_value,
        row=row,
        extras=extras,
    )


def _warn_duplicates(manifest: Path, samples: Sequence[Sample]) -> None:
    counts = Counter(s.path for s in samples)
    repeated = [p for p, n in counts.items() if n > 1]
    if repeated:
        logger.warning("%s: %d file(s) listed more than once, e.g. %s", manifest, len(repeated), repeated[0])


def write_manifest(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``rows`` (dicts with at least path/label/patient_id) as a manifest CSV, atomically.

    Absolute paths are written relative to the manifest's folder (POSIX separators) so the data
    folder can be moved with its manifest; relative paths are taken as already relative to it.
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
    if column == "path":
        file_path = Path(value)
        if file_path.is_absolute():
            try:
                file_path = Path(os.path.relpath(file_path, root))
            except ValueError:  # another drive on Windows: keep it absolute
                pass
        return file_path.as_posix()
    return str(value)


def check_samples(
    samples: Iterable[Sample], classes: Sequence[str], options: ReaderOptions | None = None, *,
    progress: bool = True,
) -> list[BadSample]:
    """Read every sample and return *all* bad rows (empty list = all good).

    A row is bad when :func:`~medprune.data.readers.read_sample` refuses it (missing, zero-byte,
    unreadable, corrupt, not an image, an undecodable DICOM transfer syntax, wrong shape,
    NaN/inf) or its label is not in ``classes``; the reason is one line. Collecting every problem
    at once spares the user one failed run per bad file. The reader turns any exception a
    third-party library raises on a file (pydicom, Pillow, numpy, codec plugins) into that file's
    :class:`~medprune.data.readers.SampleReadError`, so one odd file cannot abort the check;
    an exception of any other type is a bug in medprune and propagates. A tqdm progress bar is
    shown for more than 200 samples unless ``progress`` is false (``runtime.progress``).
    """
    options = options or ReaderOptions()
    items = list(samples)
    allowed = set(classes)
    bad: list[BadSample] = []
    bar = progress_bar(items, enabled=progress and len(items) > _PROGRESS_THRESHOLD, desc="checking samples",
                       unit="file")
    for sample in bar:
        reasons: list[str] = []
        if sample.label not in allowed:
            reasons.append(f"label {sample.label!r} is not one of the classes {', '.join(classes)}")
        try:
            read_sample(sample.path, options)
        except SampleReadError as exc:
            reasons.append(exc.reason)
        except DataError as exc:
            reasons.append(" ".join(str(exc).split()))
        if reasons:
            bad.append(BadSample(path=sample.path, row=sample.row, reason="; ".join(reasons)))
    if bad:
        logger.warning("%d of %d samples are bad", len(bad), len(items))
    return bad


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
