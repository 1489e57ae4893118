"""Readers: exact values read back from tiny files of every supported format, and every failure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medprune.data.readers import ReaderOptions, SampleReadError, read_sample, to_channels
from medprune.errors import ConfigError, DataError


def _gray8() -> np.ndarray:
    return (np.arange(100, dtype=np.uint8) * 2).reshape(10, 10)


def _dicom(
    path: Path,
    frames: np.ndarray,
    photometric: str = "MONOCHROME2",
    slope: str | None = None,
    intercept: str | None = None,
) -> Path:
    """A minimal uncompressed DICOM (uint16, 1 sample/pixel); ``frames`` is (H, W) or (F, H, W)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = frames.shape[-2:]
    if frames.ndim == 3:
        ds.NumberOfFrames = frames.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept or "0"
    ds.PixelData = frames.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


# ----------------------------------------------------------------------------- images


def test_png_8bit_exact(tmp_path: Path) -> None:
    Image.fromarray(_gray8()).save(tmp_path / "a.png")
    img = read_sample(tmp_path / "a.png", ReaderOptions())
    assert img.dtype == np.float32 and img.shape == (10, 10)
    np.testing.assert_array_equal(img, _gray8().astype(np.float32) / 255.0)


def test_png_16bit_exact(tmp_path: Path) -> None:
    arr = (np.arange(100, dtype=np.uint16) * 655).reshape(10, 10)
    Image.fromarray(arr).save(tmp_path / "a.png")
    img = read_sample(tmp_path / "a.png", ReaderOptions())
    np.testing.assert_allclose(img, arr / 65535.0, atol=1e-7)
    assert img.max() == pytest.approx(99 * 655 / 65535)


def test_tiff_16bit_and_float(tmp_path: Path) -> None:
    arr = (np.arange(144, dtype=np.uint16) * 400).reshape(12, 12)
    Image.fromarray(arr).save(tmp_path / "a.tif")
    np.testing.assert_allclose(read_sample(tmp_path / "a.tif"), arr / 65535.0, atol=1e-7)
    floats = np.linspace(0.0, 1.0, 144, dtype=np.float32).reshape(12, 12)
    Image.fromarray(floats, mode="F").save(tmp_path / "f.tiff")
    np.testing.assert_array_equal(read_sample(tmp_path / "f.tiff"), floats)


def test_rgba_and_palette_become_rgb(tmp_path: Path) -> None:
    rgba = np.zeros((9, 9, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 255, 51, 0, 7
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    img = read_sample(tmp_path / "a.png")
    assert img.shape == (9, 9, 3)
    np.testing.assert_allclose(img[0, 0], [1.0, 0.2, 0.0], atol=1e-7)
    palette = Image.fromarray(np.full((9, 9), 1, dtype=np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 255, 102, 0] + [0] * 762)
    palette.save(tmp_path / "p.png")
    np.testing.assert_allclose(read_sample(tmp_path / "p.png")[4, 4], [1.0, 0.4, 0.0], atol=1e-7)


def test_jpeg_constant_colour(tmp_path: Path) -> None:
    Image.fromarray(np.full((16, 16, 3), (200, 100, 50), dtype=np.uint8)).save(tmp_path / "a.JPG", "JPEG", quality=95)
    img = read_sample(tmp_path / "a.JPG")  # suffixes are case-insensitive
    assert img.shape == (16, 16, 3)
    np.testing.assert_allclose(img.mean(axis=(0, 1)), np.array([200, 100, 50]) / 255.0, atol=3 / 255)


def test_corrupt_png_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(DataError, match=r"broken\.png: unreadable or corrupt image"):
        read_sample(bad)


# ----------------------------------------------------------------------------- .npy


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.full((8, 8), 51, np.uint8), 0.2),
        (np.full((8, 8), 13107, np.uint16), 0.2),
        (np.full((8, 8), 0.25, np.float64), 0.25),
        (np.full((8, 8), 1, np.int64), 1.0),
    ],
)
def test_npy_scaling(tmp_path: Path, array: np.ndarray, expected: float) -> None:
    np.save(tmp_path / "a.npy", array)
    img = read_sample(tmp_path / "a.npy")
    assert img.dtype == np.float32
    np.testing.assert_allclose(img, expected, atol=1e-7)


