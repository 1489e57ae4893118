"""DICOM as it really comes: every pydicom test file, PACS names, codecs, palettes, refusals, no noise.

The files are pydicom's own test data (``pydicom/data/test_files``, shipped with the wheel; read
straight from the folder because ``get_testdata_files`` may try to download the external ones).
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.pixels import apply_color_lut, get_decoder
from pydicom.uid import JPEGLSLossless

from medprune.data.readers import ReaderOptions, SampleReadError, read_sample

TEST_FILES = Path(pydicom.data.DATA_ROOT) / "test_files"
ALL_FILES = sorted(p for p in TEST_FILES.rglob("*") if p.is_file() and p.suffix != ".py")

#: Every refusal of a pydicom test file must be one of these specific reasons, never a generic one.
SPECIFIC_REASONS = (
    "not an image: ",
    "file without pixel data: ",
    "file with an empty data set: truncated or damaged",
    "multi-frame DICOM with ",
    "is smaller than 8x8",
    "truncated pixel data: ",
    "invalid NumberOfFrames '1A'",
    "cannot decode transfer syntax ",
    "no PhotometricInterpretation (0028,0004)",
    "not a DICOM file: no 'DICM' marker at byte 128",
    "and not DICOM either",
    "non-numeric value",  # README.txt goes to the temperature-matrix reader by its suffix
)


def _file(name: str) -> Path:
    path = TEST_FILES / name
    assert path.is_file(), f"pydicom test file {name} missing"
    return path


def _quiet_dcmread(path: Path, **kwargs: object) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, **kwargs)


def _pydicom_reference(path: Path, frame: int) -> np.ndarray:
    """What medprune must return, computed from pydicom's own ``Dataset.pixel_array``."""
    logging.disable(logging.CRITICAL)  # pydicom's own chatter here is not the reader's
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True)
            arr = ds.pixel_array
    finally:
        logging.disable(logging.NOTSET)
    if int(ds.get("NumberOfFrames") or 1) > 1:
        arr = arr[frame]
    photometric = ds.PhotometricInterpretation
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)[..., :3]
        return rgb / float(2 ** int(ds.RedPaletteColorLookupTableDescriptor[2]) - 1)
    if arr.ndim == 3:
        return arr / float(2 ** int(ds.BitsStored) - 1)
    values = arr * float(ds.get("RescaleSlope") or 1.0) + float(ds.get("RescaleIntercept") or 0.0)
    span = values.max() - values.min()
    img = (values - values.min()) / span if span > 0 else np.zeros(values.shape)
    return 1.0 - img if photometric == "MONOCHROME1" else img


def _refusal(path: Path, options: ReaderOptions | None = None) -> SampleReadError:
    with pytest.raises(SampleReadError) as info:
        read_sample(path, options)
    return info.value


# ----------------------------------------------------------------------------- every file


@pytest.mark.parametrize("frame", [None, 0], ids=["default", "dicom_frame=0"])
def test_every_pydicom_test_file_reads_or_is_refused_in_one_line(frame: int | None, capsys, caplog) -> None:
    caplog.set_level(logging.WARNING)
    options = ReaderOptions(dicom_frame=frame)
    read, refused = [], []
    for path in ALL_FILES:
        try:
            img = read_sample(path, options)
        except SampleReadError as exc:  # anything else fails the test
            refused.append(path.name)
            assert str(exc) == f"{path}: {exc.reason}"
            assert "\n" not in exc.reason and "force=True" not in exc.reason, exc.reason
            assert any(s in exc.reason for s in SPECIFIC_REASONS), f"{path.name}: unspecific reason {exc.reason!r}"
            continue
        read.append(path.name)
        assert img.dtype == np.float32 and (img.ndim == 2 or img.shape[2:] == (3,)), path.name
        assert np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0, path.name
        np.testing.assert_allclose(img, _pydicom_reference(path, frame or 0), atol=1e-6, err_msg=path.name)
    # The suffix-less image files of the DICOMDIR tree read; multi-frame ones need the frame.
    assert {"6154", "17106", "4919", "4467"} <= set(read)
    assert ("examples_ybr_color.dcm" in read) == (frame == 0) and ("rtdose.dcm" in read) == (frame == 0)
    assert {"rtplan.dcm", "badVR.dcm", "MR_truncated.dcm", "crayons.icc", "IM000001"} <= set(refused)
    assert capsys.readouterr() == ("", "")
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


# ----------------------------------------------------------------------------- recognised by content


def test_dicom_without_suffix_or_with_a_uid_name_is_read_by_content(tmp_path: Path) -> None:
    reference = read_sample(_file("MR_small.dcm"))
    for name in ("IM000001", "1.2.840.113619.2.55.3.604688119", "SCAN.DCM", "export.img"):
        shutil.copyfile(_file("MR_small.dcm"), tmp_path / name)
        np.testing.assert_array_equal(read_sample(tmp_path / name), reference, err_msg=name)


