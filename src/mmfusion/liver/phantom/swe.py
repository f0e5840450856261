"""Shear-wave elastography (SWE) rendering of the liver phantom (paper II.A, "Ultrasonic shear wave
elasticity").

The SWE frame is the B-mode fan with a rectangular colour box placed in the liver. Inside the box,
colour encodes stiffness on the scanner style's scale (0..``kpa_max`` kPa, soft to stiff): in liver
parenchyma, the view's stiffness times a smooth spatial variation, with void (uncoloured) pixels in
a few small patches. The rest of the box is where the measurement is unreliable, as guidelines warn
when they ask for a box below the capsule, away from vessels and rib shadows (sources in the docs'
"The liver phantom"; the depths and values below are the phantom's choices):

- vessels: void (no shear wave in fluid) or a soft 1-3 kPa;
- rib shadows: void (no signal);
- the abdominal wall, when the box reaches above the capsule (``box_near_capsule_prob``): muscle
  and fat values (10-30 kPa) unrelated to the liver;
- the first ~1 cm below the capsule: overestimated by up to 60 % (reverberation);
- a kidney: 4-8 kPa; a gallbladder: void; the deepest fifth of the box: sparser signal.

The mean colour of the box therefore tracks the view's stiffness only where the box sits in clean
parenchyma; a model that looks at the right pixels reads it better than one that averages the box.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from mmfusion.liver.phantom.artifacts import GALLBLADDER, KIDNEY
from mmfusion.liver.phantom.bmode import BModeScene
from mmfusion.liver.phantom.config import PhantomConfig
from mmfusion.liver.phantom.fields import smooth_field
from mmfusion.liver.phantom.geometry import SectorGeometry
from mmfusion.liver.phantom.styles import STYLES, ScannerStyle

__all__ = ["colour_lut", "render_swe", "sample_swe_box"]


def colour_lut() -> np.ndarray:
    """The classic style's SWE colour scale (OpenCV's JET): ``[256, 3]`` uint8 RGB, index 0 = 0 kPa
    (dark blue), 255 = the scale's top (red). Other styles: ``ScannerStyle.colour_lut()``."""
    return STYLES["classic"].colour_lut()


def sample_swe_box(
    rng: np.random.Generator,
    geom: SectorGeometry,
    capsule_r: float,
    config: PhantomConfig,
    shadow: np.ndarray | None = None,
) -> tuple[int, int, int, int]:
    """Place the SWE colour box in the liver, fully inside the fan.

    As recommended, the box's top lies 5-10 % of the fan depth below the capsule, except with
    probability ``config.box_near_capsule_prob``, where it starts up to 3 % of the depth above it.
    Like an operator, the placement avoids rib shadows where it can: of five candidate positions,
    the one with the fewest shadowed pixels wins (ties: the first).

    Args:
        rng: Random generator (consumed).
        geom: Fan geometry.
        capsule_r: Mean radius of the capsule.
        config: Phantom configuration.
        shadow: ``[H, W]`` bool rib-shadow mask of the view, or None.

    Returns:
        ``(x0, y0, x1, y1)`` in frame pixels, end-exclusive.
    """
    span = geom.r_outer - geom.r_inner
    if rng.random() < config.box_near_capsule_prob:
        top_r = capsule_r - rng.uniform(0.0, 0.03) * span
    else:
        top_r = capsule_r + rng.uniform(0.05, 0.10) * span
    height = rng.uniform(0.24, 0.32) * span
    width = 2 * top_r * math.sin(geom.half_angle) * rng.uniform(0.45, 0.6)
    offsets = rng.uniform(-0.25, 0.25, size=5)
    offsets[0] = rng.uniform(-0.08, 0.08)
    y0 = geom.apex_y + top_r
    y1 = min(y0 + height, config.height - 2.0, geom.apex_y + geom.r_outer - 0.05 * span)
    margin = math.radians(3)
    best: tuple[int, int, int, int] | None = None
    best_shadow = -1
    for offset in offsets.tolist():
        cx, w = geom.apex_x + offset * width, width
        for _ in range(40):
            x0, x1 = cx - w / 2, cx + w / 2
            corners = [(x0, y0), (x1, y0), (x0, y1), (x1, y1)]
            inside = all(
                abs(math.atan2(x - geom.apex_x, y - geom.apex_y)) <= geom.half_angle - margin
                and math.hypot(x - geom.apex_x, y - geom.apex_y) <= geom.r_outer - 2
                for x, y in corners
            )
            if inside:
                break
            w *= 0.9
        box = int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))
        shadowed = 0 if shadow is None else int(shadow[box[1] : box[3], box[0] : box[2]].sum())
        if best is None or shadowed < best_shadow:
            best, best_shadow = box, shadowed
        if shadowed == 0:
            break
    assert best is not None
    return best


