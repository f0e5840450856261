"""Shear-wave elastography (SWE) rendering of the liver phantom (paper II.A, "Ultrasonic shear wave
elasticity").

The SWE frame is the B-mode fan with a rectangular colour box in the liver. Inside the box, colour
encodes stiffness on a blue-to-red scale (OpenCV's JET map, 0..``kpa_max`` kPa, default 0-40): the
view's stiffness times a smooth spatial variation, with void (uncoloured) pixels in vessels and in a
few small patches, as on a real scanner. The box's mean colour therefore tracks the view stiffness.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from mmfusion.liver.phantom.bmode import BModeScene
from mmfusion.liver.phantom.config import PhantomConfig
from mmfusion.liver.phantom.fields import smooth_field
from mmfusion.liver.phantom.geometry import SectorGeometry

__all__ = ["colour_lut", "render_swe", "sample_swe_box"]


@lru_cache(maxsize=1)
def colour_lut() -> np.ndarray:
    """The SWE colour scale: ``[256, 3]`` uint8 RGB, index 0 = 0 kPa (dark blue), 255 = max (red)."""
    ramp = np.arange(256, dtype=np.uint8).reshape(-1, 1)
    lut = cv2.applyColorMap(ramp, cv2.COLORMAP_JET)[:, 0, ::-1]
    lut = np.ascontiguousarray(lut)
    lut.setflags(write=False)
    return lut


def sample_swe_box(
    rng: np.random.Generator, geom: SectorGeometry, capsule_r: float, config: PhantomConfig
) -> tuple[int, int, int, int]:
    """Place the SWE colour box in the liver, fully inside the fan.

    Returns:
        ``(x0, y0, x1, y1)`` in frame pixels, end-exclusive.
    """
    span = geom.r_outer - geom.r_inner
    top_r = capsule_r + rng.uniform(0.05, 0.10) * span
    height = rng.uniform(0.24, 0.32) * span
    width = 2 * top_r * math.sin(geom.half_angle) * rng.uniform(0.45, 0.6)
    cx = geom.apex_x + rng.uniform(-0.08, 0.08) * width
    y0 = geom.apex_y + top_r
    y1 = min(y0 + height, config.height - 2.0, geom.apex_y + geom.r_outer - 0.05 * span)
    margin = math.radians(3)
    for _ in range(40):
        x0, x1 = cx - width / 2, cx + width / 2
        corners = [(x0, y0), (x1, y0), (x0, y1), (x1, y1)]
        inside = all(
            abs(math.atan2(x - geom.apex_x, y - geom.apex_y)) <= geom.half_angle - margin
            and math.hypot(x - geom.apex_x, y - geom.apex_y) <= geom.r_outer - 2
            for x, y in corners
        )
        if inside:
            break
        width *= 0.9
    return int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))


def render_swe(
    rng: np.random.Generator,
    scene: BModeScene,
    box: tuple[int, int, int, int],
    stiffness_kpa: float,
    config: PhantomConfig,
) -> np.ndarray:
    """Render the SWE frame: the B-mode fan in grey with the stiffness colour box.

    Args:
        rng: Random generator (consumed).
        scene: The B-mode scene of the same view.
        box: ``(x0, y0, x1, y1)`` colour box in frame pixels.
        stiffness_kpa: The view's stiffness.
        config: Phantom configuration (``kpa_max``, spatial noise, void fraction).

    Returns:
        ``[H, W, 3]`` uint8 RGB frame (no overlays yet).
    """
    x0, y0, x1, y1 = box
    bh, bw = y1 - y0, x1 - x0
    s = config.scale
    grey = (scene.image.astype(np.float32) * 0.9).astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)

    log_map = config.swe_spatial_log_sd * smooth_field(rng, (bh, bw), 10 * s)
    kpa = stiffness_kpa * np.exp(log_map)
    index = np.clip(kpa / config.kpa_max * 255.0, 0, 255).astype(np.uint8)
    colour = colour_lut()[index]

    void_fraction = rng.uniform(*config.swe_void_fraction)
    patches = smooth_field(rng, (bh, bw), 3 * s)
    void = patches > np.quantile(patches, 1.0 - void_fraction)
    void |= scene.vessels[y0:y1, x0:x1]
    region = rgb[y0:y1, x0:x1]
    region[~void] = colour[~void]
    cv2.rectangle(rgb, (x0 - 1, y0 - 1), (x1, y1), (210, 210, 210), 1)
    return rgb
