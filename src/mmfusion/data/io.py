"""Image files to RGB arrays: PNG, JPEG and the other OpenCV formats, and DICOM.

:func:`load_image` is the one decoder of the data pipeline (data set, manifest check, ROI). A file
is DICOM when it carries the ``DICM`` magic at byte 128 (or has a ``.dcm`` suffix), whatever its
name; it is then decoded by ``mmfusion.data.dicom.decode_dicom`` (pydicom, optional).
Everything else goes through OpenCV.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mmfusion.data.dicom import decode_dicom, is_dicom

__all__ = ["load_image"]


def load_image(path: str | Path, frame: int | None = None) -> np.ndarray:
    """Decode an image file (PNG, JPEG, ..., or DICOM) as RGB.

    Args:
        path: Image file. DICOM is recognised by content (see
            :func:`~mmfusion.data.dicom.is_dicom`), so the suffix does not matter.
        frame: For a multi-frame DICOM file, the 0-based frame; None (default) takes the middle
            frame, ``n_frames // 2`` (:func:`~mmfusion.data.dicom_frame_count` gives ``n_frames``).
            Other files have one frame: only None or 0.

    Returns:
        ``[H, W, 3]`` uint8 RGB array (grey images are replicated to 3 channels; alpha is dropped;
        DICOM colour spaces, palettes and bit depths are converted as described in
        :mod:`mmfusion.data.dicom`).

    Raises:
        ValueError: If the file cannot be read or decoded, or ``frame`` is out of range (the
            message names the path). A DICOM file whose transfer syntax has no installed decoder
            gives a :class:`~mmfusion.data.MissingDecoderError` (a ``ValueError``).
        ImportError: For a DICOM file when pydicom is not installed (``pip install
            "mmfusion[dicom]"``).
    """
    if is_dicom(path):
        return decode_dicom(path, frame)
    if frame not in (None, 0) or isinstance(frame, bool):
        raise ValueError(
            f"frame: {str(path)!r} is not DICOM and has one frame; expected None or 0, "
            f"got {frame!r}"
        )
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise ValueError(f"path: cannot read image file {str(path)!r}: {error}") from error
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ValueError(f"path: {str(path)!r} is not a decodable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