def render_swe(
    rng: np.random.Generator,
    scene: BModeScene,
    box: tuple[int, int, int, int],
    stiffness_kpa: float,
    config: PhantomConfig,
    style: ScannerStyle,
    decoy: tuple[np.ndarray, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render the SWE panel: the B-mode fan in grey with the stiffness colour box.

    Args:
        rng: Random generator (consumed).
        scene: The B-mode scene of the same view.
        box: ``(x0, y0, x1, y1)`` colour box in panel pixels.
        stiffness_kpa: The view's stiffness.
        config: Phantom configuration (spatial noise, void fraction).
        style: Scanner style (colour scale and its top, ``kpa_max``).
        decoy: ``(mask [h, w] bool over the box, kpa)``: inside the mask the colour encodes the
            decoy's stiffness instead of the view's, times the same spatial variation and
            artifacts (:mod:`~mmfusion.liver.phantom.interaction`); None (default): no decoy,
            the same draws and pixels as without the argument. ``config.void_black`` draws void
            pixels black instead of B-mode grey.

    Returns:
        ``(rgb, kpa)``: the ``[H, W, 3]`` uint8 RGB panel (no overlays yet), and the ``[h, w]``
        float32 stiffness in kPa that each pixel of the box encodes (NaN where void), before the
        colour scale floors it to one of its 256 colours and saturates it at ``kpa_max``.
    """
    x0, y0, x1, y1 = box
    bh, bw = y1 - y0, x1 - x0
    s = config.scale
    grey = (scene.image.astype(np.float32) * 0.9).astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    inside = (slice(y0, y1), slice(x0, x1))
    frame_h = scene.mask.shape[0]  # length scale of the near-capsule band (~1 cm: 4 % of it)

    log_map = config.swe_spatial_log_sd * smooth_field(rng, (bh, bw), 10 * s)
    if decoy is None:
        kpa = stiffness_kpa * np.exp(log_map)
    else:
        decoy_mask, decoy_kpa = decoy
        base = np.where(decoy_mask, np.float32(decoy_kpa), np.float32(stiffness_kpa))
        kpa = base * np.exp(log_map)
    # Unreliable regions: reverberation just below the capsule, the wall above it, organs.
    depth = scene.capsule_depth[inside]
    near = np.exp(-np.maximum(depth, 0) / np.float32(0.04 * frame_h))
    kpa *= 1.0 + np.float32(rng.uniform(0.3, 0.6)) * near
    wall = depth <= 0
    if wall.any():
        wall_kpa = rng.uniform(10.0, 30.0) * np.exp(0.25 * smooth_field(rng, (bh, bw), 6 * s))
        kpa = np.where(wall, wall_kpa, kpa)
    organs = scene.organs[inside]
    kpa = np.where(organs == KIDNEY, np.float32(rng.uniform(4.0, 8.0)), kpa)
    vessels = scene.vessels[inside]
    vessels_void = rng.random() < 0.5
    if not vessels_void:
        kpa = np.where(vessels, np.float32(rng.uniform(1.0, 3.0)), kpa)
    index = np.clip(kpa / style.kpa_max * 255.0, 0, 255).astype(np.uint8)
    colour = style.colour_lut()[index]

    void_fraction = rng.uniform(*config.swe_void_fraction)
    patches = smooth_field(rng, (bh, bw), 3 * s)
    void = patches > np.quantile(patches, 1.0 - void_fraction)
    deep = np.arange(bh)[:, None] >= 0.8 * bh
    void |= deep & (patches > np.quantile(patches, 0.7))  # sparser signal in the deepest fifth
    void |= scene.shadow[inside] | (organs == GALLBLADDER)
    if vessels_void:
        void |= vessels
    region = rgb[inside]
    region[~void] = colour[~void]
    if config.void_black:
        region[void] = 0
    cv2.rectangle(rgb, (x0 - 1, y0 - 1), (x1, y1), (210, 210, 210), 1)
    return rgb, np.where(void, np.float32(np.nan), kpa.astype(np.float32))
