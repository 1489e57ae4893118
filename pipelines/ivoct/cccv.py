"""CCCV2017 IVOCT → medprune manifest, label maps by the 60/90 rule, and detector boxes.

*Confirmed* (DESIGN.md §5): Li et al. (MATEC 2019) detect plaques in CCCV2017 IVOCT frames with
a U-Net plus thresholding, then a Faster R-CNN. *Most likely*: frames are polar (r, θ) images
with plaques annotated as angular column ranges that may wrap at 0°/360°, and public label
scripts use 8-bit thresholds 60 (tissue) and 90 (plaque).

The on-disk layout is **our assumption** (the real CCCV2017 layout is unknown to us);
:func:`index_cccv` ASSUMES::

    ROOT/
      annotations.csv            (``annotations=``) one row per plaque arc, header required:
                                   pullback,frame,start_deg,end_deg[,image]
      frames/                    (``frames_dir=``)
        <pullback>/              one folder per pullback = one patient (patient_id = folder name)
          <name><k>.png|.jpg|.jpeg|.tif|.tiff   one polar frame per file; k = the number ending
                                                 the file stem (frame_007.png -> 7)
        <pullback>.dcm|.dicom    or one multi-frame DICOM per pullback (patient_id = file stem);
                                   frame k = the k-th frame, 0-based

* ``frame`` is the frame index within the pullback (0-based for DICOM; the stem's number for
  image files). Frames of a pullback with no annotation row are plaque-free ("normal").
* ``start_deg, end_deg``: degrees in [0, 360], counter-clockwise from start to end; ``end <
  start`` wraps past 360° → 0°; ``(0, 360)`` is the full circle. Frame columns are A-lines:
  column j covers [j·360/W, (j+1)·360/W) (:mod:`medprune.data.polar`).
* ``image`` (optional, may be empty): the frame's file relative to ROOT; when given it must be
  the file (pullback, frame) names — a cross-check against shifted frame numbers.
* Other columns are ignored. Files of other types and hidden entries (``.name``) are skipped and
  counted in the log.

Frames are read with :func:`medprune.data.readers.read_sample` and brought to 8-bit levels
(``round(255·value)``): 8-bit images as stored, 16-bit images scaled to 8 bits, RGB to BT.601
grey, DICOM through ``dicom_window`` (default ``(0, 255)``: stored values are 8-bit levels).

Labels (:class:`medprune.data.polar.LabelRule`): rows ``< catheter_depth`` background (0 by
default = the literal rule; set it to the catheter/sheath depth, or the catheter rings inside an
arc become plaque); in an arc's columns, level ``>= plaque_threshold`` (90) plaque; otherwise
level ``>= tissue_threshold`` (60) tissue; the rest background.

Refused, as one :class:`~medprune.errors.DataError` listing every problem, each naming the
annotation row, the frame and the interval: non-numeric or NaN angles, angles outside [0, 360],
equal ends, an unknown pullback or frame, an ``image`` that is not that frame, overlapping arcs in
one frame, and an arc narrower than one column of its frame.

Writes to ``out_dir``: ``manifest.csv`` (``path,label,patient_id,mask,frame``; label
``plaque``/``normal`` per frame), ``masks/<pullback>/frame_<k>.png`` (0 background, 1 tissue,
2 plaque) and ``boxes.json`` (:func:`medprune.data.polar.write_boxes`: per frame, arcs and
``x0,y0,x1,y1`` polar pixel boxes — an arc's angles × its plaque pixels' depth extent, a wrapping
arc split in two at the seam).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medprune._io import atomic_write
from medprune.data.manifest import write_manifest
from medprune.data.polar import (
    FrameBoxes,
    Interval,
    LabelRule,
    check_interval,
    interval_overlap,
    interval_to_columns,
    plaque_boxes,
    write_boxes,
)
from medprune.data.readers import IMAGE_SUFFIXES, ReaderOptions, read_sample, to_channels
from medprune.errors import ConfigError, DataError

__all__ = ["ANNOTATION_COLUMNS", "DICOM_SUFFIXES", "FrameRef", "discover_frames", "index_cccv", "read_annotations"]

logger = logging.getLogger(__name__)

ANNOTATION_COLUMNS = ("pullback", "frame", "start_deg", "end_deg")
"""Required columns of the annotation CSV (``image`` is optional)."""
DICOM_SUFFIXES = (".dcm", ".dicom")
_MAX_LISTED = 30
_TRAILING_NUMBER = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class FrameRef:
    """Where one frame lives: ``path``, and ``dicom_frame`` for a frame of a multi-frame DICOM."""

    pullback: str
    frame: int
    path: Path
    dicom_frame: int | None = None

    @property
    def name(self) -> str:
        return f"pullback {self.pullback}, frame {self.frame}"


def _natural_key(text: str) -> list[object]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _dicom_frame_count(path: Path) -> int:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        value = ds.get("NumberOfFrames")
        return max(1, int(value)) if value not in (None, "") else 1
    except (InvalidDicomError, OSError, ValueError, TypeError) as exc:
        raise DataError(f"{path}: cannot read the pullback's DICOM header ({type(exc).__name__}: {exc})") from None


def discover_frames(frames_root: str | os.PathLike[str]) -> dict[tuple[str, int], FrameRef]:
    """Every frame under ``frames_root`` (assumed layout, module docstring), keyed by (pullback, frame).

    Raises :class:`~medprune.errors.DataError` naming the file for an image whose stem does not
    end in a frame number, two files with the same frame number in one pullback, a pullback given
    both as a folder and as a DICOM file, and when no frame is found.
    """
    root = Path(frames_root)
    if not root.is_dir():
        raise DataError(f"{root}: frames folder not found (expected <pullback>/<frame>.png or <pullback>.dcm)")
    frames: dict[tuple[str, int], FrameRef] = {}
    skipped: Counter[str] = Counter()
    for child in sorted(root.iterdir(), key=lambda p: _natural_key(p.name)):
        if child.name.startswith("."):  # .DS_Store, .ipynb_checkpoints, ...
            skipped["hidden entries"] += 1
            continue
        if child.is_dir():
            found = _folder_frames(child, skipped)
        elif child.suffix.lower() in DICOM_SUFFIXES:
            found = [FrameRef(child.stem, k, child, k) for k in range(_dicom_frame_count(child))]
        else:
            skipped[f"{child.suffix.lower() or 'no-suffix'} files directly under {root.name}/"] += 1
            continue
        for ref in found:
            key = (ref.pullback, ref.frame)
            if key in frames and frames[key].path != ref.path:
                raise DataError(
                    f"{ref.path}: {ref.name} is also {frames[key].path}; a pullback is one folder or one DICOM file"
                )
            frames[key] = ref
    for reason, count in sorted(skipped.items()):
        logger.info("skipped %d %s", count, reason)
    if not frames:
        raise DataError(
            f"{root}: no frames found (expected <pullback>/<frame>{'|'.join(IMAGE_SUFFIXES)} or "
            f"<pullback>{'|'.join(DICOM_SUFFIXES)})"
        )
    return frames


def _folder_frames(folder: Path, skipped: Counter[str]) -> list[FrameRef]:
    refs: dict[int, FrameRef] = {}
    for file in sorted(folder.iterdir(), key=lambda p: _natural_key(p.name)):
        if file.name.startswith(".") or not file.is_file() or file.suffix.lower() not in IMAGE_SUFFIXES:
            skipped[f"{file.suffix.lower() or 'no-suffix'} entries in pullback folders"] += 1
            continue
        match = _TRAILING_NUMBER.search(file.stem)
        if match is None:
            raise DataError(
                f"{file}: cannot tell the frame number; frame files must end in their index (frame_007.png)"
            )
        number = int(match.group(1))
        if number in refs:
            raise DataError(f"{file}: frame {number} of pullback {folder.name} is also {refs[number].path.name}")
        refs[number] = FrameRef(folder.name, number, file)
    return list(refs.values())


def read_annotations(
    path: str | os.PathLike[str], frames: dict[tuple[str, int], FrameRef], root: str | os.PathLike[str]
) -> dict[tuple[str, int], list[Interval]]:
    """Parse the annotation CSV into canonical intervals per (pullback, frame), checking every row.

    ``root`` resolves the optional ``image`` column. Raises one
    :class:`~medprune.errors.DataError` listing every bad row — each line names the file and row,
    the pullback and frame, and the interval — for the problems listed in the module docstring
    (all but the column-width check, which needs the frame's width).
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{file}: annotation file not found (expected {','.join(ANNOTATION_COLUMNS)}[,image])")
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{file}: cannot read the annotation file ({exc})") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in ANNOTATION_COLUMNS if c not in columns]
    if missing:
        raise DataError(
            f"{file}: missing column(s) {', '.join(missing)}; expected {','.join(ANNOTATION_COLUMNS)}[,image], "
            f"found {','.join(columns) or '(no header)'}"
        )
    reader.fieldnames = columns
    pullbacks: dict[str, list[int]] = defaultdict(list)
    for pullback, frame in frames:
        pullbacks[pullback].append(frame)
    intervals: dict[tuple[str, int], list[tuple[Interval, str]]] = defaultdict(list)
    problems: list[str] = []
    for number, record in enumerate(reader, start=1):
        values = {k: (v or "").strip() for k, v in record.items() if k is not None}
        if not any(values.values()):
            continue
        pullback, frame_text = values["pullback"], values["frame"]
        shown = f"({values['start_deg'] or '?'}, {values['end_deg'] or '?'})"
        where = f"{file.name} row {number} (pullback {pullback or '?'}, frame {frame_text or '?'})"
        try:
            frame = int(frame_text)
            if frame < 0:
                raise ValueError
        except ValueError:
            problems.append(f"{where}: interval {shown}: frame must be an integer >= 0, got {frame_text!r}")
            continue
        try:
            start, end = float(values["start_deg"]), float(values["end_deg"])
        except ValueError:
            problems.append(f"{where}: interval {shown}: start_deg and end_deg must be numbers (degrees)")
            continue
        try:
            interval = check_interval((start, end), where)
        except DataError as exc:
            problems.append(str(exc))
            continue
        ref = frames.get((pullback, frame))
        if ref is None:
            known = sorted(pullbacks.get(pullback, []))
            hint = (
                f"pullback {pullback} has frames {known[0]}..{known[-1]} ({len(known)})"
                if known
                else f"no pullback {pullback!r} under the frames folder"
            )
            problems.append(f"{where}: interval {shown}: unknown frame ({hint})")
            continue
        image = values.get("image", "")
        if image and Path(os.path.abspath(Path(root) / image)) != Path(os.path.abspath(ref.path)):
            problems.append(f"{where}: interval {shown}: image {image!r} is not that frame's file ({ref.path.name})")
            continue
        for other, other_where in intervals[(pullback, frame)]:
            if interval_overlap(interval, other) > 0.0:
                problems.append(
                    f"{where}: interval {shown} overlaps interval ({other[0]:g}, {other[1]:g}) of {other_where}"
                )
                break
        else:
            intervals[(pullback, frame)].append((interval, f"row {number}"))
    if problems:
        raise DataError(_listing(file, problems))
    return {key: sorted(iv for iv, _ in items) for key, items in intervals.items()}


def _listing(file: Path, problems: list[str]) -> str:
    shown = problems[:_MAX_LISTED]
    more = f"\n... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    return f"{file}: {len(problems)} invalid annotation(s):\n" + "\n".join(shown) + more


def _levels(ref: FrameRef, window: tuple[float, float]) -> np.ndarray:
    """The frame as 8-bit levels (2-D uint8), read through the sample reader."""
    image = read_sample(ref.path, ReaderOptions(dicom_window=window, dicom_frame=ref.dicom_frame))
    grey = to_channels(image, "gray")[:, :, 0]
    return np.clip(np.rint(grey * 255.0), 0, 255).astype(np.uint8)


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG", compress_level=1))


def index_cccv(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    annotations: str | os.PathLike[str] = "annotations.csv",
    frames_dir: str = "frames",
    tissue_threshold: int = 60,
    plaque_threshold: int = 90,
    catheter_depth: int = 0,
    dicom_window: tuple[float, float] = (0.0, 255.0),
) -> Path:
    """Index a CCCV2017-style IVOCT folder (ASSUMED layout, module docstring); returns the manifest.

    ``annotations`` and ``frames_dir`` are relative to ``root`` (or absolute). Writes the masks,
    ``boxes.json`` and ``manifest.csv`` under ``out_dir``. Thresholds and ``catheter_depth`` go to
    :class:`~medprune.data.polar.LabelRule` (``ConfigError`` for bad values); every invalid
    annotation is listed in one :class:`~medprune.errors.DataError` (nothing is indexed then).

    Example::

        index_cccv("/data/CCCV2017", "cccv_index", catheter_depth=40)
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: CCCV root folder not found (expected ROOT/annotations.csv and ROOT/frames/)")
    rule = LabelRule(tissue_threshold, plaque_threshold, catheter_depth)
    try:
        window = (float(dicom_window[0]), float(dicom_window[1]))
        ReaderOptions(dicom_window=window)
    except (TypeError, ValueError, IndexError):  # ConfigError is a ValueError
        raise ConfigError(f"dicom_window: expected finite (low, high) with low < high, got {dicom_window!r}") from None
    out = Path(out_dir)
    frames = discover_frames(root / frames_dir)
    arcs = read_annotations(root / annotations, frames, root)
    rows: list[dict[str, object]] = []
    records: list[FrameBoxes] = []
    problems: list[str] = []
    empty_arcs = 0
    for key in sorted(frames, key=lambda k: (_natural_key(k[0]), k[1])):
        ref = frames[key]
        intervals = arcs.get(key, [])
        levels = _levels(ref, window)
        height, width = levels.shape
        narrow = [iv for iv in intervals if not interval_to_columns(iv, width).any()]
        for start, end in narrow:
            problems.append(
                f"{ref.name}: interval ({start:g}, {end:g}) holds no column centre of this {width}-column frame "
                f"({360.0 / width:g} degrees per column)"
            )
        if narrow:
            continue
        labels = rule.apply(levels, intervals, where=f"{ref.path} ({ref.name})")
        mask = f"masks/{ref.pullback}/frame_{ref.frame:04d}.png"
        _save_png(out / mask, labels)
        boxes, owners = plaque_boxes(labels, intervals)
        for index, (start, end) in enumerate(intervals):
            if index not in owners:
                empty_arcs += 1
                logger.warning(
                    "%s: interval (%g, %g) holds no pixel >= %d below row %d; no box",
                    ref.name, start, end, rule.plaque_threshold, rule.catheter_depth,
                )
        path = Path(os.path.abspath(ref.path))
        relative = Path(os.path.relpath(path, os.path.abspath(out))).as_posix()
        records.append(FrameBoxes(relative, ref.frame, ref.pullback, height, width, intervals, boxes, owners, mask))
        rows.append(
            {
                "path": path,
                "label": "plaque" if intervals else "normal",
                "patient_id": ref.pullback,
                "mask": mask,
                "frame": ref.frame,
            }
        )
    if problems:
        raise DataError(_listing(root / annotations, problems))
    write_boxes(out / "boxes.json", records)
    manifest = write_manifest(out / "manifest.csv", rows)
    plaque = sum(1 for r in rows if r["label"] == "plaque")
    logger.info(
        "indexed %d frames of %d pullbacks (%d with plaque, %d arcs, %d without plaque pixels) from %s -> %s",
        len(rows), len({r["patient_id"] for r in rows}), plaque, sum(len(v) for v in arcs.values()), empty_arcs,
        root, manifest,
    )
    return manifest
