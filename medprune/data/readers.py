"""Read one sample file into a float32 array in [0, 1], and one mask file into class indices.

Supported formats (chosen by file suffix, case-insensitive; DICOM also by content):

``.png .jpg .jpeg .tif .tiff``
    Read with Pillow. 8-bit images are divided by 255, 16-bit images by 65535, 32-bit float
    images follow the ``.npy`` float rule below. RGBA, LA and palette images are converted to RGB
    (alpha dropped) or gray; 1-bit images map to {0, 1}.
``.npy``
    A 2-D ``(H, W)`` or ``(H, W, 3)`` array (``(H, W, 1)`` is squeezed). ``uint8`` is divided by
    255 and ``uint16`` by 65535; any other integer, boolean or float array is cast to float and
    kept as is when all values already lie in [0, 1], otherwise **min–max normalised per image**
    (a constant image becomes all zeros). Use ``.txt`` temperature matrices or images with a
    fixed bit depth where absolute intensities matter.
``.txt``
    A DMR-style temperature matrix: one image row per line, values in °C separated by
    whitespace, ``,`` or ``;``; text after ``#`` is a comment. When a file uses ``;`` as
    separator, ``,`` is read as a decimal comma. Temperatures are mapped linearly from
    ``ReaderOptions.temperature_window`` (default 24–38 °C; YAML ``data.temperature_window``)
    onto [0, 1] and clipped, so the same temperature gives the same intensity in every image —
    unlike per-image min–max, which would erase the absolute warmth a lesion shows.
``.dcm .dicom`` — and DICOM recognised by content under any other name or none
    Read with pydicom 3 (see :mod:`medprune.data._dicom`). PACS exports rarely carry a suffix
    (``IM000001``, ``1.2.840…``): a file whose suffix is not listed above is read as DICOM when it
    starts with the 128-byte preamble and ``DICM``, or is a raw data set pydicom parses into real
    DICOM tags; otherwise it is refused as an unsupported type that is not DICOM either.
    ``RescaleSlope``/``RescaleIntercept`` are applied first; values are then mapped from
    ``ReaderOptions.dicom_window`` onto [0, 1] (clipped), or min–max normalised per image when no
    window is set. ``MONOCHROME1`` images (where high values are dark) are inverted after
    normalisation so bright always means high signal. ``PALETTE COLOR`` images are mapped
    through their palette (``pydicom.pixels.apply_color_lut``) to RGB divided by the lookup
    table's bit depth (255 or 65535); RGB and the YBR forms pydicom converts to RGB (YBR_FULL,
    YBR_FULL_422, JPEG 2000's YBR_ICT/YBR_RCT) are divided by ``2**BitsStored - 1``; any other
    photometric interpretation is refused, never guessed. Multi-frame files need a frame: the
    ``frame`` argument (a manifest row's ``frame`` column) or else ``ReaderOptions.dicom_frame``
    (YAML ``data.dicom_frame``); single-frame files ignore both.
    Compressed transfer syntaxes need a decoder plugin: ``pip install 'medprune[dicom]'``
    (pylibjpeg: JPEG, JPEG-LS, JPEG 2000, HTJ2K, RLE) or ``python-gdcm``; a refusal names the
    transfer syntax and what would decode it. Files without pixel data (RT plans, structured
    reports, DICOMDIR) are refused as "not an image".

Segmentation masks (:func:`read_mask`) hold labels, not intensities: they are read as the stored
integers, never scaled or windowed — PNG/TIFF single channel (palette images: their indices; RGB
only with three equal channels), integer/boolean ``.npy``, DICOM stored values (no rescale).
Float data and JPEG (lossy: it invents values at region borders) are refused. :class:`MaskValues`
says which raw values make each class (``{background: 0, plaque: [128, 255]}``; by default class
*i* is value *i*) and :func:`mask_to_classes` applies it, refusing values no class claims.

Every failure raises :class:`SampleReadError` (a :class:`~medprune.errors.DataError`) whose message
names the file and a one-line reason. An exception raised inside a third-party library while
reading (pydicom, Pillow, numpy, a codec plugin) becomes such a refusal too; only an exception
raised by medprune's own code escapes, because that is a bug to report, not a bad file.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from medprune.data._dicom import DICOM_SUFFIXES, DicomPixels, DicomRefusal, NotDicomError, gist, read_dicom
from medprune.errors import ConfigError, DataError
from medprune.registry import suggest

if TYPE_CHECKING:
    from matplotlib.colors import Colormap

__all__ = [
    "IMAGE_SUFFIXES",
    "MASK_SUFFIXES",
    "MIN_SIZE",
    "SUPPORTED_SUFFIXES",
    "MaskValues",
    "ReaderOptions",
    "SampleReadError",
    "mask_to_classes",
    "read_mask",
    "read_sample",
    "to_channels",
    "uses_dicom_reader",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
SUPPORTED_SUFFIXES = IMAGE_SUFFIXES + (".npy", ".txt") + DICOM_SUFFIXES
"""Suffixes chosen by name; files with any other name are read when their content is DICOM."""
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".npy") + DICOM_SUFFIXES
"""Mask suffixes chosen by name; as for samples, any other name is read when its content is DICOM."""
_NOT_DICOM = IMAGE_SUFFIXES + (".npy", ".txt")
MIN_SIZE = 8
"""Smallest accepted height and width; anything smaller is almost certainly a broken file."""

_BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class ReaderOptions:
    """How raw sample values are mapped to [0, 1].

    Attributes:
        temperature_window: ``(low, high)`` in °C mapped to [0, 1] for ``.txt`` temperature
            matrices; values outside are clipped. YAML: ``data.temperature_window``.
        dicom_window: ``(low, high)`` after DICOM rescale slope/intercept, or ``None`` for
            per-image min–max. YAML: ``data.dicom_window``.
        dicom_frame: frame index to read from multi-frame DICOM files. YAML: ``data.dicom_frame``.
    """

    temperature_window: tuple[float, float] = (24.0, 38.0)
    dicom_window: tuple[float, float] | None = None
    dicom_frame: int | None = None

    def __post_init__(self) -> None:
        self.temperature_window = _check_window(self.temperature_window, "data.temperature_window")
        if self.dicom_window is not None:
            self.dicom_window = _check_window(self.dicom_window, "data.dicom_window")
        if self.dicom_frame is not None and (
            isinstance(self.dicom_frame, bool) or not isinstance(self.dicom_frame, int) or self.dicom_frame < 0
        ):
            raise ConfigError(f"data.dicom_frame: expected a frame index >= 0, got {self.dicom_frame!r}")


def _check_window(window: object, key: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in window)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected [low, high], got {window!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ConfigError(f"{key}: expected finite low < high, got [{low}, {high}]")
    return (low, high)


class SampleReadError(DataError):
    """A sample file cannot be read; ``path`` and ``reason`` are kept for bad-sample reports.

    ``reason`` is always one line (whitespace, newlines included, is collapsed), so a bad-sample
    list keeps one line per file whatever a library put in its message.
    """

    def __init__(self, path: Path, reason: str) -> None:
        reason = " ".join(str(reason).split())
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def uses_dicom_reader(path: Path) -> bool:
    """Whether ``path`` goes to the DICOM reader — the only files a frame index applies to.

    Decided by name alone (no file is opened): every suffix other than the image, ``.npy`` and
    ``.txt`` ones is read as DICOM (or refused when its content is not DICOM).
    """
    return Path(path).suffix.lower() not in _NOT_DICOM


def read_sample(path: Path, options: ReaderOptions | None = None, frame: int | None = None) -> np.ndarray:
    """Read ``path`` as float32 in [0, 1], shaped ``(H, W)`` or ``(H, W, 3)``.

    The format is chosen by suffix, and by content for DICOM (see the module docstring for each
    format's normalisation). ``frame`` picks the frame of a multi-frame DICOM, overriding
    ``options.dicom_frame`` (a manifest row's ``frame`` column); other files ignore it. Raises
    :class:`SampleReadError` naming the file for a missing, zero-byte, unreadable or corrupt file,
    an unsupported type, NaN/inf values, or a shape other than ``(H, W)`` / ``(H, W, 3)`` with
    ``H, W >= 8`` — and for any exception a third-party library raises while reading it.

    Example::

        img = read_sample(Path("P0001/frontal.txt"), ReaderOptions(temperature_window=(25, 37)))
    """
    path = Path(path)
    options = options or ReaderOptions()
    _check_frame(path, frame)
    img = _guarded(path, lambda: _read_by_type(path, options, frame))
    return _check_output(path, img)


def _check_frame(path: Path, frame: object) -> None:
    if frame is not None and (isinstance(frame, bool) or not isinstance(frame, int) or frame < 0):
        raise SampleReadError(path, f"frame {frame!r} is not a frame index (an integer >= 0)")


def _guarded(path: Path, read: Callable[[], np.ndarray]) -> np.ndarray:
    """Run ``read`` on an existing, non-empty ``path``; a third-party exception is the file's refusal."""
    if not path.is_file():
        raise SampleReadError(path, "file not found" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise SampleReadError(path, "zero-byte file")
    try:
        return read()
    except SampleReadError:
        raise
    # The reader boundary: Pillow, numpy and pydicom (with its codec plugins) raise many types on
    # odd files; whatever one of them raises is this file's refusal, so a bad-sample check lists
    # it instead of stopping. What medprune's own code raises is re-raised untouched.
    except Exception as exc:
        library = _raised_by_library(exc)
        if library is None:
            raise  # medprune's own bug: the CLI reports it as one, not as a bad file
        raise SampleReadError(path, f"{library} failed to read it ({type(exc).__name__}: {gist(exc)})") from exc


def _read_by_type(path: Path, options: ReaderOptions, frame: int | None) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return _read_image(path)
    if suffix == ".npy":
        return _read_npy(path)
    if suffix == ".txt":
        return _read_temperature_txt(path, options.temperature_window)
    return _read_dicom(path, options, frame, by_name=suffix in DICOM_SUFFIXES)


def _raised_by_library(exc: BaseException) -> str | None:
    """The top-level package whose code raised ``exc`` (``"pydicom"``, ``"PIL"``), or None for medprune."""
    tb = exc.__traceback__
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    top = str(tb.tb_frame.f_globals.get("__name__", "")).split(".", 1)[0]
    return None if top in ("medprune", "") else top


def _check_output(path: Path, img: np.ndarray) -> np.ndarray:
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise SampleReadError(path, f"wrong shape {tuple(img.shape)}; expected (H, W) or (H, W, 3)")
    if img.shape[0] < MIN_SIZE or img.shape[1] < MIN_SIZE:
        raise SampleReadError(path, f"image {img.shape[0]}x{img.shape[1]} is smaller than {MIN_SIZE}x{MIN_SIZE}")
    if not np.isfinite(img).all():
        raise SampleReadError(path, "contains NaN or infinite values")
    return np.ascontiguousarray(img, dtype=np.float32)


def _minmax(arr: np.ndarray) -> np.ndarray:
    low, high = float(arr.min()), float(arr.max())
    if high <= low:
        return np.zeros(arr.shape, dtype=np.float32)
    return ((arr - low) / (high - low)).astype(np.float32)


def _window(arr: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    low, high = window
    return np.clip((arr - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _float_rule(path: Path, arr: np.ndarray) -> np.ndarray:
    """Integer/bool/float arrays: keep values already in [0, 1], otherwise min–max per image."""
    arr = arr.astype(np.float64)
    if arr.size and not np.isfinite(arr).all():
        raise SampleReadError(path, "contains NaN or infinite values")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        return _minmax(arr)
    return arr.astype(np.float32)


def _scale_integer(path: Path, arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    return _float_rule(path, arr)


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                mode = im.mode
            if mode in ("RGBA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
                im = im.convert("RGB")
            elif mode in ("LA", "La", "PA"):
                im = im.convert("L")
            mode = im.mode
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SampleReadError(path, f"unreadable or corrupt image ({exc})") from exc
    if mode == "1":
        return arr.astype(np.float32)
    if mode.startswith("I;16"):
        return arr.astype(np.float32) / 65535.0
    if mode == "I":
        # Pillow opens some 16-bit files as 32-bit "I": keep the 16-bit scale when it fits.
        if arr.size and arr.min() >= 0 and arr.max() <= 65535:
            return arr.astype(np.float32) / 65535.0
        return _float_rule(path, arr)
    if mode == "F":
        return _float_rule(path, arr)
    return _scale_integer(path, arr)


def _read_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise SampleReadError(path, f"unreadable or corrupt .npy file ({exc})") from exc
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise SampleReadError(path, f"expected a numeric array, got dtype {getattr(arr, 'dtype', type(arr))}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise SampleReadError(path, f"wrong shape {tuple(arr.shape)}; expected (H, W) or (H, W, 3)")
    return _scale_integer(path, arr)


def _read_temperature_txt(path: Path, window: tuple[float, float]) -> np.ndarray:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SampleReadError(path, f"unreadable text file ({exc})") from exc
    if ";" in text:
        text = text.replace(",", ".").replace(";", " ")
    else:
        text = text.replace(",", " ")
    if not any(line.split("#", 1)[0].strip() for line in text.splitlines()):
        raise SampleReadError(path, "no temperature values (file is blank)")
    try:
        # numpy's C parser is ~2x faster than splitting in Python (DMR frames are 640x480).
        temps = np.loadtxt(io.StringIO(text), dtype=np.float64, ndmin=2)
    except ValueError as exc:
        _diagnose_matrix(path, text)
        raise SampleReadError(path, f"cannot parse temperature matrix ({exc})") from None
    if not np.isfinite(temps).all():
        raise SampleReadError(path, "temperature matrix contains NaN or infinite values")
    if temps.shape[0] < MIN_SIZE or temps.shape[1] < MIN_SIZE:
        raise SampleReadError(
            path, f"temperature matrix {temps.shape[0]}x{temps.shape[1]} is smaller than {MIN_SIZE}x{MIN_SIZE}"
        )
    return _window(temps, window)


def _diagnose_matrix(path: Path, text: str) -> None:
    """Raise a precise error (file line, value) for a matrix numpy refused to parse."""
    width = None
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split("#", 1)[0].split()
        if not tokens:
            continue
        if width is None:
            width, first = len(tokens), number
        elif len(tokens) != width:
            raise SampleReadError(
                path, f"ragged temperature matrix: line {number} has {len(tokens)} values, line {first} has {width}"
            )
        for token in tokens:
            try:
                float(token)
            except ValueError:
                raise SampleReadError(path, f"non-numeric value {token!r} on line {number}") from None


def _dicom_pixels(
    path: Path, options: ReaderOptions, frame: int | None, *, by_name: bool, supported: tuple[str, ...], raw: bool
) -> DicomPixels:
    """``read_dicom`` with the per-row ``frame`` winning over ``data.dicom_frame``; refusals named."""
    chosen, key = (frame, "frame") if frame is not None else (options.dicom_frame, "data.dicom_frame")
    try:
        return read_dicom(path, chosen, frame_key=key, raw=raw)
    except NotDicomError as exc:
        if by_name:
            raise SampleReadError(path, f"not a DICOM file: {exc.reason}") from None
        shown = path.suffix or "(no suffix)"
        raise SampleReadError(
            path,
            f"unsupported file type {shown!r} and not DICOM either ({exc.reason}); "
            f"supported: {', '.join(supported)}, or DICOM under any name",
        ) from None
    except DicomRefusal as exc:
        raise SampleReadError(path, exc.reason) from exc


def _read_dicom(path: Path, options: ReaderOptions, frame: int | None, *, by_name: bool) -> np.ndarray:
    pixels = _dicom_pixels(path, options, frame, by_name=by_name, supported=SUPPORTED_SUFFIXES, raw=False)
    if pixels.values.ndim == 3:
        return pixels.values
    values = pixels.values
    img = _window(values, options.dicom_window) if options.dicom_window else _minmax(values)
    if pixels.monochrome1:
        img = 1.0 - img
    return img


def to_channels(img: np.ndarray, channels: Literal["gray", "color"], colormap: str = "inferno") -> np.ndarray:
    """Return ``img`` as ``(H, W, 1)`` (gray) or ``(H, W, 3)`` (color) float32.

    * gray from RGB: ITU-R BT.601 luminance ``0.299 R + 0.587 G + 0.114 B``.
    * color from a single channel: the matplotlib ``colormap`` applied to the [0, 1] values.
      A colour thermogram *is* a palette-rendered temperature map, so rendering a temperature
      matrix through a palette reproduces what a camera's colour export shows (256 levels).
    * color from RGB and gray from gray are returned unchanged (with the channel axis).

    Example::

        to_channels(read_sample(p, opts), "color", colormap="jet").shape  # (H, W, 3)
    """
    if channels not in ("gray", "color"):
        raise ConfigError(suggest(str(channels), ["gray", "color"], "channels"))
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 3:
        if channels == "color":
            return np.ascontiguousarray(arr)
        return np.ascontiguousarray((arr @ _BT601)[:, :, None], dtype=np.float32)
    if arr.ndim != 2:
        raise DataError(f"to_channels: expected (H, W) or (H, W, 3), got shape {tuple(arr.shape)}")
    if channels == "gray":
        return arr[:, :, None].copy()
    rgba = _colormap(colormap)(np.clip(arr, 0.0, 1.0))
    return np.ascontiguousarray(rgba[:, :, :3], dtype=np.float32)


def _colormap(name: str) -> Colormap:
    import matplotlib

    try:
        return matplotlib.colormaps[name]
    except KeyError:
        raise ConfigError(suggest(name, list(matplotlib.colormaps), "colormap")) from None


# ----------------------------------------------------------------------------- masks


def read_mask(path: Path, options: ReaderOptions | None = None, frame: int | None = None) -> np.ndarray:
    """Read the segmentation mask ``path`` as its stored values, ``(H, W)`` int64.

    PNG/TIFF 8/16-bit single channel (1-bit → {0, 1}; palette → indices; RGB(A) only with equal
    channels, alpha ignored), integer or boolean ``.npy``, DICOM stored values of frame ``frame``
    (or ``options.dicom_frame``) for a multi-frame file. Map the values to class indices with
    :func:`mask_to_classes`. Raises :class:`SampleReadError` naming the file for a missing,
    zero-byte, unreadable or corrupt file, JPEG, float values, a shape other than ``(H, W)``, and
    for any exception a third-party library raises while reading it.

    Example::

        raw = read_mask(Path("masks/P1_f003.png"))                  # e.g. values {0, 128, 255}
        classes = mask_to_classes(raw, {"background": 0, "plaque": [128, 255]}, Path("masks/P1_f003.png"))
    """
    path = Path(path)
    options = options or ReaderOptions()
    _check_frame(path, frame)
    arr = _guarded(path, lambda: _read_mask_by_type(path, options, frame))
    return _check_mask(path, arr)


def _read_mask_by_type(path: Path, options: ReaderOptions, frame: int | None) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        raise SampleReadError(
            path, "JPEG masks are refused: lossy compression changes label values at region borders; "
            "save masks as PNG, TIFF, .npy or DICOM"
        )
    if suffix in IMAGE_SUFFIXES:
        return _read_mask_image(path)
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise SampleReadError(path, f"unreadable or corrupt .npy file ({exc})") from exc
    if suffix == ".txt":
        raise SampleReadError(path, f"a .txt file is not a mask; masks are {', '.join(MASK_SUFFIXES)} or DICOM")
    by_name = suffix in DICOM_SUFFIXES
    return _dicom_pixels(path, options, frame, by_name=by_name, supported=MASK_SUFFIXES, raw=True).values


def _read_mask_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = np.asarray(im)  # palette images: the indices, which are the stored labels
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SampleReadError(path, f"unreadable or corrupt image ({exc})") from exc
    if mode in ("LA", "La", "PA"):
        return arr[:, :, 0]  # the alpha channel says nothing about classes
    if mode in ("RGBA", "RGBa", "RGBX"):
        return arr[:, :, :3]
    return arr


def _check_mask(path: Path, arr: np.ndarray) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise SampleReadError(path, f"expected an integer array, got {type(arr).__name__}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 3:
        differ = int(np.count_nonzero((arr[:, :, 0] != arr[:, :, 1]) | (arr[:, :, 0] != arr[:, :, 2])))
        if differ:
            raise SampleReadError(
                path, f"RGB mask whose channels differ at {differ} px; save masks as single-channel images "
                "of class values, not colours"
            )
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise SampleReadError(path, f"wrong shape {tuple(arr.shape)}; expected an (H, W) single-channel mask")
    if arr.dtype.kind == "f":
        raise SampleReadError(
            path, f"floating-point mask (dtype {arr.dtype}); save class values as integers (e.g. uint8)"
        )
    if arr.dtype.kind not in "biu":
        raise SampleReadError(path, f"expected an integer or boolean mask, got dtype {arr.dtype}")
    if arr.size == 0:
        raise SampleReadError(path, "empty mask (0 pixels)")
    return np.ascontiguousarray(arr, dtype=np.int64)


@dataclass(frozen=True)
class MaskValues:
    """Which raw mask values make each class; class ``i`` of :attr:`classes` is target index ``i``.

    Build it from the config with :meth:`build`::

        MaskValues.build(["background", "tissue", "plaque"])          # default: class i is value i
        MaskValues.build(None, {"background": 0, "plaque": [128, 255]})  # classes in mapping order

    Attributes:
        classes: class names, in target-index order.
        values: the raw values of each class: at least one each, none claimed by two classes.
        key: the config key refusals name (``data.mask_values``).
    """

    classes: tuple[str, ...]
    values: tuple[tuple[int, ...], ...]
    key: str = "data.mask_values"

    def __post_init__(self) -> None:
        if not self.classes:
            raise ConfigError(f"{self.key}: no classes")
        if len(self.values) != len(self.classes):
            raise ConfigError(f"{self.key}: {len(self.classes)} classes but {len(self.values)} value lists")
        repeated = sorted({c for c in self.classes if self.classes.count(c) > 1})
        if repeated:
            raise ConfigError(f"{self.key}: class(es) {', '.join(repeated)} listed twice")
        owner: dict[int, str] = {}
        for name, values in zip(self.classes, self.values, strict=True):
            if not values:
                raise ConfigError(f"{self.key}.{name}: no raw value for this class")
            for value in values:
                if value in owner:
                    raise ConfigError(f"{self.key}: value {value} is given to both {owner[value]} and {name}")
                owner[value] = name

    @classmethod
    def build(
        cls,
        classes: Sequence[str] | None = None,
        mapping: Mapping[str, int | Sequence[int]] | None = None,
        key: str = "data.mask_values",
    ) -> MaskValues:
        """From class names and/or a ``{class: value or [values]}`` mapping.

        Without ``mapping`` class ``i`` of ``classes`` is value ``i``. With it, ``classes`` (when
        given) fixes the order and must name exactly the mapping's classes; without ``classes``
        the mapping's order is the class order. Raises :class:`~medprune.errors.ConfigError`
        naming ``key`` for unknown or missing classes, non-integer values and a value claimed by
        two classes.
        """
        if mapping is None:
            if classes is None:
                raise ConfigError(f"{key}: give the mask classes or a {{class: value}} mapping")
            names = tuple(str(c) for c in classes)
            return cls(names, tuple((i,) for i in range(len(names))), key)
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"{key}: expected a mapping like {{background: 0, plaque: [128, 255]}}, got {mapping!r}")
        names = tuple(str(c) for c in (classes if classes is not None else mapping))
        for name in mapping:
            if name not in names:
                raise ConfigError(f"{key}: {suggest(str(name), list(names), 'mask class')}")
        missing = [n for n in names if n not in mapping]
        if missing:
            raise ConfigError(f"{key}: no value for class(es) {', '.join(missing)}")
        return cls(names, tuple(_raw_values(mapping[n], f"{key}.{n}") for n in names), key)

    def lookup(self) -> dict[int, int]:
        """Raw value → class index."""
        return {value: index for index, values in enumerate(self.values) for value in values}

    def describe(self) -> str:
        """``background=0, plaque=128|255`` — for messages and reports."""
        return ", ".join(f"{c}={'|'.join(str(v) for v in vs)}" for c, vs in zip(self.classes, self.values, strict=True))


def _raw_values(value: object, key: str) -> tuple[int, ...]:
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        if isinstance(item, (bool, np.bool_)) or not isinstance(item, (int, np.integer)):
            raise ConfigError(f"{key}: expected an integer or a list of integers, got {value!r}")
        out.append(int(item))
    return tuple(out)


_SHOWN_UNMAPPED = 8


def mask_to_classes(
    raw: np.ndarray, value_map: MaskValues | Mapping[str, int | Sequence[int]], path: Path
) -> np.ndarray:
    """Map the raw mask ``raw`` to ``(H, W)`` int64 class indices through ``value_map``.

    ``value_map`` is a :class:`MaskValues` or a ``{class: value or [values]}`` mapping (classes
    in its order). A value no class claims is refused, naming ``path``, the values and their
    pixel counts: ``values 7 (12 px) are not mapped to any class of data.mask_values
    (background=0, tissue=1, plaque=2)``.
    """
    values = value_map if isinstance(value_map, MaskValues) else MaskValues.build(None, value_map)
    arr = np.asarray(raw)
    if arr.dtype.kind not in "biu":
        raise SampleReadError(path, f"mask values must be integers, got dtype {arr.dtype}")
    uniq, inverse, counts = np.unique(arr, return_inverse=True, return_counts=True)
    lookup = values.lookup()
    unmapped = [(int(v), int(n)) for v, n in zip(uniq, counts, strict=True) if int(v) not in lookup]
    if unmapped:
        shown = ", ".join(f"{v} ({n} px)" for v, n in unmapped[:_SHOWN_UNMAPPED])
        if len(unmapped) > _SHOWN_UNMAPPED:
            shown += f" and {len(unmapped) - _SHOWN_UNMAPPED} more"
        raise SampleReadError(
            path, f"values {shown} are not mapped to any class of {values.key} ({values.describe()})"
        )
    table = np.array([lookup[int(v)] for v in uniq], dtype=np.int64)
    return table[inverse.reshape(-1)].reshape(arr.shape)
