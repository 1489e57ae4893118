"""CCCV2017-style IVOCT adapter: image frames and a multi-frame DICOM pullback, masks by the 60/90
rule on hand-made frames, boxes, every invalid annotation refused naming frame and interval, and
the phantom → adapter round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medprune.data.manifest import read_manifest
from medprune.data.phantom_ivoct import make_ivoct_phantom
from medprune.data.polar import PLAQUE, read_boxes
from medprune.errors import ConfigError, DataError
from pipelines.ivoct import index_cccv

# A 12 x 36 frame (10 degrees per column): catheter row 0 bright, a plaque band in rows 4-5.
# Levels: row 0 = 200 (catheter), rows 4-5 = 120 (>= 90), rows 6-7 = 70 (tissue), else 20.
ROWS, COLS = 12, 36


def _frame(band: float = 120.0) -> np.ndarray:
    img = np.full((ROWS, COLS), 20, np.uint8)
    img[0] = 200
    img[4:6] = band
    img[6:8] = 70
    return img


def _expected(arc_columns: list[int], catheter_depth: int = 0) -> np.ndarray:
    labels = np.zeros((ROWS, COLS), np.uint8)
    labels[0] = 1
    labels[4:8] = 1
    labels[0, arc_columns] = 2
    labels[4:6, arc_columns] = 2
    labels[:catheter_depth] = 0
    return labels


def _write_csv(path: Path, header: str, rows: list[str]) -> None:
    path.write_text("\n".join([header, *rows]) + "\n")


@pytest.fixture()
def cccv(tmp_path: Path) -> Path:
    """ROOT with one image pullback (3 PNG frames, a wrapping arc) and junk to skip."""
    root = tmp_path / "CCCV"
    folder = root / "frames" / "PB_A"
    folder.mkdir(parents=True)
    for k in (0, 1, 2):
        Image.fromarray(_frame()).save(folder / f"img_{k:03d}.png")
    (folder / "notes.txt").write_text("not a frame")
    (folder / ".cover.png").write_bytes(b"hidden")
    (root / "frames" / ".ipynb_checkpoints").mkdir()
    _write_csv(root / "annotations.csv", "pullback,frame,start_deg,end_deg", ["PB_A,1,350,20", "PB_A,2,100,130"])
    return root


def _dicom(path: Path, frames: np.ndarray) -> Path:
    """A multi-frame 8-bit MONOCHROME2 DICOM written with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["ivoct-test"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.NumberOfFrames = frames.shape[0]
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = frames.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_image_frames_manifest_masks_and_boxes(cccv: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    manifest = index_cccv(cccv, out)
    samples = read_manifest(manifest)
    assert [(s.path.name, s.label, s.patient_id, s.extras["frame"]) for s in samples] == [
        ("img_000.png", "normal", "PB_A", "0"),
        ("img_001.png", "plaque", "PB_A", "1"),
        ("img_002.png", "plaque", "PB_A", "2"),
    ]
    assert manifest.read_text().splitlines()[0] == "path,label,patient_id,mask,frame"
    masks = [np.asarray(Image.open(s.mask)) for s in samples]
    assert samples[1].mask == out / "masks" / "PB_A" / "frame_0001.png"
    # the literal rule (catheter_depth 0): catheter pixels inside an arc are plaque too
    assert np.array_equal(masks[0], _expected([]))
    assert np.array_equal(masks[1], _expected([35, 0, 1]))  # (350, 20): centres 355, 5, 15
    assert np.array_equal(masks[2], _expected([10, 11, 12]))
    boxes = read_boxes(out / "boxes.json")
    assert [b.frame for b in boxes] == [0, 1, 2]
    assert boxes[1].intervals == [(350.0, 20.0)]
    # a wrapping arc: two boxes split at the seam, depth = plaque rows 0..5
    assert boxes[1].boxes == [(35.0, 0.0, 36.0, 6.0), (0.0, 0.0, 2.0, 6.0)] and boxes[1].box_interval == [0, 0]
    assert (boxes[1].height, boxes[1].width) == (ROWS, COLS)
    assert (out / boxes[1].path).resolve() == (cccv / "frames" / "PB_A" / "img_001.png").resolve()


def test_catheter_depth_and_thresholds_are_configurable(cccv: Path, tmp_path: Path) -> None:
    samples = read_manifest(index_cccv(cccv, tmp_path / "o1", catheter_depth=1))
    mask = np.asarray(Image.open(samples[1].mask))
    assert np.array_equal(mask, _expected([35, 0, 1], catheter_depth=1))
    assert read_boxes(tmp_path / "o1" / "boxes.json")[1].boxes == [(35.0, 4.0, 36.0, 6.0), (0.0, 4.0, 2.0, 6.0)]
    # plaque threshold above the band's 120: no plaque pixel, no box (the label stays "plaque")
    samples = read_manifest(index_cccv(cccv, tmp_path / "o2", catheter_depth=1, plaque_threshold=121))
    assert not (np.asarray(Image.open(samples[1].mask)) == PLAQUE).any() and samples[1].label == "plaque"
    assert read_boxes(tmp_path / "o2" / "boxes.json")[1].boxes == []
    # tissue threshold above 70: rows 6-7 become background
    samples = read_manifest(index_cccv(cccv, tmp_path / "o3", tissue_threshold=71))
    assert np.asarray(Image.open(samples[0].mask))[6:8].max() == 0
    with pytest.raises(ConfigError, match="tissue_threshold: 100 is above plaque_threshold 90"):
        index_cccv(cccv, tmp_path / "o4", tissue_threshold=100)


def test_multi_frame_dicom_pullback(tmp_path: Path) -> None:
    root = tmp_path / "CCCV"
    stack = np.stack([_frame(), _frame(band=95.0), _frame(band=85.0)])
    _dicom(root / "frames" / "PB_D.dcm", stack)
    _write_csv(
        root / "annotations.csv",
        "pullback,frame,start_deg,end_deg,image",
        ["PB_D,1,0,30,frames/PB_D.dcm", "PB_D,2,0,30,", "PB_D,1,300,330,frames/PB_D.dcm"],
    )
    samples = read_manifest(index_cccv(root, tmp_path / "out", catheter_depth=1))
    assert [(s.path.name, s.extras["frame"], s.label, s.patient_id) for s in samples] == [
        ("PB_D.dcm", "0", "normal", "PB_D"),
        ("PB_D.dcm", "1", "plaque", "PB_D"),
        ("PB_D.dcm", "2", "plaque", "PB_D"),
    ]
    masks = [np.asarray(Image.open(s.mask)) for s in samples]
    assert np.array_equal(masks[0], _expected([], catheter_depth=1))
    assert np.array_equal(masks[1], _expected([0, 1, 2, 30, 31, 32], catheter_depth=1))  # 95 >= 90
    assert not (masks[2] == PLAQUE).any()  # 85 < 90: tissue
    boxes = read_boxes(tmp_path / "out" / "boxes.json")
    assert boxes[1].intervals == [(0.0, 30.0), (300.0, 330.0)]
    assert boxes[1].boxes == [(0.0, 4.0, 3.0, 6.0), (30.0, 4.0, 33.0, 6.0)]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("PB_A,1,abc,20", r"row 1 \(pullback PB_A, frame 1\): interval \(abc, 20\): start_deg and end_deg must be"),
        ("PB_A,1,nan,20", r"row 1 \(pullback PB_A, frame 1\): interval \(nan, 20\): angles must be finite"),
        ("PB_A,1,10,400", r"row 1 \(pullback PB_A, frame 1\): interval \(10, 400\): angles must lie in \[0, 360\]"),
        ("PB_A,1,-5,20", r"row 1 \(pullback PB_A, frame 1\): interval \(-5, 20\): angles must lie in \[0, 360\]"),
        ("PB_A,1,30,30", r"row 1 \(pullback PB_A, frame 1\): interval \(30, 30\): start and end are the same"),
        ("PB_A,1,,20", r"row 1 \(pullback PB_A, frame 1\): interval \(\?, 20\): start_deg and end_deg must be"),
        ("PB_A,9,10,20", r"row 1 \(pullback PB_A, frame 9\): interval \(10, 20\): unknown frame "
                         r"\(pullback PB_A has frames 0\.\.2 \(3\)\)"),
        ("PB_Z,0,10,20", r"row 1 \(pullback PB_Z, frame 0\): interval \(10, 20\): unknown frame "
                         r"\(no pullback 'PB_Z' under the frames folder\)"),
        ("PB_A,x,10,20", r"row 1 \(pullback PB_A, frame x\): interval \(10, 20\): frame must be an integer >= 0"),
        ("PB_A,1,12,14", r"pullback PB_A, frame 1: interval \(12, 14\) holds no column centre of this "
                         r"36-column frame \(10 degrees per column\)"),
    ],
)
def test_each_invalid_annotation_is_refused_naming_frame_and_interval(
    cccv: Path, tmp_path: Path, row: str, message: str
) -> None:
    _write_csv(cccv / "annotations.csv", "pullback,frame,start_deg,end_deg", [row])
    with pytest.raises(DataError, match=message) as info:
        index_cccv(cccv, tmp_path / "out")
    assert str(info.value).startswith(f"{cccv / 'annotations.csv'}: 1 invalid annotation(s):\n")
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_overlapping_arcs_and_wrong_image_are_refused_all_at_once(cccv: Path, tmp_path: Path) -> None:
    _write_csv(
        cccv / "annotations.csv",
        "pullback,frame,start_deg,end_deg,image",
        [
            "PB_A,1,350,20,",
            "PB_A,1,10,40,",  # overlaps row 1 across the seam
            "PB_A,1,20,30,",  # touches row 1: allowed
            "PB_A,2,10,40,frames/PB_A/img_001.png",  # image names frame 1, row says frame 2
            "PB_A,0,10,20,frames/PB_A/img_000.png",  # fine
        ],
    )
    with pytest.raises(DataError) as info:
        index_cccv(cccv, tmp_path / "out")
    lines = str(info.value).splitlines()
    assert lines[0] == f"{cccv / 'annotations.csv'}: 2 invalid annotation(s):"
    assert lines[1] == (
        "annotations.csv row 2 (pullback PB_A, frame 1): interval (10, 40) overlaps interval (350, 20) of row 1"
    )
    assert lines[2] == (
        "annotations.csv row 4 (pullback PB_A, frame 2): interval (10, 40): image 'frames/PB_A/img_001.png' "
        "is not that frame's file (img_002.png)"
    )