def test_npy_out_of_range_floats_are_min_max_normalised(tmp_path: Path) -> None:
    arr = np.linspace(-10.0, 30.0, 64).reshape(8, 8)
    np.save(tmp_path / "a.npy", arr)
    img = read_sample(tmp_path / "a.npy")
    np.testing.assert_allclose(img, (arr + 10.0) / 40.0, atol=1e-6)
    assert img.min() == 0.0 and img.max() == 1.0


def test_npy_rgb_and_squeezed_channel(tmp_path: Path) -> None:
    np.save(tmp_path / "rgb.npy", np.full((8, 9, 3), 0.5, np.float32))
    np.save(tmp_path / "one.npy", np.full((8, 9, 1), 0.5, np.float32))
    assert read_sample(tmp_path / "rgb.npy").shape == (8, 9, 3)
    assert read_sample(tmp_path / "one.npy").shape == (8, 9)


@pytest.mark.parametrize(
    ("array", "reason"),
    [
        (np.zeros(64, np.float32), r"wrong shape \(64,\)"),
        (np.zeros((8, 8, 4), np.float32), r"wrong shape \(8, 8, 4\)"),
        (np.zeros((4, 8), np.float32), r"image 4x8 is smaller than 8x8"),
        (np.array([[np.nan] * 8] * 8), r"contains NaN or infinite values"),
        (np.array([[np.inf] * 8] * 8), r"contains NaN or infinite values"),
    ],
)
def test_npy_bad_inputs_name_file_and_reason(tmp_path: Path, array: np.ndarray, reason: str) -> None:
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(DataError, match=r"bad\.npy: " + reason):
        read_sample(tmp_path / "bad.npy")


def test_npy_pickled_object_array_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"obj\.npy: unreadable or corrupt \.npy"):
        read_sample(tmp_path / "obj.npy")


# ----------------------------------------------------------------------------- .txt


def _matrix(values: list[float], sep: str = " ", decimal: str = ".") -> str:
    row = sep.join(f"{v:.2f}".replace(".", decimal) for v in values)
    return "\n".join([row] * 8) + "\n"


def test_txt_temperature_window_exact(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text(_matrix([20.0, 24.0, 27.5, 31.0, 34.5, 38.0, 40.0, 31.0]))
    img = read_sample(tmp_path / "t.txt", ReaderOptions())
    np.testing.assert_allclose(img[0], [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 0.5], atol=1e-6)
    custom = read_sample(tmp_path / "t.txt", ReaderOptions(temperature_window=(30.0, 32.0)))
    np.testing.assert_allclose(custom[0, 3], 0.5, atol=1e-6)


@pytest.mark.parametrize(("sep", "decimal"), [("\t", "."), (";", ","), (",", "."), ("; ", ".")])
def test_txt_separators(tmp_path: Path, sep: str, decimal: str) -> None:
    (tmp_path / "t.txt").write_text(_matrix([24.0, 31.0] * 4, sep, decimal))
    img = read_sample(tmp_path / "t.txt")
    assert img.shape == (8, 8)
    np.testing.assert_allclose(img[3, :2], [0.0, 0.5], atol=1e-6)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("\n\n  \n", "no temperature values"),
        ("# exported by camera\n", "no temperature values"),
        (_matrix([30.0] * 8) + "30 30\n", "ragged temperature matrix: line 9 has 2 values"),
        (_matrix([30.0] * 7 + [float("nan")]), "NaN or infinite"),
        (_matrix([30.0] * 8).replace("30.00", "hot", 1), "non-numeric value 'hot' on line 1"),
        ("30 31 32\n" * 3, "smaller than 8x8"),
    ],
)
def test_txt_bad_inputs_name_file_and_reason(tmp_path: Path, text: str, reason: str) -> None:
    (tmp_path / "bad.txt").write_text(text)
    with pytest.raises(SampleReadError) as info:
        read_sample(tmp_path / "bad.txt")
    assert str(info.value).startswith(str(tmp_path / "bad.txt"))
    assert reason in info.value.reason


