"""Convex-probe sector geometry of a phantom frame.

A convex probe images an annular sector: radii ``r_inner`` (the probe face) to ``r_outer`` (the
imaging depth) around a virtual apex above the frame, within ``+-half_angle`` of straight down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from mmfusion.liver.phantom.config import PhantomConfig
from mmfusion.liver.phantom.styles import ScannerStyle

__all__ = ["SectorGeometry", "sample_geometry"]


@dataclass(frozen=True)
class SectorGeometry:
    """Fan geometry in frame pixels (x to the right, y down; apex_y < 0 is above the frame).

    Attributes:
        apex_x: Apex column.
        apex_y: Apex row (negative: above the frame).
        r_inner: Radius of the probe face.
        r_outer: Radius of the deepest image line.
        half_angle_deg: Half the opening angle; 0 deg is straight down.
    """

    apex_x: float
    apex_y: float
    r_inner: float
    r_outer: float
    half_angle_deg: float

    @property
    def half_angle(self) -> float:
        """Half the opening angle in radians."""
        return math.radians(self.half_angle_deg)

    def shifted(self, dx: float) -> SectorGeometry:
        """The same fan moved ``dx`` pixels to the right (e.g. into a dual-view panel)."""
        return replace(self, apex_x=self.apex_x + dx)

    def polar(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Radius and angle of every pixel.

        Returns:
            ``(r [H, W], theta [H, W])`` float32; theta in radians, positive to the right.
        """
        xs = np.arange(width, dtype=np.float32) - np.float32(self.apex_x)
        ys = np.arange(height, dtype=np.float32) - np.float32(self.apex_y)
        r = np.sqrt(xs[None, :] ** 2 + ys[:, None] ** 2)
        theta = np.arctan2(np.broadcast_to(xs[None, :], r.shape), ys[:, None])
        return r, theta.astype(np.float32)

    def mask(self, width: int, height: int) -> np.ndarray:
        """``[H, W]`` bool mask of the pixels inside the sector (the ROI ground truth)."""
        r, theta = self.polar(width, height)
        return self.contains_polar(r, theta)

    def contains_polar(self, r: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """True where polar coordinates lie inside the sector."""
        return (r >= self.r_inner) & (r <= self.r_outer) & (np.abs(theta) <= self.half_angle)


def sample_geometry(
    rng: np.random.Generator, config: PhantomConfig, style: ScannerStyle, width: int | None = None
) -> SectorGeometry:
    """Draw a plausible convex-probe fan for a ``width x config.height`` panel.

    The opening is drawn from ``style.opening_deg``, the apex lies 5-15% of the frame height above
    the frame, the probe face about 8% below the top; with probability
    ``config.border_touch_prob`` the fan runs past the bottom border. The fan's half width is at
    most ``style.max_half_width`` of the panel width, leaving room for the ruler and colour bar.

    Args:
        rng: Random generator (consumed).
        config: Phantom configuration (frame height, border-touch probability).
        style: Scanner style (opening angle, half width).
        width: Panel width; None: the frame width (a dual-view style passes half of it).
    """
    w, h = width or config.width, config.height
    half = math.radians(rng.uniform(*style.opening_deg) / 2)
    apex_x = w / 2 + rng.uniform(-0.02, 0.02) * w
    apex_y = -rng.uniform(0.05, 0.15) * h
    face_y = rng.uniform(0.07, 0.09) * h
    r_inner = face_y - apex_y
    if rng.random() < config.border_touch_prob:
        bottom = rng.uniform(1.03, 1.15) * h
    else:
        bottom = rng.uniform(0.86, 0.96) * h
    r_outer = min(bottom - apex_y, style.max_half_width * w / math.sin(half))
    return SectorGeometry(
        apex_x=float(apex_x),
        apex_y=float(apex_y),
        r_inner=float(r_inner),
        r_outer=float(r_outer),
        half_angle_deg=float(math.degrees(half)),
    )
