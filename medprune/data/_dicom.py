"""DICOM as it really comes: recognised by content, decoded through pydicom 3, refused in one line.

:func:`read_dicom` turns one file into modality values (grey) or RGB in [0, 1] — or, for
segmentation masks, into the stored values as they are (``raw=True``); the normalisation
policy (window, min–max, MONOCHROME1 inversion) and the mask rules stay in
:mod:`medprune.data.readers`, which dispatches here for ``.dcm``/``.dicom`` files and for files
whose name says nothing (PACS exports such as ``IM000001`` or ``1.2.840…``). A multi-frame file
(an IVOCT pullback, a cine loop) is read one frame at a time: the frame comes from
``data.dicom_frame`` or the manifest's per-row ``frame`` column.

What makes a file DICOM, and what is refused, with which reason:

* the 128-byte preamble followed by ``DICM`` (:func:`pydicom.misc.is_dicom`), or — for raw data
  sets without it (ACR-NEMA style, "no meta" exports) — a forced pydicom parse that starts with a
  plausible group and yields at least two tags of the public DICOM dictionary. Anything else is
  :class:`NotDicomError`.
* no pixel data: "not an image" for RT plans, structured reports, DICOMDIR, waveforms …; a file
  whose SOP class or Image Pixel attributes promise an image but whose ``PixelData`` is missing
  is reported as truncated or stripped.
* pixel data pydicom has no decoder for, or whose decoder plugins are not installed: the reason
  names the transfer syntax (name and UID) and what would decode it — ``pip install
  'medprune[dicom]'`` (the pylibjpeg family) or ``python-gdcm`` — as listed by pydicom's own
  decoder registry (:func:`pydicom.pixels.get_decoder`).
* truncated or corrupt pixel data, invalid attributes (``NumberOfFrames='1A'``, a text
  ``RescaleSlope``), photometric interpretations other than MONOCHROME1/2, PALETTE COLOR, RGB
  and the YBR forms pydicom converts to RGB.

pydicom's warnings and the records of the ``pydicom`` loggers raised while reading are captured,
never printed: a file that reads makes no noise, a message that explains a refusal is folded into
its reason, and every message is kept at DEBUG on this module's logger. The capture touches
process-wide state (``warnings`` filters; a handler on the ``pydicom`` logger, whose propagation
is stopped) for the duration of one read, so reads must not run in parallel threads
(DataLoader workers are processes). pydicom's own debug handler (``pydicom.config.debug()``)
keeps printing.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pydicom.dataset import Dataset
    from pydicom.pixels.decoders.base import Decoder
    from pydicom.uid import UID

logger = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".dicom")
DICOM_EXTRA = "pip install 'medprune[dicom]'"
"""Installs the pylibjpeg decoders (JPEG, JPEG-LS, JPEG 2000, HTJ2K, RLE) pydicom can use."""

#: Photometric interpretations read as stored, or converted to RGB by pydicom while decoding.
PHOTOMETRIC_INTERPRETATIONS = (
    "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT",
)
_DECODED_AS = ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB")
# Raw data sets (no preamble) start with a group among these; cheap to test before a forced parse.
_FIRST_GROUPS = range(0x0002, 0x0029, 2)
_MIN_KNOWN_TAGS = 2
_GIST_CHARS = 240


class DicomRefusal(Exception):
    """A DICOM file that cannot be used; ``reason`` is one line (the caller names the file)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotDicomError(DicomRefusal):
    """The content is not DICOM: no preamble marker, and no data set pydicom can make sense of."""


@dataclass(frozen=True)
class DicomPixels:
    """One decoded frame.

    Attributes:
        values: ``(H, W)`` float64 modality values (rescale slope/intercept applied) or
            ``(H, W, 3)`` float32 RGB already in [0, 1]; with ``raw=True`` the stored values as
            decoded, unscaled (``(H, W)``, or ``(H, W, 3)`` for colour), in pydicom's dtype.
        monochrome1: high values are dark (the caller inverts after normalising).
    """

    values: np.ndarray
    monochrome1: bool = False