# ----------------------------------------------------------------------------- DICOM


def test_dicom_rescale_window_and_minmax(tmp_path: Path) -> None:
    raw = np.arange(64, dtype=np.uint16).reshape(8, 8) * 2  # 0..126
    path = _dicom(tmp_path / "a.dcm", raw, slope="2", intercept="-100")  # -> -100..152
    windowed = read_sample(path, ReaderOptions(dicom_window=(-100.0, 100.0)))
    expected = np.clip((raw * 2.0 - 100.0 + 100.0) / 200.0, 0, 1)
    np.testing.assert_allclose(windowed, expected, atol=1e-6)
    assert windowed[-1, -1] == 1.0  # 152 clipped
    minmax = read_sample(path, ReaderOptions())
    np.testing.assert_allclose(minmax, raw / 126.0, atol=1e-6)


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    raw = np.arange(64, dtype=np.uint16).reshape(8, 8)
    img = read_sample(_dicom(tmp_path / "m1.dicom", raw, photometric="MONOCHROME1"))
    np.testing.assert_allclose(img, 1.0 - raw / 63.0, atol=1e-6)
    assert img[0, 0] == 1.0 and img[-1, -1] == 0.0


def test_dicom_multiframe_refused_then_accepted(tmp_path: Path) -> None:
    frames = np.stack([np.full((8, 8), v, np.uint16) for v in (0, 1, 2)])
    frames[:, 0, 0] = 10  # give each frame a range so min-max is defined
    path = _dicom(tmp_path / "cine.dcm", frames)
    with pytest.raises(DataError, match=r"cine\.dcm: multi-frame DICOM with 3 frames; set data\.dicom_frame"):
        read_sample(path, ReaderOptions())
    img = read_sample(path, ReaderOptions(dicom_frame=2))
    assert img.shape == (8, 8)
    assert img[1, 1] == 0.0 and img[0, 0] == 1.0  # frame 2: value 2 -> 0, the marker 10 -> 1
    with pytest.raises(DataError, match=r"cine\.dcm: data\.dicom_frame=5 but the DICOM has 3 frames"):
        read_sample(path, ReaderOptions(dicom_frame=5))


def test_dicom_corrupt_bytes_name_file(tmp_path: Path) -> None:
    good = _dicom(tmp_path / "good.dcm", np.zeros((8, 8), np.uint16)).read_bytes()
    (tmp_path / "garbage.dcm").write_bytes(b"this is not a dicom file at all" * 10)
    (tmp_path / "truncated.dcm").write_bytes(good[: len(good) - 60])
    with pytest.raises(DataError, match=r"garbage\.dcm: not a DICOM file: no 'DICM' marker at byte 128"):
        read_sample(tmp_path / "garbage.dcm")
    with pytest.raises(DataError, match=r"truncated\.dcm: truncated pixel data: 68 bytes where .* need 128$"):
        read_sample(tmp_path / "truncated.dcm")


def test_dicom_keeps_rescale_and_window_under_any_name(tmp_path: Path) -> None:
    raw = np.arange(64, dtype=np.uint16).reshape(8, 8) * 2
    named = _dicom(tmp_path / "a.dcm", raw, slope="2", intercept="-100")
    (tmp_path / "IM000001").write_bytes(named.read_bytes())
    options = ReaderOptions(dicom_window=(-100.0, 100.0))
    np.testing.assert_array_equal(read_sample(tmp_path / "IM000001", options), read_sample(named, options))
    assert read_sample(tmp_path / "IM000001", options)[-1, -1] == 1.0


