"""Segmentation data: masks (PNG/TIFF/NPY/DICOM), value maps, per-row DICOM frames, mask checks,
and SegmentationDataset (nearest resize, paired seeded augmentation, labels)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from medprune.data import (
    ClassificationDataset,
    MaskValues,
    Sample,
    SampleReadError,
    SegmentationDataset,
    build_augmentation,
    check_samples,
    mask_to_classes,
    read_manifest,
    read_mask,
    read_row_image,
    read_row_mask,
    resize_mask,
    write_manifest,
)
from medprune.data.readers import ReaderOptions
from medprune.errors import ConfigError, DataError

MASK_CLASSES = ["background", "tissue", "plaque"]
LABELS = ["normal", "plaque"]


def _dicom(path: Path, frames: np.ndarray, bits: int = 16) -> Path:
    """A minimal uncompressed MONOCHROME2 DICOM written with ``dcmwrite``; ``frames`` is (H, W) or (F, H, W)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = frames.shape[-2:]
    if frames.ndim == 3:
        ds.NumberOfFrames = frames.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = "2", "-5"  # a mask must ignore them
    ds.PixelData = frames.astype("<u2" if bits == 16 else "u1").tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def _labels(shape: tuple[int, int] = (16, 16), values: tuple[int, int, int] = (0, 1, 2)) -> np.ndarray:
    """Background, a tissue band (rows 4..) and a plaque square (rows 8..12, cols 3..7)."""
    mask = np.full(shape, values[0], np.int64)
    mask[4:, :] = values[1]
    mask[8:12, 3:7] = values[2]
    return mask


# ----------------------------------------------------------------------------- reading masks


@pytest.mark.parametrize(
    ("name", "dtype", "values"),
    [("m8.png", np.uint8, (0, 128, 255)), ("m16.png", np.uint16, (0, 1000, 65535)), ("m.tif", np.uint8, (0, 1, 2))],
)
def test_png_and_tiff_masks_round_trip_their_stored_values(
    tmp_path: Path, name: str, dtype: type, values: tuple[int, int, int]
) -> None:
    mask = _labels(values=values)
    Image.fromarray(mask.astype(dtype)).save(tmp_path / name)
    out = read_mask(tmp_path / name)
    assert out.dtype == np.int64 and out.shape == (16, 16)
    np.testing.assert_array_equal(out, mask)


