"""One colour scale for SWE frames of any scanner: re-draw the colour box through its legend.

Scanners code stiffness on their own colour scales (JET, rainbow, reversed maps) up to their own
top in kPa (40, 60, 70 kPa, ...), so the same liver is red on one machine and green on another. A
network trained on two sites' colours misreads a third's (the phantom's leave-one-site-out result,
``examples/liver_fibrosis/RESULTS.md``). :func:`standardise_swe_box` removes that shift before a
network sees the box: it reads the frame's own legend
(:func:`~mmfusion.elastography.detect_colour_bar`, :func:`~mmfusion.elastography.colour_bar_lut`),
decodes the box into kPa with it (:func:`~mmfusion.elastography.decode_swe_kpa`) and draws the
kPa again on one reference scale (:data:`REFERENCE_COLORMAP` from 0 to :data:`REFERENCE_KPA_MAX`
kPa). Pixels that are not
colour-coded (void, vessels, text) become black, as in the masked inputs.

The legend gives the colours but not its numbers: the top of the scale in kPa comes from the
caller (the manifest's ``swe_scale_kpa`` column, read by
:func:`~mmfusion.elastography.swe_scale_kpa`, for the crop
:class:`SWEBoxCrop("box_kpa") <mmfusion.elastography.SWEBoxCrop>`).
"""

from __future__ import annotations

import numpy as np

from mmfusion._values import check_positive
from mmfusion.elastography.colour import (
    colour_bar_lut,
    colourmap_lut,
    decode_swe_kpa,
    detect_colour_bar,
    detect_swe_box,
)

__all__ = ["REFERENCE_COLORMAP", "REFERENCE_KPA_MAX", "standardise_swe_box"]

#: Colour map of the reference scale (an OpenCV colour-map name, see
#: :func:`~mmfusion.elastography.colourmap_lut`).
REFERENCE_COLORMAP = "jet"

#: Top of the reference scale in kPa. The liver 2D-SWE cut-offs lie at 7.1-10.4 kPa (F>=2 to F4,
#: :data:`mmfusion.liver.HERRMANN_2018`), so 0-40 kPa gives the diagnostic range a quarter of the
#: colour map with room above it; stiffer pixels saturate at the top colour.
REFERENCE_KPA_MAX = 40.0


def standardise_swe_box(
    image: np.ndarray,
    kpa_max: float,
    *,
    box: tuple[int, int, int, int] | None = None,
    bar: tuple[int, int, int, int] | None = None,
    reference_colormap: str | np.ndarray = REFERENCE_COLORMAP,
    reference_kpa_max: float = REFERENCE_KPA_MAX,
    max_distance: float = 40.0,
) -> np.ndarray:
    """The SWE colour box of ``image``, re-drawn on the reference colour scale.

    Args:
        image: ``[H, W, 3]`` uint8 RGB SWE frame with its colour box and legend.
        kpa_max: Stiffness in kPa at the top of the frame's own colour scale (its legend's upper
            label; the scale runs from 0 to ``kpa_max``).
        box: ``(x0, y0, x1, y1)`` end-exclusive colour box; None finds it with
            :func:`~mmfusion.elastography.detect_swe_box`.
        bar: The legend's bounds; None finds it with
            :func:`~mmfusion.elastography.detect_colour_bar` (read bottom to top, or left to
            right, as low to high).
        reference_colormap: Colour map of the output scale (name or ``[N, 3]`` uint8 table).
        reference_kpa_max: Stiffness at the top of the output scale; the bottom is 0 kPa.
        max_distance: RGB distance to the legend's nearest colour above which a pixel counts as
            not colour-coded (see :func:`~mmfusion.elastography.decode_swe_kpa`).

    Returns:
        ``[y1 - y0, x1 - x0, 3]`` uint8 RGB: each colour-coded pixel of the box in the reference
        colour of its stiffness (``min(kPa, reference_kpa_max)``), the other pixels 0.

    Raises:
        TypeError: ``image`` is not a uint8 numpy array.
        ValueError: ``kpa_max`` or ``reference_kpa_max`` is not a positive finite number, or the
            frame has no colour box or no legend.
    """
    kpa_max = check_positive(kpa_max, "kpa_max", "number of kPa")
    reference_kpa_max = check_positive(reference_kpa_max, "reference_kpa_max", "number of kPa")
    if box is None:
        box = detect_swe_box(image)
        if box is None:
            raise ValueError("image: expected an SWE frame with a colour box, found none")
    if bar is None:
        bar = detect_colour_bar(image)
        if bar is None:
            raise ValueError(
                "image: expected an SWE frame with a colour bar (legend) to read its scale from, "
                "found none"
            )
    kpa = decode_swe_kpa(
        image, (0.0, kpa_max), colour_bar_lut(image, bar), box=box,
        max_distance=max_distance,
    )  # fmt: skip
    lut = colourmap_lut(reference_colormap)
    coded = np.isfinite(kpa)
    index = np.zeros(kpa.shape, dtype=np.int64)
    scaled = np.clip(kpa[coded] / reference_kpa_max, 0.0, 1.0) * (len(lut) - 1)
    index[coded] = np.rint(scaled).astype(np.int64)
    out = lut[index]
    out[~coded] = 0
    return np.ascontiguousarray(out)
