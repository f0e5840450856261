"""The ROI of an image file: the scanner's tissue region where the file states one, else contour.

A DICOM ultrasound file usually says where its tissue image is: the Sequence of Ultrasound Regions
(0018,6011) lists rectangles with their data type (tissue, colour flow, Doppler spectrum, colour
bar, ...). :func:`image_roi` uses that rectangle when there is one (a dual-view frame has two: the
largest; of equal ones, the one holding the most colour-coded pixels, i.e. the elastogram or colour
Doppler view of a dual-view screen, then the first; unless ``region=`` names one) and falls back to
contour detection
(:func:`~mmfusion.data.detect_sector`, paper II.B) otherwise, and says which it used.

A tagged region gives the crop: ``roi.bbox`` is the region's box. Inside it the fan is found by
contour detection restricted to the region (so a dual-view screen, the header bar and colour-scale
legends outside it never leak in) and becomes the mask: the corners of the box outside a convex
probe's fan are blacked out as for a PNG. Where no sector is found inside the region (a linear
probe's rectangle fills it), the mask is the whole box.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mmfusion.data.dicom import UltrasoundRegion, dicom_regions, is_dicom
from mmfusion.data.io import load_image
from mmfusion.data.roi import SectorROI, detect_sector

__all__ = ["ImageROI", "image_roi"]


@dataclass(frozen=True, eq=False)
class ImageROI:
    """The ROI of one image file and where it came from.

    Attributes:
        roi: The :class:`~mmfusion.data.SectorROI` (mask ``[H, W]``, bbox, contour).
        source: ``"dicom_region"`` (a tissue region of the file's Sequence of Ultrasound Regions,
            or the region named by ``region=``), ``"contour"`` (found by
            :func:`~mmfusion.data.detect_sector`) or ``"full_frame"`` (no sector found, and
            ``fallback=True``).
        region: The DICOM region used, for ``"dicom_region"``; None otherwise.
    """

    roi: SectorROI
    source: str
    region: UltrasoundRegion | None = None


def _region_roi(region: UltrasoundRegion, shape: tuple[int, int]) -> SectorROI:
    """A rectangular :class:`~mmfusion.data.SectorROI` from an ultrasound region's box.

    Args:
        region: The region (its box is end-exclusive).
        shape: ``(H, W)`` of the frame; the box is clipped to it (some scanners write a box that
            ends one pixel past the frame).

    Returns:
        The ROI: mask True inside the clipped box, bbox the clipped box, contour its 4 corners.

    Raises:
        ValueError: If the box is empty once clipped to the frame.
    """
    h, w = shape
    x0, y0, x1, y1 = region.box
    x0, x1 = min(max(x0, 0), w), min(max(x1, 0), w)
    y0, y1 = min(max(y0, 0), h), min(max(y1, 0), h)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(
            f"region: ultrasound region {region.index} box {region.box} does not overlap the "
            f"{w}x{h} frame"
        )
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:y1, x0:x1] = True
    contour = np.array([[x0, y0], [x1 - 1, y0], [x1 - 1, y1 - 1], [x0, y1 - 1]], dtype=np.int32)
    return SectorROI(mask=mask, bbox=(x0, y0, x1, y1), contour=contour)


def _sector_in(region: SectorROI, image: np.ndarray) -> SectorROI:
    """The region's box as the crop, with the scan sector found inside it as the mask.

    The sector is the frame's own (contour detection on the whole frame) when it lies inside the
    box; otherwise (a dual-view screen, a header bar joined to the fan) contour detection runs
    again with everything outside the box blacked out. Where no sector is found inside the region
    (e.g. a linear probe's rectangle filling the box), the mask is the whole box.
    """
    x0, y0, x1, y1 = region.bbox

    def within(sector: SectorROI) -> bool:
        sx0, sy0, sx1, sy1 = sector.bbox
        return x0 <= sx0 and y0 <= sy0 and sx1 <= x1 and sy1 <= y1

    inside = np.zeros_like(image)
    inside[y0:y1, x0:x1] = image[y0:y1, x0:x1]
    for frame in (image, inside):
        try:
            sector = detect_sector(frame, fallback=False)
        except ValueError:
            continue
        if within(sector):
            return SectorROI(mask=sector.mask & region.mask, bbox=region.bbox, contour=sector.contour)
    return region


def _colour_pixels(image: np.ndarray, region: UltrasoundRegion) -> int:
    """Number of saturated (colour-coded) pixels of ``image`` inside ``region``'s box."""
    x0, y0, x1, y1 = region.box
    patch = image[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)]
    if patch.ndim != 3 or patch.size == 0:
        return 0
    hsv = cv2.cvtColor(np.ascontiguousarray(patch), cv2.COLOR_RGB2HSV)
    return int(np.count_nonzero((hsv[..., 1] >= 80) & (hsv[..., 2] >= 40)))


