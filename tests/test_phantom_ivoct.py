"""The SYNTHETIC IVOCT phantom: determinism, plaque arcs (small, large, wrapping), masks by the 60/90
rule, annotations ↔ masks ↔ boxes, pullbacks as patients, difficulty and speed."""

from __future__ import annotations

import csv
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medprune.data.manifest import read_manifest
from medprune.data.phantom_ivoct import make_ivoct_phantom
from medprune.data.phantoms import PHANTOMS, make_phantom, phantom_kinds
from medprune.data.polar import (
    PLAQUE,
    LabelRule,
    check_interval,
    interval_iou,
    interval_length,
    intervals_to_columns,
    plaque_boxes,
    read_boxes,
)
from medprune.errors import ConfigError

SIZE = (128, 256)
CATHETER = SIZE[0] // 16  # the default catheter_depth


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The default phantom (20 pullbacks x 10 frames, 128 x 256) and the CPU seconds it took."""
    root = tmp_path_factory.mktemp("ivoct")
    start = time.process_time()
    make_ivoct_phantom(root, patients=20, frames=10, size=SIZE, seed=0)
    return root, time.process_time() - start


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _annotations(root: Path) -> dict[tuple[str, int], list[tuple[float, float]]]:
    arcs: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    with open(root / "annotations.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            arcs[(row["pullback"], int(row["frame"]))].append(check_interval((row["start_deg"], row["end_deg"])))
    return arcs


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_default_phantom_is_fast(phantom) -> None:
    # CPU time of this process (1.8 s measured on the dev machine for 200 frames + 200 masks)
    _, seconds = phantom
    assert seconds < 6.0


def test_deterministic_for_a_seed_and_different_across_seeds(tmp_path: Path) -> None:
    kwargs = {"patients": 3, "frames": 4, "size": (64, 96)}
    a = _files(make_ivoct_phantom(tmp_path / "a", seed=5, **kwargs).parent)
    b = _files(make_ivoct_phantom(tmp_path / "b", seed=5, **kwargs).parent)
    c = _files(make_ivoct_phantom(tmp_path / "c", seed=6, **kwargs).parent)
    assert a == b
    assert len(a) == 2 * 12 + 4  # frames, masks, manifest, annotations, boxes, README
    frames = [name for name in a if name.startswith("frames/")]
    assert len(frames) == 12 and all(a[name] != c[name] for name in frames)
    # pullback k does not depend on how many pullbacks there are
    d = _files(make_ivoct_phantom(tmp_path / "d", seed=5, patients=1, frames=4, size=(64, 96)).parent)
    assert all(d[name] == a[name] for name in d if name.startswith(("frames/", "masks/")))


def test_manifest_pullbacks_are_patients_and_labels_follow_annotations(phantom) -> None:
    root, _ = phantom
    samples = read_manifest(root / "manifest.csv")
    arcs = _annotations(root)
    assert len(samples) == 200
    assert {s.patient_id for s in samples} == {f"PB{i:04d}" for i in range(1, 21)}
    for s in samples:
        frame = int(s.extras["frame"])
        assert s.path == root / "frames" / s.patient_id / f"frame_{frame:03d}.png"
        assert s.mask == root / "masks" / s.patient_id / f"frame_{frame:03d}.png"
        assert s.label == ("plaque" if (s.patient_id, frame) in arcs else "normal")
    per_pullback = defaultdict(list)
    for s in samples:
        per_pullback[s.patient_id].append(int(s.extras["frame"]))
    assert all(frames == list(range(10)) for frames in per_pullback.values())
    plaque = sum(s.label == "plaque" for s in samples)
    assert 60 <= plaque <= 140  # plaque_fraction 0.5; seed 0 gives 106
    assert len(samples) - plaque >= 60  # plaque-free frames exist


def test_arcs_small_large_and_wrapping(phantom) -> None:
    root, _ = phantom
    arcs = [iv for ivs in _annotations(root).values() for iv in ivs]
    lengths = np.array([interval_length(iv) for iv in arcs])
    assert len(arcs) == 127  # seed 0
    assert sum(end < start for start, end in arcs) >= 5  # wrap past 360 -> 0 (seed 0: 26)
    assert lengths.min() < 8.0 and (lengths < 15.0).sum() >= 10  # a few degrees: small anchors
    assert lengths.max() > 90.0
    step = 360.0 / SIZE[1]
    assert np.allclose(np.array(arcs) / step, np.round(np.array(arcs) / step))  # on column edges


def test_masks_are_the_60_90_rule_of_frame_and_annotations(phantom) -> None:
    root, _ = phantom
    arcs = _annotations(root)
    rule = LabelRule(60, 90, CATHETER)
    for s in read_manifest(root / "manifest.csv"):
        frame, mask = _png(s.path), _png(s.mask)
        assert frame.dtype == np.uint8 and frame.shape == SIZE
        intervals = arcs.get((s.patient_id, int(s.extras["frame"])), [])
        assert np.array_equal(mask, rule.apply(frame, intervals))


def test_annotations_masks_and_boxes_agree(phantom) -> None:
    root, _ = phantom
    arcs = _annotations(root)
    boxes = {(r.pullback, r.frame): r for r in read_boxes(root / "boxes.json")}
    assert len(boxes) == 200
    for s in read_manifest(root / "manifest.csv"):
        key = (s.patient_id, int(s.extras["frame"]))
        mask = _png(s.mask)
        intervals = arcs.get(key, [])
        annotated = intervals_to_columns(intervals, SIZE[1])
        plaque_columns = (mask == PLAQUE).any(axis=0)
        assert not (plaque_columns & ~annotated).any()  # no plaque outside the arcs
        for interval in intervals:  # every arc holds plaque in nearly all its columns
            columns = intervals_to_columns([interval], SIZE[1])
            assert plaque_columns[columns].mean() >= 0.9
        record = boxes[key]
        assert record.intervals == intervals and record.mask == f"masks/{key[0]}/frame_{key[1]:03d}.png"
        assert (record.boxes, record.box_interval) == plaque_boxes(mask, intervals)
        assert len(record.boxes) == sum(1 if end > start else 2 for start, end in intervals)
    # the arcs of one frame never overlap
    assert all(
        interval_iou(a, b) == 0.0 for ivs in arcs.values() for i, a in enumerate(ivs) for b in ivs[i + 1 :]
    )


def test_consecutive_frames_are_alike_and_plaques_persist(phantom) -> None:
    from scipy.ndimage import uniform_filter

    root, _ = phantom
    samples = read_manifest(root / "manifest.csv")
    smooth = [uniform_filter(_png(s.path).astype(float), 9) for s in samples]  # speckle averaged out
    same = [
        np.abs(smooth[i] - smooth[i + 1]).mean()
        for i in range(199)
        if samples[i].patient_id == samples[i + 1].patient_id
    ]
    other = [np.abs(smooth[i] - smooth[i + 10]).mean() for i in range(190)]  # frame k of the next pullback
    assert np.mean(same) < 0.5 * np.mean(other)  # seed 0: 3.0 vs 11.7
    arcs = _annotations(root)
    matches = [
        max(interval_iou(a, b) for b in arcs[(p, f + 1)])
        for (p, f), ivs in arcs.items()
        if (p, f + 1) in arcs
        for a in ivs
    ]
    assert len(matches) > 50 and np.median(matches) > 0.7  # arcs drift a little from frame to frame


def test_trivial_and_intensity_only_segmentations_fail(phantom) -> None:
    root, _ = phantom
    samples = read_manifest(root / "manifest.csv")
    frames = np.stack([_png(s.path) for s in samples])
    truth = np.stack([_png(s.mask) for s in samples]) == PLAQUE
    below = np.arange(SIZE[0])[None, :, None] >= CATHETER

    def dice(pred: np.ndarray) -> float:
        return 2.0 * (pred & truth).sum() / (pred.sum() + truth.sum())

    assert dice(np.zeros_like(truth)) == 0.0
    best = max(dice((frames >= level) & below) for level in range(60, 256, 5))
    assert best < 0.5  # seed 0: 0.38 at level 160 — speckle, catheter, guidewire, bright normal intima


def test_plaque_fraction_extremes(tmp_path: Path) -> None:
    small = {"patients": 2, "frames": 5, "size": (64, 64)}
    none = read_manifest(make_ivoct_phantom(tmp_path / "none", plaque_fraction=0.0, **small))
    assert {s.label for s in none} == {"normal"}
    assert (tmp_path / "none" / "annotations.csv").read_text().splitlines() == [
        "pullback,frame,image,start_deg,end_deg"
    ]
    every = read_manifest(make_ivoct_phantom(tmp_path / "all", plaque_fraction=1.0, **small))
    assert {s.label for s in every} == {"plaque"}


def test_registry_and_readme(tmp_path: Path) -> None:
    assert "ivoct" in phantom_kinds() and "ivoct" in PHANTOMS
    manifest = make_phantom("ivoct", tmp_path, patients=2, frames=3, size=(64, 64))
    assert len(read_manifest(manifest)) == 6
    readme = (tmp_path / "README.txt").read_text()
    assert readme.startswith("SYNTHETIC IVOCT PHANTOM - NOT PATIENT DATA")
    assert "catheter_depth=4" in readme and "tissue_threshold=60, plaque_threshold=90" in readme


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"patients": 0}, "phantom.patients"),
        ({"frames": 0}, "phantom.frames"),
        ({"size": (16, 64)}, "phantom.size"),
        ({"plaque_fraction": 1.5}, "phantom.plaque_fraction"),
        ({"min_arc_deg": 0}, "phantom.min_arc_deg"),
        ({"min_arc_deg": 50, "max_arc_deg": 20}, "phantom.min_arc_deg"),
        ({"speckle": 0}, "phantom.speckle"),
        ({"catheter_depth": 40}, "phantom.catheter_depth"),
        ({"tissue_threshold": 95}, "tissue_threshold: 95 is above plaque_threshold 90"),
    ],
)
def test_bad_arguments_name_the_key(tmp_path: Path, kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        make_ivoct_phantom(tmp_path, **kwargs)