def test_palette_one_bit_and_grey_rgb_masks(tmp_path: Path) -> None:
    mask = _labels()
    palette = Image.fromarray(mask.astype(np.uint8), mode="L").convert("P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    palette.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "palette.png"), mask)  # the indices, not colours
    Image.fromarray(mask == 2).save(tmp_path / "bits.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "bits.png"), (mask == 2).astype(np.int64))
    grey_rgb = np.repeat((mask * 100).astype(np.uint8)[:, :, None], 3, axis=2)
    Image.fromarray(grey_rgb).save(tmp_path / "grey_rgb.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "grey_rgb.png"), mask * 100)
    colour = grey_rgb.copy()
    colour[8:12, 3:7, 0] = 255
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(SampleReadError) as info:
        read_mask(tmp_path / "colour.png")
    assert str(info.value) == (
        f"{tmp_path / 'colour.png'}: RGB mask whose channels differ at 16 px; save masks as single-channel images "
        "of class values, not colours"
    )


def test_npy_masks_integer_and_boolean(tmp_path: Path) -> None:
    mask = _labels()
    np.save(tmp_path / "i.npy", mask.astype(np.int16))
    np.save(tmp_path / "b.npy", mask == 2)
    np.save(tmp_path / "c.npy", mask[:, :, None].astype(np.uint8))
    np.testing.assert_array_equal(read_mask(tmp_path / "i.npy"), mask)
    np.testing.assert_array_equal(read_mask(tmp_path / "b.npy"), (mask == 2).astype(np.int64))
    np.testing.assert_array_equal(read_mask(tmp_path / "c.npy"), mask)


@pytest.mark.parametrize(
    ("name", "write", "reason"),
    [
        ("f.npy", lambda p: np.save(p, np.zeros((8, 8), np.float32)),
         "floating-point mask (dtype float32); save class values as integers (e.g. uint8)"),
        ("three.npy", lambda p: np.save(p, np.zeros((2, 8, 8), np.uint8)),
         "wrong shape (2, 8, 8); expected an (H, W) single-channel mask"),
        ("m.jpg", lambda p: Image.fromarray(np.zeros((8, 8), np.uint8)).save(p),
         "JPEG masks are refused: lossy compression changes label values at region borders; "
         "save masks as PNG, TIFF, .npy or DICOM"),
        ("m.txt", lambda p: p.write_text("0 1\n"),
         "a .txt file is not a mask; masks are .png, .tif, .tiff, .npy, .dcm, .dicom or DICOM"),
        ("zero.png", lambda p: p.write_bytes(b""), "zero-byte file"),
        ("corrupt.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\ngarbage"), "unreadable or corrupt image"),
    ],
)
def test_bad_masks_are_one_line_refusals_naming_the_file(tmp_path: Path, name: str, write, reason: str) -> None:
    write(tmp_path / name)
    with pytest.raises(SampleReadError) as info:
        read_mask(tmp_path / name)
    assert info.value.path == tmp_path / name and "\n" not in str(info.value)
    assert info.value.reason.startswith(reason)


def test_dicom_masks_single_and_multi_frame_are_raw_stored_values(tmp_path: Path) -> None:
    mask = _labels(values=(0, 60, 90))
    single = _dicom(tmp_path / "single.dcm", mask, bits=8)
    np.testing.assert_array_equal(read_mask(single), mask)  # no rescale (slope 2, intercept -5 ignored)
    np.testing.assert_array_equal(read_mask(single, frame=7), mask)  # a single frame ignores the index
    stack = np.stack([mask, mask * 2, np.zeros_like(mask)])
    multi = _dicom(tmp_path / "IM000002", stack)  # a PACS name: DICOM by content
    for k in range(3):
        np.testing.assert_array_equal(read_mask(multi, frame=k), stack[k])
    np.testing.assert_array_equal(read_mask(multi, ReaderOptions(dicom_frame=1)), stack[1])
    np.testing.assert_array_equal(read_mask(multi, ReaderOptions(dicom_frame=1), frame=2), stack[2])  # row wins
    with pytest.raises(SampleReadError) as info:
        read_mask(multi)
    assert info.value.reason == "multi-frame DICOM with 3 frames; set data.dicom_frame or the manifest's frame column"
    with pytest.raises(SampleReadError) as info:
        read_mask(multi, frame=3)
    assert info.value.reason == "frame=3 but the DICOM has 3 frames (0..2)"


# ----------------------------------------------------------------------------- value maps


def test_value_maps_default_explicit_and_lists() -> None:
    raw = _labels(values=(0, 128, 255))
    path = Path("m.png")
    default = MaskValues.build(MASK_CLASSES)
    assert default.values == ((0,), (1,), (2,)) and default.describe() == "background=0, tissue=1, plaque=2"
    np.testing.assert_array_equal(mask_to_classes(_labels(), default, path), _labels())
    explicit = mask_to_classes(raw, {"background": 0, "tissue": 128, "plaque": 255}, path)
    assert explicit.dtype == np.int64
    np.testing.assert_array_equal(explicit, _labels())
    lists = MaskValues.build(["background", "plaque"], {"plaque": [128, 255], "background": 0})
    assert lists.classes == ("background", "plaque")  # the class list fixes the order, not the mapping
    np.testing.assert_array_equal(mask_to_classes(raw, lists, path), (raw > 0).astype(np.int64))


def test_unmapped_values_are_refused_with_file_values_and_pixel_counts() -> None:
    raw = _labels()
    raw[0, :12] = 7
    raw[1, :3] = 9
    with pytest.raises(SampleReadError) as info:
        mask_to_classes(raw, MaskValues.build(MASK_CLASSES), Path("/data/masks/f3.png"))
    assert str(info.value) == (
        "/data/masks/f3.png: values 7 (12 px), 9 (3 px) are not mapped to any class of data.mask_values "
        "(background=0, tissue=1, plaque=2)"
    )


@pytest.mark.parametrize(
    ("classes", "mapping", "message"),
    [
        (MASK_CLASSES, {"background": 0, "tissue": 1, "plak": 2},
         r"data\.mask_values: unknown mask class 'plak'; did you mean 'plaque'\?"),
        (MASK_CLASSES, {"background": 0, "plaque": 2}, r"data\.mask_values: no value for class\(es\) tissue"),
        (None, {"background": 0, "plaque": [0, 255]},
         r"data\.mask_values: value 0 is given to both background and plaque"),
        (None, {"background": 0, "plaque": 1.5},
         r"data\.mask_values\.plaque: expected an integer or a list of integers"),
        (None, {"background": 0, "plaque": []}, r"data\.mask_values\.plaque: no raw value for this class"),
        (None, [0, 1], r"data\.mask_values: expected a mapping"),
        (None, None, r"data\.mask_values: give the mask classes"),
    ],
)
def test_bad_value_maps_name_the_key(classes, mapping, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MaskValues.build(classes, mapping)


# ----------------------------------------------------------------------------- manifests and frames


def test_manifest_mask_column_resolves_and_round_trips(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    manifest = tmp_path / "data" / "m.csv"
    manifest.write_text(
        "path,label,patient_id,mask,frame,view\n"
        "img/a.png,plaque,P1,masks/a.png,3,polar\n"
        "img/b.png,normal,P2,,,polar\n"
    )
    first, second = read_manifest(manifest)
    assert first.mask == tmp_path / "data" / "masks" / "a.png" and second.mask is None
    assert first.extras == {"frame": "3", "view": "polar"} and (first.frame, second.frame) == (3, None)
    out = tmp_path / "data" / "again.csv"
    write_manifest(out, [s.as_row() for s in (first, second)])
    assert out.read_text().splitlines()[:2] == [
        "path,label,patient_id,split,mask,frame,view",
        "img/a.png,plaque,P1,,masks/a.png,3,polar",  # mask written relative to the manifest, like path
    ]
    assert read_manifest(out) == [first, second]


def test_per_row_frame_selects_image_and_mask_frames(tmp_path: Path) -> None:
    frames = np.stack([np.full((16, 16), 100 * k, np.uint16) for k in range(4)])
    masks = np.stack([_labels() * (k % 2) for k in range(4)])
    _dicom(tmp_path / "pullback.dcm", frames)
    _dicom(tmp_path / "pullback_mask.dcm", masks, bits=8)
    rows = "".join(f"pullback.dcm,normal,P1,pullback_mask.dcm,{k}\n" for k in range(4))
    (tmp_path / "m.csv").write_text("path,label,patient_id,mask,frame\n" + rows)
    samples = read_manifest(tmp_path / "m.csv")
    # frame k holds 100k, rescaled to 200k - 5, windowed to 0.1k; the row's frame overrides dicom_frame
    options = ReaderOptions(dicom_frame=0, dicom_window=(-5.0, 1995.0))
    for k, sample in enumerate(samples):
        assert read_row_image(sample, options)[5, 5] == pytest.approx(0.1 * k)
        np.testing.assert_array_equal(read_row_mask(sample, options), masks[k])
    classification = ClassificationDataset(samples, LABELS, (16, 16), "gray", options, mean=0.0, std=1.0)
    assert [float(classification[k][0][0, 5, 5]) for k in range(4)] == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_frame_names_on_non_dicom_files_are_left_alone(tmp_path: Path) -> None:
    """DMR manifests use the frame column for file stems; only DICOM rows need an index."""
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("path,label,patient_id,frame\na.png,healthy,P1,frame1\n")
    (sample,) = read_manifest(tmp_path / "m.csv")
    assert sample.extras["frame"] == "frame1" and read_row_image(sample).shape == (8, 8)
    assert check_samples([sample], ["healthy"], progress=False) == []


def test_bad_frames_are_row_refusals(tmp_path: Path) -> None:
    _dicom(tmp_path / "pullback.dcm", np.zeros((3, 8, 8), np.uint16))
    rows = "pullback.dcm,normal,P1,1\npullback.dcm,normal,P1,one\npullback.dcm,normal,P1,-2\npullback.dcm,normal,P1,3\n"
    (tmp_path / "m.csv").write_text("path,label,patient_id,frame\n" + rows)
    bad = check_samples(read_manifest(tmp_path / "m.csv"), LABELS, progress=False)
    assert [(b.row, b.reason) for b in bad] == [
        (2, "frame 'one' is not a frame index (an integer >= 0)"),
        (3, "frame '-2' is not a frame index (an integer >= 0)"),
        (4, "frame=3 but the DICOM has 3 frames (0..2)"),
    ]
    dataset = ClassificationDataset(read_manifest(tmp_path / "m.csv"), LABELS, (8, 8), "gray")
    with pytest.raises(DataError, match=r"pullback\.dcm \(row 2\): frame 'one' is not a frame index"):
        dataset[1]
    _dicom(tmp_path / "masks.dcm", np.zeros((3, 8, 8), np.uint8), bits=8)
    (tmp_path / "seg.csv").write_text("path,label,patient_id,frame,mask\npullback.dcm,normal,P1,1.5,masks.dcm\n")
    bad = check_samples(read_manifest(tmp_path / "seg.csv"), LABELS, masks=True, progress=False)
    assert [b.reason for b in bad] == ["frame '1.5' is not a frame index (an integer >= 0)"]  # once per row


# ----------------------------------------------------------------------------- checking masks


def _segmentation_folder(tmp_path: Path) -> Path:
    image = np.zeros((16, 16), np.uint8)
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(_labels().astype(np.uint8)).save(tmp_path / "good.png")
    Image.fromarray(_labels((12, 16)).astype(np.uint8)).save(tmp_path / "small.png")
    odd = _labels().astype(np.uint8)
    odd[0, :5] = 7
    Image.fromarray(odd).save(tmp_path / "odd.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    (tmp_path / "m.csv").write_text(
        "path,label,patient_id,mask\n"
        "img.png,plaque,P1,good.png\n"  # 1
        "img.png,normal,P1,\n"  # 2: no mask
        "img.png,normal,P2,corrupt.png\n"  # 3
        "img.png,plaque,P2,small.png\n"  # 4: 12x16 for a 16x16 image
        "img.png,plaque,P3,odd.png\n"  # 5: value 7
        "img.png,normal,P3,missing.png\n"  # 6
        "missing_img.png,tumour,P4,odd.png\n"  # 7: three problems, one line
    )
    return tmp_path / "m.csv"


def test_check_samples_reports_every_bad_mask_row_in_one_pass(tmp_path: Path) -> None:
    samples = read_manifest(_segmentation_folder(tmp_path))
    bad = check_samples(samples, LABELS, masks=MaskValues.build(MASK_CLASSES), progress=False)
    reasons = {b.row: b.reason for b in bad}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7]
    assert reasons[2] == "no mask: the manifest's mask column is missing or empty in this row"
    assert reasons[3].startswith(f"mask {tmp_path / 'corrupt.png'}: unreadable or corrupt image")
    assert reasons[4] == f"mask {tmp_path / 'small.png'}: size 12x16 differs from the image's 16x16 (height x width)"
    unmapped = "values 7 (5 px) are not mapped to any class of data.mask_values (background=0, tissue=1, plaque=2)"
    assert reasons[5] == f"mask {tmp_path / 'odd.png'}: {unmapped}"
    assert reasons[6] == f"mask {tmp_path / 'missing.png'}: file not found"
    assert reasons[7] == (
        "label 'tumour' is not one of the classes normal, plaque; file not found; "
        f"mask {tmp_path / 'odd.png'}: {unmapped}"
    )
    assert all(b.path == tmp_path / ("missing_img.png" if b.row == 7 else "img.png") for b in bad)
    # masks=True checks presence, readability and size, not values; without masks only images are read
    assert [b.row for b in check_samples(samples, LABELS, masks=True, progress=False)] == [2, 3, 4, 6, 7]
    assert [b.row for b in check_samples(samples, LABELS, progress=False)] == [7]


# ----------------------------------------------------------------------------- the dataset


def _segmentation_samples(tmp_path: Path, n: int = 6, size: tuple[int, int] = (16, 16)) -> list[Sample]:
    """Images with a gradient and a bright square; masks 0/128/255 (tissue band, plaque = the square)."""
    samples = []
    height, width = size
    for i in range(n):
        img = np.tile(np.linspace(0, 100, width, dtype=np.float32), (height, 1)).astype(np.uint8)
        raw = _labels(size, values=(0, 128, 255))
        img[raw == 255] = 255
        Image.fromarray(img).save(tmp_path / f"img{i}.png")
        Image.fromarray(raw.astype(np.uint8)).save(tmp_path / f"mask{i}.png")
        label = "plaque" if i % 2 else "normal"
        mask = tmp_path / f"mask{i}.png"
        samples.append(Sample(tmp_path / f"img{i}.png", label, f"P{i // 2}", None, i + 1, {}, mask))
    return samples


VALUES = {"background": 0, "tissue": 128, "plaque": 255}


def test_items_shapes_labels_and_attributes(tmp_path: Path) -> None:
    samples = _segmentation_samples(tmp_path, 4)
    ds = SegmentationDataset(samples, MASK_CLASSES, (16, 16), "color", label_classes=LABELS, values=VALUES)
    image, mask, index = ds[2]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert mask.shape == (16, 16) and mask.dtype == torch.int64 and index == 2
    torch.testing.assert_close(mask, torch.from_numpy(_labels()))
    assert (ds.classes, ds.num_classes, ds.label_classes) == (MASK_CLASSES, 3, LABELS)
    assert ds.labels == [0, 1, 0, 1] and ds.patient_ids == ["P0", "P0", "P1", "P1"]
    assert ds.paths == [s.path for s in samples] and len(ds) == 4


def test_nearest_resize_keeps_only_mapped_classes_and_registration(tmp_path: Path) -> None:
    samples = _segmentation_samples(tmp_path, 1, size=(20, 24))
    ds = SegmentationDataset(samples, MASK_CLASSES, (11, 13), "gray", label_classes=LABELS, values=VALUES,
                             mean=0.0, std=1.0)
    image, mask, _ = ds[0]
    assert set(mask.unique().tolist()) == {0, 1, 2}  # 128 → 1, 255 → 2, nothing in between
    expected = cv2.resize(_labels((20, 24)).astype(np.uint8), (13, 11), interpolation=cv2.INTER_NEAREST_EXACT)
    np.testing.assert_array_equal(mask.numpy(), expected)
    np.testing.assert_array_equal(resize_mask(_labels((20, 24)), (11, 13)), expected)
    # the white square lies under the plaque pixels: every plaque pixel is brighter than the gradient
    # (<= 100/255) and every pure-white pixel is plaque
    assert float(image[0][mask == 2].min()) > 0.4 and bool((mask[image[0] > 0.99] == 2).all())


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "HorizontalFlip", "p": 1.0},
        {"name": "Rotate", "limit": [30, 30], "interpolation": cv2.INTER_NEAREST, "p": 1.0},
        {"name": "Affine", "rotate": [-40, 40], "translate_px": [-3, 3], "interpolation": cv2.INTER_NEAREST, "p": 1.0},
        {"name": "ElasticTransform", "alpha": 30, "sigma": 4, "interpolation": cv2.INTER_NEAREST, "p": 1.0},
    ],
    ids=lambda s: s["name"],
)
def test_paired_augmentation_moves_image_and_mask_identically(tmp_path: Path, spec: dict) -> None:
    """The bright square and the plaque class cover the same pixels after the transform, exactly."""
    samples = _segmentation_samples(tmp_path, 3, size=(24, 24))
    augmentation = build_augmentation([spec, {"name": "RandomBrightnessContrast", "p": 0.0}], masks=True)
    ds = SegmentationDataset(samples, MASK_CLASSES, (24, 24), "gray", augmentation=augmentation,
                             label_classes=LABELS, values=VALUES, mean=0.0, std=1.0, seed=3)
    plain = SegmentationDataset(samples, MASK_CLASSES, (24, 24), "gray", label_classes=LABELS, values=VALUES)
    for k in range(3):
        image, mask, _ = ds[k]
        square = image[0] > 0.99  # only the square is white (the gradient stops at 100/255)
        assert not torch.equal(mask, plain[k][1])  # it moved
        assert int(square.sum()) > 0
        torch.testing.assert_close(square, mask == 2, rtol=0, atol=0)
    flipped = SegmentationDataset(samples, MASK_CLASSES, (24, 24), "gray", label_classes=LABELS, values=VALUES,
                                  augmentation=build_augmentation([{"name": "HorizontalFlip", "p": 1.0}]))
    torch.testing.assert_close(flipped[0][1], plain[0][1].flip(-1), rtol=0, atol=0)


