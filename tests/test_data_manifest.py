"""Manifests: parsing, every malformed-manifest error, writing, and the bad-sample check."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medprune.data.manifest import (
    BadSample,
    check_samples,
    format_bad_samples,
    read_manifest,
    write_bad_samples,
    write_manifest,
)
from medprune.data.readers import ReaderOptions
from medprune.errors import DataError


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _good_png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(path)
    return path


def test_read_manifest_resolves_paths_and_keeps_extras(tmp_path: Path) -> None:
    absolute = tmp_path / "elsewhere" / "b.png"
    (tmp_path / "data").mkdir()
    manifest = _write(
        tmp_path / "data" / "m.csv",
        "\ufeffpath,label,patient_id,split,view\n"
        "imgs/a.png,healthy,P1,,frontal\n"
        "\n"
        f"{absolute},sick,P2,Test,left\n"
        "../up.png , healthy , P3 , val , right\n",
    )
    samples = read_manifest(manifest)
    assert [s.row for s in samples] == [1, 2, 3]
    assert samples[0].path == tmp_path / "data" / "imgs" / "a.png"
    assert samples[1].path == absolute
    assert samples[2].path == tmp_path / "up.png"
    assert [s.split for s in samples] == [None, "test", "val"]
    assert [s.label for s in samples] == ["healthy", "sick", "healthy"]
    assert samples[2].patient_id == "P3"
    assert samples[0].extras == {"view": "frontal"}
    assert samples[0].as_row()["split"] == "" and samples[1].as_row()["view"] == "left"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"m\.csv: empty manifest"),
        ("path,label,patient_id\n", r"m\.csv: empty manifest \(header only"),
        ("path,label\na.png,x\n", r"m\.csv: missing required column\(s\) patient_id; found path, label"),
        ("path,label,patient_id,split\na.png,x,P1,\nb.png,x,P2,training\n", r"m\.csv row 2: bad split 'training'"),
        ("path,label,patient_id\na.png,x,P1\nb.png,x,\n", r"m\.csv row 2: empty patient_id"),
        ("path,label,patient_id\na.png,,P1\n", r"m\.csv row 1: empty label"),
        ("path,label,patient_id\na.png,x,P1,extra\n", r"m\.csv row 1: 4 fields, but the header has 3"),
        ("path,label,patient_id,label\na,b,c,d\n", r"m\.csv: duplicated column\(s\) label"),
    ],
)
def test_read_manifest_errors_name_file_and_row(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_manifest(_write(tmp_path / "m.csv", text))


def test_read_manifest_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nothere\.csv: manifest not found"):
        read_manifest(tmp_path / "nothere.csv")


def test_write_manifest_round_trip_relative_paths(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "m.csv"
    rows = [
        {"path": tmp_path / "sub" / "x" / "a.png", "label": "sick", "patient_id": "P1", "view": "frontal"},
        {"path": "b.png", "label": "healthy", "patient_id": "P2", "split": "test", "frame": 3},
    ]
    assert write_manifest(out, rows) == out
    lines = out.read_text().splitlines()
    assert lines[0] == "path,label,patient_id,view,split,frame"
    assert lines[1] == "x/a.png,sick,P1,frontal,,"
    assert lines[2] == "b.png,healthy,P2,,test,3"
    back = read_manifest(out)
    assert back[0].path == tmp_path / "sub" / "x" / "a.png"
    assert back[1].split == "test" and back[1].extras == {"view": "", "frame": "3"}
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.csv"]  # no temp file left behind
    again = tmp_path / "again.csv"
    write_manifest(again, [s.as_row() for s in back])
    assert [s.path for s in read_manifest(again)] == [s.path for s in back]


def test_write_manifest_refuses_rows_without_required_values(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"m\.csv: row 2 to write has no patient_id"):
        write_manifest(
            tmp_path / "m.csv", [{"path": "a", "label": "x", "patient_id": "P"}, {"path": "b", "label": "x"}]
        )


def _bad_manifest(tmp_path: Path) -> Path:
    _good_png(tmp_path / "ok1.png")
    _good_png(tmp_path / "ok2.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    np.save(tmp_path / "nan.npy", np.full((8, 8), np.nan))
    np.save(tmp_path / "four.npy", np.zeros((8, 8, 4), np.float32))
    _good_png(tmp_path / "wronglabel.png")
    return _write(
        tmp_path / "m.csv",
        "path,label,patient_id\n"
        "ok1.png,healthy,P1\n"  # 1
        "empty.png,healthy,P1\n"  # 2
        "missing.png,sick,P2\n"  # 3
        "corrupt.png,sick,P2\n"  # 4
        "ok2.png,sick,P3\n"  # 5
        "nan.npy,healthy,P3\n"  # 6
        "four.npy,healthy,P4\n"  # 7
        "wronglabel.png,cancer,P4\n"  # 8
        "empty.png,tumour,P5\n",  # 9: two problems at once
    )


def test_check_samples_lists_every_bad_row(tmp_path: Path) -> None:
    manifest = _bad_manifest(tmp_path)
    bad = check_samples(read_manifest(manifest), ["healthy", "sick"], ReaderOptions())
    assert [b.row for b in bad] == [2, 3, 4, 6, 7, 8, 9]
    reasons = {b.row: b.reason for b in bad}
    assert reasons[2] == "zero-byte file"
    assert reasons[3] == "file not found"
    assert reasons[4].startswith("unreadable or corrupt image")
    assert reasons[6] == "contains NaN or infinite values"
    assert reasons[7] == "wrong shape (8, 8, 4); expected (H, W) or (H, W, 3)"
    assert reasons[8] == "label 'cancer' is not one of the classes healthy, sick"
    assert reasons[9] == "label 'tumour' is not one of the classes healthy, sick; zero-byte file"
    assert bad[1].path == tmp_path / "missing.png"


def test_check_samples_all_good_is_empty(tmp_path: Path) -> None:
    _good_png(tmp_path / "a.png")
    manifest = _write(tmp_path / "m.csv", "path,label,patient_id\na.png,x,P1\na.png,y,P2\n")
    assert check_samples(read_manifest(manifest), ["x", "y"]) == []


@pytest.mark.parametrize("progress", [True, False])
def test_check_samples_progress_bar_follows_the_switch(tmp_path: Path, capsys, monkeypatch, progress: bool) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # bars are drawn on a terminal only
    _good_png(tmp_path / "a.png")
    rows = "".join(f"a.png,x,P{i}\n" for i in range(250))  # above the 200-sample threshold
    manifest = _write(tmp_path / "m.csv", "path,label,patient_id\n" + rows)
    assert check_samples(read_manifest(manifest), ["x"], progress=progress) == []
    assert ("checking samples" in capsys.readouterr().err) is progress


def test_format_and_write_bad_samples(tmp_path: Path) -> None:
    manifest = _bad_manifest(tmp_path)
    bad = check_samples(read_manifest(manifest), ["healthy", "sick"])
    text = format_bad_samples(bad, manifest)
    lines = text.splitlines()
    assert len(lines) == 7
    assert lines[0] == "empty.png (row 2): zero-byte file"
    assert lines[1] == "missing.png (row 3): file not found"
    outside = format_bad_samples([BadSample(Path("/elsewhere/x.png"), 4, "zero-byte file")], manifest)
    assert outside == "/elsewhere/x.png (row 4): zero-byte file"
    out = write_bad_samples(bad, tmp_path / "run" / "bad_samples.csv")
    with out.open() as fh:
        records = list(csv.DictReader(fh))
    assert [r["row"] for r in records] == ["2", "3", "4", "6", "7", "8", "9"]
    assert records[5] == {
        "path": str(tmp_path / "wronglabel.png"),
        "row": "8",
        "reason": "label 'cancer' is not one of the classes healthy, sick",
    }


def _dicom_corpus(tmp_path: Path) -> Path:
    """A PACS-like folder: pydicom's odd and broken test files, some renamed without a suffix."""
    import shutil

    import pydicom.data

    source = Path(pydicom.data.DATA_ROOT) / "test_files"
    copies = {
        "IM000001": "MR_small.dcm",  # good, no suffix
        "1.2.840.113619.2.55.3.1": "examples_palette.dcm",  # good, a UID "suffix"
        "ls.dcm": "MR_small_jpeg_ls_lossless.dcm",  # good with the dicom extra
        "bad_vr.dcm": "badVR.dcm",  # NumberOfFrames='1A'
        "IM000002": "MR_truncated.dcm",
        "plan.dcm": "rtplan.dcm",
        "README": "dicomdirtests/TINY_ALPHA/README",
        "DICOMDIR": "dicomdirtests/DICOMDIR",
        "lossy12.dcm": "JPEG-lossy.dcm",
    }
    for name, original in copies.items():
        shutil.copyfile(source / original, tmp_path / name)
    rows = "".join(f"{name},healthy,P{i}\n" for i, name in enumerate(copies))
    return _write(tmp_path / "m.csv", "path,label,patient_id\n" + rows)


