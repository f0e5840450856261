"""DICOM ultrasound files: one frame decoded to RGB, frame counts, and the ultrasound regions.

Scanners export DICOM rather than PNG. :func:`~mmfusion.data.load_image` hands DICOM files to
``decode_dicom``, which turns one frame into the same uint8 ``[H, W, 3]`` RGB array as for a PNG,
using pydicom and its pixel-data plugins (``pip install "mmfusion[dicom]"``: pydicom, pylibjpeg,
pylibjpeg-libjpeg, pylibjpeg-openjpeg, pylibjpeg-rle):

- RGB stays RGB; YBR_FULL and YBR_FULL_422 are converted to RGB by pydicom, YBR_RCT and YBR_ICT
  (JPEG 2000) by its decoders;
- PALETTE COLOR goes through the file's colour lookup tables
  (``pydicom.pixels.apply_color_lut``; the 16-bit table entries of a big-endian file are put in
  little-endian order first, which pydicom 3.0 does not do for non-segmented tables);
- MONOCHROME2 is grey replicated to 3 channels, MONOCHROME1 is inverted first.

Data of more than 8 bits are scaled to 0-255 by, in this order: the colour LUT's entry depth
(PALETTE COLOR); the modality LUT then the VOI LUT or window (``apply_voi_lut``; its output range
is mapped to 0-255); ``BitsStored`` (RGB); else the frame's own minimum-maximum range (grey).
8-bit data without a VOI LUT or window are used as stored, except grey data of fewer than 8 bits
stored (``BitsStored`` 1 to 7: e.g. a 1-bit mask), which are scaled by ``BitsStored``.

A decoded frame that is nearly constant (maximum minus minimum under 2 grey levels: all black,
say) gives a :class:`FlatFrameWarning` naming the file: it shows nothing, and is more often a
decoding problem or an empty acquisition than an ultrasound image.

A file whose pixel data is cut short (an interrupted copy or export; with encapsulated data such
as RLE, pydicom then drops the element) is reported as truncated, not as a file without pixel
data.

Multi-frame files (cine loops): one frame per call. ``frame=None`` takes the middle frame,
``n_frames // 2``; an int picks that frame (0-based). :func:`dicom_frame_count` lets a caller list
every frame as a separate view. Per-frame functional groups of enhanced multi-frame objects are not
consulted.

:func:`dicom_regions` reads the Sequence of Ultrasound Regions (0018,6011), where the scanner
states which rectangle holds tissue, colour flow, a Doppler spectrum, a colour bar and so on;
:func:`~mmfusion.data.image_roi` uses the tissue region as the crop box.

pydicom is imported only when a DICOM file is read, so it stays optional.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = [
    "FlatFrameWarning",
    "MissingDecoderError",
    "UltrasoundRegion",
    "decode_dicom",
    "dicom_frame_count",
    "dicom_regions",
    "is_dicom",
]

INSTALL_HINT = 'pip install "mmfusion[dicom]"'
DICOM_SUFFIXES = (".dcm", ".dicom")

#: A decoded frame whose maximum minus minimum is under this many grey levels is "nearly constant".
FLAT_RANGE = 2

#: Region Data Type (0018,6014), DICOM PS3.3 C.8.5.5.1.2.
REGION_KINDS = {
    0x00: "none",
    0x01: "tissue",
    0x02: "color flow",
    0x03: "PW spectral Doppler",
    0x04: "CW spectral Doppler",
    0x05: "Doppler mean trace",
    0x06: "Doppler mode trace",
    0x07: "Doppler max trace",
    0x08: "volume trace",
    0x09: "d(volume)/dt trace",
    0x0A: "ECG trace",
    0x0B: "pulse trace",
    0x0C: "phonocardiogram trace",
    0x0D: "gray bar",
    0x0E: "color bar",
    0x0F: "integrated backscatter",
    0x10: "area trace",
    0x11: "d(area)/dt",
    0x12: "other physiological input",
}
#: Region Spatial Format (0018,6012).
SPATIAL_FORMATS = {0: "none", 1: "2D", 2: "M-mode", 3: "spectral", 4: "waveform", 5: "graphics"}
#: Physical Units X/Y Direction (0018,6024/6026).
PHYSICAL_UNITS = {
    0: "none", 1: "percent", 2: "dB", 3: "cm", 4: "s", 5: "Hz", 6: "dB/s", 7: "cm/s",
    8: "cm^2", 9: "cm^2/s", 10: "cm^3", 11: "cm^3/s", 12: "degrees",
}  # fmt: skip


class FlatFrameWarning(UserWarning):
    """Warned when a decoded DICOM frame is nearly constant (all black, say): a frame that shows
    nothing is more likely a decoding problem or an empty acquisition than an ultrasound image."""


class MissingDecoderError(ValueError):
    """No installed pixel-data plugin decodes a DICOM file's transfer syntax.

    The message names the file, the transfer syntax (name and UID) and what to install.
    """


@dataclass(frozen=True)
class UltrasoundRegion:
    """One item of a DICOM file's Sequence of Ultrasound Regions (0018,6011).

    Attributes:
        index: Position in the sequence (0-based); what ``image_roi(path, region=...)`` takes.
        box: ``(x0, y0, x1, y1)`` in frame pixels, end-exclusive like
            :attr:`~mmfusion.data.SectorROI.bbox`: ``(RegionLocationMinX0, RegionLocationMinY0,
            RegionLocationMaxX1 + 1, RegionLocationMaxY1 + 1)`` (the tags are inclusive). As
            stored: not clipped to the frame.
        kind: Region Data Type as a name (``"tissue"``, ``"color flow"``, ``"PW spectral
            Doppler"``, ``"CW spectral Doppler"``, ``"gray bar"``, ``"color bar"``, ...;
            ``"unknown (0x0013)"`` for codes outside PS3.3 C.8.5.5.1.2).
        data_type: Region Data Type code (0018,6014); 1 is tissue.
        spatial_format: Region Spatial Format (``"2D"``, ``"M-mode"``, ``"spectral"``,
            ``"waveform"``, ``"graphics"``, ``"none"``).
        physical_units: ``(x, y)`` units of the physical deltas (``"cm"``, ``"s"``, ``"cm/s"``,
            ``"Hz"``, ...; ``"none"`` when not applicable or absent).
        physical_delta: ``(dx, dy)`` physical size of one pixel in those units (PhysicalDeltaX/Y;
            for a tissue region in cm, the pixel spacing); ``0.0`` when absent.
    """

    index: int
    box: tuple[int, int, int, int]
    kind: str
    data_type: int
    spatial_format: str
    physical_units: tuple[str, str]
    physical_delta: tuple[float, float]

    @property
    def is_tissue(self) -> bool:
        """True for a tissue (B-mode) region, Region Data Type 1."""
        return self.data_type == 0x01

    @property
    def area(self) -> int:
        """Box area in pixels (0 for an empty box)."""
        x0, y0, x1, y1 = self.box
        return max(0, x1 - x0) * max(0, y1 - y0)


def _pydicom() -> Any:
    """Import pydicom, or fail with the install command."""
    try:
        import pydicom
        import pydicom.pixels  # noqa: F401  (pydicom >= 3: decoders and LUT processing)
    except ImportError as error:
        raise ImportError(
            f"reading DICOM files needs pydicom >= 3 and its pixel-data plugins: {INSTALL_HINT}"
        ) from error
    return pydicom


def is_dicom(path: str | Path) -> bool:
    """True if ``path`` is a DICOM file: the ``DICM`` magic at byte 128, or a ``.dcm`` suffix.

    Detection is by content, so a DICOM file named ``.bin`` (or with no suffix) is found; the
    suffix only adds files written without the 128-byte preamble. Needs no pydicom.

    Args:
        path: A file.

    Returns:
        Whether :func:`~mmfusion.data.load_image` will read it as DICOM.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM" or path.suffix.lower() in DICOM_SUFFIXES