def test_layout_errors_name_the_file(tmp_path: Path) -> None:
    root = tmp_path / "CCCV"
    with pytest.raises(DataError, match="CCCV root folder not found"):
        index_cccv(root, tmp_path / "out")
    (root / "frames" / "PB1").mkdir(parents=True)
    with pytest.raises(DataError, match=r"frames: no frames found"):
        index_cccv(root, tmp_path / "out")
    Image.fromarray(_frame()).save(root / "frames" / "PB1" / "frame_1.png")
    with pytest.raises(DataError, match=r"annotations.csv: annotation file not found"):
        index_cccv(root, tmp_path / "out")
    (root / "annotations.csv").write_text("pullback,frame,start\nPB1,1,3\n")
    with pytest.raises(DataError, match=r"annotations.csv: missing column\(s\) start_deg, end_deg"):
        index_cccv(root, tmp_path / "out")
    Image.fromarray(_frame()).save(root / "frames" / "PB1" / "frame_01.jpg")
    with pytest.raises(DataError, match=r"frame_1.png: frame 1 of pullback PB1 is also frame_01.jpg"):
        index_cccv(root, tmp_path / "out")
    (root / "frames" / "PB1" / "frame_01.jpg").unlink()
    Image.fromarray(_frame()).save(root / "frames" / "PB1" / "cover.png")
    with pytest.raises(DataError, match=r"cover.png: cannot tell the frame number"):
        index_cccv(root, tmp_path / "out")