@pytest.mark.parametrize(("source", "name"), [("MR_small.dcm", "raw_IM"), ("MR_small_bigendian.dcm", "raw_be.dcm")])
def test_raw_data_set_without_preamble_is_read(tmp_path: Path, source: str, name: str) -> None:
    ds = _quiet_dcmread(_file(source))
    ds.preamble = None
    ds.file_meta = FileMetaDataset()  # no meta: the transfer syntax is the encoding pydicom parsed
    little = source == "MR_small.dcm"
    ds.save_as(tmp_path / name, implicit_vr=little, little_endian=little)
    assert (tmp_path / name).read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(read_sample(tmp_path / name), read_sample(_file("MR_small.dcm")))


def test_non_dicom_with_unknown_or_no_suffix_is_refused_as_unsupported(tmp_path: Path) -> None:
    shutil.copyfile(_file("crayons.icc"), tmp_path / "profile.icc")
    shutil.copyfile(_file("dicomdirtests/TINY_ALPHA/README"), tmp_path / "README")
    exc = _refusal(tmp_path / "profile.icc")
    assert exc.reason.startswith(
        "unsupported file type '.icc' and not DICOM either (no 'DICM' marker at byte 128 and no DICOM data "
        "elements at the start); supported: .png, .jpg, .jpeg, .tif, .tiff, .npy, .txt, .dcm, .dicom, "
        "or DICOM under any name"
    )
    assert _refusal(tmp_path / "README").reason.startswith("unsupported file type '(no suffix)' and not DICOM either")


def test_dcm_suffix_without_dicom_content_says_not_dicom(tmp_path: Path) -> None:
    (tmp_path / "garbage.dcm").write_bytes(b"this is not a dicom file at all" * 10)
    exc = _refusal(tmp_path / "garbage.dcm")
    assert exc.reason == "not a DICOM file: no 'DICM' marker at byte 128 and no DICOM data elements at the start"


# ----------------------------------------------------------------------------- odd values


def test_number_of_frames_1a_is_a_one_line_refusal(tmp_path: Path) -> None:
    shutil.copyfile(_file("badVR.dcm"), tmp_path / "IM000007")
    for path in (_file("badVR.dcm"), tmp_path / "IM000007"):
        exc = _refusal(path)
        assert str(exc) == f"{path}: invalid NumberOfFrames '1A' (pydicom: Invalid value for VR IS: '1A'.)"


def test_strict_pydicom_failure_inside_pydicom_becomes_a_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    # pydicom raising where it normally warns: a third-party exception the reader did not foresee.
    monkeypatch.setattr(pydicom.config.settings, "reading_validation_mode", pydicom.config.RAISE)
    exc = _refusal(_file("badVR.dcm"))
    assert exc.reason == "pydicom failed to read it (ValueError: Invalid value for VR IS: '1A'.)"


def test_text_rescale_slope_is_refused(tmp_path: Path) -> None:
    ds = _quiet_dcmread(_file("CT_small.dcm"))
    ds["RescaleSlope"].VR = "LO"  # keep the text as written; as DS pydicom itself would refuse to save it
    ds.RescaleSlope = "one"
    ds.save_as(tmp_path / "slope.dcm")
    assert _refusal(tmp_path / "slope.dcm").reason == "invalid RescaleSlope 'one'"


# ----------------------------------------------------------------------------- what is not an image


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("rtplan.dcm", "not an image: RT Plan Storage (1.2.840.10008.5.1.4.1.1.481.5) has no pixel data (PixelData)"),
        ("test-SR.dcm", "not an image: Comprehensive SR Storage (1.2.840.10008.5.1.4.1.1.88.33) has no pixel data"),
        ("dicomdirtests/DICOMDIR", "not an image: Media Storage Directory Storage (1.2.840.10008.1.3.10)"),
        ("waveform_ecg.dcm", "not an image: 12-lead ECG Waveform Storage"),
        ("ExplVR_BigEndNoMeta.dcm", "not an image: RT Ion Plan Storage"),
        (
            "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000001",
            "CT Image Storage file without pixel data: no PixelData element, so it is truncated or was stripped",
        ),
        ("MR_truncated.dcm", "truncated pixel data: 8130 bytes where Rows, Columns, NumberOfFrames, SamplesPerPixel"
                             " and BitsAllocated need 8192"),
    ],
)
def test_not_an_image_and_truncated_are_told_apart(name: str, reason: str) -> None:
    assert _refusal(_file(name)).reason.startswith(reason)


