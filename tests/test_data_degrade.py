"""Seeded degradations (JPEG, noise, blur): exact levels, q maps, Degrader draws, config errors, datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medprune.data import (
    DEGRADATIONS,
    ClassificationDataset,
    DegradationDraw,
    Degrader,
    SegmentationDataset,
    build_degrader,
    degradation,
    make_phantom,
    make_thermography_phantom,
    pack_q,
    read_manifest,
    unpack_q,
)
from medprune.data.settings import DataConfig, DegradationConfig
from medprune.errors import ConfigError
from medprune.schema import FieldError, build

CLASSES = ["healthy", "sick"]


def _image(channels: int = 1, size: int = 32, seed: int = 0) -> np.ndarray:
    """A smooth gradient with texture: what JPEG and blur visibly change."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = 0.5 + 0.3 * np.sin(6 * xx) * np.cos(4 * yy)
    texture = 0.1 * np.random.default_rng(seed).random((size, size), dtype=np.float32)
    img = np.clip(base + texture, 0, 1).astype(np.float32)
    return np.repeat(img[:, :, None], channels, axis=2)


def _draw(kind: str, value: float, kinds: list[str] | None = None, seed: int = 0) -> DegradationDraw:
    degrader = Degrader(DegradationConfig(kinds=kinds or [kind]), train=False).fixed(kind, value)
    draw = degrader.draw_for(0, 0, 0)
    return DegradationDraw(draw.kind, draw.value, draw.q, seed)


# ------------------------------------------------------------------ kinds


