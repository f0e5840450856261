"""Scanner overlays around the phantom's fan: text, depth ruler, probe/preset label, logo, colour bar.

Real frames carry annotations outside the scan sector; they are what ROI detection must ignore.
Every element is drawn only where it keeps clear of the (slightly dilated) fan, so the sector ground
truth stays exact.
"""

from __future__ import annotations

import cv2
import numpy as np

from mmfusion.liver.phantom.config import PhantomConfig
from mmfusion.liver.phantom.geometry import SectorGeometry
from mmfusion.liver.phantom.styles import ScannerStyle

__all__ = ["Overlay", "draw_colour_bar"]

_FONT = cv2.FONT_HERSHEY_SIMPLEX


class Overlay:
    """Draws annotations onto a frame while keeping clear of the fan.

    Args:
        keepout: ``[H, W]`` bool, True where nothing may be drawn (see :meth:`around`).
        config: Phantom configuration (frame size and scale).
    """

    def __init__(self, keepout: np.ndarray, config: PhantomConfig) -> None:
        self.keepout = keepout
        self.occupied = np.zeros_like(keepout, dtype=bool)
        self.config = config
        self.font_scale = max(0.25, 0.42 * config.scale)
        self.line = max(1, int(round(18 * config.scale)))
        self.ops: list[tuple[str, tuple]] = []

    @classmethod
    def around(cls, fan_mask: np.ndarray, config: PhantomConfig) -> Overlay:
        """An overlay that keeps about 6 px (at 800 x 600) clear of the ``[H, W]`` fan mask."""
        k = max(3, int(2 * round(6 * config.scale) + 1))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        return cls(cv2.dilate(fan_mask.astype(np.uint8), kernel).astype(bool), config)

    def fork(self) -> Overlay:
        """A new overlay with no queued annotations that avoids everything queued so far."""
        other = Overlay(self.keepout, self.config)
        other.occupied = self.occupied.copy()
        return other

    def _claim(self, x0: int, y0: int, x1: int, y1: int) -> bool:
        """Reserve the box ``[x0, x1) x [y0, y1)`` if it is inside the frame and free."""
        h, w = self.keepout.shape
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            return False
        if self.keepout[y0:y1, x0:x1].any() or self.occupied[y0:y1, x0:x1].any():
            return False
        self.occupied[max(0, y0 - 1) : y1 + 1, max(0, x0 - 1) : x1 + 1] = True
        return True

    def text(self, text: str, x: int, y: int, value: int = 225) -> None:
        """Queue ``text`` with its baseline-left corner at ``(x, y)`` if it clears the fan."""
        (tw, th), base = cv2.getTextSize(text, _FONT, self.font_scale, 1)
        if self._claim(x, y - th - 1, x + tw + 1, y + base + 1):
            self.ops.append(("text", (text, (x, y), value)))

    def rect(self, x0: int, y0: int, x1: int, y1: int, value: int, filled: bool = True) -> None:
        """Queue a rectangle (end-inclusive corners) if it clears the fan."""
        if self._claim(x0, y0, x1 + 1, y1 + 1):
            self.ops.append(("rect", ((x0, y0), (x1, y1), value, -1 if filled else 1)))

    def standard(
        self, rng: np.random.Generator, geom: SectorGeometry, depth_cm: float, style: ScannerStyle
    ) -> None:
        """Queue the annotations every frame carries: header, preset, logo, ruler, settings.

        The header and the depth ruler sit on ``style.ruler_side``, the logo on the other side.
        """
        cfg, s, line = self.config, self.config.scale, self.line
        w, h = cfg.width, cfg.height
        right = style.ruler_side == "right"
        x = w - int(160 * s) if right else max(2, int(8 * s))
        day, month = int(rng.integers(1, 29)), int(rng.integers(1, 13))
        hour, minute = int(rng.integers(8, 18)), int(rng.integers(0, 60))
        self.text(style.header, x, line)
        self.text(f"2024-{month:02d}-{day:02d} {hour:02d}:{minute:02d}", x, 2 * line, 190)
        self.text("C5-1  Abd Liver", x, 3 * line + int(6 * s), 235)
        # Logo block, opposite the header.
        lx0 = int(14 * s) if right else w - int(100 * s)
        ly0 = max(2, int(6 * s))
        lx1, ly1 = lx0 + int(86 * s), ly0 + int(22 * s)
        if self._claim(lx0, ly0, lx1 + 1, ly1 + 1):
            self.ops.append(("rect", ((lx0, ly0), (lx1, ly1), 185, -1)))
            self.ops.append(("text", ("MMF", (lx0 + int(22 * s), ly1 - int(6 * s)), 20)))
        self.text(
            f"MI {rng.uniform(0.8, 1.3):.1f}  TIb {rng.uniform(0.2, 0.6):.1f}",
            lx0 if right else w - int(150 * s),
            ly1 + line,
        )
        # Depth ruler: a tick per cm, long ticks and labels every 5 cm.
        px_per_cm = (geom.r_outer - geom.r_inner) / depth_cm
        top = geom.apex_y + geom.r_inner
        for cm in range(int(depth_cm) + 1):
            y = int(round(top + cm * px_per_cm))
            long = cm % 5 == 0
            x0, x1 = int((21 if long else 26) * s), int(31 * s)
            if right:
                x0, x1 = w - 1 - x1, w - 1 - x0
            if long:
                self.text(str(cm), x1 + int(3 * s) if right else max(1, int(2 * s)),
                          y + int(4 * s), 200)
            self.rect(x0, y, x1, y + max(0, int(round(s)) - 1), 200)
        self.text(f"{depth_cm:.0f}cm", x, h - 3 * line, 200)
        self.text(
            f"FR {int(rng.integers(12, 30))}Hz  G{int(rng.integers(40, 70))}", x, h - 2 * line, 200
        )
        self.text(f"DR {style.dynamic_range_db:.0f}", x, h - line, 200)

    def draw(self, image: np.ndarray) -> np.ndarray:
        """Draw the queued annotations onto ``image`` (grey ``[H, W]`` or RGB ``[H, W, 3]``)."""
        for kind, args in self.ops:
            value = args[2]
            colour = (value, value, value) if image.ndim == 3 else value
            if kind == "text":
                cv2.putText(image, args[0], args[1], _FONT, self.font_scale, colour, 1, cv2.LINE_AA)
            else:
                cv2.rectangle(image, args[0], args[1], colour, args[3])
        return image