def test_truncated_compressed_file_names_pydicoms_clue(tmp_path: Path) -> None:
    data = _file("SC_rgb_jpeg_dcmtk.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:-100])
    assert _refusal(tmp_path / "cut.dcm").reason == (
        "Secondary Capture Image Storage file with an empty data set: truncated or damaged "
        "(pydicom: End of file reached before delimiter (FFFE,E0DD) found)"
    )


# ----------------------------------------------------------------------------- transfer syntaxes


@pytest.mark.parametrize(
    "name", ["MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm", "MR_small_expb.dcm"]
)
def test_lossless_syntaxes_decode_to_the_uncompressed_image(name: str) -> None:
    np.testing.assert_array_equal(read_sample(_file(name)), read_sample(_file("MR_small.dcm")))


def test_jpeg_lossless_rgb_and_12_bit_jpeg_decode_with_the_extra() -> None:
    # JPEG Lossless SV1 RGB is the RLE image exactly; 12-bit JPEG Extended is beyond Pillow.
    np.testing.assert_array_equal(read_sample(_file("SC_rgb_jpeg_gdcm.dcm")), read_sample(_file("SC_rgb_rle.dcm")))
    img = read_sample(_file("JPGExtended.dcm"))
    assert img.shape == (1024, 256)
    np.testing.assert_allclose(img, _pydicom_reference(_file("JPGExtended.dcm"), 0), atol=1e-6)


def test_missing_plugin_names_syntax_extra_and_pydicoms_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydicom.pixels.decoders import pylibjpeg as pylibjpeg_plugin

    decoder = get_decoder(JPEGLSLossless)
    # What pydicom's registry holds on a machine without the extra: pylibjpeg unavailable too.
    monkeypatch.setattr(decoder, "_available", {})
    unavailable = {**decoder._unavailable, "pylibjpeg": pylibjpeg_plugin.DECODER_DEPENDENCIES[JPEGLSLossless]}
    monkeypatch.setattr(decoder, "_unavailable", unavailable)
    exc = _refusal(_file("MR_small_jpeg_ls_lossless.dcm"))
    assert exc.reason.startswith(
        "no decoder installed for transfer syntax 'JPEG-LS Lossless Image Compression' (1.2.840.10008.1.2.4.80): "
        "pip install 'medprune[dicom]' (pylibjpeg) or pip install python-gdcm; pydicom's plugins for it: "
    )
    assert "pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1" in exc.reason
    assert "gdcm - requires gdcm>=3.0.10" in exc.reason
    assert "\n" not in exc.reason and "force=True" not in exc.reason


def test_syntax_without_any_pydicom_decoder_is_named(tmp_path: Path) -> None:
    ds = _quiet_dcmread(_file("MR_small_RLE.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    ds.save_as(tmp_path / "video.dcm")
    assert _refusal(tmp_path / "video.dcm").reason.startswith(
        "transfer syntax 'MPEG2 Main Profile / Main Level' (1.2.840.10008.1.2.4.100) "
        "has no pixel data decoder in pydicom"
    )


def test_data_no_installed_decoder_can_read_is_told_apart_from_a_missing_plugin() -> None:
    exc = _refusal(_file("JPEG-lossy.dcm"))  # 12-bit JPEG both pylibjpeg and Pillow reject
    assert exc.reason.startswith(
        "cannot decode transfer syntax 'JPEG Extended (Process 2 and 4)' (1.2.840.10008.1.2.4.51): corrupt, "
        "truncated, or a variant the installed decoder(s) (pillow, pylibjpeg) do not support: pylibjpeg: libjpeg error"
    )
    assert "; pillow: Pillow does not support 'JPEG Extended' for samples with 12-bit precision" in exc.reason


# ----------------------------------------------------------------------------- colour


def test_palette_color_is_applied_and_scaled_by_the_lut_depth() -> None:
    path = _file("examples_palette.dcm")
    ds = _quiet_dcmread(path)
    img = read_sample(path)
    assert img.shape == (350, 800, 3)
    assert list(ds.RedPaletteColorLookupTableDescriptor) == [256, 0, 16]
    np.testing.assert_allclose(img, apply_color_lut(ds.pixel_array, ds) / 65535.0, atol=1e-7)
    assert img.max() == pytest.approx(65280 / 65535)


def test_palette_8_bit_entries_in_16_bit_words_scale_by_255_and_bad_luts_are_refused(tmp_path: Path) -> None:
    ds = _quiet_dcmread(_file("examples_palette.dcm"))
    ds.RedPaletteColorLookupTableDescriptor = [256, 0, 8]
    ds.save_as(tmp_path / "lied.dcm")  # 16-bit values under an 8-bit descriptor
    lied = _refusal(tmp_path / "lied.dcm")
    assert lied.reason == "PALETTE COLOR lookup table holds values above its declared 8-bit depth"
    for colour in ("Red", "Green", "Blue"):
        element = ds[f"{colour}PaletteColorLookupTableData"]
        element.value = (np.frombuffer(element.value, "<u2") >> 8).astype("<u2").tobytes()
    ds.save_as(tmp_path / "eight.dcm")
    img = read_sample(tmp_path / "eight.dcm")
    np.testing.assert_allclose(img, apply_color_lut(ds.pixel_array, ds) / 255.0, atol=1e-7)
    del ds.RedPaletteColorLookupTableDescriptor
    ds.save_as(tmp_path / "no_lut.dcm")
    assert _refusal(tmp_path / "no_lut.dcm").reason == (
        "PALETTE COLOR image whose colour lookup table cannot be applied "
        "(No suitable Palette Color Lookup Table Module found)"
    )


@pytest.mark.parametrize("name", ["SC_ybr_full_422_uncompressed.dcm", "SC_rgb_jpeg_dcmtk.dcm"])
def test_ybr_full_422_comes_out_as_rgb(name: str) -> None:
    # The same picture stored as RGB (RLE, lossless): YBR left unconverted would be far off.
    rgb = read_sample(_file("SC_rgb_rle.dcm"))
    img = read_sample(_file(name))
    assert img.shape == rgb.shape == (100, 100, 3)
    assert np.abs(img - rgb).max() < 0.025 and np.abs(img - rgb).mean() < 0.003
    np.testing.assert_allclose(rgb[0, 0], [1.0, 0.0, 0.0])


def test_multi_frame_ybr_jpeg_frame_is_rgb() -> None:
    path = _file("examples_ybr_color.dcm")
    img = read_sample(path, ReaderOptions(dicom_frame=29))
    assert img.shape == (240, 320, 3)
    np.testing.assert_allclose(img, _pydicom_reference(path, 29), atol=1e-6)


@pytest.mark.parametrize(
    ("photometric", "reason"),
    [
        ("HSV", "photometric interpretation 'HSV' is not supported (medprune reads MONOCHROME1, MONOCHROME2, "
                "PALETTE COLOR, RGB, YBR_FULL, YBR_FULL_422, YBR_ICT, YBR_RCT)"),
        ("YBR_PARTIAL_420", "photometric interpretation 'YBR_PARTIAL_420' is not supported"),
        (None, "no PhotometricInterpretation (0028,0004): medprune does not guess how to read the pixels"),
    ],
)
def test_unknown_photometric_interpretation_is_refused_not_guessed(
    tmp_path: Path, photometric: str | None, reason: str
) -> None:
    ds = _quiet_dcmread(_file("examples_rgb_color.dcm"))
    if photometric is None:
        del ds.PhotometricInterpretation
    else:
        ds.PhotometricInterpretation = photometric
    ds.save_as(tmp_path / "odd.dcm")
    assert _refusal(tmp_path / "odd.dcm").reason.startswith(reason)


# ----------------------------------------------------------------------------- no noise


NOISY = ["badVR.dcm", "MR_small_padded.dcm", "JPEG-lossy.dcm", "ExplVR_BigEndNoMeta.dcm", "MR_truncated.dcm",
         "no_meta.dcm", "examples_palette.dcm"]


def test_reading_odd_files_makes_no_noise(capsys, caplog, recwarn) -> None:
    caplog.set_level(logging.DEBUG, logger="medprune")  # root stays at WARNING: pydicom's warnings would show
    pydicom_logger = logging.getLogger("pydicom")
    handlers, level, propagate = list(pydicom_logger.handlers), pydicom_logger.level, pydicom_logger.propagate
    for name in NOISY:
        try:
            read_sample(_file(name))
        except SampleReadError:
            pass
    assert capsys.readouterr() == ("", "")
    assert [r for r in caplog.records if r.name.startswith("pydicom")] == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert len(recwarn) == 0
    assert (pydicom_logger.handlers, pydicom_logger.level, pydicom_logger.propagate) == (handlers, level, propagate)
    # What pydicom said is kept for whoever asks for debug output.
    debug = [r.getMessage() for r in caplog.records if r.name == "medprune.data._dicom"]
    assert any("badVR.dcm: pydicom: Invalid value for VR IS: '1A'." in m for m in debug)
    assert any("MR_small_padded.dcm: pydicom: The pixel data is 8320 bytes long" in m for m in debug)


def test_pydicom_messages_still_reach_the_log_outside_a_read(caplog) -> None:
    caplog.set_level(logging.WARNING)
    read_sample(_file("MR_small_padded.dcm"))
    logging.getLogger("pydicom").warning("outside a read")
    assert [r.getMessage() for r in caplog.records] == ["outside a read"]
