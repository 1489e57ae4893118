"""Thermography phantom (SYNTHETIC): determinism, balance, anatomy, lesion asymmetry, speed."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from medprune.data.manifest import read_manifest
from medprune.data.phantoms import PHANTOMS, make_phantom, make_thermography_phantom, phantom_kinds
from medprune.data.readers import read_sample
from medprune.errors import ConfigError, RegistryError


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _patient_labels(manifest: Path) -> dict[str, str]:
    return {s.patient_id: s.label for s in read_manifest(manifest)}


def test_same_seed_same_bytes_different_seed_different(tmp_path: Path) -> None:
    a = make_thermography_phantom(tmp_path / "a", patients=6, seed=3)
    b = make_thermography_phantom(tmp_path / "b", patients=6, seed=3)
    c = make_thermography_phantom(tmp_path / "c", patients=6, seed=4)
    files_a, files_b, files_c = _files(a.parent), _files(b.parent), _files(c.parent)
    assert files_a == files_b
    assert len(files_a) == 6 * 3 + 2  # matrices + manifest.csv + README.txt
    assert files_a["manifest.csv"] == files_c["manifest.csv"]  # labels depend on the index only
    assert all(files_a[k] != files_c[k] for k in files_a if k.endswith(".txt") and k != "README.txt")


def test_patient_k_does_not_depend_on_cohort_size(tmp_path: Path) -> None:
    small = _files(make_thermography_phantom(tmp_path / "n10", patients=10, seed=1).parent)
    large = _files(make_thermography_phantom(tmp_path / "n20", patients=20, seed=1).parent)
    shared = [k for k in small if k.startswith("P")]
    assert len(shared) == 30
    assert all(small[k] == large[k] for k in shared)


@pytest.mark.parametrize(("patients", "imbalance", "sick"), [(40, 3.0, 10), (20, 1.0, 10), (10, 4.0, 2), (7, 2.5, 2)])
def test_class_balance_follows_imbalance(tmp_path: Path, patients: int, imbalance: float, sick: int) -> None:
    labels = _patient_labels(make_thermography_phantom(tmp_path, patients=patients, imbalance=imbalance, views=1))
    assert Counter(labels.values()) == {"healthy": patients - sick, "sick": sick}


def test_manifest_layout_and_readme(tmp_path: Path) -> None:
    manifest = make_thermography_phantom(tmp_path / "ph", patients=4, views=4, size=(20, 30), seed=0)
    assert manifest == tmp_path / "ph" / "manifest.csv"
    assert manifest.read_text().splitlines()[0] == "path,label,patient_id,view"
    samples = read_manifest(manifest)
    assert len(samples) == 16
    assert [s.extras["view"] for s in samples[:4]] == ["frontal", "left_oblique", "right_oblique", "view3"]
    assert samples[0].patient_id == "P0001" and samples[0].path == tmp_path / "ph" / "P0001" / "P0001_frontal.txt"
    readme = (tmp_path / "ph" / "README.txt").read_text()
    assert readme.startswith("SYNTHETIC THERMOGRAPHY PHANTOM - NOT PATIENT DATA")
    assert "seed=0" in readme
    first_line = samples[0].path.read_text().splitlines()[0].split()
    assert len(first_line) == 30 and all(len(v.split(".")[1]) == 2 for v in first_line)
    assert read_sample(samples[0].path).shape == (20, 30)


def test_temperatures_are_anatomical(tmp_path: Path) -> None:
    manifest = make_thermography_phantom(tmp_path, patients=12, seed=2)
    for sample in read_manifest(manifest):
        temp = np.loadtxt(sample.path)
        assert temp.shape == (60, 80)
        assert 21.5 < temp[:5, :3].mean() < 26.5  # background corner
        assert 29.0 < temp[50:58, 38:42].mean() < 34.5  # lower thorax, between the breasts
        assert 31.0 < temp[30:42, 16:34].max() < 38.0  # a breast
        assert temp.max() < 39.0


def _asymmetry(temp: np.ndarray) -> float:
    """|95th percentile left breast box − right breast box| (frontal view), in °C."""
    rows = slice(29, 44)
    left, right = temp[rows, 20:34], temp[rows, 46:60]
    return abs(float(np.percentile(left, 95) - np.percentile(right, 95)))


def test_sick_patients_are_asymmetric(tmp_path: Path) -> None:
    manifest = make_thermography_phantom(tmp_path, patients=40, imbalance=3.0, views=1, seed=0)
    asym: dict[str, list[float]] = {"healthy": [], "sick": []}
    warmest: dict[str, list[float]] = {"healthy": [], "sick": []}
    for sample in read_manifest(manifest):
        temp = np.loadtxt(sample.path)
        asym[sample.label].append(_asymmetry(temp))
        warmest[sample.label].append(float(temp.max() - np.median(temp[50:58, 30:50])))
    healthy, sick = np.mean(asym["healthy"]), np.mean(asym["sick"])
    assert sick > 2.5 * healthy and sick > 0.6
    # not trivial: some healthy patients have warmer hot spots than some sick ones
    assert max(warmest["healthy"]) > min(warmest["sick"])


def test_lesion_stays_in_the_same_breast_across_views(tmp_path: Path) -> None:
    manifest = make_thermography_phantom(tmp_path, patients=8, imbalance=3.0, seed=0)
    sides: dict[str, set[str]] = {}
    for sample in read_manifest(manifest):
        if sample.label != "sick":
            continue
        temp = np.loadtxt(sample.path)
        body_center = int(np.round(np.average(np.arange(80), weights=(temp[45:55] > 28).sum(axis=0))))
        left, right = temp[25:48, :body_center].max(), temp[25:48, body_center:].max()
        sides.setdefault(sample.patient_id, set()).add("left" if left > right else "right")
    assert len(sides) == 2 and all(len(s) == 1 for s in sides.values())


def test_default_phantom_is_fast(tmp_path: Path) -> None:
    # CPU time of this process (~0.25 s), not wall time: other processes on the machine cannot fail it
    start = time.process_time()
    make_thermography_phantom(tmp_path, patients=40, views=3, size=(60, 80), seed=0)
    assert time.process_time() - start < 2.0


def test_registry(tmp_path: Path) -> None:
    assert "thermography" in phantom_kinds() and "thermography" in PHANTOMS
    manifest = make_phantom("thermography", tmp_path, patients=2, views=1)
    assert len(read_manifest(manifest)) == 2
    with pytest.raises(RegistryError, match=r"unknown phantom 'thermograpy'; did you mean 'thermography'"):
        make_phantom("thermograpy", tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"patients": 0}, "phantom.patients"),
        ({"imbalance": 0}, "phantom.imbalance"),
        ({"views": 0}, "phantom.views"),
        ({"size": (4, 80)}, "phantom.size"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        make_thermography_phantom(tmp_path, **kwargs)


# ----------------------------------------------------------------------------- lesions="varied"


def test_varied_lesions_draw_every_type_reproducibly(tmp_path: Path) -> None:
    from medprune.data.phantoms import LESION_TYPES

    a = make_thermography_phantom(tmp_path / "a", patients=60, imbalance=1.0, views=1, size=(32, 40), seed=0,
                                  lesions="varied")
    b = make_thermography_phantom(tmp_path / "b", patients=60, imbalance=1.0, views=1, size=(32, 40), seed=0,
                                  lesions="varied")
    assert a.read_text() == b.read_text()
    rows = read_manifest(a)
    kinds = Counter(r.extras["lesion"] for r in rows if r.label == "sick")
    assert set(kinds) == set(LESION_TYPES) and min(kinds.values()) >= 3  # 30 sick patients, 5 types
    assert {r.extras["lesion"] for r in rows if r.label == "healthy"} == {"none"}
    assert "lesions='varied'" in (tmp_path / "a" / "README.txt").read_text()


def test_varied_lesions_keep_the_sick_breast_warmer(tmp_path: Path) -> None:
    """Whatever the type, a sick patient's lesion warms one breast more than the other, on average."""
    manifest = make_thermography_phantom(tmp_path, patients=80, imbalance=1.0, views=1, size=(60, 80), seed=1,
                                         lesions="varied")
    rows = read_manifest(manifest)
    asym = {"sick": [], "healthy": []}
    for r in rows:
        t = np.loadtxt(r.path)
        left, right = t[25:50, 10:40], t[25:50, 40:70]
        asym[r.label].append(abs(float(left.mean() - right.mean())) + abs(float(left.max() - right.max())))
    assert np.mean(asym["sick"]) > 1.5 * np.mean(asym["healthy"])


def test_single_lesions_are_unchanged_and_bad_modes_refused(tmp_path: Path) -> None:
    rows = read_manifest(make_thermography_phantom(tmp_path / "s", patients=6, views=1, size=(32, 40), seed=0))
    assert all("lesion" not in r.extras for r in rows)  # the demo's phantom keeps its manifest
    with pytest.raises(ConfigError, match="phantom.options.lesions: .*did you mean 'varied'"):
        make_thermography_phantom(tmp_path / "x", patients=6, lesions="varid")
