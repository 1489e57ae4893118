"""DMR-IR (Visual Lab, UFF) → medprune manifest.

DMR-IR is a breast thermography database (FLIR SC620, static and dynamic protocols). Its
on-disk layout is **not confirmed** here; :func:`index_dmr` ASSUMES::

    ROOT/
      <class>/                 healthy | sick, case-insensitive, with aliases:
                                 healthy: healthy, normal, saudavel, saudaveis
                                 sick:    sick, doente, doentes, cancer, abnormal
        <patient>/             folder name = patient id
          <protocol>/          static | dynamic (aliases estatico, dinamico); optional:
            <frame>.txt          files directly under <patient>/ get protocol "unknown"
            <frame>.jpg|.png     and are always kept (the protocol filter cannot apply)

``.txt`` files are temperature matrices (°C per pixel); ``.jpg/.jpeg/.png`` are the camera's
rendered images. When a frame exists in both forms (same stem), ``prefer`` picks one.
Folders and files that do not fit are skipped and counted in the log. If your copy is laid out
differently, write the manifest yourself (schema in ``data_manifests/README.md``).

A 2023 audit found 365 anomalies in DMR-IR; list what you exclude in an exclusions file
(``data_manifests/dmr_exclusions.txt`` is a template): one entry per line, ``#`` comments; an
entry containing ``/`` is a path relative to ROOT — a file (``sick/P7/static/f3.txt``), a frame
without suffix excluding all its forms (``sick/P7/static/f3``) or a folder excluding everything
under it (``sick/P7/dynamic``) — and any other entry is a patient id.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Literal

from medprune.data.manifest import write_manifest
from medprune.errors import DataError

__all__ = ["CLASS_ALIASES", "PROTOCOL_ALIASES", "index_dmr", "read_exclusions"]

logger = logging.getLogger(__name__)

CLASS_ALIASES: dict[str, str] = {
    "healthy": "healthy",
    "normal": "healthy",
    "saudavel": "healthy",
    "saudaveis": "healthy",
    "sick": "sick",
    "doente": "sick",
    "doentes": "sick",
    "cancer": "sick",
    "abnormal": "sick",
}
PROTOCOL_ALIASES: dict[str, str] = {
    "static": "static",
    "estatico": "static",
    "dynamic": "dynamic",
    "dinamico": "dynamic",
}
_TXT = ".txt"
_IMAGES = (".png", ".jpg", ".jpeg")  # preference order when one stem has several image files


def _natural_key(text: str) -> list[object]:
    """Sort ``frame2`` before ``frame10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def read_exclusions(path: str | os.PathLike[str]) -> tuple[set[str], set[str]]:
    """Parse an exclusions file into ``(patient_ids, relative_paths)``.

    One entry per line; ``#`` starts a comment; blank lines are ignored. Entries containing
    ``/`` (or ``\\``) are paths relative to the DMR root, others are patient ids.
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{file}: exclusions file not found")
    patients: set[str] = set()
    paths: set[str] = set()
    for line in file.read_text(encoding="utf-8-sig").splitlines():
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if "/" in entry or "\\" in entry:
            paths.add(entry.replace("\\", "/").strip("/"))
        else:
            patients.add(entry)
    return patients, paths


def _excluded(relative: str, patient: str, patients: set[str], paths: set[str], hits: Counter[str]) -> bool:
    if patient in patients:
        hits[patient] += 1
        return True
    stem = relative.rsplit(".", 1)[0]
    for entry in paths:
        if relative == entry or stem == entry or relative.startswith(entry + "/"):
            hits[entry] += 1
            return True
    return False


def _pick(files: dict[str, Path], prefer: Literal["txt", "image"]) -> Path:
    """One file per frame stem: the preferred form when both exist."""
    image = next((files[s] for s in _IMAGES if s in files), None)
    text = files.get(_TXT)
    if prefer == "txt":
        return text or image  # type: ignore[return-value]
    return image or text  # type: ignore[return-value]


def _class_folders(root: Path) -> list[tuple[Path, str]]:
    found = [
        (child, CLASS_ALIASES[child.name.lower()])
        for child in sorted(root.iterdir())
        if child.is_dir() and child.name.lower() in CLASS_ALIASES
    ]
    if not found:
        present = sorted(c.name for c in root.iterdir() if c.is_dir())[:10]
        expected = " or ".join(
            f"{label} ({', '.join(alias for alias, to in CLASS_ALIASES.items() if to == label)})"
            for label in ("healthy", "sick")
        )
        raise DataError(
            f"{root}: no class folders found; expected ROOT/<class>/<patient>/[static|dynamic]/ with <class> "
            f"{expected}, case-insensitive; found folders: {', '.join(present) or '(none)'}"
        )
    return found


def _patient_files(patient_dir: Path) -> list[tuple[str, Path]]:
    """``(protocol, file)`` for every file of one patient, per the assumed layout."""
    files: list[tuple[str, Path]] = []
    for child in sorted(patient_dir.iterdir()):
        if child.is_dir():
            protocol = PROTOCOL_ALIASES.get(child.name.lower())
            if protocol is None:
                logger.warning("skipping %s: not a protocol folder (%s)", child, ", ".join(sorted(PROTOCOL_ALIASES)))
                continue
            files.extend((protocol, f) for f in sorted(child.iterdir()) if f.is_file())
        elif child.is_file():
            files.append(("unknown", child))
    return files


def index_dmr(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    exclusions: str | os.PathLike[str] | None = None,
    prefer: Literal["txt", "image"] = "txt",
    protocols: tuple[str, ...] = ("static", "dynamic"),
) -> Path:
    """Index a DMR-IR folder (ASSUMED layout, see the module docstring) into a manifest CSV.

    Columns: ``path`` (relative to the manifest), ``label`` (healthy/sick), ``patient_id``
    (patient folder name), ``view`` (protocol: static/dynamic/unknown), ``frame`` (file stem).
    Files of protocols not in ``protocols`` are skipped; files without a protocol folder are kept
    as ``unknown``. Raises :class:`~medprune.errors.DataError` naming the path and what was
    expected when the root is missing, no class folder or data file is found, or nothing is
    left after exclusions.

    Example::

        index_dmr("/data/DMR-IR", "dmr.csv", exclusions="data_manifests/dmr_exclusions.txt")
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: DMR-IR root folder not found (expected ROOT/<healthy|sick>/<patient>/...)")
    if prefer not in ("txt", "image"):
        raise DataError(f"prefer: expected 'txt' or 'image', got {prefer!r}")
    wanted = {PROTOCOL_ALIASES.get(p.lower(), p.lower()) for p in protocols}
    unknown = wanted - {"static", "dynamic", "unknown"}
    if unknown:
        raise DataError(f"protocols: unknown {', '.join(sorted(unknown))}; expected static and/or dynamic")
    excluded_patients, excluded_paths = read_exclusions(exclusions) if exclusions is not None else (set(), set())
    hits: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    frames: dict[tuple[str, str, str, str, str], dict[str, Path]] = defaultdict(dict)
    labels_of: dict[str, set[str]] = defaultdict(set)
    found_files = 0
    for class_dir, label in _class_folders(root):
        for patient_dir in sorted(class_dir.iterdir(), key=lambda p: _natural_key(p.name)):
            if not patient_dir.is_dir():
                skipped["files directly under a class folder"] += 1
                continue
            patient = patient_dir.name
            for protocol, file in _patient_files(patient_dir):
                suffix = file.suffix.lower()
                if suffix != _TXT and suffix not in _IMAGES:
                    skipped[f"{suffix or 'no-suffix'} files"] += 1
                    continue
                found_files += 1
                if protocol != "unknown" and protocol not in wanted:
                    skipped[f"{protocol} protocol (not requested)"] += 1
                    continue
                relative = file.relative_to(root).as_posix()
                if _excluded(relative, patient, excluded_patients, excluded_paths, hits):
                    continue
                labels_of[patient].add(label)
                frames[(label, patient, protocol, str(file.parent), file.stem)][suffix] = file
    if found_files == 0:
        raise DataError(
            f"{root}: no .txt/.jpg/.jpeg/.png files found under the class folders "
            "(expected ROOT/<class>/<patient>/[static|dynamic]/<frame>.txt|.jpg|.png)"
        )
    _log_exclusions(exclusions, excluded_patients | excluded_paths, hits)
    if not frames:
        raise DataError(
            f"{root}: nothing left to index after exclusions ({exclusions}) and protocol filter "
            f"({', '.join(sorted(wanted))}); {found_files} data file(s) were found"
        )
    for patient, labels in labels_of.items():
        if len(labels) > 1:
            logger.warning("patient %s appears under several classes: %s", patient, ", ".join(sorted(labels)))
    for reason, count in sorted(skipped.items()):
        logger.info("skipped %d %s", count, reason)
    rows = []
    for key in sorted(frames, key=lambda k: (k[0], _natural_key(k[1]), k[2], k[3], _natural_key(k[4]))):
        label, patient, protocol, _, stem = key
        file = _pick(frames[key], prefer)
        rows.append(
            {
                "path": Path(os.path.abspath(file)),
                "label": label,
                "patient_id": patient,
                "view": protocol,
                "frame": stem,
            }
        )
    manifest = write_manifest(out, rows)
    logger.info("indexed %d files of %d patients from %s -> %s", len(rows), len(labels_of), root, manifest)
    return manifest


def _log_exclusions(source: object, entries: set[str], hits: Counter[str]) -> None:
    unused = sorted(entries - set(hits))
    if unused:
        logger.warning(
            "%s: %d exclusion entr%s matched nothing (typo?): %s",
            source,
            len(unused),
            "y" if len(unused) == 1 else "ies",
            ", ".join(unused[:20]),
        )
    if hits:
        logger.info("excluded %d file(s) by %d exclusion entries", sum(hits.values()), len(hits))