def read_dicom(
    path: Path, frame: int | None = None, *, frame_key: str = "data.dicom_frame", raw: bool = False
) -> DicomPixels:
    """Decode ``path`` (frame ``frame`` of a multi-frame file) with pydicom 3.

    ``frame`` is ignored by single-frame files and required by multi-frame ones; ``frame_key``
    names where it came from in refusals (``data.dicom_frame``, or ``frame`` for the manifest
    column). ``raw=True`` returns the stored values unscaled (no rescale slope/intercept, no
    palette, no inversion) — what a segmentation mask holds.

    Raises :class:`NotDicomError` when the content is not DICOM and :class:`DicomRefusal` with a
    one-line reason for every DICOM file that cannot be turned into an image.

    Example::

        px = read_dicom(Path("IM000001"))        # suffix-less PACS export
        px.values.shape                          # (512, 512) modality values
    """
    with _quiet_pydicom(path) as notes:
        ds = _open(path, notes)
        return _pixels(ds, frame, notes, frame_key=frame_key, raw=raw)


# ----------------------------------------------------------------------------- quiet reads


class _Notes(logging.Handler):
    """What pydicom said during one read: its warnings and its loggers' records (WARNING and up)."""

    def __init__(self, caught: list[warnings.WarningMessage], path: Path) -> None:
        super().__init__(logging.WARNING)
        self._caught = caught
        self._logged: list[str] = []
        self._path = str(path)

    def emit(self, record: logging.LogRecord) -> None:
        self._logged.append(record.getMessage())

    def messages(self) -> list[str]:
        seen: dict[str, None] = {}
        for text in [str(w.message) for w in self._caught] + self._logged:
            # The caller names the file already; pydicom's "… in file /long/path" would repeat it.
            seen.setdefault(gist(text.replace(f" in file {self._path}", "")), None)
        return [m for m in seen if m]

    def explaining(self, *needles: str) -> str:
        """``" (pydicom: …)"`` for the first message containing a needle (any message when no
        needle is given), else ``""``."""
        for message in self.messages():
            if not needles or any(needle in message for needle in needles):
                return f" (pydicom: {message})"
        return ""


@contextmanager
def _quiet_pydicom(path: Path) -> Iterator[_Notes]:
    # pydicom logs on "pydicom" and on module loggers below it (a failing codec plugin is logged
    # with its traceback by pydicom.pixels.decoders.base); all of them propagate through
    # "pydicom", so one handler there, with propagation stopped for the read, hears everything.
    pydicom_logger = logging.getLogger("pydicom")
    propagate = pydicom_logger.propagate
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        notes = _Notes(caught, path)
        pydicom_logger.addHandler(notes)
        pydicom_logger.propagate = False
        try:
            yield notes
        finally:
            pydicom_logger.propagate = propagate
            pydicom_logger.removeHandler(notes)
            for message in notes.messages():
                logger.debug("%s: pydicom: %s", path, message)


def gist(text: object) -> str:
    """One line of a third-party message, without pydicom's force=True hint or URLs."""
    text = " ".join(str(text).split())
    text = re.sub(r"\s*Please see <[^>]*>[^.]*\.?", "", text)
    sentences = [s for s in re.split(r"(?<=\.)\s+", text) if "force=True" not in s]
    text = " ".join(sentences).strip()
    return text if len(text) <= _GIST_CHARS else text[: _GIST_CHARS - 1].rstrip() + "…"


# ----------------------------------------------------------------------------- parsing


