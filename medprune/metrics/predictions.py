"""Per-sample prediction tables: write them beside metrics.json, read them back to re-evaluate.

A predictions CSV lets an engineer recompute any metric (another bootstrap seed, another patient
aggregation) without rerunning the model, and lets a test check that a distributed evaluation
scored every sample exactly once.

Columns: ``index, path, patient_id, label, pred, prob_<class>...``. ``label`` and ``pred`` hold
class *names* so the file reads on its own; the class order is the order of the ``prob_``
columns. Probabilities are written with ``repr`` precision, so a round trip is exact.

Example::

    write_predictions_csv(run_dir / "predictions.csv", idx, paths, pids, y, probs, classes)
    table = read_predictions_csv(run_dir / "predictions.csv")
    classification_metrics(table.y_true, table.probs, table.classes, patient_ids=table.patient_ids)
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medprune._io import atomic_write
from medprune.errors import DataError

__all__ = ["Predictions", "write_predictions_csv", "read_predictions_csv"]

_FIXED_COLUMNS = ("index", "path", "patient_id", "label", "pred")
_PROB_PREFIX = "prob_"


@dataclass(frozen=True)
class Predictions:
    """One evaluated sample per row.

    ``sample_ids``: int64 when every id is an integer, else str; ``paths`` and ``patient_ids``:
    str arrays or ``None`` when not recorded; ``y_true``: ``(N,)`` int64; ``probs``: ``(N, K)``
    float64; ``classes``: the ``K`` names.
    """

    sample_ids: np.ndarray
    paths: np.ndarray | None
    patient_ids: np.ndarray | None
    y_true: np.ndarray
    probs: np.ndarray
    classes: list[str]

    @property
    def pred(self) -> np.ndarray:
        """Arg-max prediction of every sample."""
        return self.probs.argmax(axis=1)


def as_sample_ids(ids: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Sample ids as int64 when every id is an integer (or its exact decimal text), else as str.

    Dataset indices written to a CSV come back as integers; ``"007"`` stays a string.
    """
    text = [str(v) for v in (ids.tolist() if isinstance(ids, np.ndarray) else ids)]
    try:
        as_int = [int(v) for v in text]
    except ValueError:
        return np.asarray(text, dtype=str)
    if all(str(i) == t for i, t in zip(as_int, text, strict=True)):
        return np.asarray(as_int, dtype=np.int64)
    return np.asarray(text, dtype=str)


def _column(values: Sequence[Any] | np.ndarray | None, n: int, name: str) -> list[str]:
    if values is None:
        return [""] * n
    out = [str(v) for v in (values.tolist() if isinstance(values, np.ndarray) else values)]
    if len(out) != n:
        raise DataError(f"{name}: has {len(out)} entries but there are {n} samples")
    return out


def write_predictions_csv(
    path: str | os.PathLike[str],
    sample_ids: Sequence[int | str] | np.ndarray,
    paths: Sequence[str] | np.ndarray | None,
    patient_ids: Sequence[str] | np.ndarray | None,
    y_true: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
) -> Path:
    """Write one row per sample to ``path`` atomically and return the path.

    ``paths`` or ``patient_ids`` may be ``None`` (empty cells). Raises :class:`DataError` when
    lengths disagree, ``probs`` is not ``(N, len(classes))`` or a label is out of range.
    """
    names = [str(c) for c in classes]
    p = np.asarray(probs.detach().cpu().numpy() if hasattr(probs, "detach") else probs, dtype=np.float64)
    y = np.asarray(y_true.detach().cpu().numpy() if hasattr(y_true, "detach") else y_true)
    if p.ndim != 2 or p.shape[1] != len(names):
        raise DataError(f"probs: expected shape (N, {len(names)}) for classes {names}, got {tuple(p.shape)}")
    n = p.shape[0]
    if y.shape != (n,):
        raise DataError(f"y_true: expected {n} labels (one per row of probs), got shape {tuple(y.shape)}")
    if n and (y.min() < 0 or y.max() >= len(names)):
        raise DataError(f"y_true: labels must lie in 0..{len(names) - 1} for classes {names}")
    ids = _column(sample_ids, n, "sample_ids")
    path_col = _column(paths, n, "paths")
    patient_col = _column(patient_ids, n, "patient_ids")
    pred = p.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    header = list(_FIXED_COLUMNS) + [_PROB_PREFIX + c for c in names]

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            for i in range(n):
                writer.writerow(
                    [ids[i], path_col[i], patient_col[i], names[int(y[i])], names[int(pred[i])]]
                    + [repr(float(v)) for v in p[i]]
                )

    return atomic_write(path, write)


def read_predictions_csv(path: str | os.PathLike[str]) -> Predictions:
    """Read a file written by :func:`write_predictions_csv` back into arrays.

    Raises :class:`DataError` naming the file and line when a column is missing, a label is not
    one of the classes, or a probability is not a number.
    """
    source = Path(path)
    if not source.is_file():
        raise DataError(f"{source}: predictions file not found")
    with open(source, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise DataError(f"{source}: empty file, expected a header {', '.join(_FIXED_COLUMNS)}, prob_<class>...")
    header = rows[0]
    if tuple(header[: len(_FIXED_COLUMNS)]) != _FIXED_COLUMNS:
        raise DataError(f"{source}: header must start with {', '.join(_FIXED_COLUMNS)}, got {header[:5]}")
    prob_cols = header[len(_FIXED_COLUMNS) :]
    if len(prob_cols) < 2 or not all(c.startswith(_PROB_PREFIX) and len(c) > len(_PROB_PREFIX) for c in prob_cols):
        raise DataError(f"{source}: expected at least two prob_<class> columns after 'pred', got {prob_cols}")
    classes = [c[len(_PROB_PREFIX) :] for c in prob_cols]
    index_of = {c: i for i, c in enumerate(classes)}
    ids, paths, patients, labels, probs = [], [], [], [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(f"{source}: line {line}: {len(row)} fields, expected {len(header)}")
        if row[3] not in index_of:
            raise DataError(f"{source}: line {line}: label {row[3]!r} is not one of the classes {classes}")
        try:
            probs.append([float(v) for v in row[len(_FIXED_COLUMNS) :]])
        except ValueError:
            raise DataError(f"{source}: line {line}: probabilities must be numbers, got {row[5:]}") from None
        ids.append(row[0])
        paths.append(row[1])
        patients.append(row[2])
        labels.append(index_of[row[3]])

    def optional(col: list[str]) -> np.ndarray | None:
        return None if all(v == "" for v in col) else np.asarray(col, dtype=str)

    return Predictions(
        sample_ids=as_sample_ids(ids),
        paths=optional(paths),
        patient_ids=optional(patients),
        y_true=np.asarray(labels, dtype=np.int64),
        probs=np.asarray(probs, dtype=np.float64).reshape(len(probs), len(classes)),
        classes=classes,
    )
