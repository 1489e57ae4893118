"""Patient-level splits: no patient crosses splits, stratification, manifest splits, edge cases."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from medprune.data.manifest import Sample
from medprune.data.splits import patient_labels, split_by_patient, split_summary
from medprune.errors import ConfigError, DataError


def _cohort(patients: int = 80, sick_every: int = 4, split: dict[str, str] | None = None) -> list[Sample]:
    """``patients`` patients, 1–4 images each, every ``sick_every``-th one sick."""
    samples: list[Sample] = []
    for p in range(patients):
        pid = f"P{p:03d}"
        label = "sick" if p % sick_every == 0 else "healthy"
        for image in range(1 + p % 4):
            samples.append(
                Sample(Path(f"/d/{pid}_{image}.png"), label, pid, (split or {}).get(pid), len(samples) + 1, {})
            )
    return samples


def _patients(samples: list[Sample]) -> set[str]:
    return {s.patient_id for s in samples}


@pytest.mark.parametrize("seed", [0, 1, 7, 123])
@pytest.mark.parametrize("fractions", [(0.15, 0.15), (0.2, 0.1), (0.0, 0.3), (0.25, 0.0), (0.1, 0.2)])
def test_no_patient_crosses_splits_and_classes_are_stratified(seed: int, fractions: tuple[float, float]) -> None:
    samples = _cohort()
    parts = split_by_patient(samples, *fractions, seed=seed)
    assert set(parts) == {"train", "val", "test"}
    groups = {name: _patients(items) for name, items in parts.items()}
    assert not groups["train"] & groups["val"]
    assert not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    assert sum(len(v) for v in parts.values()) == len(samples)
    assert sorted(s.row for v in parts.values() for s in v) == [s.row for s in samples]
    labels = patient_labels(samples)
    for name, fraction in (("val", fractions[0]), ("test", fractions[1]), ("train", 1 - sum(fractions))):
        if fraction == 0:
            assert parts[name] == []
            continue
        assert len(groups[name]) == pytest.approx(80 * fraction, abs=2)
        sick = sum(labels[p] == "sick" for p in groups[name]) / len(groups[name])
        assert sick == pytest.approx(0.25, abs=0.1)  # 20 of 80 patients are sick


def test_split_is_deterministic_and_independent_of_row_order() -> None:
    samples = _cohort()
    first = split_by_patient(samples, 0.15, 0.15, seed=3)
    again = split_by_patient(samples, 0.15, 0.15, seed=3)
    shuffled = list(samples)
    random.Random(0).shuffle(shuffled)
    reordered = split_by_patient(shuffled, 0.15, 0.15, seed=3)
    other = split_by_patient(samples, 0.15, 0.15, seed=4)
    for name in ("train", "val", "test"):
        assert first[name] == again[name]
        assert _patients(first[name]) == _patients(reordered[name])
    assert _patients(first["test"]) != _patients(other["test"])


def test_samples_keep_manifest_order_within_a_split() -> None:
    parts = split_by_patient(_cohort(), 0.2, 0.2, seed=0)
    for items in parts.values():
        assert [s.row for s in items] == sorted(s.row for s in items)


def test_manifest_split_fully_given_is_honoured() -> None:
    given = {f"P{p:03d}": ("train", "val", "test")[p % 3] for p in range(12)}
    samples = _cohort(12, split=given)
    parts = split_by_patient(samples, 0.5, 0.3, seed=0)  # fractions ignored: nothing unassigned
    for name, items in parts.items():
        assert _patients(items) == {p for p, s in given.items() if s == name}


def test_manifest_split_partially_given() -> None:
    given = {"P000": "test", "P001": "test", "P002": "val"}
    samples = _cohort(40, split=given)
    # P003 has four images; only its first row names a split: the others follow it.
    samples = [
        Sample(
            s.path,
            s.label,
            s.patient_id,
            "val" if s.patient_id == "P003" and s.row == samples[6].row else s.split,
            s.row,
            {},
        )
        for s in samples
    ]
    parts = split_by_patient(samples, 0.2, 0.2, seed=1)
    groups = {name: _patients(items) for name, items in parts.items()}
    assert {"P000", "P001"} <= groups["test"]
    assert {"P002", "P003"} <= groups["val"]
    assert [s.split for s in parts["val"] if s.patient_id == "P003"] == ["val", None, None, None]
    assert not groups["train"] & (groups["val"] | groups["test"])
    assert not groups["val"] & groups["test"]
    assert len(groups["test"] - {"P000", "P001"}) == pytest.approx(37 * 0.2, abs=2)


def test_patient_in_two_given_splits_is_an_error() -> None:
    samples = _cohort(6)
    samples[1] = Sample(samples[1].path, samples[1].label, samples[1].patient_id, "train", samples[1].row, {})
    samples[2] = Sample(samples[2].path, samples[2].label, samples[2].patient_id, "test", samples[2].row, {})
    assert samples[1].patient_id == samples[2].patient_id == "P001"
    with pytest.raises(
        DataError, match=r"patient P001 is assigned to several splits in the manifest: train \(row 2\), test \(row 3\)"
    ):
        split_by_patient(samples, 0.2, 0.2, seed=0)


def test_zero_fractions_put_everyone_in_train() -> None:
    parts = split_by_patient(_cohort(5), 0.0, 0.0, seed=0)
    assert len(parts["train"]) == len(_cohort(5)) and parts["val"] == parts["test"] == []


def test_rare_class_is_valid_and_reaches_every_split_when_possible() -> None:
    one_sick = _cohort(10, sick_every=100)  # only P000 is sick
    parts = split_by_patient(one_sick, 0.2, 0.2, seed=0)
    assert "P000" in _patients(parts["train"])
    assert parts["val"] and parts["test"]
    three_sick = _cohort(30, sick_every=10)  # P000, P010, P020 sick: one per split
    parts = split_by_patient(three_sick, 0.1, 0.1, seed=5)
    for items in parts.values():
        assert Counter(s.label for s in items)["sick"] > 0


def test_too_few_patients_is_an_actionable_error() -> None:
    with pytest.raises(
        DataError, match=r"cannot split 2 unassigned patient\(s\) into train and test/val: need at least 3"
    ):
        split_by_patient(_cohort(2), 0.2, 0.2, seed=0)
    parts = split_by_patient(_cohort(2), 0.0, 0.5, seed=0)
    assert len(_patients(parts["train"])) == 1 and len(_patients(parts["test"])) == 1


@pytest.mark.parametrize(
    ("val", "test", "key"),
    [
        (-0.1, 0.1, "data.val_fraction"),
        (0.1, 1.0, "data.test_fraction"),
        (0.5, 0.5, "must be < 1"),
        ("0.1", 0.1, "data.val_fraction"),
    ],
)
def test_bad_fractions(val: object, test: object, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        split_by_patient(_cohort(10), val, test, seed=0)  # type: ignore[arg-type]


def test_mixed_labels_use_the_majority() -> None:
    s = [
        Sample(Path("/a"), "sick", "P1", None, 1, {}),
        Sample(Path("/b"), "healthy", "P1", None, 2, {}),
        Sample(Path("/c"), "sick", "P1", None, 3, {}),
    ]
    assert patient_labels(s) == {"P1": "sick"}


def test_split_summary_counts() -> None:
    parts = split_by_patient(_cohort(8), 0.0, 0.0, seed=0)
    summary = split_summary(parts)
    assert summary["train"] == {"patients": 8, "samples": 20, "labels": {"healthy": 18, "sick": 2}}
    assert summary["val"] == {"patients": 0, "samples": 0, "labels": {}}