def _open(path: Path, notes: _Notes) -> Dataset:
    import pydicom
    from pydicom.misc import is_dicom

    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
        preamble = is_dicom(path)
    except OSError as exc:
        raise DicomRefusal(f"cannot read the file ({exc.strerror or exc})") from exc
    if preamble:
        try:
            return pydicom.dcmread(path)
        # pydicom raises many types on a damaged data set (struct.error, EOFError, KeyError …);
        # each becomes this file's refusal.
        except Exception as exc:  # noqa: BLE001
            raise DicomRefusal(f"corrupt DICOM data set ({type(exc).__name__}: {gist(exc)})") from exc
    if not _plausible_start(head):
        raise NotDicomError("no 'DICM' marker at byte 128 and no DICOM data elements at the start")
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure of a raw data set means "not DICOM"
        raise NotDicomError(
            f"no 'DICM' marker at byte 128 and pydicom cannot parse a data set ({type(exc).__name__})"
        ) from exc
    if _known_tags(ds) < _MIN_KNOWN_TAGS:
        raise NotDicomError("no 'DICM' marker at byte 128 and pydicom finds no DICOM data elements")
    return ds


def _plausible_start(head: bytes) -> bool:
    if len(head) < 8:
        return False
    little = int.from_bytes(head[:2], "little")
    big = int.from_bytes(head[:2], "big")
    return little in _FIRST_GROUPS or big in _FIRST_GROUPS


def _known_tags(ds: Dataset) -> int:
    from pydicom.datadict import dictionary_has_tag

    return sum(1 for tag in ds.keys() if tag.group > 0x0002 and dictionary_has_tag(tag))


# ----------------------------------------------------------------------------- pixels


def _pixels(ds: Dataset, frame: int | None, notes: _Notes, *, frame_key: str, raw: bool) -> DicomPixels:
    keyword = _pixel_keyword(ds, notes)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if not photometric:
        raise DicomRefusal("no PhotometricInterpretation (0028,0004): medprune does not guess how to read the pixels")
    if photometric not in PHOTOMETRIC_INTERPRETATIONS:
        raise DicomRefusal(
            f"photometric interpretation {photometric!r} is not supported "
            f"(medprune reads {', '.join(PHOTOMETRIC_INTERPRETATIONS)})"
        )
    frames = _frame_count(ds, notes)
    index = None
    if frames > 1:
        if frame is None:
            raise DicomRefusal(
                f"multi-frame DICOM with {frames} frames; set data.dicom_frame or the manifest's frame column"
            )
        if frame >= frames:
            raise DicomRefusal(f"{frame_key}={frame} but the DICOM has {frames} frames (0..{frames - 1})")
        index = frame
    uid = _transfer_syntax(ds, keyword)
    arr, properties = _decode(ds, uid, index, notes)
    decoded = str(properties.get("photometric_interpretation", "")).upper()
    if decoded not in _DECODED_AS:
        raise DicomRefusal(
            f"pydicom decoded {photometric!r} pixel data as {decoded!r}, which medprune does not convert; "
            f"expected one of {', '.join(_DECODED_AS)}"
        )
    if raw:
        return DicomPixels(arr)
    if decoded == "PALETTE COLOR":
        return DicomPixels(_apply_palette(ds, arr))
    if decoded == "RGB":
        return DicomPixels(_scale_rgb(arr, properties))
    if arr.ndim != 2:
        raise DicomRefusal(f"{decoded} pixel data decoded to shape {tuple(arr.shape)}; expected (rows, columns)")
    slope = _number(ds, "RescaleSlope", 1.0, notes)
    intercept = _number(ds, "RescaleIntercept", 0.0, notes)
    if slope == 0.0:
        raise DicomRefusal("invalid RescaleSlope 0 (every pixel would get the same value)")
    return DicomPixels(arr.astype(np.float64) * slope + intercept, monochrome1=decoded == "MONOCHROME1")