# ----------------------------------------------------------------------------- generic failures


def test_missing_zero_byte_and_unsupported(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.png: file not found"):
        read_sample(tmp_path / "nope.png")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.txt: zero-byte file"):
        read_sample(tmp_path / "empty.txt")
    (tmp_path / "scan.nii").write_bytes(b"x")
    with pytest.raises(DataError, match=r"scan\.nii: unsupported file type '\.nii' and not DICOM either \(.*\); "
                                        r"supported: \.png, .*, \.dicom, or DICOM under any name$"):
        read_sample(tmp_path / "scan.nii")
    with pytest.raises(DataError, match=r"nope: file not found"):
        read_sample(tmp_path / "nope")


def test_third_party_exception_becomes_a_one_line_refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(_gray8()).save(tmp_path / "big.png")
    # Over twice MAX_IMAGE_PIXELS Pillow raises DecompressionBombError, which is not an OSError.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    with pytest.raises(SampleReadError) as info:
        read_sample(tmp_path / "big.png")
    assert info.value.reason == (
        "PIL failed to read it (DecompressionBombError: Image size (100 pixels) exceeds limit of 20 pixels, "
        "could be decompression bomb DOS attack.)"
    )


def test_a_bug_in_medprune_is_not_disguised_as_a_bad_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import medprune.data.readers as readers

    np.save(tmp_path / "a.npy", np.full((8, 8), 0.5))
    monkeypatch.setattr(readers, "_float_rule", None)  # medprune's own code now fails
    with pytest.raises(TypeError, match="'NoneType' object is not callable"):
        read_sample(tmp_path / "a.npy")


def test_sample_read_error_reason_is_one_line() -> None:
    exc = SampleReadError(Path("x.dcm"), "first line\n  second\tline ")
    assert exc.reason == "first line second line"
    assert str(exc) == "x.dcm: first line second line"


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"temperature_window": (38.0, 24.0)}, "data.temperature_window"),
        ({"temperature_window": (24.0,)}, "data.temperature_window"),
        ({"dicom_window": (0.0, float("inf"))}, "data.dicom_window"),
        ({"dicom_frame": -1}, "data.dicom_frame"),
    ],
)
def test_reader_options_validated(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        ReaderOptions(**kwargs)


# ----------------------------------------------------------------------------- channels


def test_to_channels_gray_from_rgb_is_bt601() -> None:
    rgb = np.zeros((8, 8, 3), np.float32)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 1.0, 0.5, 0.25
    gray = to_channels(rgb, "gray")
    assert gray.shape == (8, 8, 1) and gray.dtype == np.float32
    np.testing.assert_allclose(gray, 0.299 + 0.587 * 0.5 + 0.114 * 0.25, atol=1e-6)
    np.testing.assert_array_equal(to_channels(rgb, "color"), rgb)


def test_to_channels_colour_from_gray_uses_colormap() -> None:
    import matplotlib

    gray = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    colour = to_channels(gray, "color", colormap="viridis")
    assert colour.shape == (8, 8, 3) and colour.dtype == np.float32
    np.testing.assert_allclose(colour, matplotlib.colormaps["viridis"](gray)[..., :3], atol=1e-6)
    np.testing.assert_allclose(to_channels(gray, "gray")[..., 0], gray)


def test_to_channels_unknown_colormap_suggests() -> None:
    with pytest.raises(ConfigError, match=r"unknown colormap 'infernoo'; did you mean 'inferno'"):
        to_channels(np.zeros((8, 8), np.float32), "color", colormap="infernoo")
    with pytest.raises(ConfigError, match=r"unknown channels 'grey'; did you mean 'gray'"):
        to_channels(np.zeros((8, 8), np.float32), "grey")  # type: ignore[arg-type]
