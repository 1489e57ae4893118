"""DMR-IR indexer on fake folder trees: aliases, prefer, protocols, exclusions, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from medprune.data.manifest import read_manifest
from medprune.errors import DataError
from pipelines.thermography import index_dmr, read_exclusions

REPO = Path(__file__).resolve().parents[1]


def _touch(path: Path, text: str = "30.0 30.0\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture()
def dmr(tmp_path: Path) -> Path:
    """ROOT with alias-named classes, both protocols, a flat patient, duplicates and junk."""
    root = tmp_path / "DMR"
    for frame in ("frame1", "frame2", "frame10"):
        _touch(root / "Saudaveis" / "101" / "Static" / f"{frame}.txt")
        _touch(root / "Saudaveis" / "101" / "Static" / f"{frame}.jpg")
    _touch(root / "Saudaveis" / "101" / "dynamic" / "d1.png")
    _touch(root / "Saudaveis" / "101" / "notes" / "x.txt")  # not a protocol folder: skipped
    _touch(root / "normal" / "102" / "a.txt")  # no protocol level -> "unknown"
    _touch(root / "normal" / "102" / "a.JPG")
    _touch(root / "DOENTES" / "201" / "estatico" / "s1.txt")
    _touch(root / "DOENTES" / "201" / "dinamico" / "d1.txt")
    _touch(root / "DOENTES" / "201" / "dinamico" / "d2.jpg")
    _touch(root / "cancer" / "202" / "static" / "s1.txt")
    _touch(root / "cancer" / "202" / "static" / "readme.pdf")  # unsupported suffix: skipped
    _touch(root / "cancer" / "stray.txt")  # file directly under a class folder: skipped
    _touch(root / "other" / "999" / "static" / "x.txt")  # not a class folder: ignored
    return root


def _rows(manifest: Path) -> list[tuple[str, str, str, str, str]]:
    return [
        (
            s.path.relative_to(manifest.parent / "DMR").as_posix(),
            s.label,
            s.patient_id,
            s.extras["view"],
            s.extras["frame"],
        )
        for s in read_manifest(manifest)
    ]


def test_index_prefers_txt_and_maps_aliases(dmr: Path) -> None:
    out = index_dmr(dmr, dmr.parent / "m.csv")
    assert out == dmr.parent / "m.csv"
    assert out.read_text().splitlines()[0] == "path,label,patient_id,view,frame"
    assert out.read_text().splitlines()[2] == "DMR/Saudaveis/101/Static/frame1.txt,healthy,101,static,frame1"
    assert _rows(out) == [
        ("Saudaveis/101/dynamic/d1.png", "healthy", "101", "dynamic", "d1"),
        ("Saudaveis/101/Static/frame1.txt", "healthy", "101", "static", "frame1"),
        ("Saudaveis/101/Static/frame2.txt", "healthy", "101", "static", "frame2"),
        ("Saudaveis/101/Static/frame10.txt", "healthy", "101", "static", "frame10"),
        ("normal/102/a.txt", "healthy", "102", "unknown", "a"),
        ("DOENTES/201/dinamico/d1.txt", "sick", "201", "dynamic", "d1"),
        ("DOENTES/201/dinamico/d2.jpg", "sick", "201", "dynamic", "d2"),
        ("DOENTES/201/estatico/s1.txt", "sick", "201", "static", "s1"),
        ("cancer/202/static/s1.txt", "sick", "202", "static", "s1"),
    ]


def test_prefer_image_and_protocol_filter(dmr: Path) -> None:
    rows = _rows(index_dmr(dmr, dmr.parent / "m.csv", prefer="image", protocols=("static",)))
    assert [r[0] for r in rows] == [
        "Saudaveis/101/Static/frame1.jpg",
        "Saudaveis/101/Static/frame2.jpg",
        "Saudaveis/101/Static/frame10.jpg",
        "normal/102/a.JPG",  # protocol unknown: always kept
        "DOENTES/201/estatico/s1.txt",  # no image form: the .txt
        "cancer/202/static/s1.txt",
    ]


def test_exclusions_by_patient_file_frame_and_folder(dmr: Path, caplog: pytest.LogCaptureFixture) -> None:
    exclusions = dmr.parent / "excl.txt"
    exclusions.write_text(
        "# audit findings\n"
        "\n"
        "202   # whole patient\n"
        "Saudaveis/101/Static/frame2.txt\n"  # the .txt only: the .jpg of frame2 takes its place
        "Saudaveis/101/Static/frame10\n"  # every form of frame10
        "DOENTES/201/dinamico/\n"  # a folder
        "typo/404/static/x.txt\n"
    )
    with caplog.at_level(logging.WARNING, logger="pipelines.thermography.dmr"):
        rows = _rows(index_dmr(dmr, dmr.parent / "m.csv", exclusions=exclusions))
    assert [r[0] for r in rows] == [
        "Saudaveis/101/dynamic/d1.png",
        "Saudaveis/101/Static/frame1.txt",
        "Saudaveis/101/Static/frame2.jpg",
        "normal/102/a.txt",
        "DOENTES/201/estatico/s1.txt",
    ]
    assert "matched nothing (typo?): typo/404/static/x.txt" in caplog.text


def test_read_exclusions_and_shipped_template_is_empty(tmp_path: Path) -> None:
    file = tmp_path / "e.txt"
    file.write_text("P1\n# c\n a\\b\\c.txt # windows separators\n\n")
    assert read_exclusions(file) == ({"P1"}, {"a/b/c.txt"})
    template = REPO / "data_manifests" / "dmr_exclusions.txt"
    assert read_exclusions(template) == (set(), set())
    assert "365" in template.read_text()


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere: DMR-IR root folder not found \(expected ROOT/<healthy\|sick>"):
        index_dmr(tmp_path / "nowhere", tmp_path / "m.csv")


def test_no_class_folders_lists_expected_and_found(tmp_path: Path) -> None:
    _touch(tmp_path / "root" / "Benign" / "1" / "a.txt")
    with pytest.raises(DataError) as info:
        index_dmr(tmp_path / "root", tmp_path / "m.csv")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'root'}: no class folders found")
    assert "healthy (healthy, normal, saudavel, saudaveis) or sick (sick, doente, doentes, cancer, abnormal)" in message
    assert "found folders: Benign" in message


def test_no_data_files(tmp_path: Path) -> None:
    (tmp_path / "root" / "healthy" / "1" / "static").mkdir(parents=True)
    with pytest.raises(DataError, match=r"root: no \.txt/\.jpg/\.jpeg/\.png files found"):
        index_dmr(tmp_path / "root", tmp_path / "m.csv")


def test_nothing_left_after_exclusions(dmr: Path) -> None:
    exclusions = dmr.parent / "all.txt"
    exclusions.write_text("101\n102\n201\n202\n")
    with pytest.raises(DataError, match=r"DMR: nothing left to index after exclusions \(.*all\.txt\).*13 data file"):
        index_dmr(dmr, dmr.parent / "m.csv", exclusions=exclusions)
    assert not (dmr.parent / "m.csv").exists()


def test_bad_arguments(dmr: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.txt: exclusions file not found"):
        index_dmr(dmr, dmr.parent / "m.csv", exclusions=dmr.parent / "missing.txt")
    with pytest.raises(DataError, match=r"protocols: unknown dynamc; expected static and/or dynamic"):
        index_dmr(dmr, dmr.parent / "m.csv", protocols=("static", "dynamc"))
    with pytest.raises(DataError, match=r"prefer: expected 'txt' or 'image'"):
        index_dmr(dmr, dmr.parent / "m.csv", prefer="jpg")  # type: ignore[arg-type]