def test_augmentation_is_seeded_per_seed_epoch_index(tmp_path: Path) -> None:
    samples = _segmentation_samples(tmp_path, 6)

    def dataset(seed: int) -> SegmentationDataset:
        augmentation = build_augmentation(
            [{"name": "Affine", "rotate": [-30, 30], "p": 0.9}, {"name": "GaussNoise", "p": 0.5}], masks=True
        )
        return SegmentationDataset(samples, MASK_CLASSES, (16, 16), "gray", augmentation=augmentation, seed=seed,
                                   label_classes=LABELS, values=VALUES)

    a, b = dataset(5), dataset(5)
    first = {k: a[k][:2] for k in range(6)}
    backwards = {k: b[k][:2] for k in reversed(range(6))}  # another worker, another order: same draws
    for k in range(6):
        for x, y in zip(first[k], backwards[k], strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
    a.set_epoch(1)
    assert sum(not torch.equal(first[k][1], a[k][1]) for k in range(6)) >= 4
    a.set_epoch(0)  # a resumed run sees the epoch-0 draws again
    for k in range(6):
        torch.testing.assert_close(a[k][1], first[k][1], rtol=0, atol=0)
    other = dataset(6)
    assert any(not torch.equal(first[k][1], other[k][1]) for k in range(6))


def test_label_blending_and_non_class_fill_are_refused(tmp_path: Path) -> None:
    samples = _segmentation_samples(tmp_path, 1)
    with pytest.raises(ConfigError, match=r"item 0 \(Rotate\): mask_interpolation=1 blends class labels"):
        build_augmentation([{"name": "Rotate", "mask_interpolation": cv2.INTER_LINEAR}], masks=True)
    linear = build_augmentation([{"name": "Rotate", "mask_interpolation": cv2.INTER_LINEAR}])
    with pytest.raises(ConfigError, match=r"data\.augmentation \(Rotate\): mask_interpolation=1"):
        SegmentationDataset(samples, MASK_CLASSES, (16, 16), "gray", augmentation=linear, label_classes=LABELS,
                            values=VALUES)
    fill = build_augmentation([{"name": "Rotate", "limit": [45, 45], "fill_mask": 9, "p": 1.0}], masks=True)
    ds = SegmentationDataset(samples, MASK_CLASSES, (16, 16), "gray", augmentation=fill, label_classes=LABELS,
                             values=VALUES)
    with pytest.raises(ConfigError, match=r"data\.augmentation: filled the mask with 9, which is not a class index"):
        ds[0]


def test_dataset_errors_name_file_and_row(tmp_path: Path) -> None:
    samples = _segmentation_samples(tmp_path, 2)
    no_mask = [Sample(samples[0].path, "normal", "P0", None, 4, {})]
    with pytest.raises(DataError, match=r"img0\.png \(row 4\): no mask: the manifest's mask column is missing"):
        SegmentationDataset(no_mask, MASK_CLASSES, (16, 16), "gray", label_classes=LABELS)
    with pytest.raises(DataError, match=r"img1\.png \(row 2\): label 'plaque' is not one of the classes normal"):
        SegmentationDataset(samples, MASK_CLASSES, (16, 16), "gray", label_classes=["normal"], values=VALUES)
    with pytest.raises(ConfigError, match=r"data\.mask_values: classes background, plaque differ from the mask"):
        SegmentationDataset(samples, MASK_CLASSES, (16, 16), "gray", label_classes=LABELS,
                            values=MaskValues.build(["background", "plaque"]))
    unmapped = SegmentationDataset(samples, MASK_CLASSES, (16, 16), "gray", label_classes=LABELS)  # 0/1/2 expected
    with pytest.raises(DataError, match=r"img0\.png \(row 1\): mask .*mask0\.png: values 128 \(176 px\), 255 \(16 px\) "
                       r"are not mapped to any class of data\.mask_values"):
        unmapped[0]
