"""Polar IVOCT frames: angular intervals (plaque arcs), column masks, boxes and the 60/90 label rule.

**Frame.** A polar frame is an ``(H, W)`` image whose **rows are depth** (row 0 at the catheter)
and whose **columns are A-lines**: column ``j`` covers the angles ``[j·360/W, (j+1)·360/W)``
degrees.

**Interval.** ``(start_deg, end_deg)`` runs counter-clockwise from ``start`` to ``end``; when
``end < start`` it wraps past 360° → 0°. :func:`check_interval` puts it in canonical form:
``0 <= start < 360``, ``0 < end <= 360``, so ``(350, 0)`` becomes ``(350, 360)`` and
``(360, 10)`` becomes ``(0, 10)``; the full circle is exactly ``(0, 360)``; equal ends (mod 360)
are refused otherwise, and so are NaN, infinities and values outside ``[0, 360]``.

**Columns of an interval.** Column ``j`` belongs to an interval when its centre angle
``(j + 0.5)·360/W`` lies in ``[start, end)`` (wrap-aware). So :func:`columns_to_intervals` and
:func:`interval_to_columns` invert each other exactly on column masks, and an interval narrower
than one column may hold no column at all (callers that need one refuse it).

**Boxes.** ``(x0, y0, x1, y1)`` in polar pixel-edge coordinates, torchvision's convention: ``x``
along columns, ``y`` along rows, ``x1``/``y1`` exclusive edges (columns 3..5 and rows 10..19 are
``(3, 10, 6, 20)``); an angle maps to ``x = deg·W/360``. Convention: a **wrapping interval
becomes two boxes**, split at the seam (``x = W`` and ``x = 0``), in the frame as stored. For
one box per arc instead, roll the frame so no arc crosses the seam: ``shift =
seam_shift(intervals, W)``, then :func:`roll_frame` (image) and :func:`roll_interval`
(``shift·360/W`` degrees) move both consistently.

**Labels.** :class:`LabelRule` is the intensity rule behind the public CCCV2017 label scripts
(8-bit thresholds 60 for tissue, 90 for plaque; see its docstring for exactly what is
implemented). The phantom and the CCCV adapter label frames with it, and :func:`plaque_boxes` turns
a label map and its intervals into detector boxes, stored per frame as :class:`FrameBoxes`.

Example::

    iv = check_interval((350, 20))                       # wraps: 30 degrees
    interval_to_columns(iv, 36).nonzero()[0]             # columns 35, 0, 1
    interval_to_boxes(iv, 36, depth=(10, 20))            # [(35, 10, 36, 20), (0, 10, 2, 20)]
    interval_iou((350, 20), (0, 40))                     # 20 / 50 = 0.4
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medprune._io import atomic_write_json, read_json
from medprune.errors import ConfigError, DataError

__all__ = [
    "BACKGROUND",
    "BOXES_FORMAT",
    "CLASS_NAMES",
    "FULL_CIRCLE",
    "PLAQUE",
    "polar_to_cartesian",
    "TISSUE",
    "Box",
    "FrameBoxes",
    "Interval",
    "LabelRule",
    "box_to_interval",
    "check_interval",
    "column_centres",
    "columns_to_intervals",
    "contains_angle",
    "coverage_iou",
    "coverage_overlap",
    "coverage_union",
    "interval_iou",
    "interval_length",
    "interval_overlap",
    "interval_pieces",
    "interval_to_boxes",
    "interval_to_columns",
    "interval_union",
    "intervals_to_columns",
    "merge_intervals",
    "plaque_boxes",
    "read_boxes",
    "roll_frame",
    "roll_interval",
    "seam_shift",
    "write_boxes",
]

Interval = tuple[float, float]
"""``(start_deg, end_deg)``, counter-clockwise; ``end < start`` wraps past 360° → 0°."""
Box = tuple[float, float, float, float]
"""``(x0, y0, x1, y1)`` in polar pixel-edge coordinates (x: columns/angle, y: rows/depth)."""

FULL_CIRCLE: Interval = (0.0, 360.0)
BACKGROUND, TISSUE, PLAQUE = 0, 1, 2
CLASS_NAMES = ("background", "tissue", "plaque")
"""Label-map values: index = class id (a mask PNG stores these ids as 8-bit grey levels)."""
BOXES_FORMAT = "medprune.ivoct_boxes/1"


# ----------------------------------------------------------------------------- intervals


def check_interval(interval: Sequence[float], where: str = "interval") -> Interval:
    """Validate ``interval`` and return it in canonical form (see the module docstring).

    ``where`` names the frame (and row) for the message, e.g. ``"annotations.csv row 4 (pullback
    PB01, frame 3)"``. Raises :class:`~medprune.errors.DataError` ``"<where>: interval (a, b):
    <problem>"`` for a value that is not a pair of numbers, NaN/infinite values, values outside
    [0, 360], and equal ends (mod 360) other than the full circle ``(0, 360)``.

    Example::

        check_interval((350, 0))   # (350.0, 360.0)
        check_interval((360, 10))  # (0.0, 10.0)
    """
    try:
        start, end = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise DataError(f"{where}: interval {interval!r}: expected (start_deg, end_deg), two numbers") from None
    shown = f"{where}: interval ({_fmt(start)}, {_fmt(end)})"
    if not (math.isfinite(start) and math.isfinite(end)):
        raise DataError(f"{shown}: angles must be finite numbers")
    if not (0.0 <= start <= 360.0 and 0.0 <= end <= 360.0):
        raise DataError(f"{shown}: angles must lie in [0, 360] degrees")
    if (start, end) == (0.0, 360.0):
        return FULL_CIRCLE
    if start % 360.0 == end % 360.0:
        raise DataError(f"{shown}: start and end are the same angle (empty, or write (0, 360) for the full circle)")
    return (start % 360.0, end if end > 0.0 else 360.0)


def _fmt(value: float) -> str:
    return f"{value:g}" if math.isfinite(value) else str(value)


def interval_length(interval: Interval) -> float:
    """Angular length in degrees, wrap-aware: ``(350, 20)`` → 30; full circle → 360."""
    start, end = interval
    return end - start if end > start else 360.0 - start + end


def interval_pieces(interval: Interval) -> list[Interval]:
    """The interval as non-wrapping pieces within [0, 360]: one, or two for a wrapping interval.

    ``(350, 20)`` → ``[(350, 360), (0, 20)]``; ``(10, 20)`` → ``[(10, 20)]``.
    """
    start, end = interval
    if end > start:
        return [(start, end)]
    return [(start, 360.0), (0.0, end)]


def contains_angle(interval: Interval, angles: np.ndarray | float) -> np.ndarray:
    """Boolean array: which ``angles`` (degrees in [0, 360)) lie in ``[start, end)``, wrap-aware."""
    theta = np.asarray(angles, dtype=np.float64)
    start, end = interval
    if end > start:
        return (theta >= start) & (theta < end)
    return (theta >= start) | (theta < end)


def column_centres(width: int) -> np.ndarray:
    """Centre angle (degrees) of each of ``width`` columns: ``(j + 0.5)·360/width``."""
    _check_width(width)
    return (np.arange(width, dtype=np.float64) + 0.5) * 360.0 / width


def interval_to_columns(interval: Interval, width: int) -> np.ndarray:
    """``(width,)`` boolean mask of the columns whose centre lies in ``interval`` (wrap-aware).

    Example: ``interval_to_columns((350, 20), 36)`` is true at columns 35, 0 and 1.
    """
    return contains_angle(interval, column_centres(width))


def intervals_to_columns(intervals: Sequence[Interval], width: int) -> np.ndarray:
    """Union of :func:`interval_to_columns` over ``intervals`` (all false when there are none)."""
    centres = column_centres(width)
    mask = np.zeros(width, dtype=bool)
    for interval in intervals:
        mask |= contains_angle(interval, centres)
    return mask


def columns_to_intervals(columns: np.ndarray) -> list[Interval]:
    """Runs of true columns as intervals, sorted by start; a run touching both edges wraps.

    Column runs ``[a, b)`` become ``(a·360/W, b·360/W)``; runs at column 0 and column W-1 join
    into one interval ``(a·360/W, b·360/W)`` with end < start; all true → ``[(0, 360)]``.
    ``interval_to_columns`` of the result gives the mask back exactly.

    Example: columns 0, 1, 35 of 36 → ``[(350.0, 20.0)]``.
    """
    mask = np.asarray(columns, dtype=bool)
    if mask.ndim != 1:
        raise DataError(f"columns_to_intervals: expected a 1-D column mask, got shape {tuple(mask.shape)}")
    width = mask.size
    _check_width(width)
    if mask.all():
        return [FULL_CIRCLE]
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    runs = [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]
    if len(runs) > 1 and runs[0][0] == 0 and runs[-1][1] == width:
        first, last = runs.pop(0), runs.pop()
        runs.append((last[0], first[1] + width))
    intervals = [(a * 360.0 / width, (b % width if b > width else b) * 360.0 / width) for a, b in runs]
    return sorted(intervals)


def merge_intervals(intervals: Sequence[Interval]) -> list[Interval]:
    """Union of ``intervals`` as disjoint canonical intervals, sorted by start.

    Overlapping and touching intervals merge; pieces ending at 360 and starting at 0 join into one
    wrapping interval; covering everything gives ``[(0, 360)]``.

    Example: ``merge_intervals([(350, 5), (0, 10), (20, 30), (25, 40)])`` →
    ``[(20, 40), (350, 10)]``.
    """
    pieces = sorted((float(s), float(e)) for interval in intervals for s, e in interval_pieces(interval))
    merged: list[list[float]] = []
    for start, end in pieces:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    if len(merged) == 1 and merged[0] == [0.0, 360.0]:
        return [FULL_CIRCLE]
    if len(merged) > 1 and merged[0][0] == 0.0 and merged[-1][1] == 360.0:
        first, last = merged.pop(0), merged.pop()
        merged.append([last[0], first[1]])
    return sorted((s, e) for s, e in merged)


def _linear_overlap(a: Sequence[Interval], b: Sequence[Interval]) -> float:
    return sum(max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in a for s2, e2 in b)


def interval_overlap(a: Interval, b: Interval) -> float:
    """Degrees covered by both ``a`` and ``b`` (wrap-aware): ``(350, 20)`` ∩ ``(0, 40)`` → 20."""
    return _linear_overlap(interval_pieces(a), interval_pieces(b))


def interval_union(a: Interval, b: Interval) -> float:
    """Degrees covered by ``a`` or ``b``: ``len(a) + len(b) - overlap``."""
    return interval_length(a) + interval_length(b) - interval_overlap(a, b)


def interval_iou(a: Interval, b: Interval) -> float:
    """Intersection over union in degrees: ``(350, 20)`` vs ``(0, 40)`` → 20/50 = 0.4."""
    return interval_overlap(a, b) / interval_union(a, b)


def coverage_overlap(a: Sequence[Interval], b: Sequence[Interval]) -> float:
    """Degrees covered by the union of ``a`` and by the union of ``b`` (sets of arcs, e.g. a frame)."""
    pieces_a = [p for iv in merge_intervals(a) for p in interval_pieces(iv)]
    pieces_b = [p for iv in merge_intervals(b) for p in interval_pieces(iv)]
    return _linear_overlap(pieces_a, pieces_b)


def coverage_union(a: Sequence[Interval], b: Sequence[Interval]) -> float:
    """Degrees covered by any arc of ``a`` or ``b``."""
    return sum(interval_length(iv) for iv in merge_intervals([*a, *b]))


def coverage_iou(a: Sequence[Interval], b: Sequence[Interval]) -> float:
    """IoU in degrees of two sets of arcs (their unions); NaN when both are empty (undefined)."""
    union = coverage_union(a, b)
    return coverage_overlap(a, b) / union if union > 0.0 else float("nan")


# ----------------------------------------------------------------------------- boxes and rolls


def interval_to_boxes(interval: Interval, width: int, depth: tuple[float, float]) -> list[Box]:
    """Boxes ``(x0, y0, x1, y1)`` of ``interval`` over rows ``depth = (y0, y1)`` (``y1`` exclusive).

    ``x = deg·width/360``; a wrapping interval gives two boxes, split at the seam
    (``[(x_start, y0, width, y1), (0, y0, x_end, y1)]``); see the module docstring for the
    rolled-frame alternative.

    Example: ``interval_to_boxes((350, 20), 36, (10, 20))`` → ``[(35, 10, 36, 20), (0, 10, 2, 20)]``.
    """
    _check_width(width)
    y0, y1 = (float(v) for v in depth)
    if not (math.isfinite(y0) and math.isfinite(y1) and y1 > y0):
        raise DataError(f"interval_to_boxes: depth must be (top, bottom) rows with bottom > top, got {depth!r}")
    return [(s * width / 360.0, y0, e * width / 360.0, y1) for s, e in interval_pieces(interval)]


def box_to_interval(box: Sequence[float], width: int) -> Interval:
    """The angular interval a box covers: ``(x0·360/W, x1·360/W)``; ``0 <= x0 < x1 <= W`` required.

    Two boxes of one arc split at the seam come back as two intervals; :func:`merge_intervals`
    joins them into the wrapping interval.
    """
    _check_width(width)
    x0, x1 = float(box[0]), float(box[2])
    if not (0.0 <= x0 < x1 <= width):
        raise DataError(f"box {tuple(box)!r}: expected 0 <= x0 < x1 <= {width} (the frame width)")
    return check_interval((x0 * 360.0 / width, x1 * 360.0 / width), where=f"box {tuple(box)!r}")


def roll_frame(frame: np.ndarray, shift: int) -> np.ndarray:
    """Rotate a polar frame (or label map) by ``shift`` columns: column ``j`` moves to ``j + shift``.

    Rotating the frame by ``shift`` columns rotates every angle by ``shift·360/W`` degrees
    (:func:`roll_interval`); a catheter rotation is exactly this, so it is also an augmentation.
    """
    return np.roll(np.asarray(frame), int(shift), axis=1)


def roll_interval(interval: Interval, shift_deg: float) -> Interval:
    """``interval`` rotated by ``shift_deg`` degrees, canonical (the full circle stays full)."""
    if interval == FULL_CIRCLE:
        return FULL_CIRCLE
    start, end = ((v + shift_deg) % 360.0 for v in interval)
    return (start, end if end > 0.0 else 360.0)


def seam_shift(intervals: Sequence[Interval], width: int) -> int:
    """A column shift after which no interval crosses the 360°/0° seam (0 when none does).

    The seam is put on the column edge nearest the middle of the widest gap between arcs, so
    ``roll_frame(frame, s)`` and ``roll_interval(iv, s·360/width)`` give one box per arc. Raises
    :class:`~medprune.errors.DataError` when the arcs cover the whole circle or leave no column
    edge free.
    """
    _check_width(width)
    merged = merge_intervals(intervals)
    if merged == [FULL_CIRCLE]:
        raise DataError("seam_shift: the intervals cover the full circle; no seam avoids them")
    if not any(end < start for start, end in merged):
        return 0
    ordered = sorted(merged)
    gaps = [(ordered[i][1], ordered[(i + 1) % len(ordered)][0]) for i in range(len(ordered))]
    step = 360.0 / width
    for gap_start, gap_end in sorted(gaps, key=lambda g: -((g[1] - g[0]) % 360.0)):
        length = (gap_end - gap_start) % 360.0
        middle = (gap_start + length / 2.0) % 360.0
        edge = round(middle / step) % width
        if (edge * step - gap_start) % 360.0 <= length:  # the column edge lies within the gap
            return int((-edge) % width)
    raise DataError(f"seam_shift: no column edge of a {width}-column frame lies between the intervals")


def _check_width(width: int) -> None:
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise DataError(f"frame width must be a positive number of columns, got {width!r}")


# ----------------------------------------------------------------------------- the label rule


@dataclass(frozen=True)
class LabelRule:
    """The 8-bit intensity rule that turns a polar frame and its plaque intervals into a label map.

    DESIGN.md (*confirmed* that public CCCV2017 label scripts use them): 8-bit thresholds 60
    (tissue) and 90 (plaque). What is implemented, per pixel of an 8-bit frame (our reading, not a
    copy of those scripts):

    * rows ``< catheter_depth`` → background (the catheter/sheath; 0 = the literal rule);
    * in a column of a plaque interval and value ``>= plaque_threshold`` → plaque (2);
    * otherwise value ``>= tissue_threshold`` → tissue (1) — inside plaque columns too, so a
      60–89 pixel within an arc is tissue, not background;
    * the rest → background (0).

    Attributes are validated (``ConfigError`` naming the key): thresholds are integers in
    [0, 255] with ``tissue_threshold <= plaque_threshold``; ``catheter_depth >= 0``.
    """

    tissue_threshold: int = 60
    plaque_threshold: int = 90
    catheter_depth: int = 0

    def __post_init__(self) -> None:
        for key in ("tissue_threshold", "plaque_threshold", "catheter_depth"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"{key}: expected an integer, got {value!r}")
        for key in ("tissue_threshold", "plaque_threshold"):
            if not 0 <= getattr(self, key) <= 255:
                raise ConfigError(f"{key}: expected an 8-bit level in [0, 255], got {getattr(self, key)}")
        if self.tissue_threshold > self.plaque_threshold:
            raise ConfigError(
                f"tissue_threshold: {self.tissue_threshold} is above plaque_threshold {self.plaque_threshold}"
            )
        if self.catheter_depth < 0:
            raise ConfigError(f"catheter_depth: expected rows >= 0, got {self.catheter_depth}")

    def apply(self, frame: np.ndarray, intervals: Sequence[Interval], where: str = "frame") -> np.ndarray:
        """``(H, W)`` uint8 label map (0 background, 1 tissue, 2 plaque) of an 8-bit ``frame``.

        ``frame`` must be a 2-D ``uint8`` array (8-bit levels: the thresholds are 8-bit, a float
        image in [0, 1] would silently be all background). ``intervals`` must be canonical
        (:func:`check_interval`). ``where`` names the frame in errors.
        """
        levels = np.asarray(frame)
        if levels.ndim != 2 or levels.dtype != np.uint8:
            raise DataError(
                f"{where}: the label rule needs a 2-D 8-bit frame (uint8), got {levels.dtype} of shape "
                f"{tuple(levels.shape)}"
            )
        columns = intervals_to_columns(intervals, levels.shape[1])
        labels = np.where(levels >= self.tissue_threshold, TISSUE, BACKGROUND).astype(np.uint8)
        labels[(levels >= self.plaque_threshold) & columns[None, :]] = PLAQUE
        labels[: self.catheter_depth] = BACKGROUND
        return labels


def plaque_boxes(labels: np.ndarray, intervals: Sequence[Interval]) -> tuple[list[Box], list[int]]:
    """Detector boxes of a label map: per interval piece, its angles × the plaque pixels' depth.

    Each non-wrapping piece of each interval (:func:`interval_pieces`) gives the box
    ``(start·W/360, top, end·W/360, bottom + 1)`` where top/bottom are the first/last rows holding
    a plaque pixel in the piece's columns; a piece without plaque pixels gives no box. Returns
    ``(boxes, interval_index)`` — the index of each box's interval in ``intervals``.
    """
    plaque = np.asarray(labels) == PLAQUE
    width = plaque.shape[1]
    centres = column_centres(width)
    boxes: list[Box] = []
    owners: list[int] = []
    for index, interval in enumerate(intervals):
        for start, end in interval_pieces(interval):
            columns = (centres >= start) & (centres < end)
            rows = np.flatnonzero(plaque[:, columns].any(axis=1))
            if rows.size:
                boxes.append((start * width / 360.0, float(rows[0]), end * width / 360.0, float(rows[-1] + 1)))
                owners.append(index)
    return boxes, owners


# ----------------------------------------------------------------------------- boxes file


@dataclass(frozen=True)
class FrameBoxes:
    """One frame's plaque arcs and detector boxes, as written to ``boxes.json``.

    Attributes:
        path: the frame's file, relative to the boxes file's folder (POSIX separators).
        frame: frame index within the pullback (0-based; the DICOM frame for a multi-frame file).
        pullback: the pullback id (= patient id).
        height: frame rows; width: frame columns (A-lines).
        intervals: canonical plaque intervals in degrees.
        boxes: ``(x0, y0, x1, y1)`` polar pixel boxes (:func:`plaque_boxes`).
        box_interval: for each box, the index of its interval in ``intervals``.
        mask: the label-map PNG, relative like ``path`` ("" when none).
    """

    path: str
    frame: int
    pullback: str
    height: int
    width: int
    intervals: list[Interval] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    box_interval: list[int] = field(default_factory=list)
    mask: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "frame": self.frame,
            "pullback": self.pullback,
            "height": self.height,
            "width": self.width,
            "mask": self.mask,
            "intervals": [list(iv) for iv in self.intervals],
            "boxes": [list(b) for b in self.boxes],
            "box_interval": list(self.box_interval),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "boxes") -> FrameBoxes:
        """Parse one frame record; errors name ``where`` and the key."""
        try:
            record = cls(
                path=str(data["path"]),
                frame=int(data["frame"]),
                pullback=str(data["pullback"]),
                height=int(data["height"]),
                width=int(data["width"]),
                intervals=[check_interval(iv, where) for iv in data.get("intervals", [])],
                boxes=[(float(b[0]), float(b[1]), float(b[2]), float(b[3])) for b in data.get("boxes", [])],
                box_interval=[int(i) for i in data.get("box_interval", [])],
                mask=str(data.get("mask", "")),
            )
        except KeyError as exc:
            raise DataError(f"{where}: missing key {exc.args[0]!r}") from None
        except (TypeError, ValueError, IndexError) as exc:
            raise DataError(f"{where}: malformed frame record ({exc})") from None
        if len(record.box_interval) != len(record.boxes) or any(
            not 0 <= i < len(record.intervals) for i in record.box_interval
        ):
            raise DataError(f"{where}: box_interval must give a valid interval index for each box")
        return record


def write_boxes(path: str | os.PathLike[str], frames: Sequence[FrameBoxes]) -> Path:
    """Write ``frames`` as ``{"format": "medprune.ivoct_boxes/1", "box_format": ..., "frames": [...]}``."""
    return atomic_write_json(
        path,
        {
            "format": BOXES_FORMAT,
            "box_format": "x0,y0,x1,y1 polar pixel edges; x = column (angle * width / 360), y = row (depth)",
            "frames": [f.to_dict() for f in frames],
        },
    )


def read_boxes(path: str | os.PathLike[str]) -> list[FrameBoxes]:
    """Read a boxes file written by :func:`write_boxes`; errors name the file and frame record."""
    file = Path(path)
    data = read_json(file, "boxes file")
    if not isinstance(data, dict) or data.get("format") != BOXES_FORMAT or not isinstance(data.get("frames"), list):
        raise DataError(f"{file}: not a boxes file (expected format {BOXES_FORMAT!r} with a 'frames' list)")
    return [FrameBoxes.from_dict(item, f"{file} frame record {i}") for i, item in enumerate(data["frames"])]


def polar_to_cartesian(frame: np.ndarray, size: int | None = None) -> np.ndarray:
    """Scan-convert a polar frame (rows = depth from the catheter, columns = angle) to a Cartesian picture.

    The output is ``size × size`` (default twice the frame's rows), the catheter at its centre; a
    pixel at distance ``r`` from the centre and angle ``θ`` (0° at 3 o'clock, increasing clockwise
    on screen, i.e. with the image's y axis pointing down) shows the frame's nearest sample at row
    ``r · rows / (size / 2)`` and column ``θ · width / 360``; pixels beyond the deepest row are 0.
    Works on ``(H, W)`` and ``(H, W, C)`` frames alike.
    """
    arr = np.asarray(frame)
    rows, width = arr.shape[:2]
    side = int(size or 2 * rows)
    centre = (side - 1) / 2.0
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
    dy, dx = yy - centre, xx - centre
    radius = np.hypot(dx, dy) * rows / (side / 2.0)
    theta = np.mod(np.degrees(np.arctan2(dy, dx)), 360.0)
    r_idx = np.floor(radius).astype(np.int64)
    c_idx = np.minimum((theta * width / 360.0).astype(np.int64), width - 1)
    inside = r_idx < rows
    out = np.zeros((side, side, *arr.shape[2:]), dtype=arr.dtype)
    out[inside] = arr[r_idx[inside], c_idx[inside]]
    return out
