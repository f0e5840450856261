"""Sector (fan) region of interest of an ultrasound frame, found by contour detection (paper II.B).

An ultrasound frame shows the scan as a fan-shaped sector on black, surrounded by text, a depth
ruler, a colour bar and logos. :func:`detect_sector` finds the fan with OpenCV: grey level (the
maximum over colour channels, so that the SWE colour map counts as bright) -> median blur (removes
speckle nulls) -> threshold -> morphological opening (removes thin text and tick marks) and closing
(fills holes) -> largest external contour -> its convex hull, filled, is the mask. Overlays that do
not touch the fan are separate, smaller contours and are ignored; a fan cut off by the image border
is handled because the contour then runs along the border.

The mask is the fan's convex shape, not its bright parts: dark tissue is tissue. An anechoic
structure (a full bladder, a cyst, a vessel, a rib shadow) that reaches the fan's edge would bite
into the bright region; the convex hull restores it. (A convex probe's fan is convex up to the
shallow arc at its top, which the hull bridges.)

Detection time is bounded: a frame whose longest side exceeds ``max_side`` (1024 px by default) is
searched on a copy downscaled to that size (OpenCV ``INTER_AREA``), and the hull is scaled back to
the frame's own pixels; the morphology kernel is relative to the frame, so the result matches
detection at full size up to a pixel or two of the working copy.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, overload

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["SectorNotFoundWarning", "SectorROI", "detect_sector"]


def _is_tensor(value: object) -> bool:
    """Whether ``value`` is a torch tensor, without importing torch (the phantom's workers and
    the manifest reader use this module and never load torch; a tensor implies torch is loaded)."""
    torch_module = sys.modules.get("torch")
    return torch_module is not None and isinstance(value, torch_module.Tensor)


class SectorNotFoundWarning(UserWarning):
    """Warned when no plausible sector is found and the full frame is used instead."""


@dataclass(frozen=True, eq=False)
class SectorROI:
    """The detected scan sector of one frame.

    Attributes:
        mask: ``[H, W]`` bool array, True inside the sector.
        bbox: ``(x0, y0, x1, y1)`` bounding box of the mask in pixels, end-exclusive.
        contour: ``[N, 2]`` int32 array of the sector outline (x, y): the vertices of its convex
            hull for a detected sector; empty for a fallback.
        is_fallback: True when no sector was found and the ROI is the full frame.
    """

    mask: np.ndarray
    bbox: tuple[int, int, int, int]
    contour: np.ndarray
    is_fallback: bool = False

    def __repr__(self) -> str:
        """One line: box, frame shape, area fraction, contour size (not the arrays)."""
        return (
            f"SectorROI(bbox={self.bbox}, shape={self.shape}, "
            f"area_fraction={self.area_fraction:.3f}, {len(self.contour)} contour points"
            f"{', fallback' if self.is_fallback else ''})"
        )

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the frame the ROI was found in."""
        return int(self.mask.shape[0]), int(self.mask.shape[1])

    @property
    def area_fraction(self) -> float:
        """Fraction of the frame covered by the sector."""
        return float(self.mask.mean())

    @overload
    def crop(self, image: np.ndarray, apply_mask: bool = True) -> np.ndarray: ...

    @overload
    def crop(self, image: torch.Tensor, apply_mask: bool = True) -> torch.Tensor: ...

    def crop(
        self, image: np.ndarray | torch.Tensor, apply_mask: bool = True
    ) -> np.ndarray | torch.Tensor:
        """Crop a frame to the sector's bounding box.

        Args:
            image: The frame (or a frame of the same geometry, e.g. the paired modality):
                numpy ``[H, W]`` or ``[H, W, C]``, or torch ``[H, W]`` or ``[C, H, W]``.
            apply_mask: Set pixels outside the sector (bounding-box corners, where overlays
                such as text may sit) to 0.

        Returns:
            The crop, same type and layout as ``image``: ``[h, w]``, ``[h, w, C]`` or
            ``[C, h, w]`` with ``h = y1 - y0`` and ``w = x1 - x0``.

        Raises:
            TypeError: If ``image`` is not a numpy array or torch tensor.
            ValueError: If the image's height and width differ from the mask's.
        """
        x0, y0, x1, y1 = self.bbox
        if isinstance(image, np.ndarray):
            if image.ndim not in (2, 3) or image.shape[:2] != self.mask.shape:
                raise ValueError(
                    f"image: expected [H, W] or [H, W, C] with (H, W) = {self.shape}, "
                    f"got shape {tuple(image.shape)}"
                )
            out = image[y0:y1, x0:x1].copy()
            if apply_mask and not self.is_fallback:
                out[~self.mask[y0:y1, x0:x1]] = 0
            return out
        if _is_tensor(image):
            import torch

            if image.ndim not in (2, 3) or tuple(image.shape[-2:]) != self.shape:
                raise ValueError(
                    f"image: expected [H, W] or [C, H, W] with (H, W) = {self.shape}, "
                    f"got shape {tuple(image.shape)}"
                )
            out_t = image[..., y0:y1, x0:x1].clone()
            if apply_mask and not self.is_fallback:
                keep = torch.from_numpy(self.mask[y0:y1, x0:x1]).to(out_t.device)
                out_t = out_t * keep.to(out_t.dtype)
            return out_t
        raise TypeError(
            f"image: expected a numpy array or torch tensor, got {type(image).__name__}"
        )

    def box_to_crop(
        self, box: tuple[float, float, float, float], out_size: tuple[int, int] | None = None
    ) -> tuple[float, float, float, float]:
        """Map a box given in frame pixels into the coordinates of :meth:`crop`'s output.

        Args:
            box: ``(x0, y0, x1, y1)`` in frame pixels (e.g. a phantom's SWE colour box).
            out_size: ``(H, W)`` the crop is resized to afterwards; None for the crop itself.

        Returns:
            ``(x0, y0, x1, y1)`` in crop (or resized crop) pixels, clipped to the crop.
        """
        bx0, by0, bx1, by1 = self.bbox
        w, h = bx1 - bx0, by1 - by0
        sx, sy = 1.0, 1.0
        if out_size is not None:
            sy, sx = out_size[0] / h, out_size[1] / w
        x0 = min(max(box[0] - bx0, 0), w) * sx
        x1 = min(max(box[2] - bx0, 0), w) * sx
        y0 = min(max(box[1] - by0, 0), h) * sy
        y1 = min(max(box[3] - by0, 0), h) * sy
        return (float(x0), float(y0), float(x1), float(y1))