def _read(path: str | Path, *, pixels: bool) -> Dataset:
    """Read a DICOM data set (the header only unless ``pixels``); errors name the file."""
    pydicom = _pydicom()
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels, force=True)
    except Exception as error:  # pydicom raises many types on a damaged or non-DICOM file
        raise ValueError(f"path: cannot read DICOM file {str(path)!r}: {error}") from error


def _frame_count(ds: Dataset) -> int:
    value = ds.get("NumberOfFrames", None)
    return int(value) if value not in (None, "") and int(value) > 0 else 1


def dicom_frame_count(path: str | Path) -> int:
    """Number of frames in a DICOM file (NumberOfFrames, 1 if absent); reads only the header.

    Use it to expand a cine loop into one view per frame
    (``[load_image(path, frame=i) for i in range(dicom_frame_count(path))]``).

    Args:
        path: A DICOM file.

    Returns:
        The frame count, at least 1.

    Raises:
        ValueError: If ``path`` is not a readable DICOM file.
        ImportError: If pydicom is not installed.
    """
    if not is_dicom(path):
        raise ValueError(f"path: expected a DICOM file, {str(path)!r} is not one (no DICM magic)")
    return _frame_count(_read(path, pixels=False))


def _decoder(ds: Dataset, path: str | Path) -> Any:
    """pydicom's decoder for the file's transfer syntax, or a clear error."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000TransferSyntaxes

    meta = getattr(ds, "file_meta", None)
    tsyntax = meta.get("TransferSyntaxUID", None) if meta is not None else None
    if tsyntax is None:
        raise ValueError(f"path: DICOM file {str(path)!r} has no Transfer Syntax UID (0002,0010)")
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError as error:
        raise ValueError(
            f"path: DICOM file {str(path)!r} uses transfer syntax {tsyntax.name} ({tsyntax}), "
            "which pydicom cannot decode"
        ) from error
    if not decoder.is_available:
        plugin = "pylibjpeg-openjpeg" if tsyntax in JPEG2000TransferSyntaxes else (
            "pylibjpeg-libjpeg"
        )
        missing = "; ".join(decoder.missing_dependencies) or "none listed"
        raise MissingDecoderError(
            f"path: cannot decode DICOM file {str(path)!r}: no pixel-data plugin for its transfer "
            f"syntax {tsyntax.name} ({tsyntax}) is installed; install one with {INSTALL_HINT} "
            f"(or pip install pylibjpeg {plugin}); pydicom's plugins: {missing}"
        )
    return decoder


def _to_uint8(arr: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``[low, high]`` linearly to ``[0, 255]``, rounded and clipped."""
    if high <= low:
        return np.zeros(arr.shape, dtype=np.uint8)
    scaled = (arr.astype(np.float64) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _grey(arr: np.ndarray, ds: Dataset, photometric: str) -> np.ndarray:
    """MONOCHROME1/2 frame -> uint8 ``[H, W]`` (modality LUT, VOI LUT or window, inversion)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, apply_windowing

    slope, intercept = ds.get("RescaleSlope", None), ds.get("RescaleIntercept", None)
    rescales = slope is not None and intercept is not None and (float(slope), float(intercept)) != (
        1.0, 0.0
    )
    has_modality = bool(ds.get("ModalityLUTSequence")) or rescales
    values = apply_modality_lut(arr, ds) if has_modality else arr
    voi_items = ds.get("VOILUTSequence") or []
    has_lut = bool(voi_items) and None not in (
        voi_items[0].get("LUTDescriptor"), voi_items[0].get("LUTData")
    )
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    if has_lut:  # apply_voi_lut prefers the LUT over the window, as the standard does
        out = _to_uint8(apply_voi_lut(values, ds), 0, 2 ** int(voi_items[0].LUTDescriptor[2]) - 1)
    elif has_window:
        # The window's output range (pydicom derives it from BitsStored, signedness and rescale):
        # the images of -inf and +inf.
        low, high = apply_windowing(np.array([-np.inf, np.inf]), ds)
        out = _to_uint8(apply_voi_lut(values, ds), float(low), float(high))
    elif values.dtype == np.uint8:
        bits = int(ds.get("BitsStored", None) or 8)
        out = _to_uint8(values, 0, 2**bits - 1) if bits < 8 else values
    else:
        out = _to_uint8(values, float(values.min()), float(values.max()))
    return 255 - out if photometric == "MONOCHROME1" else out


def decode_dicom(path: str | Path, frame: int | None = None) -> np.ndarray:
    """Decode one frame of a DICOM file as RGB (see the module docstring for the rules).

    Args:
        path: A DICOM file (any pydicom-readable transfer syntax whose plugin is installed).
        frame: 0-based frame of a multi-frame file; None takes the middle one, ``n // 2``.

    Returns:
        ``[H, W, 3]`` uint8 RGB array, like :func:`~mmfusion.data.load_image` for a PNG.

    Raises:
        ImportError: If pydicom is not installed (the message says ``pip install
            "mmfusion[dicom]"``).
        MissingDecoderError: (a ``ValueError``) If no installed plugin decodes the file's transfer
            syntax; names the file, the syntax's name and UID, and the package to install.
        ValueError: If the file cannot be read or decoded, has no pixel data (or truncated pixel
            data: the message says so), ``frame`` is out of range (the message gives the frame
            count), or its photometric interpretation is not supported; the message names the
            file.
        TypeError: If ``frame`` is neither an int nor None.

    Warns:
        FlatFrameWarning: If the decoded frame is nearly constant (max - min < 2 grey levels);
            the message names the file and the frame.
    """
    ds = _read(path, pixels=True)
    if "PixelData" not in ds:
        raise ValueError(_no_pixel_data(path))
    n_frames = _frame_count(ds)
    if frame is None:
        frame = n_frames // 2
    elif isinstance(frame, bool) or not isinstance(frame, int | np.integer):
        raise TypeError(f"frame: expected an int or None, got {type(frame).__name__}")
    elif not 0 <= frame < n_frames:
        raise ValueError(
            f"frame: expected 0 <= frame < {n_frames} ({str(path)!r} has {n_frames} frame(s)), "
            f"got {frame}"
        )
    decoder = _decoder(ds, path)
    try:
        # raw=False: pydicom converts YBR_FULL(_422) to RGB; J2K decoders undo YBR_RCT/YBR_ICT.
        arr, properties = decoder.as_array(ds, index=int(frame))
    except Exception as error:  # pydicom raises many types (RuntimeError, ValueError, ...)
        raise ValueError(f"path: cannot decode DICOM file {str(path)!r}: {error}") from error
    photometric = str(properties.get("photometric_interpretation", ds.PhotometricInterpretation))
    rgb = _rgb(arr, ds, photometric, path)
    warn_if_flat(rgb, f"DICOM file {str(path)!r} frame {frame}", stacklevel=4)
    return rgb


def warn_if_flat(image: np.ndarray, what: str, stacklevel: int = 3) -> None:
    """Warn (:class:`FlatFrameWarning`) when ``image`` is nearly constant (max - min below
    :data:`FLAT_RANGE` grey levels): it shows nothing, more often a decoding or export fault
    than a real scan. ``what`` names the image in the message (e.g. its path)."""
    low, high = int(image.min()), int(image.max())
    if high - low < FLAT_RANGE:
        warnings.warn(
            f"path: {what} decoded to a nearly constant image (all values in {low}..{high}): "
            "it shows nothing; check the file (or its decoding)",
            FlatFrameWarning,
            stacklevel=stacklevel,
        )


def _no_pixel_data(path: str | Path) -> str:
    """Why a DICOM data set without a Pixel Data element has none: truncated, or never had it.

    pydicom drops an encapsulated (e.g. RLE) Pixel Data element whose fragments run past the end
    of the file; the element's tag still sits in the file's bytes.
    """
    try:
        data = Path(path).read_bytes()
    except OSError:
        data = b""
    at = max(data.rfind(b"\xe0\x7f\x10\x00"), data.rfind(b"\x7f\xe0\x00\x10"))
    if at >= 0:
        return (
            f"path: DICOM file {str(path)!r} has truncated or corrupt pixel data: its Pixel Data "
            f"element (7FE0,0010) starts at byte {at} but could not be read to its end (the file "
            f"has {len(data)} bytes; cut short by an interrupted copy or export?)"
        )
    return f"path: DICOM file {str(path)!r} has no pixel data (7FE0,0010)"


def _rgb(arr: np.ndarray, ds: Dataset, photometric: str, path: str | Path) -> np.ndarray:
    """A decoded frame (as the decoder gives it) -> uint8 ``[H, W, 3]`` RGB."""
    from pydicom.pixels import convert_color_space

    if photometric in ("YBR_FULL", "YBR_FULL_422", "YBR_ICT"):  # not converted by the decoder
        arr = convert_color_space(arr, "YBR_FULL", "RGB")
        photometric = "RGB"
    if photometric == "RGB":
        if arr.dtype != np.uint8:
            arr = _to_uint8(arr, 0, 2 ** int(ds.BitsStored) - 1)
        return np.ascontiguousarray(arr)
    if photometric == "PALETTE COLOR":
        return _palette_rgb(arr, ds)
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        grey = _grey(arr, ds, photometric)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    raise ValueError(
        f"path: DICOM file {str(path)!r} has photometric interpretation {photometric!r}; "
        "expected MONOCHROME1, MONOCHROME2, RGB, YBR_FULL, YBR_FULL_422, YBR_RCT, YBR_ICT or "
        "PALETTE COLOR"
    )


_LUT_COLOURS = ("Red", "Green", "Blue", "Alpha")


def _little_endian_luts(ds: Dataset) -> Dataset:
    """The palette tables of ``ds`` as a little-endian data set (16-bit entries byte-swapped).

    pydicom 3.0's ``apply_color_lut`` reads a non-segmented table's OW bytes in little-endian
    order whatever the file's byte order (segmented tables it reads right), so a big-endian file's
    table 0x0000, 0x0100, ... becomes 0, 1, ...: an all-black image. A data set that is really
    little-endian gives the right table in any pydicom version.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    tsyntax = meta.get("TransferSyntaxUID", None) if meta is not None else None
    try:
        big = tsyntax is not None and not tsyntax.is_little_endian
    except ValueError:  # a private transfer syntax: its byte order is unknown, keep the file's
        big = False
    if not big or "RedPaletteColorLookupTableData" not in ds:
        return ds
    luts = Dataset()
    luts.file_meta = FileMetaDataset()
    luts.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    luts.set_original_encoding(False, True)
    for colour in _LUT_COLOURS:
        descriptor = f"{colour}PaletteColorLookupTableDescriptor"
        if descriptor in ds:
            setattr(luts, descriptor, list(ds[descriptor].value))
    entries = int(ds.RedPaletteColorLookupTableDescriptor[0]) or 2**16
    for colour in _LUT_COLOURS:
        keyword = f"{colour}PaletteColorLookupTableData"
        if keyword in ds:
            raw = bytes(ds[keyword].value)
            if len(raw) == 2 * entries:  # 16-bit entries: swap to little-endian
                raw = np.frombuffer(raw, dtype=">u2").astype("<u2").tobytes()
            setattr(luts, keyword, raw)
    return luts


def _palette_rgb(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """PALETTE COLOR indices -> uint8 RGB through the file's colour tables."""
    from pydicom.pixels import apply_color_lut

    rgb = apply_color_lut(arr, _little_endian_luts(ds))
    depth = int(ds.RedPaletteColorLookupTableDescriptor[2])
    return rgb if rgb.dtype == np.uint8 else _to_uint8(rgb, 0, 2**depth - 1)


def _code(item: Dataset, keyword: str, default: int = 0) -> int:
    value = item.get(keyword, None)
    return default if value in (None, "") else int(value)


def dicom_regions(path: str | Path) -> list[UltrasoundRegion]:
    """The ultrasound regions of a DICOM file (Sequence of Ultrasound Regions, 0018,6011).

    Reads only the header.

    Args:
        path: A DICOM file.

    Returns:
        One :class:`UltrasoundRegion` per sequence item, in file order; an empty list when the
        file has no such sequence.

    Raises:
        ValueError: If ``path`` is not a readable DICOM file, or a region lacks one of its four
            RegionLocation tags (the message names the file and the region).
        ImportError: If pydicom is not installed.
    """
    if not is_dicom(path):
        raise ValueError(f"path: expected a DICOM file, {str(path)!r} is not one (no DICM magic)")
    ds = _read(path, pixels=False)
    regions = []
    for index, item in enumerate(ds.get("SequenceOfUltrasoundRegions", None) or []):
        keys = ("RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1",
                "RegionLocationMaxY1")  # fmt: skip
        missing = [k for k in keys if item.get(k, None) in (None, "")]
        if missing:
            raise ValueError(
                f"path: ultrasound region {index} of {str(path)!r} lacks {', '.join(missing)}"
            )
        x0, y0, x1, y1 = (int(item.get(k)) for k in keys)
        data_type = _code(item, "RegionDataType")
        spatial = _code(item, "RegionSpatialFormat")
        units = tuple(
            PHYSICAL_UNITS.get(code, f"unknown ({code})")
            for code in (_code(item, "PhysicalUnitsXDirection"),
                         _code(item, "PhysicalUnitsYDirection"))  # fmt: skip
        )
        regions.append(
            UltrasoundRegion(
                index=index,
                box=(x0, y0, x1 + 1, y1 + 1),
                kind=REGION_KINDS.get(data_type, f"unknown (0x{data_type:04X})"),
                data_type=data_type,
                spatial_format=SPATIAL_FORMATS.get(spatial, f"unknown ({spatial})"),
                physical_units=(units[0], units[1]),
                physical_delta=(
                    float(item.get("PhysicalDeltaX", None) or 0.0),
                    float(item.get("PhysicalDeltaY", None) or 0.0),
                ),
            )
        )
    return regions