def test_phantom_round_trip_reproduces_its_masks_and_boxes(tmp_path: Path) -> None:
    phantom = make_ivoct_phantom(tmp_path / "phantom", patients=4, frames=6, size=(64, 128), seed=3).parent
    original = read_manifest(phantom / "manifest.csv")
    out = tmp_path / "indexed"
    indexed = read_manifest(index_cccv(phantom, out, catheter_depth=64 // 16))
    assert [(s.path, s.label, s.patient_id, s.extras["frame"]) for s in indexed] == [
        (s.path, s.label, s.patient_id, s.extras["frame"]) for s in original
    ]
    assert any(s.label == "plaque" for s in indexed) and any(s.label == "normal" for s in indexed)
    for a, b in zip(original, indexed, strict=True):
        assert np.array_equal(np.asarray(Image.open(a.mask)), np.asarray(Image.open(b.mask)))
    ours = json.loads((out / "boxes.json").read_text())["frames"]
    theirs = json.loads((phantom / "boxes.json").read_text())["frames"]
    keys = ("frame", "pullback", "height", "width", "intervals", "boxes", "box_interval")
    assert [{k: f[k] for k in keys} for f in ours] == [{k: f[k] for k in keys} for f in theirs]
    assert sum(len(f["boxes"]) for f in ours) > 0