def test_check_samples_over_odd_dicom_lists_each_bad_file_without_raising(tmp_path: Path, capsys) -> None:
    bad = check_samples(read_manifest(_dicom_corpus(tmp_path)), ["healthy"])
    reasons = {b.path.name: b.reason for b in bad}
    assert [b.row for b in bad] == [4, 5, 6, 7, 8, 9]
    assert reasons["bad_vr.dcm"] == "invalid NumberOfFrames '1A' (pydicom: Invalid value for VR IS: '1A'.)"
    assert reasons["IM000002"].startswith("truncated pixel data: 8130 bytes where")
    assert reasons["plan.dcm"].startswith("not an image: RT Plan Storage")
    assert reasons["README"].startswith("unsupported file type '(no suffix)' and not DICOM either")
    assert reasons["DICOMDIR"].startswith("not an image: Media Storage Directory Storage")
    assert reasons["lossy12.dcm"].startswith("cannot decode transfer syntax 'JPEG Extended (Process 2 and 4)'")
    assert all("\n" not in r and "force=True" not in r for r in reasons.values())
    assert capsys.readouterr().err == ""
    lines = format_bad_samples(bad, tmp_path / "m.csv").splitlines()
    assert len(lines) == 6 and lines[0].startswith("bad_vr.dcm (row 4): invalid NumberOfFrames '1A'")


def test_check_samples_lets_a_medprune_bug_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import medprune.data.readers as readers

    np.save(tmp_path / "a.npy", np.full((8, 8), 0.5))
    manifest = _write(tmp_path / "m.csv", "path,label,patient_id\na.npy,x,P1\n")
    monkeypatch.setattr(readers, "_float_rule", None)  # a bug, not a bad file: it must not become a BadSample
    with pytest.raises(TypeError):
        check_samples(read_manifest(manifest), ["x"])
