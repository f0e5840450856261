"""Reading a shear-wave elastography (SWE) frame: the colour box and its stiffness in kPa.

A 2D-SWE frame (paper II.A, "Ultrasonic shear wave elasticity") is a grey B-mode image with a
rectangular colour box in which colour encodes stiffness on the scanner's colour scale, and a
colour bar (the legend) beside the fan. Everything else (text, ruler, logos) is grey.

- :func:`detect_swe_box` finds the box from colour saturation with OpenCV: HSV saturation and
  value thresholds -> morphological closing (bridges void, uncoloured pixels inside the box) ->
  connected components -> the largest component that is not shaped like a colour bar, merged with
  the coloured pieces right next to it (a vessel may cut the box in two) -> bounding box of the
  coloured pixels.
- :func:`detect_colour_bar` finds the legend (the elongated coloured component) and
  :func:`colour_bar_lut` reads its colours as a lookup table.
- :func:`decode_swe_kpa` turns colours back into kPa by the nearest colour of a lookup table
  (a named colour map, e.g. OpenCV's JET as drawn by the liver phantom, or one read from the
  legend), NaN where a pixel is not colour-coded.

Boxes are ``(x0, y0, x1, y1)`` pixel bounds, end-exclusive (``image[y0:y1, x0:x1]`` is the box),
as :attr:`mmfusion.data.SectorROI.bbox` and the liver phantom's ground truth, so a box maps into a
ROI crop with :meth:`mmfusion.data.SectorROI.box_to_crop`. Images are RGB, as
:func:`mmfusion.data.load_image` returns them (``cv2.imread`` gives BGR: convert first).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

__all__ = [
    "colour_bar_lut",
    "colourmap_lut",
    "decode_swe_kpa",
    "detect_colour_bar",
    "detect_swe_box",
]

_Box = tuple[int, int, int, int]

#: Long side over short side from which a coloured component counts as a colour bar, not a box.
#: Legends are 8-20 times longer than wide; an SWE box in the narrow top of a fan can be 4-5 times
#: taller than wide.
BAR_ASPECT = 6.0


def _as_rgb(image: Any, name: str = "image", min_side: int = 1) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"{name}: expected a numpy array [H, W, 3] (RGB), got {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise TypeError(f"{name}: expected dtype uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"{name}: expected a colour image [H, W, 3] (RGB), got shape {tuple(image.shape)}"
        )
    if min(image.shape[:2]) < min_side:
        raise ValueError(
            f"{name}: expected at least {min_side} x {min_side} pixels, got shape "
            f"{tuple(image.shape)}"
        )
    return np.ascontiguousarray(image)


def _check_box(box: Any, shape: tuple[int, ...], name: str = "box") -> _Box:
    h, w = shape[:2]
    try:
        x0, y0, x1, y1 = (int(v) for v in box)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected (x0, y0, x1, y1) ints, got {box!r}") from None
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise ValueError(
            f"{name}: expected 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h} (end-exclusive), "
            f"got {(x0, y0, x1, y1)}"
        )
    return x0, y0, x1, y1


def _coloured_components(
    rgb: np.ndarray, min_saturation: int, min_value: int, kernel_size: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Coloured mask, component labels, component stats and the kernel size used."""
    if not 0 < min_saturation <= 255:
        raise ValueError(f"min_saturation: expected 1..255, got {min_saturation}")
    if not 0 <= min_value <= 255:
        raise ValueError(f"min_value: expected 0..255, got {min_value}")
    h, w = rgb.shape[:2]
    k = kernel_size if kernel_size is not None else max(3, int(round(min(h, w) / 100)) | 1)
    if k < 1:
        raise ValueError(f"kernel_size: expected a positive int, got {kernel_size}")
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    coloured = (hsv[:, :, 1] >= min_saturation) & (hsv[:, :, 2] >= min_value)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    closed = cv2.morphologyEx(coloured.astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    return coloured, labels, stats, k


def _is_bar(stat: np.ndarray) -> bool:
    w, h = int(stat[cv2.CC_STAT_WIDTH]), int(stat[cv2.CC_STAT_HEIGHT])
    return max(w, h) >= BAR_ASPECT * min(w, h)


def _bounds(stat: np.ndarray) -> _Box:
    x, y = int(stat[cv2.CC_STAT_LEFT]), int(stat[cv2.CC_STAT_TOP])
    return x, y, x + int(stat[cv2.CC_STAT_WIDTH]), y + int(stat[cv2.CC_STAT_HEIGHT])


def _near(a: _Box, b: _Box, gap: int) -> bool:
    """True if box ``a`` grown by ``gap`` pixels on every side overlaps box ``b``."""
    return a[0] - gap < b[2] and b[0] < a[2] + gap and a[1] - gap < b[3] and b[1] < a[3] + gap


def _pixel_bounds(mask: np.ndarray) -> _Box:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def detect_swe_box(
    image: np.ndarray,
    *,
    min_saturation: int = 80,
    min_value: int = 40,
    kernel_size: int | None = None,
    merge_gap: int | None = None,
    min_area_fraction: float = 0.002,
) -> tuple[int, int, int, int] | None:
    """Find the elastography colour box of an SWE frame from colour saturation.

    Coloured pixels (HSV saturation >= ``min_saturation`` and value >= ``min_value``: grey
    B-mode, text and rulers have saturation near 0) are closed with an elliptic kernel, so void
    pixels inside the box do not split it, and grouped into connected components. Components at
    least :data:`~mmfusion.elastography.BAR_ASPECT` times longer than wide are legends
    (colour bars) and never the box.
    The box is the largest remaining component, joined with the remaining components within
    ``merge_gap`` pixels of its bounds (a vessel crossing the whole box leaves two pieces); its
    bounds are those of the coloured pixels, so the closing does not enlarge it, except that a
    side moves out to the scanner's drawn box outline (a light-grey line) when one lies within
    ``merge_gap`` pixels or twice the box's size: a strip of void pixels along a side (a
    vessel, a rib shadow) does not shrink the box. Where void columns cut the box into stripes,
    each as elongated as a legend, the stripes' common outline is the box.

    Args:
        image: ``[H, W, 3]`` uint8 RGB frame (BGR works as well: only saturation is used).
        min_saturation: Saturation threshold (OpenCV scale 0-255). Colour-map colours are
            saturated (OpenCV's JET: 255 everywhere).
        min_value: Brightness threshold (0-255); very dark pixels have unreliable hue and
            saturation (compression noise).
        kernel_size: Side of the closing kernel in pixels; default ``min(H, W) / 100`` (odd, at
            least 3).
        merge_gap: Coloured components this close to the largest one belong to the box; default
            4% of ``min(H, W)`` (24 px at 800 x 600, wider than the phantom's vessels), at least
            the kernel size.
        min_area_fraction: The box must cover at least this fraction of the frame.

    Returns:
        ``(x0, y0, x1, y1)`` end-exclusive pixel bounds (``image[y0:y1, x0:x1]``), the convention
        of :attr:`SectorROI.bbox <mmfusion.data.SectorROI.bbox>`; ``None`` if the frame has no colour
        box (a grey B-mode frame, a frame with only a colour bar, or coloured regions smaller than
        ``min_area_fraction``). Absence is an answer, not an error: SWE is not always acquired.

    Raises:
        TypeError: ``image`` is not a uint8 numpy array.
        ValueError: ``image`` is not ``[H, W, 3]`` or an argument is out of range.
    """
    rgb = _as_rgb(image, min_side=8)
    if not 0.0 < min_area_fraction <= 1.0:
        raise ValueError(f"min_area_fraction: expected a value in (0, 1], got {min_area_fraction}")
    coloured, labels, stats, k = _coloured_components(rgb, min_saturation, min_value, kernel_size)
    h, w = rgb.shape[:2]
    gap = merge_gap if merge_gap is not None else max(k, int(round(0.04 * min(h, w))))
    if gap < 0:
        raise ValueError(f"merge_gap: expected >= 0, got {merge_gap}")
    candidates = [i for i in range(1, len(stats)) if not _is_bar(stats[i])]
    if not candidates:
        return _striped_box(rgb, stats, gap, min_area_fraction)
    best = max(candidates, key=lambda i: int(stats[i, cv2.CC_STAT_AREA]))
    if stats[best, cv2.CC_STAT_AREA] < min_area_fraction * h * w:
        return None
    bounds = _bounds(stats[best])
    members = [i for i in candidates if i == best or _near(bounds, _bounds(stats[i]), gap)]
    return _snap_to_outline(rgb, _pixel_bounds(np.isin(labels, members) & coloured), gap)


def _striped_box(
    rgb: np.ndarray, stats: np.ndarray, gap: int, min_area_fraction: float
) -> _Box | None:
    """The box when every coloured component is elongated: stripes of a box cut by void columns.

    Rib shadows or vessels running through the box can leave only tall, narrow coloured stripes,
    each as elongated as a colour bar. A stripe belongs to a box when the drawn outline around it
    (:func:`_snap_to_outline`) is not itself bar-shaped; a legend's outline hugs the legend. The
    stripes within the same outline must cover ``min_area_fraction`` of the frame together.
    """
    h, w = rgb.shape[:2]
    outlined: dict[_Box, int] = {}
    for i in range(1, len(stats)):
        box = _snap_to_outline(rgb, _bounds(stats[i]), gap)
        if max(box[2] - box[0], box[3] - box[1]) < BAR_ASPECT * min(box[2] - box[0], box[3] - box[1]):
            outlined[box] = outlined.get(box, 0) + int(stats[i, cv2.CC_STAT_AREA])
    if not outlined:
        return None
    box, area = max(outlined.items(), key=lambda item: item[1])
    return box if area >= min_area_fraction * h * w else None


def _snap_to_outline(rgb: np.ndarray, box: _Box, gap: int, fill: float = 0.7) -> _Box:
    """Move each side of ``box`` out to the scanner's drawn box outline, if one is near.

    Scanners draw the elastography box as a thin light-grey rectangle. Where void pixels (vessels,
    rib shadows) leave a whole strip along one side uncoloured, the coloured pixels' bounds fall
    short of the box; the outline gives the side back. A side moves to the first row or column,
    searching outward up to ``gap`` pixels or twice the box's larger side, whose pixels
    along the box's extent are at least ``fill`` light grey (saturation < 40, value >= 150);
    without one it stays where the colour ends.
    """
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    line = (hsv[:, :, 1] < 40) & (hsv[:, :, 2] >= 150)
    h, w = line.shape
    x0, y0, x1, y1 = box
    gap_x = gap_y = max(gap, 2 * (x1 - x0), 2 * (y1 - y0))

    def first(candidates: range, strip: Callable[[int], np.ndarray]) -> int | None:
        for c in candidates:
            values = strip(c)
            if values.size and values.mean() >= fill:
                return c
        return None

    left = first(range(x0 - 1, max(x0 - 1 - gap_x, -1), -1), lambda c: line[y0:y1, c])
    right = first(range(x1, min(x1 + gap_x, w)), lambda c: line[y0:y1, c])
    top = first(range(y0 - 1, max(y0 - 1 - gap_y, -1), -1), lambda r: line[r, x0:x1])
    bottom = first(range(y1, min(y1 + gap_y, h)), lambda r: line[r, x0:x1])
    return (
        x0 if left is None else left + 1,
        y0 if top is None else top + 1,
        x1 if right is None else right,
        y1 if bottom is None else bottom,
    )


def detect_colour_bar(
    image: np.ndarray,
    *,
    min_saturation: int = 80,
    min_value: int = 40,
    min_length_fraction: float = 0.1,
) -> tuple[int, int, int, int] | None:
    """Find the colour bar (legend) of an SWE frame: the largest elongated coloured component.

    Args:
        image: ``[H, W, 3]`` uint8 RGB frame.
        min_saturation: Saturation threshold (0-255), as in :func:`detect_swe_box`.
        min_value: Brightness threshold (0-255), as in :func:`detect_swe_box`.
        min_length_fraction: The bar's long side must be at least this fraction of the frame's
            side along it.

    Returns:
        ``(x0, y0, x1, y1)`` end-exclusive bounds of the bar's coloured pixels, or ``None`` if
        there is no component at least :data:`~mmfusion.elastography.BAR_ASPECT` times
        longer than wide.

    Raises:
        TypeError: ``image`` is not a uint8 numpy array.
        ValueError: ``image`` is not ``[H, W, 3]`` or an argument is out of range.
    """
    rgb = _as_rgb(image, min_side=8)
    if not 0.0 < min_length_fraction <= 1.0:
        raise ValueError(
            f"min_length_fraction: expected a value in (0, 1], got {min_length_fraction}"
        )
    coloured, labels, stats, _ = _coloured_components(rgb, min_saturation, min_value, 1)
    h, w = rgb.shape[:2]
    bars = []
    for i in range(1, len(stats)):
        bw, bh = int(stats[i, cv2.CC_STAT_WIDTH]), int(stats[i, cv2.CC_STAT_HEIGHT])
        long_enough = bh >= min_length_fraction * h if bh >= bw else bw >= min_length_fraction * w
        if _is_bar(stats[i]) and long_enough:
            bars.append(i)
    if not bars:
        return None
    best = max(bars, key=lambda i: int(stats[i, cv2.CC_STAT_AREA]))
    return _pixel_bounds((labels == best) & coloured)


def colour_bar_lut(
    image: np.ndarray, bar: tuple[int, int, int, int], *, reverse: bool = False
) -> np.ndarray:
    """Read a colour bar as a lookup table, index 0 = the low end of the scale.

    Each row (vertical bar) or column (horizontal bar) gives one entry: the per-channel median of
    its pixels. A vertical bar (taller than wide) is read bottom to top, a horizontal bar left to
    right, the scanners' usual layout (low stiffness at the bottom / left).

    Args:
        image: ``[H, W, 3]`` uint8 RGB frame.
        bar: ``(x0, y0, x1, y1)`` end-exclusive bounds of the bar's coloured pixels (e.g. from
            :func:`detect_colour_bar`), without its frame or labels.
        reverse: The high end is at the bottom (vertical) or left (horizontal).

    Returns:
        ``[N, 3]`` uint8 RGB table (``N`` = the bar's length in pixels), to pass as
        ``decode_swe_kpa(..., colormap=lut)``.

    Raises:
        TypeError: ``image`` is not a uint8 numpy array or ``bar`` is not four ints.
        ValueError: ``image`` is not ``[H, W, 3]`` or ``bar`` lies outside it or is shorter
            than 2 pixels.
    """
    rgb = _as_rgb(image)
    x0, y0, x1, y1 = _check_box(bar, rgb.shape, "bar")
    patch = rgb[y0:y1, x0:x1].astype(np.float32)
    if y1 - y0 >= x1 - x0:
        lut = np.median(patch, axis=1)[::-1]
    else:
        lut = np.median(patch, axis=0)
    if len(lut) < 2:
        raise ValueError(f"bar: expected a bar at least 2 pixels long, got {(x0, y0, x1, y1)}")
    if reverse:
        lut = lut[::-1]
    return np.ascontiguousarray(np.round(lut).astype(np.uint8))


def colourmap_lut(colormap: str | np.ndarray) -> np.ndarray:
    """The ``[N, 3]`` uint8 RGB table of a colour map, index 0 = the low end.

    Args:
        colormap: A name of an OpenCV colour map (``"jet"``, ``"turbo"``, ``"hot"``, ...: the
            ``cv2.COLORMAP_<NAME>`` tables, 256 entries; the liver phantom draws OpenCV's JET), a
            matplotlib colour map as ``"matplotlib:<name>"`` (256 entries; matplotlib's jet
            differs from OpenCV's by up to 34 levels per channel), or an ``[N, 3]`` uint8 RGB
            array with ``N >= 2`` (e.g. :func:`colour_bar_lut`), returned as is.

    Returns:
        ``[N, 3]`` uint8 RGB array.

    Raises:
        ValueError: Unknown name or malformed array.
        ImportError: A ``"matplotlib:"`` name without matplotlib installed.
    """
    if isinstance(colormap, np.ndarray):
        if colormap.dtype != np.uint8 or colormap.ndim != 2 or colormap.shape[1] != 3:
            raise ValueError(
                f"colormap: expected an [N, 3] uint8 RGB table, got shape "
                f"{tuple(colormap.shape)} dtype {colormap.dtype}"
            )
        if len(colormap) < 2:
            raise ValueError(f"colormap: expected at least 2 colours, got {len(colormap)}")
        return colormap
    if not isinstance(colormap, str):
        raise ValueError(
            f"colormap: expected a colour-map name or an [N, 3] uint8 array, got "
            f"{type(colormap).__name__}"
        )
    if colormap.startswith("matplotlib:"):
        from matplotlib import colormaps

        name = colormap.split(":", 1)[1]
        if name not in colormaps:
            raise ValueError(f"colormap: matplotlib has no colour map {name!r}")
        rgba = colormaps[name](np.linspace(0.0, 1.0, 256))
        return np.round(rgba[:, :3] * 255).astype(np.uint8)
    code = getattr(cv2, f"COLORMAP_{colormap.upper()}", None)
    if code is None:
        known = sorted(n[9:].lower() for n in dir(cv2) if n.startswith("COLORMAP_"))
        raise ValueError(
            f"colormap: expected an OpenCV colour map ({', '.join(known)}), "
            f"'matplotlib:<name>' or an [N, 3] uint8 array, got {colormap!r}"
        )
    ramp = np.arange(256, dtype=np.uint8).reshape(-1, 1)
    return np.ascontiguousarray(cv2.applyColorMap(ramp, code)[:, 0, ::-1])


def _nearest_entry(colours: np.ndarray, lut: np.ndarray, chunk: int = 4096) -> tuple:
    """Index of the nearest LUT entry (Euclidean RGB distance) and that distance, per colour."""
    table = lut.astype(np.float32)
    index = np.empty(len(colours), dtype=np.int64)
    dist = np.empty(len(colours), dtype=np.float32)
    for start in range(0, len(colours), chunk):
        part = colours[start : start + chunk].astype(np.float32)
        d2 = ((part[:, None, :] - table[None, :, :]) ** 2).sum(axis=2)
        best = d2.argmin(axis=1)
        index[start : start + chunk] = best
        dist[start : start + chunk] = np.sqrt(d2[np.arange(len(part)), best])
    return index, dist


def decode_swe_kpa(
    image: np.ndarray,
    kpa_range: tuple[float, float] = (0.0, 40.0),
    colormap: str | np.ndarray = "jet",
    *,
    box: tuple[int, int, int, int] | None = None,
    max_distance: float = 40.0,
) -> np.ndarray:
    """Turn an SWE colour map back into stiffness in kPa.

    Each pixel takes the nearest colour of the lookup table (Euclidean distance in RGB); entry
    ``i`` of ``N`` means ``lo + i / (N - 1) * (hi - lo)`` kPa, so the resolution is one table step
    (``(hi - lo) / (N - 1)``: 0.157 kPa for 0-40 kPa and 256 colours). A pixel farther than
    ``max_distance`` from every table colour is not colour-coded (grey B-mode, void pixels, text,
    the box outline) and gets NaN. The nearest colour is computed once per distinct colour.

    Args:
        image: ``[H, W, 3]`` uint8 RGB frame.
        kpa_range: ``(lo, hi)`` stiffness at the low and high end of the colour scale (the
            legend's labels; the phantom's default is 0-40 kPa).
        colormap: Name or ``[N, 3]`` uint8 RGB table, see :func:`colourmap_lut`.
        box: Decode only ``image[y0:y1, x0:x1]`` (e.g. :func:`detect_swe_box`); None decodes the
            whole frame (the colour bar then decodes as well).
        max_distance: Largest RGB distance (0-441) to a table colour that still counts as
            colour-coded. Grey is at least 103 away from every colour of OpenCV's JET.

    Returns:
        ``[H, W]`` (or ``[y1 - y0, x1 - x0]`` with ``box``) float32 stiffness in kPa, NaN where
        not colour-coded.

    Raises:
        TypeError: ``image`` is not a uint8 numpy array, or ``box`` is not four ints.
        ValueError: Malformed ``image``, ``box``, ``kpa_range``, ``colormap`` or
            ``max_distance``.
    """
    rgb = _as_rgb(image)
    lut = colourmap_lut(colormap)
    try:
        lo, hi = (float(v) for v in kpa_range)
    except (TypeError, ValueError):
        raise ValueError(f"kpa_range: expected (lo, hi) numbers, got {kpa_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"kpa_range: expected finite lo < hi, got {kpa_range!r}")
    if not max_distance >= 0:
        raise ValueError(f"max_distance: expected >= 0, got {max_distance!r}")
    if box is not None:
        x0, y0, x1, y1 = _check_box(box, rgb.shape)
        rgb = rgb[y0:y1, x0:x1]
    pixels = rgb.reshape(-1, 3)
    codes = (
        (pixels[:, 0].astype(np.int32) << 16) | (pixels[:, 1].astype(np.int32) << 8) | pixels[:, 2]
    )
    unique, inverse = np.unique(codes, return_inverse=True)
    colours = np.stack([(unique >> 16) & 255, (unique >> 8) & 255, unique & 255], axis=1)
    index, dist = _nearest_entry(colours, lut)
    values = (lo + index / (len(lut) - 1) * (hi - lo)).astype(np.float32)
    values[dist > max_distance] = np.nan
    return values[inverse.reshape(-1)].reshape(rgb.shape[:2])
