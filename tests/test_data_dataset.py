"""ClassificationDataset (shapes, resize, normalisation, seeded augmentation) and augmentation specs."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch

from medprune.data.augment import augmentation_names, build_augmentation, validate_augmentation
from medprune.data.dataset import ClassificationDataset, augmentation_seed
from medprune.data.manifest import Sample
from medprune.data.readers import ReaderOptions
from medprune.errors import ConfigError, DataError

CLASSES = ["healthy", "sick"]


def _samples(tmp_path: Path, n: int = 6) -> list[Sample]:
    """``n`` 16x16 gray .npy files with a gradient (so flips are visible), alternating labels."""
    out = []
    base = np.linspace(0.0, 1.0, 16, dtype=np.float32)[None, :].repeat(16, axis=0)
    for i in range(n):
        path = tmp_path / f"img{i}.npy"
        np.save(path, np.clip(base * (0.5 + 0.1 * i), 0, 1))
        out.append(Sample(path, CLASSES[i % 2], f"P{i // 2}", None, i + 1, {}))
    return out


def _constant(tmp_path: Path, value: float, shape: tuple[int, ...] = (16, 16)) -> list[Sample]:
    path = tmp_path / f"const_{value}_{len(shape)}.npy"
    np.save(path, np.full(shape, value, np.float32))
    return [Sample(path, "sick", "P9", None, 1, {})]


def test_gray_shape_label_index_and_normalisation(tmp_path: Path) -> None:
    ds = ClassificationDataset(_constant(tmp_path, 0.75), CLASSES, (8, 12), "gray", ReaderOptions())
    x, y, i = ds[0]
    assert x.shape == (1, 8, 12) and x.dtype == torch.float32
    assert (y, i) == (1, 0)
    torch.testing.assert_close(x, torch.ones(1, 8, 12))  # (0.75 - 0.5) / 0.25


def test_colour_from_gray_uses_colormap_and_per_channel_stats(tmp_path: Path) -> None:
    import matplotlib

    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    ds = ClassificationDataset(_constant(tmp_path, 0.5), CLASSES, (8, 8), "color", colormap="magma", mean=mean, std=std)
    x, _, _ = ds[0]
    assert x.shape == (3, 8, 8)
    rgb = np.asarray(matplotlib.colormaps["magma"](0.5)[:3], dtype=np.float32)
    expected = (rgb - np.array(mean, np.float32)) / np.array(std, np.float32)
    torch.testing.assert_close(x[:, 3, 3], torch.from_numpy(expected))


def test_rgb_source_to_gray_is_bt601(tmp_path: Path) -> None:
    rgb = np.zeros((16, 16, 3), np.float32)
    rgb[..., 0] = 1.0
    np.save(tmp_path / "red.npy", rgb)
    ds = ClassificationDataset(
        [Sample(tmp_path / "red.npy", "healthy", "P", None, 1, {})], CLASSES, (16, 16), "gray", mean=0.0, std=1.0
    )
    torch.testing.assert_close(ds[0][0], torch.full((1, 16, 16), 0.299))


def test_downscale_uses_area_interpolation(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    np.save(tmp_path / "r.npy", arr)
    ds = ClassificationDataset(
        [Sample(tmp_path / "r.npy", "healthy", "P", None, 1, {})], CLASSES, (8, 8), "gray", mean=0.0, std=1.0
    )
    block_mean = arr.reshape(8, 2, 8, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(ds[0][0][0].numpy(), block_mean, atol=1e-6)
    assert ds.load(0).shape == (8, 8, 1)


def test_properties(tmp_path: Path) -> None:
    samples = _samples(tmp_path, 4)
    ds = ClassificationDataset(samples, CLASSES, (8, 8), "gray")
    assert len(ds) == 4
    assert ds.labels == [0, 1, 0, 1]
    assert ds.patient_ids == ["P0", "P0", "P1", "P1"]
    assert ds.paths == [s.path for s in samples]
    assert [ds[k][2] for k in range(4)] == [0, 1, 2, 3]


def _aug() -> A.Compose:
    return build_augmentation(
        [{"name": "HorizontalFlip", "p": 0.5}, {"name": "RandomBrightnessContrast", "brightness_limit": 0.2, "p": 0.8}]
    )


def test_augmentation_is_seeded_per_seed_epoch_index(tmp_path: Path) -> None:
    samples = _samples(tmp_path, 8)

    def items(ds: ClassificationDataset, order: list[int]) -> dict[int, torch.Tensor]:
        return {k: ds[k][0] for k in order}

    a = ClassificationDataset(samples, CLASSES, (16, 16), "gray", augmentation=_aug(), seed=5)
    b = ClassificationDataset(samples, CLASSES, (16, 16), "gray", augmentation=_aug(), seed=5)
    first = items(a, list(range(8)))
    reversed_order = items(b, list(reversed(range(8))))  # another worker/order: same draws
    for k in range(8):
        torch.testing.assert_close(first[k], reversed_order[k], rtol=0, atol=0)
    a.set_epoch(1)
    next_epoch = items(a, list(range(8)))
    assert sum(not torch.equal(first[k], next_epoch[k]) for k in range(8)) >= 6
    a.set_epoch(0)  # a resumed run at epoch 0 sees exactly the epoch-0 augmentations
    for k in range(8):
        torch.testing.assert_close(a[k][0], first[k], rtol=0, atol=0)
    other_seed = ClassificationDataset(samples, CLASSES, (16, 16), "gray", augmentation=_aug(), seed=6)
    assert any(not torch.equal(first[k], other_seed[k][0]) for k in range(8))
    plain = ClassificationDataset(samples, CLASSES, (16, 16), "gray")
    assert any(not torch.equal(first[k], plain[k][0]) for k in range(8))


def test_augmentation_does_not_depend_on_worker_count(tmp_path: Path) -> None:
    samples = _samples(tmp_path, 6)
    ds = ClassificationDataset(samples, CLASSES, (16, 16), "gray", augmentation=_aug(), seed=2)
    ds.set_epoch(3)
    serial = torch.cat([x for x, _, _ in torch.utils.data.DataLoader(ds, batch_size=2, num_workers=0)])
    parallel = torch.cat(
        [x for x, _, _ in torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="fork")]
    )
    torch.testing.assert_close(serial, parallel, rtol=0, atol=0)


def test_augmentation_seed_is_stable() -> None:
    assert augmentation_seed(0, 0, 0) == augmentation_seed(0, 0, 0)
    assert len({augmentation_seed(s, e, i) for s in range(3) for e in range(3) for i in range(3)}) == 27


def test_size_changing_augmentation_is_refused(tmp_path: Path) -> None:
    aug = build_augmentation([{"name": "CenterCrop", "height": 8, "width": 8, "p": 1.0}])
    ds = ClassificationDataset(_samples(tmp_path, 1), CLASSES, (16, 16), "gray", augmentation=aug)
    with pytest.raises(ConfigError, match=r"data\.augmentation: changed the image from \(16, 16, 1\) to \(8, 8, 1\)"):
        ds[0]


def test_read_error_names_file_and_row(tmp_path: Path) -> None:
    (tmp_path / "empty.npy").write_bytes(b"")
    ds = ClassificationDataset([Sample(tmp_path / "empty.npy", "sick", "P", None, 7, {})], CLASSES, (8, 8), "gray")
    with pytest.raises(DataError, match=r"empty\.npy \(row 7\): zero-byte file"):
        ds[0]


def test_bad_constructor_arguments(tmp_path: Path) -> None:
    samples = _samples(tmp_path, 2)
    with pytest.raises(DataError, match=r"img0\.npy \(row 1\): label 'healthy' is not one of the classes sick"):
        ClassificationDataset(samples, ["sick"], (8, 8), "gray")
    with pytest.raises(ConfigError, match=r"data\.mean: expected 1 or 3 values for 3 channel\(s\), got 2"):
        ClassificationDataset(samples, CLASSES, (8, 8), "color", mean=[0.5, 0.5])
    with pytest.raises(ConfigError, match=r"data\.std: expected positive values"):
        ClassificationDataset(samples, CLASSES, (8, 8), "gray", std=0.0)
    with pytest.raises(ConfigError, match=r"data\.channels"):
        ClassificationDataset(samples, CLASSES, (8, 8), "rgb")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"data\.image_size"):
        ClassificationDataset(samples, CLASSES, (8,), "gray")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- augmentation specs


def test_build_augmentation_from_specs() -> None:
    assert build_augmentation([]) is None and build_augmentation(None) is None
    aug = build_augmentation([{"name": "HorizontalFlip", "p": 1.0}, {"name": "Affine", "rotate": [-10, 10]}])
    assert [type(t).__name__ for t in aug.transforms] == ["HorizontalFlip", "Affine"]
    img = np.arange(64, dtype=np.float32).reshape(8, 8, 1) / 64
    aug = build_augmentation([{"name": "HorizontalFlip", "p": 1.0}])
    np.testing.assert_array_equal(aug(image=img)["image"], img[:, ::-1])
    assert "HorizontalFlip" in augmentation_names() and "ToTensorV2" not in augmentation_names()


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (
            [{"name": "HorizantalFlip"}],
            r"item 0: unknown augmentation transform 'HorizantalFlip'; did you mean 'HorizontalFlip'",
        ),
        ([{"name": "HorizontalFlip"}, {"name": "os"}], r"item 1: unknown augmentation transform 'os'"),
        ([{"name": "Compose"}], r"item 0: unknown augmentation transform 'Compose'"),
        ([{"name": "HorizontalFlip", "prob": 0.5}], r"item 0 \(HorizontalFlip\): unknown argument 'prob'"),
        ([{"name": "Rotate", "limit": "abc"}], r"item 0 \(Rotate\): invalid argument limit='abc'"),
        ([{"name": "HorizontalFlip", "p": 2}], r"item 0 \(HorizontalFlip\): invalid argument p=2"),
        ([{"name": "Resize"}], r"item 0 \(Resize\): missing required argument\(s\) height, width"),
        ([{"p": 0.5}], r"item 0: missing 'name'"),
        (["HorizontalFlip"], r"item 0: expected a mapping"),
        ({"name": "HorizontalFlip"}, r"expected a list of transforms"),
    ],
)
def test_bad_augmentation_specs(specs: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_augmentation(specs)  # type: ignore[arg-type]
