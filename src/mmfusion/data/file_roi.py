"""The ROI of an image file: the scanner's tissue region where the file states one, else contour.

A DICOM ultrasound file usually says where its tissue image is: the Sequence of Ultrasound Regions
(0018,6011) lists rectangles with their data type (tissue, colour flow, Doppler spectrum, colour
bar, ...). :func:`image_roi` uses that rectangle when there is one (a dual-view frame has two: the
largest; of equal ones, the one holding the most colour-coded pixels, i.e. the elastogram or colour
Doppler view of a dual-view screen, then the first; unless ``region=`` names one) and falls back to
contour detection
(:func:`~mmfusion.data.detect_sector`, paper II.B) otherwise, and says which it used.

A tagged region gives the crop: ``roi.bbox`` is the region's box. The scanner says the region is
tissue, so inside it the mask never follows brightness (dark anatomy such as a full bladder is
tissue): the mask is the convex hull of the fan, found by contour detection restricted to the
region (so a dual-view screen, the header bar and colour-scale legends outside it never leak in),
when that fan is clearly narrower than the box (it spans the box but covers less than
``FAN_FILL`` = 80 % of it: the corners of the box outside a convex probe's fan are blacked out as
for a PNG); otherwise (a linear probe's rectangle, a wide fan, or no fan found) the mask is the
whole box.
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
        region: The DICOM region used, for ``"dicom_region"`` (its ``index`` and ``box`` say
            which view of a dual-view screen); None otherwise.

        tissue_regions: Number of tissue regions the file tags (2 for a dual-view screen; 0 for
            a file without ultrasound regions), so a caller can say "view 2 of 2".

    ``print(found)`` gives one line (source, box, area fraction, contour size, region); the arrays
    stay in :attr:`roi`. :meth:`as_dict` gives the same facts as JSON-ready values.
    """

    roi: SectorROI
    source: str
    region: UltrasoundRegion | None = None
    tissue_regions: int = 0

    @property
    def region_index(self) -> int | None:
        """Index of the DICOM ultrasound region used (``dicom_regions(path)[i]``); None if none."""
        return None if self.region is None else self.region.index

    def __repr__(self) -> str:
        """One line: source, box, area fraction, contour size and the region used."""
        region = "None"
        if self.region is not None:
            region = f"{self.region.index} {self.region.kind} {self.region.box}"
        return (
            f"ImageROI(source={self.source!r}, bbox={self.roi.bbox}, "
            f"area_fraction={self.roi.area_fraction:.3f}, {len(self.roi.contour)} contour points, "
            f"region={region}, tissue_regions={self.tissue_regions})"
        )

    def as_dict(self) -> dict[str, object]:
        """The ROI's facts as JSON-ready values (for a prediction or a log; no arrays).

        Returns:
            ``{"source", "bbox": [x0, y0, x1, y1], "area_fraction", "region": {"index", "kind",
            "box"} or None, "tissue_regions"}``.
        """
        region = None
        if self.region is not None:
            region = {
                "index": self.region.index,
                "kind": self.region.kind,
                "box": [int(v) for v in self.region.box],
            }
        return {
            "source": self.source,
            "bbox": [int(v) for v in self.roi.bbox],
            "area_fraction": round(self.roi.area_fraction, 4),
            "region": region,
            "tissue_regions": self.tissue_regions,
        }


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


#: A fan whose convex hull covers less than this fraction of its tagged region is "clearly
#: narrower than the box" and gives the mask; a wider one gives the whole region.
FAN_FILL = 0.8
#: ... provided the hull spans at least this fraction of the region's width and height (a hull
#: that does not is a bright part of the image, not the fan: the whole region is used).
FAN_SPAN = 0.9


def _sector_in(region: SectorROI, image: np.ndarray) -> SectorROI:
    """The region's box as the crop, and the fan's convex hull or the whole box as the mask.

    The fan is the frame's own (contour detection on the whole frame) when it lies inside the
    box; otherwise (a dual-view screen, a header bar joined to the fan) contour detection runs
    again with everything outside the box blacked out. Its convex hull (never its bright parts:
    the scanner says the region is tissue) is the mask when it spans the box and covers less than
    :data:`FAN_FILL` of it; otherwise (a linear probe's rectangle, a wide fan, no fan found) the
    mask is the whole box.
    """
    x0, y0, x1, y1 = region.bbox
    bw, bh = x1 - x0, y1 - y0

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
        if not within(sector):
            continue
        sx0, sy0, sx1, sy1 = sector.bbox
        spans = sx1 - sx0 >= FAN_SPAN * bw and sy1 - sy0 >= FAN_SPAN * bh
        fill = float(sector.mask[y0:y1, x0:x1].mean())
        if spans and fill < FAN_FILL:
            return SectorROI(
                mask=sector.mask & region.mask, bbox=region.bbox, contour=sector.contour
            )
        break
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
        An :class:`ImageROI` ``(roi, source, region, tissue_regions)``; ``region.index`` (also
        ``region_index``) says which region, i.e. which view of a dual-view screen, was used.

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
    n_tissue = sum(r.is_tissue for r in regions)
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
        return ImageROI(_sector_in(roi, image), "dicom_region", chosen, n_tissue)
    try:
        sector = detect_sector(image, fallback=fallback)
    except ValueError as error:
        raise ValueError(f"{error} (file {path})") from error
    return ImageROI(sector, "full_frame" if sector.is_fallback else "contour", None, n_tissue)
