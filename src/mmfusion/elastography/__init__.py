"""mmfusion.elastography: shear-wave elastography (SWE) frames, read as data (paper II.A).

A 2D-SWE frame is a grey B-mode image with a rectangular colour box in which colour codes tissue
stiffness on the scanner's colour scale, and a colour bar (the legend) beside the fan. This
package reads such frames:

- :mod:`~mmfusion.elastography.colour`: the colour box (:func:`detect_swe_box`), the legend
  (:func:`detect_colour_bar`, :func:`colour_bar_lut`), colour-map tables (:func:`colourmap_lut`)
  and stiffness in kPa from colours (:func:`decode_swe_kpa`);
- :mod:`~mmfusion.elastography.standardise`: a colour box of any scanner re-drawn on one
  reference colour scale (:func:`standardise_swe_box`);
- :mod:`~mmfusion.elastography.scale_column`: the manifest column with the top of each frame's
  colour scale (:data:`SWE_SCALE_COLUMN`, :func:`parse_swe_scale_kpa` for
  ``read_manifest(columns=...)``, :func:`swe_scale_kpa`);
- :mod:`~mmfusion.elastography.crops`: SWE crops for :class:`~mmfusion.data.PairedImageDataset`
  (:class:`SWEBoxCrop`, :func:`swe_crop`).

Why a package of its own, not a part of :mod:`mmfusion.liver`: nothing here is about the liver.
Shear-wave elastography images the breast, the thyroid, muscle and tendons with the same frames
(colour box, legend, kPa scale), so a breast or thyroid SWE domain uses this package as the liver
does; the liver package adds what is the liver's (METAVIR stages, stiffness cut-offs, the
phantom). And why not in :mod:`mmfusion.data`: the generic data layer knows no imaging modality;
SWE is one, plugged in through the crop protocol of :mod:`mmfusion.data.crops`.

Depends on NumPy and OpenCV only (no torch): the ONNX predictor uses it on machines without
PyTorch. The names below load on first use (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmfusion._lazy import attach

#: Submodule -> the public names loaded from it on first use.
_SUBMODULES = {
    "mmfusion.elastography.colour": [
        "BAR_ASPECT",
        "colour_bar_lut",
        "colourmap_lut",
        "decode_swe_kpa",
        "detect_colour_bar",
        "detect_swe_box",
    ],
    "mmfusion.elastography.crops": [
        "SWE_BOX_MODES",
        "SWE_CROP_NAMES",
        "SWE_INPUTS",
        "SWEBoxCrop",
        "SWEBoxNotFoundError",
        "SWEBoxNotFoundWarning",
        "crop_from_name",
        "swe_crop",
    ],
    "mmfusion.elastography.scale_column": [
        "SWE_SCALE_COLUMN",
        "parse_swe_scale_kpa",
        "swe_scale_kpa",
    ],
    "mmfusion.elastography.standardise": [
        "REFERENCE_COLORMAP",
        "REFERENCE_KPA_MAX",
        "standardise_swe_box",
    ],
}
__getattr__, __dir__ = attach(__name__, _SUBMODULES)

__all__ = [  # the names of _SUBMODULES, spelled out for linters
    "BAR_ASPECT",
    "REFERENCE_COLORMAP",
    "REFERENCE_KPA_MAX",
    "SWEBoxCrop",
    "SWEBoxNotFoundError",
    "SWEBoxNotFoundWarning",
    "SWE_BOX_MODES",
    "SWE_CROP_NAMES",
    "SWE_INPUTS",
    "SWE_SCALE_COLUMN",
    "colour_bar_lut",
    "colourmap_lut",
    "crop_from_name",
    "decode_swe_kpa",
    "detect_colour_bar",
    "detect_swe_box",
    "parse_swe_scale_kpa",
    "standardise_swe_box",
    "swe_crop",
    "swe_scale_kpa",
]

if TYPE_CHECKING:  # what static analysers and IDEs see
    from mmfusion.elastography.colour import (
        BAR_ASPECT,
        colour_bar_lut,
        colourmap_lut,
        decode_swe_kpa,
        detect_colour_bar,
        detect_swe_box,
    )
    from mmfusion.elastography.crops import (
        SWE_BOX_MODES,
        SWE_CROP_NAMES,
        SWE_INPUTS,
        SWEBoxCrop,
        SWEBoxNotFoundError,
        SWEBoxNotFoundWarning,
        crop_from_name,
        swe_crop,
    )
    from mmfusion.elastography.scale_column import (
        SWE_SCALE_COLUMN,
        parse_swe_scale_kpa,
        swe_scale_kpa,
    )
    from mmfusion.elastography.standardise import (
        REFERENCE_COLORMAP,
        REFERENCE_KPA_MAX,
        standardise_swe_box,
    )