def draw_colour_bar(
    rgb: np.ndarray, overlay: Overlay, lut: np.ndarray, kpa_max: float, side: str = "right"
) -> np.ndarray:
    """Draw the SWE colour bar (top = ``kpa_max``, bottom = 0 kPa) at the ``side`` edge.

    The bar is drawn at once; its labels are queued on ``overlay`` (call ``overlay.draw``). It
    runs from 14 % of the frame height down to 46 %, or, where a wide fan reaches the frame's edge
    there, down to 34 % or 26 %; it is left out only where none of these clears the fan and the
    text already placed (in frames much smaller than 400 x 300 px, text often crowds it out).

    Args:
        rgb: ``[H, W, 3]`` uint8 RGB frame, drawn on in place.
        overlay: Supplies the keep-out zone and receives the labels.
        lut: ``[256, 3]`` uint8 RGB colour scale.
        kpa_max: Value at the top of the bar.
        side: ``"right"`` or ``"left"``.

    Returns:
        ``rgb``.
    """
    s, (h, w) = overlay.config.scale, rgb.shape[:2]
    x0, x1 = w - int(36 * s), w - int(24 * s)
    if side == "left":
        x0, x1 = int(40 * s), int(52 * s)
    y0 = int(0.14 * h)
    for bottom in (0.46, 0.34, 0.26):
        y1 = int(bottom * h)
        if overlay._claim(x0 - 1, y0 - 1, x1 + 2, y1 + 2):
            break
    else:
        return rgb
    ramp = lut[np.linspace(255, 0, y1 - y0).astype(np.int64)]
    rgb[y0:y1, x0:x1] = ramp[:, None, :]
    cv2.rectangle(rgb, (x0 - 1, y0 - 1), (x1, y1), (200, 200, 200), 1)
    overlay.text("kPa", x0 - int(6 * s), y0 - int(8 * s), 220)
    overlay.text(f"{kpa_max:g}", x0 - int(26 * s), y0 + int(8 * s), 220)
    overlay.text("0", x0 - int(14 * s), y1, 220)
    return rgb
