"""Scanner styles of the liver phantom: how one hospital's scanner lays out and codes its frames.

Real data sets mix scanners and operators: frame layout and overlays, fan geometry, B-mode gain,
dynamic range and speckle size (probe frequency), the SWE colour map and its scale all differ
between hospitals, and a model trained at one may not transfer to another. Each phantom site uses
one :class:`ScannerStyle` (``PhantomConfig.site_styles``):

- ``"classic"``: the phantom's original look: OpenCV's JET scale 0-40 kPa, ruler on the left,
  separate B-mode and SWE frames, PNG files.
- ``"wide"``: a wider fan (70-90 deg), TURBO scale 0-60 kPa, ruler and header on the right,
  brighter gain, larger speckle (a lower-frequency probe), PNG files.
- ``"dual"``: a dual-view SWE screen (B-mode on the left, the elastogram on the right, each in half
  the frame, as 2D-SWE scanners display it), a reversed RAINBOW scale 0-70 kPa, written as DICOM
  with the Sequence of Ultrasound Regions tagging each view's fan (the B-mode frame: one region;
  the SWE screen: two).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

__all__ = ["STYLES", "ScannerStyle", "get_style"]


@dataclass(frozen=True)
class ScannerStyle:
    """How one scanner renders, annotates and stores its frames.

    Attributes:
        name: Style name (a key of :data:`STYLES`).
        layout: ``"single"`` (the SWE frame holds one fan) or ``"dual"`` (the SWE frame holds the
            B-mode fan on the left and the SWE fan on the right, each in half the frame width).
        colormap: OpenCV colour map of the SWE scale (``cv2.COLORMAP_<NAME>``).
        reverse_colormap: Run the colour map backwards (for maps whose low end is red).
        kpa_max: Top of the SWE colour scale in kPa (the scale is 0..kpa_max).
        opening_deg: Range of the fan's opening angle in degrees.
        max_half_width: The fan's half width at most, as a fraction of its panel width.
        ruler_side: ``"left"`` or ``"right"``: where the depth ruler and header sit.
        header: Text in the header line (the "hospital" name).
        gain_db: Range of the operator's overall gain offset in dB.
        dynamic_range_db: Log-compression dynamic range of the B-mode image.
        speckle_scale: Speckle grain size relative to the classic style (lower probe frequency:
            larger grains).
        image_format: ``"png"`` or ``"dicom"``: how the data set writer stores this style's frames
            (with ``make_phantom_dataset(image_format="native")``).
    """

    name: str
    layout: str = "single"
    colormap: str = "jet"
    reverse_colormap: bool = False
    kpa_max: float = 40.0
    opening_deg: tuple[float, float] = (55.0, 75.0)
    max_half_width: float = 0.42
    ruler_side: str = "left"
    header: str = "MMFUSION PHANTOM"
    gain_db: tuple[float, float] = (-4.0, 4.0)
    dynamic_range_db: float = 60.0
    speckle_scale: float = 1.0
    image_format: str = "png"

    def __post_init__(self) -> None:
        if self.layout not in ("single", "dual"):
            raise ValueError(f"layout: expected 'single' or 'dual', got {self.layout!r}")
        if self.ruler_side not in ("left", "right"):
            raise ValueError(f"ruler_side: expected 'left' or 'right', got {self.ruler_side!r}")
        if self.image_format not in ("png", "dicom"):
            raise ValueError(f"image_format: expected 'png' or 'dicom', got {self.image_format!r}")
        if getattr(cv2, f"COLORMAP_{self.colormap.upper()}", None) is None:
            raise ValueError(f"colormap: expected an OpenCV colour map name, got {self.colormap!r}")
        if self.kpa_max <= 0:
            raise ValueError(f"kpa_max: expected > 0, got {self.kpa_max}")
        if not 0 < self.opening_deg[0] <= self.opening_deg[1] < 120:
            raise ValueError(f"opening_deg: expected 0 < min <= max < 120, got {self.opening_deg}")

    def colour_lut(self) -> np.ndarray:
        """The SWE colour scale: ``[256, 3]`` uint8 RGB, index 0 = 0 kPa, 255 = ``kpa_max``."""
        return _lut(self.colormap, self.reverse_colormap)


@lru_cache(maxsize=8)
def _lut(colormap: str, reverse: bool) -> np.ndarray:
    ramp = np.arange(256, dtype=np.uint8).reshape(-1, 1)
    lut = cv2.applyColorMap(ramp, getattr(cv2, f"COLORMAP_{colormap.upper()}"))[:, 0, ::-1]
    lut = np.ascontiguousarray(lut[::-1] if reverse else lut)
    lut.setflags(write=False)
    return lut


#: The built-in styles, by name.
STYLES: dict[str, ScannerStyle] = {
    "classic": ScannerStyle(name="classic"),
    "wide": ScannerStyle(
        name="wide",
        colormap="turbo",
        kpa_max=60.0,
        opening_deg=(70.0, 90.0),
        max_half_width=0.42,
        ruler_side="right",
        header="NORTH GENERAL US",
        gain_db=(0.0, 8.0),
        dynamic_range_db=54.0,
        speckle_scale=1.35,
    ),
    "dual": ScannerStyle(
        name="dual",
        layout="dual",
        colormap="rainbow",
        reverse_colormap=True,
        kpa_max=70.0,
        opening_deg=(40.0, 55.0),
        max_half_width=0.44,
        header="EAST UNIV HOSP",
        gain_db=(-6.0, 2.0),
        dynamic_range_db=66.0,
        speckle_scale=0.85,
        image_format="dicom",
    ),
}


def get_style(name: str) -> ScannerStyle:
    """The built-in style ``name`` (see :data:`STYLES`).

    Raises:
        ValueError: Unknown name.
    """
    if name not in STYLES:
        raise ValueError(f"style: expected one of {sorted(STYLES)}, got {name!r}")
    return STYLES[name]