def _pixel_keyword(ds: Dataset, notes: _Notes) -> str:
    present = [kw for kw in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") if kw in ds]
    if len(present) == 1:
        return present[0]
    if present:
        raise DicomRefusal(f"more than one pixel data element ({', '.join(present)})")
    sop = _sop_class(ds)
    promised = [kw for kw in ("Rows", "Columns", "BitsAllocated") if kw in ds]
    truncated = notes.explaining("End of file", "delimiter", "truncat", "Expected sequence")
    what = sop.name if sop is not None else "DICOM"
    if len(ds) == 0:
        raise DicomRefusal(f"{what} file with an empty data set: truncated or damaged{truncated}")
    if promised or truncated or (sop is not None and "Image Storage" in sop.name):
        has = f"it has {', '.join(promised)} but " if promised else ""
        raise DicomRefusal(
            f"{what} file without pixel data: {has}no PixelData element, so it is truncated or was "
            f"stripped of its pixels{truncated}"
        )
    if sop is None:
        raise DicomRefusal("not an image: the DICOM data set has no SOP class and no pixel data (PixelData)")
    raise DicomRefusal(f"not an image: {sop.name} ({sop}) has no pixel data (PixelData)")


def _sop_class(ds: Dataset) -> UID | None:
    from pydicom.uid import UID

    value = ds.get("SOPClassUID") or getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID")
    return UID(str(value)) if value else None


def _frame_count(ds: Dataset, notes: _Notes) -> int:
    value = ds.get("NumberOfFrames")
    if value is None or str(value).strip() == "":
        return 1
    try:
        frames = int(value)
    except (TypeError, ValueError):
        raise DicomRefusal(f"invalid NumberOfFrames {str(value)!r}{notes.explaining(repr(str(value)))}") from None
    if frames < 0:
        raise DicomRefusal(f"invalid NumberOfFrames {frames}")
    return max(frames, 1)  # 0 means one frame to pydicom too


def _number(ds: Dataset, keyword: str, default: float, notes: _Notes) -> float:
    value = ds.get(keyword)
    if value is None or str(value).strip() == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DicomRefusal(f"invalid {keyword} {str(value)!r}{notes.explaining(repr(str(value)))}") from None
    if not np.isfinite(number):
        raise DicomRefusal(f"invalid {keyword} {str(value)!r}")
    return number


def _transfer_syntax(ds: Dataset, keyword: str) -> UID:
    """The data set's transfer syntax; for a raw data set, the encoding pydicom parsed it with."""
    from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    declared = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    if declared:
        return UID(str(declared))
    if ds[keyword].is_undefined_length:
        raise DicomRefusal(
            "compressed (encapsulated) pixel data but no Transfer Syntax UID (0002,0010) to say which codec"
        )
    implicit, little = ds.original_encoding
    if little is False:
        return ExplicitVRBigEndian
    return ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian


def _decode(ds: Dataset, uid: UID, index: int | None, notes: _Notes) -> tuple[np.ndarray, dict[str, Any]]:
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise DicomRefusal(
            f"transfer syntax {_syntax(uid)} has no pixel data decoder in pydicom (video or other "
            "unsupported compression); convert the file "
            "(e.g. with dcmtk or gdcmconv) to an uncompressed or JPEG/JPEG 2000 syntax"
        ) from None
    if not decoder.is_available:
        raise DicomRefusal(f"no decoder installed for transfer syntax {_syntax(uid)}: {_install_hint(uid, decoder)}")
    try:
        arr, properties = decoder.as_array(ds, index=index)
    # One third-party call: pydicom validation, the plugins (pylibjpeg, Pillow, gdcm) and numpy
    # reshaping raise unrelated types; each is classified into this file's one-line refusal.
    except Exception as exc:  # noqa: BLE001
        raise DicomRefusal(_decode_failure(exc, uid, decoder, notes)) from exc
    return arr, dict(properties)


def _syntax(uid: UID) -> str:
    return f"{uid.name!r} ({uid})" if uid.name != str(uid) else f"({uid})"


def _install_hint(uid: UID, decoder: Decoder) -> str:
    from pydicom.pixels.decoders import gdcm as gdcm_plugin
    from pydicom.pixels.decoders import pylibjpeg as pylibjpeg_plugin

    options = []
    if uid in pylibjpeg_plugin.DECODER_DEPENDENCIES:
        options.append(f"{DICOM_EXTRA} (pylibjpeg)")
    if uid in gdcm_plugin.DECODER_DEPENDENCIES:
        options.append("pip install python-gdcm")
    advice = " or ".join(options) if options else "install one of pydicom's plugins for it"
    missing = "; ".join(decoder.missing_dependencies)
    return f"{advice}; pydicom's plugins for it: {missing}" if missing else advice


def _decode_failure(exc: Exception, uid: UID, decoder: Decoder, notes: _Notes) -> str:
    message = gist(exc)
    short = re.search(r"less than expected \((\d+) vs (\d+) bytes\)", message)
    if short:
        return (
            f"truncated pixel data: {short.group(1)} bytes where Rows, Columns, NumberOfFrames, "
            f"SamplesPerPixel and BitsAllocated need {short.group(2)}"
        )
    if decoder.is_encapsulated and "all available plugins" in message:
        tried = ", ".join(decoder.available_plugins)
        detail = "; ".join(gist(line)[:160] for line in str(exc).splitlines()[1:] if line.strip())
        reason = (
            f"cannot decode transfer syntax {_syntax(uid)}: corrupt, truncated, or a variant the installed "
            f"decoder(s) ({tried}) do not support: {detail}"
        )
        missing = "; ".join(decoder.missing_dependencies)
        if missing:
            reason += f"; other decoders may read it: {missing}"
        return reason
    return f"cannot decode the {_syntax(uid)} pixel data: {type(exc).__name__}: {message}{notes.explaining()}"


# ----------------------------------------------------------------------------- colour


def _apply_palette(ds: Dataset, arr: np.ndarray) -> np.ndarray:
    from pydicom.pixels import apply_color_lut

    try:
        rgb = apply_color_lut(arr, ds)
        nominal = int(ds.RedPaletteColorLookupTableDescriptor[2])
    # The LUT module may be missing, segmented wrongly or of odd length; each is a refusal.
    except Exception as exc:  # noqa: BLE001
        raise DicomRefusal(
            f"PALETTE COLOR image whose colour lookup table cannot be applied ({gist(exc)})"
        ) from exc
    rgb = rgb[..., :3]  # drop an alpha LUT
    bits = rgb.dtype.itemsize * 8  # the LUT data's depth, as pydicom found it
    if nominal < bits:
        # 8-bit entries stored in 16-bit words: the descriptor's depth scales them.
        if rgb.size and int(rgb.max()) > 2**nominal - 1:
            raise DicomRefusal(
                f"PALETTE COLOR lookup table holds values above its declared {nominal}-bit depth"
            )
        bits = nominal
    return (rgb.astype(np.float32) / float(2**bits - 1)).astype(np.float32)


def _scale_rgb(arr: np.ndarray, properties: dict[str, Any]) -> np.ndarray:
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DicomRefusal(f"RGB pixel data decoded to shape {tuple(arr.shape)}; expected (rows, columns, 3)")
    if arr.dtype.kind == "f":
        raise DicomRefusal("RGB pixel data stored as floating point; expected unsigned integers")
    if arr.size and int(arr.min()) < 0:
        raise DicomRefusal("RGB pixel data with negative values (PixelRepresentation 1); expected unsigned")
    bits = _bits_stored(properties, arr)
    rgb = arr.astype(np.float64) / float(2**bits - 1)
    if rgb.size and rgb.max() > 1.0:
        raise DicomRefusal(f"RGB values exceed BitsStored={bits}")
    return rgb.astype(np.float32)


def _bits_stored(properties: dict[str, Any], arr: np.ndarray) -> int:
    value = properties.get("bits_stored")
    try:
        bits = int(value)
    except (TypeError, ValueError):
        bits = arr.dtype.itemsize * 8
    if not 1 <= bits <= arr.dtype.itemsize * 8:
        raise DicomRefusal(f"invalid BitsStored {value!r} for {arr.dtype.itemsize * 8}-bit samples")
    return bits