def _as_grey(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """Return a uint8 ``[H, W]`` brightness image (max over channels)."""
    if _is_tensor(image):
        if image.ndim == 3:
            image = image.permute(1, 2, 0)
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"image: expected a numpy array or torch tensor, got {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise TypeError(f"image: expected dtype uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        if image.shape[2] == 1:
            image = image[:, :, 0]
        else:  # cv2.max is ~20x faster than ndarray.max(axis=2) here
            image = cv2.max(cv2.max(image[:, :, 0], image[:, :, 1]), image[:, :, 2])
    if image.ndim != 2:
        raise ValueError(
            f"image: expected [H, W] or [H, W, C] (numpy) / [C, H, W] (torch) with C in 1, 3, 4, "
            f"got shape {tuple(image.shape)}"
        )
    if min(image.shape) < 8:
        raise ValueError(f"image: expected at least 8 x 8 pixels, got shape {tuple(image.shape)}")
    return np.ascontiguousarray(image)


def _full_frame(shape: tuple[int, int]) -> SectorROI:
    h, w = shape
    mask = np.ones((h, w), dtype=bool)
    return SectorROI(
        mask=mask, bbox=(0, 0, w, h), contour=np.zeros((0, 2), np.int32), is_fallback=True
    )


#: Default longest side of the copy that :func:`detect_sector` searches (bounded time on
#: huge frames).
MAX_SIDE = 1024


def _working_copy(grey: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float, float]:
    """``grey`` downscaled so that its longest side is at most ``max_side`` (never under 8 px).

    Returns:
        ``(copy, sx, sy)``: the copy and its scale factors (copy pixels per frame pixel) in x and y;
        ``(grey, 1.0, 1.0)`` when no downscaling is needed.
    """
    h, w = grey.shape
    if max_side is None or max(h, w) <= max_side:
        return grey, 1.0, 1.0
    scale = max_side / max(h, w)
    ww, wh = max(8, round(w * scale)), max(8, round(h * scale))
    small = cv2.resize(grey, (ww, wh), interpolation=cv2.INTER_AREA)
    return small, ww / w, wh / h


def _hull_mask(
    contour: np.ndarray, shape: tuple[int, int], sx: float, sy: float
) -> tuple[np.ndarray, np.ndarray]:
    """The convex hull of ``contour`` (working-copy pixels), in frame pixels, and its filled mask.

    Args:
        contour: OpenCV contour ``[N, 1, 2]`` found on the working copy.
        shape: ``(H, W)`` of the frame.
        sx: Working-copy pixels per frame pixel in x (1.0 at full size); ``sy`` likewise in y.

    Returns:
        ``(hull, mask)``: ``[M, 2]`` int32 hull vertices (x, y) and the uint8 ``[H, W]`` mask (255
        inside).
    """
    h, w = shape
    points = contour.reshape(-1, 2).astype(np.float64)
    if (sx, sy) != (1.0, 1.0):
        wh, ww = round(h * sy), round(w * sx)  # the copy's size
        on_edge = [points == 0, points == np.array([ww - 1, wh - 1])]
        points = (points + 0.5) / np.array([sx, sy]) - 0.5  # pixel centre to pixel centre
        points = np.where(on_edge[0], 0, points)  # a fan touching the copy's border touches
        points = np.where(on_edge[1], np.array([w - 1, h - 1]), points)  # the frame's
    points = np.clip(np.rint(points), 0, np.array([w - 1, h - 1]))
    hull = cv2.convexHull(points.astype(np.int32)).reshape(-1, 2)
    mask = np.zeros((h, w), dtype=np.uint8)
    cv2.fillConvexPoly(mask, hull, 255)
    return hull.astype(np.int32), mask


def detect_sector(
    image: np.ndarray | torch.Tensor,
    *,
    threshold: int = 12,
    kernel_size: int | None = None,
    min_area_fraction: float = 0.05,
    fallback: bool = False,
    max_side: int | None = MAX_SIDE,
) -> SectorROI:
    """Find the fan-shaped scan sector of an ultrasound frame (paper II.B, "contour detection").

    Args:
        image: uint8 frame, grey ``[H, W]`` or colour ``[H, W, 3|4]`` (numpy), or ``[C, H, W]``
            (torch). Colour order does not matter.
        threshold: Grey level (after a median blur) above which a pixel counts as scan.
        kernel_size: Side of the elliptic morphology kernel in frame pixels; default
            ``min(H, W) / 100`` (odd, at least 3). Overlay strokes thinner than this are removed.
        min_area_fraction: The largest region must cover at least this fraction of the frame to
            count as a sector.
        fallback: If True, a frame without a plausible sector gives the full frame as ROI and a
            :class:`SectorNotFoundWarning` instead of an error.
        max_side: A frame whose longest side exceeds this is searched on a copy downscaled to it
            (bounded time and memory; the mask is returned at the frame's size); None always works
            at full size (time grows with the frame and its kernel: minutes at 20000 px).

    Returns:
        The :class:`SectorROI`: mask ``[H, W]`` (the convex hull of the largest bright region, so
        dark anatomy inside the fan stays in), bounding box, hull vertices.

    Raises:
        TypeError: If ``image`` is not a uint8 numpy array or tensor.
        ValueError: If the frame is blank or its largest bright region is too small (unless
            ``fallback``), or if an argument is out of range.
    """
    if not 0 <= threshold < 255:
        raise ValueError(f"threshold: expected 0 <= threshold < 255, got {threshold}")
    if not 0.0 < min_area_fraction <= 1.0:
        raise ValueError(f"min_area_fraction: expected a value in (0, 1], got {min_area_fraction}")
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int)
                                 or max_side < 64):  # fmt: skip
        raise ValueError(f"max_side: expected an int >= 64 or None, got {max_side!r}")
    if kernel_size is not None and kernel_size < 1:
        raise ValueError(f"kernel_size: expected a positive int, got {kernel_size}")
    grey = _as_grey(image)
    h, w = grey.shape
    work, sx, sy = _working_copy(grey, max_side)
    wh, ww = work.shape
    if kernel_size is None:
        k = max(3, int(round(min(wh, ww) / 100)) | 1)
    else:  # given in frame pixels
        k = max(1, int(round(kernel_size * min(sx, sy))))

    blurred = cv2.medianBlur(work, 5)
    _, binary = cv2.threshold(blurred, threshold, 255, cv2.THRESH_BINARY)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel)
    binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)

    problem = None
    if not contours:
        problem = f"no region brighter than threshold {threshold} (blank frame?)"
    else:
        largest = max(contours, key=cv2.contourArea)
        hull, mask_u8 = _hull_mask(largest, (h, w), sx, sy)
        fraction = float(np.count_nonzero(mask_u8)) / (h * w)
        if fraction < min_area_fraction:
            problem = (
                f"the largest bright region covers {fraction:.2%} of the frame, "
                f"expected at least {min_area_fraction:.2%}"
            )
    if problem is not None:
        message = f"image: no plausible ultrasound sector found in a {w}x{h} frame: {problem}"
        if not fallback:
            raise ValueError(message)
        warnings.warn(message + "; using the full frame", SectorNotFoundWarning, stacklevel=2)
        return _full_frame((h, w))

    x, y, bw, bh = cv2.boundingRect(hull)
    return SectorROI(
        mask=mask_u8.astype(bool),
        bbox=(int(x), int(y), int(x + bw), int(y + bh)),
        contour=hull,
    )
