"""Distractors of the liver phantom's B-mode frames: rib shadows, reverberation, kidney, gallbladder.

None of these carries stage information; each hides or imitates some of the parenchyma that does
(sources in the docs, "The liver phantom"):

- **Rib shadows**: a rib in the intercostal window reflects and absorbs the beam; below its bright
  surface an anechoic band runs along the beam lines (acoustic shadowing).
- **Reverberation**: the beam bounces between the probe face and the abdominal wall's layers;
  equally spaced bright bands fade with depth in the near field.
- **Kidney** (deep, lateral): hypo-echoic cortex around an echogenic sinus.
- **Gallbladder**: an anechoic pear with posterior acoustic enhancement (brighter tissue behind
  it, because fluid attenuates less).

Every function works on the panel's polar coordinates ``r, theta`` (``[H, W]`` float32, see
:meth:`~mmfusion.liver.phantom.SectorGeometry.polar`) and returns float32 maps.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from mmfusion.liver.phantom.geometry import SectorGeometry

__all__ = ["GALLBLADDER", "KIDNEY", "draw_organs", "organ_echogenicity", "reverberation", "rib_shadows"]

#: Labels of :func:`draw_organs`' mask.
KIDNEY, GALLBLADDER = 1, 2


def _soft_band(theta: np.ndarray, centre: float, half_width: float, soft: float) -> np.ndarray:
    """1 inside ``|theta - centre| < half_width``, falling linearly to 0 over ``soft`` radians."""
    return np.clip((half_width - np.abs(theta - np.float32(centre))) / np.float32(soft), 0, 1)


def rib_shadows(
    rng: np.random.Generator,
    geom: SectorGeometry,
    r: np.ndarray,
    theta: np.ndarray,
    capsule_r: float,
    scale: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One or two rib shadows.

    A rib's surface lies in the abdominal wall (between the probe face and the capsule); below it,
    within the rib's angular width, echoes fall to 10-25 % (the shadow). A second rib appears in
    30 % of the shadowed views; shadows stay clear of the fan's lateral edges.

    Returns:
        ``(gain [H, W], surface [H, W], shadow [H, W] bool)``: multiply the echogenicity by
        ``gain``, add ``surface`` (the rib's bright edge); ``shadow`` marks the shadowed pixels.
    """
    half = geom.half_angle
    gain = np.ones_like(r)
    surface = np.zeros_like(r)
    for _ in range(2 if rng.random() < 0.3 else 1):
        width = float(rng.uniform(0.035, 0.06))
        centre = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.7) * (half - width))
        rib_r = geom.r_inner + rng.uniform(0.35, 0.8) * (capsule_r - geom.r_inner)
        band = _soft_band(theta, centre, width, 0.015)
        below = np.clip((r - np.float32(rib_r)) / np.float32(3 * scale), 0, 1)
        gain *= 1 - np.float32(rng.uniform(0.75, 0.9)) * band * below
        surface += 2.2 * band * np.exp(-(((r - np.float32(rib_r)) / np.float32(2.5 * scale)) ** 2))
    return gain, surface, gain < 0.5


def reverberation(
    rng: np.random.Generator, geom: SectorGeometry, r: np.ndarray, scale: float
) -> np.ndarray:
    """Near-field reverberation: 3-5 equally spaced bright bands fading with depth, plus haze.

    Returns:
        ``[H, W]`` float32 echogenicity to add.
    """
    span = geom.r_outer - geom.r_inner
    spacing = rng.uniform(0.035, 0.06) * span
    strength = rng.uniform(0.5, 1.1)
    depth = r - np.float32(geom.r_inner)
    out = np.float32(0.35 * strength) * np.exp(-depth / np.float32(0.08 * span))
    for k in range(1, int(rng.integers(3, 6)) + 1):
        out += np.float32(strength * 0.6**k) * np.exp(
            -(((depth - np.float32(k * spacing)) / np.float32(1.5 * scale)) ** 2)
        )
    return out


def draw_organs(
    rng: np.random.Generator,
    geom: SectorGeometry,
    shape: tuple[int, int],
    capsule_r: float,
    kidney_prob: float,
    gallbladder_prob: float,
) -> np.ndarray:
    """Place a kidney (deep, lateral) and/or a gallbladder (mid-depth) in some views.

    Returns:
        ``[H, W]`` uint8 label map: 0 elsewhere, :data:`KIDNEY` (cortex; the sinus is the inner
        half, see :func:`organ_echogenicity`), :data:`GALLBLADDER`.
    """
    span = geom.r_outer - geom.r_inner
    half = geom.half_angle
    organs = np.zeros(shape, dtype=np.uint8)

    def point(depth: float, angle: float) -> tuple[int, int]:
        rad = geom.r_inner + depth * span
        return int(geom.apex_x + rad * math.sin(angle)), int(geom.apex_y + rad * math.cos(angle))

    if rng.random() < kidney_prob:
        centre = point(rng.uniform(0.68, 0.88), rng.choice([-1.0, 1.0]) * rng.uniform(0.35, 0.7) * half)
        axes = (int(rng.uniform(0.17, 0.24) * span), int(rng.uniform(0.09, 0.13) * span))
        cv2.ellipse(organs, centre, axes, float(rng.uniform(-25, 25)), 0, 360, KIDNEY, -1)
    if rng.random() < gallbladder_prob:
        depth = max(rng.uniform(0.3, 0.5), (capsule_r - geom.r_inner) / span + 0.12)
        centre = point(depth, rng.uniform(-0.5, 0.5) * half)
        axes = (int(rng.uniform(0.10, 0.16) * span), int(rng.uniform(0.05, 0.08) * span))
        cv2.ellipse(organs, centre, axes, float(rng.uniform(-30, 30)), 0, 360, GALLBLADDER, -1)
    return organs


def organ_echogenicity(
    organs: np.ndarray, r: np.ndarray, theta: np.ndarray, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Echogenicity of the organs of :func:`draw_organs` and the gain behind the gallbladder.

    The kidney's cortex is hypo-echoic (0.45 of the liver's mean), its sinus (the pixels farther
    than 40 % of the way in from the cortex's edge) echogenic (1.9); the gallbladder is anechoic
    (0.04) and brightens the tissue behind it by up to 1.6x (posterior acoustic enhancement).

    Returns:
        ``(amplitude [H, W], gain [H, W])``: amplitude where ``organs > 0`` (0 elsewhere), and the
        multiplicative gain of the enhancement (1 where none).
    """
    amplitude = np.zeros(organs.shape, dtype=np.float32)
    gain = np.ones(organs.shape, dtype=np.float32)
    kidney = organs == KIDNEY
    if kidney.any():
        inside = cv2.distanceTransform(kidney.astype(np.uint8), cv2.DIST_L2, 3)
        amplitude[kidney] = np.where(inside[kidney] > 0.4 * inside.max(), 1.9, 0.45)
    gallbladder = organs == GALLBLADDER
    if gallbladder.any():
        amplitude[gallbladder] = 0.04
        thetas, radii = theta[gallbladder], r[gallbladder]
        lo, hi, far = float(thetas.min()), float(thetas.max()), float(radii.max())
        band = _soft_band(theta, (lo + hi) / 2, (hi - lo) / 2, 0.02)
        behind = np.clip((r - np.float32(far)) / np.float32(4 * scale), 0, 1)
        fade = np.exp(-np.maximum(r - np.float32(far), 0) / np.float32(120 * scale))
        gain += 0.6 * band * behind * fade
    return amplitude, gain
