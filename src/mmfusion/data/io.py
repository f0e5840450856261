"""Image files to RGB arrays: PNG, JPEG and the other OpenCV formats, and DICOM.

:func:`load_image` is the one decoder of the data pipeline (data set, manifest check, ROI). A file
is DICOM when it carries the ``DICM`` magic at byte 128 (or has a ``.dcm`` suffix), whatever its
name; it is then decoded by ``mmfusion.data.dicom.decode_dicom`` (pydicom, optional).
Everything else goes through OpenCV.

:func:`image_info` reads a file's size and frame count from its header, without decoding pixels
(Pillow's format plugins for PNG, JPEG, BMP, TIFF, WebP, ...; pydicom's header for DICOM;
a format Pillow does not know is decoded by OpenCV to learn its size). Every image must be at
least :data:`MIN_IMAGE_SIDE` pixels on each side and at most :data:`MAX_IMAGE_PIXELS` pixels
per frame; both are checked from the header, before any decoding, by :func:`image_info`,
:func:`load_image` and :func:`~mmfusion.data.read_manifest`. A 1.1 MB PNG can hold 20000 x 20000
pixels (1.2 GB decoded, and minutes of ROI detection): such a file is refused with its size and
the limit. Raise the limit for genuine large images with the environment variable
``MMFUSION_MAX_IMAGE_PIXELS`` (read at every call) or the ``max_pixels`` argument.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from mmfusion.data.dicom import (
    _frame_count,
    _read,
    decode_dicom,
    is_dicom,
    warn_if_flat,
)

__all__ = [
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_PIXELS_ENV",
    "MIN_IMAGE_SIDE",
    "ImageInfo",
    "image_info",
    "load_image",
    "max_image_pixels",
]

#: Default limit on the pixels of one frame (width x height): 50 million, e.g. 8000 x 6000 (a
#: 48 MP photograph); an ultrasound frame has 0.3 to 8 million. Override it with
#: :data:`MAX_IMAGE_PIXELS_ENV` or the ``max_pixels`` argument of :func:`image_info`,
#: :func:`load_image` and :func:`~mmfusion.data.read_manifest`.
MAX_IMAGE_PIXELS = 50_000_000

#: Environment variable that overrides :data:`MAX_IMAGE_PIXELS` (a positive integer).
MAX_IMAGE_PIXELS_ENV = "MMFUSION_MAX_IMAGE_PIXELS"

#: Smallest accepted width and height in pixels (the sector detection's median blur and
#: morphology need a few pixels; a 1 x 1 "image" is a broken export).
MIN_IMAGE_SIDE = 8


@dataclass(frozen=True)
class ImageInfo:
    """What a file's header says about its image.

    Attributes:
        width: Frame width in pixels.
        height: Frame height in pixels.
        frames: Number of frames :func:`load_image` can read (DICOM NumberOfFrames; 1 otherwise).
        format: ``"DICOM"`` or the format's name as Pillow gives it (``"PNG"``, ``"JPEG"``, ...;
            ``"OpenCV"`` when only OpenCV could read the file).
    """

    width: int
    height: int
    frames: int
    format: str

    @property
    def pixels(self) -> int:
        """Pixels of one frame, ``width * height``."""
        return self.width * self.height


def max_image_pixels(max_pixels: int | None = None) -> int:
    """The pixel limit in force: ``max_pixels`` if given, else the environment variable
    ``MMFUSION_MAX_IMAGE_PIXELS`` if set, else :data:`MAX_IMAGE_PIXELS`.

    Raises:
        ValueError: ``max_pixels`` or the environment variable is not a positive integer.
    """
    if max_pixels is not None:
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int | np.integer):
            raise ValueError(f"max_pixels: expected a positive int, got {max_pixels!r}")
        if max_pixels < 1:
            raise ValueError(f"max_pixels: expected a positive int, got {max_pixels}")
        return int(max_pixels)
    text = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip()
    if not text:
        return MAX_IMAGE_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(
            f"{MAX_IMAGE_PIXELS_ENV}: expected a positive integer number of pixels, got {text!r}"
        )
    return value


def _size_problem(info: ImageInfo, limit: int) -> str | None:
    """Why an image of this size is refused (``"is ..."``), or None."""
    if min(info.width, info.height) < MIN_IMAGE_SIDE:
        return (
            f"is {info.width} x {info.height} pixels; expected at least "
            f"{MIN_IMAGE_SIDE} x {MIN_IMAGE_SIDE}"
        )
    if info.pixels > limit:
        return (
            f"is {info.width} x {info.height} = {info.pixels:,} pixels, over the limit of "
            f"{limit:,} pixels per frame; if the image is genuine, raise the limit with the "
            f"environment variable {MAX_IMAGE_PIXELS_ENV} or the max_pixels argument"
        )
    return None


def _dicom_info(path: str | Path) -> ImageInfo:
    ds = _read(path, pixels=False)
    rows, columns = ds.get("Rows", None), ds.get("Columns", None)
    if rows in (None, "") or columns in (None, ""):
        raise ValueError(f"path: DICOM file {str(path)!r} has no Rows/Columns (no image)")
    return ImageInfo(int(columns), int(rows), _frame_count(ds), "DICOM")


def _pillow_header(handle: BinaryIO, name: str) -> tuple[int, int, str] | None:
    """``(width, height, format)`` from the header, by Pillow's format plugins (what
    ``PIL.Image.open`` does, without its decompression-bomb check: the size is what we check,
    and it must be reported), or None when no plugin knows the format. Decodes no pixel."""
    from PIL import Image

    Image.init()
    prefix = handle.read(16)
    for kind in Image.ID:
        factory, accept = Image.OPEN[kind]
        if accept is not None:
            accepted = accept(prefix)
            if isinstance(accepted, str) or not accepted:
                continue
        handle.seek(0)
        try:
            image = factory(handle, name)
        except Exception:  # plugins raise SyntaxError, OSError, ValueError... on other formats
            continue
        width, height = image.size
        return int(width), int(height), str(image.format)
    return None


def _raster_info(path: str | Path, data: np.ndarray | None = None) -> ImageInfo:
    """Size from the header (reads the first bytes of ``path``, or of ``data``, the file's bytes
    where the caller has them); a format Pillow does not know is decoded by OpenCV."""
    try:
        with (io.BytesIO(data.tobytes()) if data is not None else open(path, "rb")) as handle:
            found = _pillow_header(handle, str(path))
    except OSError as error:
        raise ValueError(f"path: cannot read image file {str(path)!r}: {error}") from error
    if found is not None:
        return ImageInfo(found[0], found[1], 1, found[2])
    array = _read_bytes(path) if data is None else data
    image = cv2.imdecode(array, cv2.IMREAD_UNCHANGED) if array.size else None
    if image is None or image.ndim < 2:
        raise ValueError(f"path: {str(path)!r} is not a readable image (no known image header)")
    return ImageInfo(int(image.shape[1]), int(image.shape[0]), 1, "OpenCV")


def _read_bytes(path: str | Path) -> np.ndarray:
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise ValueError(f"path: cannot read image file {str(path)!r}: {error}") from error


def _checked(info: ImageInfo, path: str | Path, max_pixels: int | None) -> ImageInfo:
    problem = _size_problem(info, max_image_pixels(max_pixels))
    if problem is not None:
        raise ValueError(f"path: image {str(path)!r} {problem}")
    return info


def image_info(path: str | Path, *, max_pixels: int | None = None) -> ImageInfo:
    """Size and frame count of an image file from its header, checked against the size limits.

    No pixel is decoded (except for a format Pillow cannot read, which OpenCV decodes).

    Args:
        path: Image file (PNG, JPEG, ..., or DICOM, recognised by content).
        max_pixels: Pixel limit per frame; None: :func:`max_image_pixels` (the environment
            variable ``MMFUSION_MAX_IMAGE_PIXELS``, else :data:`MAX_IMAGE_PIXELS`).

    Returns:
        The :class:`ImageInfo`.

    Raises:
        ValueError: The file cannot be read, has no readable image header, is smaller than
            :data:`MIN_IMAGE_SIDE` on a side, or has more pixels than the limit; the message
            names the file, its size and the limit (and how to raise it).
        ImportError: For a DICOM file when pydicom is not installed.
    """
    if is_dicom(path):
        return _checked(_dicom_info(path), path, max_pixels)
    return _checked(_raster_info(path), path, max_pixels)


def load_image(
    path: str | Path, frame: int | None = None, *, max_pixels: int | None = None
) -> np.ndarray:
    """Decode an image file (PNG, JPEG, ..., or DICOM) as RGB.

    The size is checked from the header first (:func:`image_info`), so an oversized file is
    refused before its pixels are decoded.

    Args:
        path: Image file. DICOM is recognised by content (see
            :func:`~mmfusion.data.dicom.is_dicom`), so the suffix does not matter.
        frame: For a multi-frame DICOM file, the 0-based frame; None (default) takes the middle
            frame, ``n_frames // 2`` (:func:`~mmfusion.data.dicom_frame_count` gives ``n_frames``).
            Other files have one frame: only None or 0.
        max_pixels: Pixel limit per frame (see :func:`image_info`).

    Returns:
        ``[H, W, 3]`` uint8 RGB array (grey images are replicated to 3 channels; alpha is dropped;
        DICOM colour spaces, palettes and bit depths are converted as described in
        :mod:`mmfusion.data.dicom`).

    Raises:
        ValueError: If the file cannot be read or decoded, is smaller than
            :data:`MIN_IMAGE_SIDE` or larger than the pixel limit, or ``frame`` is out of range
            (the message names the path). A DICOM file whose transfer syntax has no installed
            decoder gives a :class:`~mmfusion.data.MissingDecoderError` (a ``ValueError``).
        ImportError: For a DICOM file when pydicom is not installed (``pip install
            "mmfusion[dicom]"``).

    Warns:
        FlatFrameWarning: The decoded image is nearly constant (max - min below 2 grey levels,
            in any format): it shows nothing, and is more often a decoding or export fault than
            a real scan.
    """
    if is_dicom(path):
        try:
            info = _dicom_info(path)
        except ValueError:  # no readable header or no image: decode_dicom says which
            info = None
        if info is not None:
            _checked(info, path, max_pixels)
        return decode_dicom(path, frame)
    if frame not in (None, 0) or isinstance(frame, bool):
        raise ValueError(
            f"frame: {str(path)!r} is not DICOM and has one frame; expected None or 0, "
            f"got {frame!r}"
        )
    data = _read_bytes(path)
    if data.size == 0:
        raise ValueError(f"path: {str(path)!r} is not a decodable image (the file is empty)")
    _checked(_raster_info(path, data), path, max_pixels)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"path: {str(path)!r} is not a decodable image")
    warn_if_flat(image, repr(str(path)))
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