@pytest.mark.parametrize("kind", DEGRADATIONS.names())
@pytest.mark.parametrize("channels", [1, 3])
def test_each_kind_is_seeded_keeps_shape_and_range(kind: str, channels: int) -> None:
    spec = degradation(kind)
    value = spec.default_grid[len(spec.default_grid) // 2]
    degrader = Degrader(DegradationConfig(kinds=[kind]), train=False)
    image = _image(channels)
    draw = _draw(kind, value, seed=5)
    a, b = degrader.apply(image, draw), degrader.apply(image, draw)
    assert a.shape == image.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert np.abs(a - image).mean() > 1e-3  # the mid-grid level is visible
    assert (draw.kind, draw.value) == (kind, value)
    assert draw.q[0] == pytest.approx(spec.to_q(value))
    assert spec.from_q(spec.to_q(value)) == pytest.approx(value)


@pytest.mark.parametrize("kind, value, q", [
    ("jpeg", 100, 0.0), ("jpeg", 70, 0.3), ("jpeg", 10, 0.9), ("jpeg", 1, 0.99),
    ("noise", 0, 0.0), ("noise", 25, 0.5), ("noise", 50, 1.0), ("noise", 100, 1.0),
    ("blur", 0, 0.0), ("blur", 1.5, 0.5), ("blur", 3, 1.0), ("blur", 6, 1.0),
])
def test_q_formula(kind: str, value: float, q: float) -> None:
    assert degradation(kind).to_q(value) == pytest.approx(q)


def test_noise_seed_changes_pattern_and_sigma_is_measured() -> None:
    degrader = Degrader(DegradationConfig(kinds=["noise"]), train=True)
    flat = np.full((64, 64, 1), 0.5, np.float32)
    a = degrader.apply(flat, _draw("noise", 25, seed=1))
    b = degrader.apply(flat, _draw("noise", 25, seed=2))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(degrader.apply(flat, _draw("noise", 25, seed=2)),
                                  degrader.apply(flat, _draw("noise", 25, seed=9), seed=2))
    for sigma in (5.0, 25.0, 50.0):
        out = degrader.apply(flat, _draw("noise", sigma, seed=3))
        assert float((out - flat).std()) == pytest.approx(sigma / 255, rel=0.15)


def test_jpeg_low_quality_changes_more_and_blur_zero_is_identity() -> None:
    image = _image(3)
    degrader = Degrader(DegradationConfig(kinds=["jpeg", "blur"]), train=False)
    err = {q: float(np.abs(degrader.apply(image, _draw("jpeg", q, ["jpeg", "blur"])) - image).mean()) for q in (10, 90)}
    assert err[10] > 2 * err[90] > 0
    np.testing.assert_allclose(degrader.apply(image, _draw("blur", 0, ["jpeg", "blur"])), image, atol=1e-6)
    blurred = degrader.apply(image, _draw("blur", 2, ["jpeg", "blur"]))
    assert np.abs(np.diff(blurred, axis=1)).mean() < 0.5 * np.abs(np.diff(image, axis=1)).mean()


# ------------------------------------------------------------------ Degrader


def test_draw_for_is_deterministic_and_in_range() -> None:
    cfg = DegradationConfig(kinds=["jpeg", "noise", "blur"], ranges={"jpeg": [20, 40]})
    degrader = Degrader(cfg, train=True)
    draws = [degrader.draw_for(7, e, i) for e in range(3) for i in range(40)]
    assert draws == [degrader.draw_for(7, e, i) for e in range(3) for i in range(40)]
    assert draws != [degrader.draw_for(8, e, i) for e in range(3) for i in range(40)]
    assert {d.kind for d in draws} == {"jpeg", "noise", "blur"}
    for d in draws:
        slot = cfg.kinds.index(d.kind)
        lo, hi = cfg.range_of(d.kind)
        assert lo <= d.value <= hi
        assert d.q.shape == (3,) and d.q.dtype == np.float32
        assert np.count_nonzero(np.delete(d.q, slot)) == 0  # one slot holds q, the others 0
        assert d.q[slot] == pytest.approx(degradation(d.kind).to_q(d.value))
    assert all(float(d.value).is_integer() for d in draws if d.kind == "jpeg")


def test_p_clean_inactive_and_fixed_levels() -> None:
    cfg = DegradationConfig(kinds=["jpeg", "noise"])
    clean = Degrader(DegradationConfig(kinds=["jpeg", "noise"], p_clean=1.0), train=True)
    inactive = Degrader(cfg, train=True, active=False)
    for degrader in (clean, inactive):
        draws = [degrader.draw_for(0, 0, i) for i in range(20)]
        assert all(d.kind is None and d.value is None and not d.q.any() and d.q.shape == (2,) for d in draws)
    half = Degrader(DegradationConfig(kinds=["jpeg"], p_clean=0.5), train=True)
    n_clean = sum(half.draw_for(0, 0, i).clean for i in range(400))
    assert 150 < n_clean < 250
    fixed = inactive.fixed("noise", 15)
    for i in range(10):
        d = fixed.draw_for(0, i, i)
        assert (d.kind, d.value) == ("noise", 15.0)
        np.testing.assert_allclose(d.q, [0.0, 0.3])
    assert all(fixed.fixed(None).draw_for(0, 0, i).clean for i in range(5))
    with pytest.raises(ConfigError, match="'blur'.*Available: jpeg, noise"):
        inactive.fixed("blur", 1.0)
    with pytest.raises(ConfigError, match="outside"):
        inactive.fixed("jpeg", 0)


def test_build_degrader_follows_split_and_flags() -> None:
    assert build_degrader(None, train=True) is None
    cfg = DegradationConfig(kinds=["jpeg"], train=False)
    train, val = build_degrader(cfg, train=True), build_degrader(cfg, train=False)
    assert (train.active, train.train, val.active, val.train) == (False, True, True, False)
    assert val.draw_for_epoch(0, 3) == val.draw_for_epoch(5, 3)
    assert build_degrader(DegradationConfig(eval=False), train=False).active is False


def test_pack_and_unpack_q() -> None:
    image = torch.randn(3, 5, 6)
    q = np.array([0.0, 0.7], np.float32)
    x = pack_q(image, q)
    assert x.shape == (5, 5, 6)
    torch.testing.assert_close(x[:3], image)
    torch.testing.assert_close(x[3:], torch.tensor(q)[:, None, None].expand(2, 5, 6))
    batch = torch.stack([x, pack_q(image * 2, np.array([0.5, 0.0]))])
    img, qs = unpack_q(batch, 2)
    torch.testing.assert_close(img, torch.stack([image, image * 2]))
    torch.testing.assert_close(qs, torch.tensor([[0.0, 0.7], [0.5, 0.0]]))
    assert unpack_q(batch, 0)[1].shape == (2, 0)


# ------------------------------------------------------------------ config


def test_config_defaults_and_yaml_build() -> None:
    cfg = DegradationConfig()
    assert (cfg.kinds, cfg.q_dim, cfg.range_of("jpeg"), cfg.grid_of("jpeg")) == (
        ["jpeg"], 1, (10.0, 100.0), [90.0, 70.0, 50.0, 30.0, 10.0])
    data = build(DataConfig, {"manifest": "m.csv", "degradation": {
        "kinds": ["jpeg", "noise", "blur"], "ranges": {"noise": [0, 20]}, "grid": {"blur": [1, 2]}}})
    d = data.degradation
    assert isinstance(d, DegradationConfig) and d.q_dim == 3
    assert (d.range_of("noise"), d.range_of("blur"), d.grid_of("blur"), d.grid_of("noise")) == (
        (0.0, 20.0), (0.0, 3.0), [1.0, 2.0], [5.0, 15.0, 25.0, 35.0, 50.0])
    assert build(DataConfig, {"manifest": "m.csv"}).degradation is None


@pytest.mark.parametrize("section, key, message", [
    ({"kinds": ["jepg"]}, "degradation.kinds[0]", "did you mean 'jpeg'"),
    ({"kinds": []}, "degradation.kinds", "at least one"),
    ({"kinds": ["jpeg", "jpeg"]}, "degradation.kinds", "duplicate"),
    ({"ranges": {"jpeg": [0, 50]}}, "degradation.ranges.jpeg", "outside [1, 100]"),
    ({"ranges": {"jpeg": [50, 20]}}, "degradation.ranges.jpeg", "low <= high"),
    ({"kinds": ["noise"], "ranges": {"noise": [-1, 5]}}, "degradation.ranges.noise", "outside [0, 255]"),
    ({"ranges": {"blur": [0, 1]}}, "degradation.ranges.blur", "not one of kinds"),
    ({"grid": {"jpeg": [101]}}, "degradation.grid.jpeg", "outside [1, 100]"),
    ({"p_clean": 1.5}, "degradation.p_clean", "[0, 1]"),
    ({"baselines": ["clen"]}, "degradation.baselines[0]", "did you mean 'clean'"),
])
def test_config_errors_name_the_key(section: dict, key: str, message: str) -> None:
    with pytest.raises(FieldError) as info:
        build(DataConfig, {"manifest": "m.csv", "degradation": section})
    assert info.value.path == key
    assert message in info.value.message


# ------------------------------------------------------------------ datasets


@pytest.fixture(scope="module")
def phantom_samples(tmp_path_factory: pytest.TempPathFactory) -> list:
    """A tiny SYNTHETIC thermography phantom: 4 patients x 2 views."""
    out = tmp_path_factory.mktemp("thermo")
    return read_manifest(make_thermography_phantom(out, patients=4, imbalance=1.0, views=2, size=(24, 32), seed=0))


def _dataset(samples: list, cfg: DegradationConfig | None, *, train: bool, channels: str = "gray"):
    return ClassificationDataset(samples, CLASSES, (16, 16), channels, seed=3,
                                 degradation=build_degrader(cfg, train=train))


@pytest.mark.parametrize("channels, c", [("gray", 1), ("color", 3)])
def test_classification_items_carry_q_planes(phantom_samples: list, channels: str, c: int) -> None:
    cfg = DegradationConfig(kinds=["jpeg", "noise"], p_clean=0.2)
    ds = _dataset(phantom_samples, cfg, train=True, channels=channels)
    plain = _dataset(phantom_samples, None, train=True, channels=channels)
    assert (ds.q_dim, ds.num_input_channels, plain.q_dim, plain.num_input_channels) == (2, c + 2, 0, c)
    for i in range(len(ds)):
        x, y, index = ds[i]
        assert x.shape == (c + 2, 16, 16) and (y, index) == (plain[i][1], i)
        q = torch.from_numpy(ds.degradation_of(i).q)
        torch.testing.assert_close(x[c:], q[:, None, None].expand(2, 16, 16))
        draw = ds.degradation_of(i)
        if draw.clean:
            torch.testing.assert_close(x[:c], plain[i][0])
        else:
            assert not torch.allclose(x[:c], plain[i][0])
    assert plain.degradation_of(0) is None


def test_clean_items_are_unchanged_without_degradation(phantom_samples: list) -> None:
    plain = _dataset(phantom_samples, None, train=True)
    reference = ClassificationDataset(phantom_samples, CLASSES, (16, 16), "gray", seed=3)
    for i in range(len(plain)):
        assert torch.equal(plain[i][0], reference[i][0])
    inactive = _dataset(phantom_samples, DegradationConfig(train=False), train=True)
    x = inactive[0][0]
    assert torch.equal(x[:1], reference[0][0]) and not x[1:].any()


def test_eval_draw_is_fixed_across_epochs_train_draw_is_not(phantom_samples: list) -> None:
    cfg = DegradationConfig(kinds=["jpeg", "blur"])
    val, train = _dataset(phantom_samples, cfg, train=False), _dataset(phantom_samples, cfg, train=True)
    n = len(val)
    before_val = [val.degradation_of(i) for i in range(n)]
    before_train = [train.degradation_of(i) for i in range(n)]
    x_val = val[0][0]
    val.set_epoch(4)
    train.set_epoch(4)
    assert [val.degradation_of(i) for i in range(n)] == before_val
    assert torch.equal(val[0][0], x_val)
    assert [train.degradation_of(i) for i in range(n)] != before_train


def test_at_level_fixes_every_item(phantom_samples: list) -> None:
    ds = _dataset(phantom_samples, DegradationConfig(kinds=["jpeg", "noise"]), train=False)
    level = ds.at_level("jpeg", 30)
    assert level is not ds and ds.degradation.level is None
    for i in range(len(level)):
        x = level[i][0]
        np.testing.assert_allclose(x[1:, 0, 0].numpy(), [0.7, 0.0], atol=1e-6)
        assert level.degradation_of(i).value == 30.0
    clean = ds.at_level(None)
    reference = ClassificationDataset(phantom_samples, CLASSES, (16, 16), "gray", seed=3)
    assert torch.equal(clean[0][0][:1], reference[0][0]) and not clean[0][0][1:].any()
    with pytest.raises(ConfigError, match="no degradation"):
        reference.at_level("jpeg", 30)


def test_segmentation_degrades_image_not_mask(tmp_path: Path) -> None:
    manifest = make_phantom("ivoct", tmp_path, patients=4, size=(32, 64), seed=0, frames=2)
    samples = read_manifest(manifest)
    kwargs = dict(label_classes=["normal", "plaque"])
    plain = SegmentationDataset(samples, ["background", "tissue", "plaque"], (32, 64), "gray", **kwargs)
    fixed = Degrader(DegradationConfig(kinds=["noise"]), train=False).fixed("noise", 25)
    noisy = SegmentationDataset(samples, ["background", "tissue", "plaque"], (32, 64), "gray", **kwargs,
                                degradation=fixed)
    (a, ma, _), (b, mb, _) = plain[0], noisy[0]
    assert a.shape == b.shape == (1, 32, 64)  # no q planes
    assert torch.equal(ma, mb)
    assert not torch.allclose(a, b)