def image_roi(
    path: str | Path,
    region: int | None = None,
    *,
    image: np.ndarray | None = None,
    use_dicom_regions: bool = True,
    fallback: bool = False,
) -> ImageROI:
    """The ROI used for an image file, and its source.

    Order: a region named by ``region=``; else the largest tissue region of a DICOM file (of equal
    ones, the one with the most colour-coded pixels, then the first: the elastogram of a dual-view
    SWE screen, the left view of a grey dual-view frame); else contour detection on the decoded
    frame; else, with ``fallback=True``, the full frame.

    Args:
        path: Image file (PNG, JPEG, DICOM, ...).
        region: Index into the file's :func:`~mmfusion.data.dicom_regions` (any data type) to use
            instead of the largest tissue region.
        image: The file's decoded ``[H, W, 3]`` frame, if already loaded (saves decoding it
            again; must be the frame of ``path`` that the ROI is for); None decodes it with
            :func:`~mmfusion.data.load_image` when needed.
        use_dicom_regions: False ignores the DICOM regions and detects the sector by contour in
            every file (as for a PNG).
        fallback: Passed to :func:`~mmfusion.data.detect_sector`: no plausible sector gives the
            full frame (with a :class:`~mmfusion.data.SectorNotFoundWarning`) instead of an error.

    Returns:
        An :class:`ImageROI` ``(roi, source, region)``.

    Raises:
        ValueError: If ``region`` is given for a file without ultrasound regions or is out of
            range, if the chosen region's box misses the frame, or if no sector is found (and not
            ``fallback``); the message names the file.
    """
    regions = dicom_regions(path) if (use_dicom_regions or region is not None) and is_dicom(
        path
    ) else []
    chosen: UltrasoundRegion | None = None
    if region is not None:
        if isinstance(region, bool) or not isinstance(region, int | np.integer):
            raise TypeError(f"region: expected an int or None, got {type(region).__name__}")
        if not 0 <= region < len(regions):
            raise ValueError(
                f"region: expected 0 <= region < {len(regions)} ({str(path)!r} has "
                f"{len(regions)} ultrasound region(s)), got {region}"
            )
        chosen = regions[int(region)]
    if image is None:
        image = load_image(path)
    if region is None:
        tissue = [r for r in regions if r.is_tissue and r.area > 0]
        largest = max((r.area for r in tissue), default=0)
        ties = [r for r in tissue if r.area == largest]
        if ties:
            chosen = max(ties, key=lambda r: (_colour_pixels(image, r) if len(ties) > 1 else 0,
                                              -r.index))
    if chosen is not None:
        try:
            roi = _region_roi(chosen, (int(image.shape[0]), int(image.shape[1])))
        except ValueError as error:
            raise ValueError(f"{error} (file {path})") from error
        return ImageROI(_sector_in(roi, image), "dicom_region", chosen)
    try:
        sector = detect_sector(image, fallback=fallback)
    except ValueError as error:
        raise ValueError(f"{error} (file {path})") from error
    return ImageROI(sector, "full_frame" if sector.is_fallback else "contour")
