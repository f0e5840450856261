"""B-mode (grey-scale ultrasound) rendering of the liver phantom (paper II.A, "Ultrasonic
Gray-scale Image").

Tissue is an echogenicity (amplitude) map in panel pixels: abdominal wall (skin, fat with bright
fascia lines, muscle), the liver capsule (bright line; nodular for high texture scores), liver
parenchyma and a diaphragm when the fan is deep enough. The liver's share of the fan varies from
view to view (the capsule lies 6-30 % of the depth down). The parenchyma carries the texture latent
``t``: a mild coarse heterogeneity grows with ``t`` everywhere, while the signs of advanced
fibrosis are local: above about 0.3 a bright reticular network (fibrous septa) appears in patches
of the liver, not all over it; above about 0.35 the capsule turns nodular, and above about 0.5
regenerative nodules (hypo-echoic, bright rim) appear. Vessels are anechoic ellipses, portal veins with bright walls.
Distractors without stage information hide part of the liver in some views
(:mod:`~mmfusion.liver.phantom.artifacts`): rib shadows, near-field reverberation, a kidney, a
gallbladder.

Speckle is a complex Gaussian field on the probe's polar grid (so grains widen with depth, as with a
convex probe), scan-converted with ``cv2.remap``; its magnitude is a Rayleigh-distributed envelope.
The envelope times echogenicity times depth attenuation is log-compressed to 8 bit with the scanner
style's dynamic range and the operator's gain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from mmfusion.liver.phantom.artifacts import (
    draw_organs,
    organ_echogenicity,
    reverberation,
    rib_shadows,
)
from mmfusion.liver.phantom.config import PhantomConfig
from mmfusion.liver.phantom.fields import smooth_field, smooth_profile
from mmfusion.liver.phantom.geometry import SectorGeometry
from mmfusion.liver.phantom.styles import ScannerStyle

__all__ = ["BModeScene", "render_bmode"]

_DB_PER_NEPER = 20.0 / math.log(10.0)


@dataclass(frozen=True, eq=False)
class BModeScene:
    """A rendered B-mode frame and the anatomy the SWE renderer needs.

    Attributes:
        image: ``[H, W]`` uint8 B-mode panel (no overlays yet).
        mask: ``[H, W]`` bool sector mask.
        capsule_r: Mean radius of the liver capsule (pixels from the apex).
        capsule_depth: ``[H, W]`` float32 signed distance below the (nodular) capsule, in pixels
            along the beam (negative in the abdominal wall).
        vessels: ``[H, W]`` bool, True in anechoic vessel lumen.
        organs: ``[H, W]`` uint8 organ labels (:data:`~mmfusion.liver.phantom.artifacts.KIDNEY`,
            :data:`~mmfusion.liver.phantom.artifacts.GALLBLADDER`; 0 elsewhere).
        shadow: ``[H, W]`` bool, True in rib shadows.
    """

    image: np.ndarray
    mask: np.ndarray
    capsule_r: float
    capsule_depth: np.ndarray
    vessels: np.ndarray
    organs: np.ndarray
    shadow: np.ndarray


def _clip01(x: float, lo: float, hi: float) -> float:
    return float(min(max((x - lo) / (hi - lo), 0.0), 1.2))


def render_bmode(
    rng: np.random.Generator,
    geom: SectorGeometry,
    texture: float,
    config: PhantomConfig,
    style: ScannerStyle,
    width: int | None = None,
) -> BModeScene:
    """Render one B-mode panel.

    Args:
        rng: Random generator (consumed).
        geom: Fan geometry in panel pixels.
        texture: The view's texture score (patient latent plus view noise).
        config: Phantom configuration (frame height, artifact probabilities).
        style: Scanner style (dynamic range, gain, speckle size).
        width: Panel width; None: the frame width.

    Returns:
        The :class:`BModeScene`.
    """
    w, h, s = width or config.width, config.height, config.scale
    r, theta = geom.polar(w, h)
    mask = geom.contains_polar(r, theta)
    half = geom.half_angle
    depth_px = r - np.float32(geom.r_inner)
    span = geom.r_outer - geom.r_inner
    # Functions of the radius alone are computed on a 1-D grid (quarter pixels) and looked up.
    radii = np.arange(int(4 * float(r.max())) + 2, dtype=np.float32) / 4
    r_index = (r * 4).astype(np.int32)

    # Liver capsule: an arc around the apex at a depth that varies between views (the liver's
    # share of the fan), nodular with texture (surface nodularity, F3-F4).
    n_theta = 512
    arc_len = 2 * half * geom.r_inner
    bump = 1.0 + 14.0 * _clip01(texture, 0.35, 0.9)
    profile = np.abs(smooth_profile(rng, n_theta, max(4, int(arc_len / (22 * s)))))
    profile += 0.4 * smooth_profile(rng, n_theta, 4)
    capsule_r = geom.r_inner + rng.uniform(0.06, 0.30) * span
    capsule_profile = capsule_r + s * bump * profile
    t_idx = np.clip((theta + half) / (2 * half) * (n_theta - 1), 0, n_theta - 1).astype(np.int32)
    d_cap = r - capsule_profile.astype(np.float32)[t_idx]

    # Abdominal wall: skin, fat with bright fascia lines.
    wall = np.where(radii - geom.r_inner < 6 * s, 1.7, 0.6).astype(np.float32)
    for frac in rng.uniform(0.15, 0.85, size=rng.integers(2, 4)).tolist():
        line_r = geom.r_inner + frac * (capsule_r - geom.r_inner)
        wall += 0.9 * np.exp(-(((radii - np.float32(line_r)) / np.float32(1.3 * s)) ** 2))
    reverb = reverberation(rng, geom, radii, s) if rng.random() < config.reverberation_prob else None
    amp = wall[r_index]
    muscle = (d_cap > -0.05 * span) & (d_cap < -3 * s)
    amp = np.where(muscle, 0.8 + 0.15 * np.sin(r / np.float32(2.5 * s)), amp)

    # Liver parenchyma: a mild global heterogeneity, and septa in patches.
    tc = float(np.clip(texture, -0.2, 1.2))
    log_het = (0.10 + 0.25 * tc) * smooth_field(rng, (h, w), 16 * s)
    log_het += (0.07 + 0.10 * tc) * smooth_field(rng, (h, w), 6 * s)
    liver = np.exp(log_het)
    septa = 2.2 * _clip01(texture, 0.3, 0.9)
    if septa > 0:
        network = smooth_field(rng, (h, w), 10 * s)
        patches = np.clip(0.5 + 0.8 * smooth_field(rng, (h, w), 70 * s), 0.0, 1.6)
        liver *= 1.0 + septa * patches * np.exp(-((network / 0.3) ** 2))

    # Regenerative nodules and vessels, drawn in panel pixels.
    lesion = np.zeros((h, w), dtype=np.uint8)  # 1 = nodule core, 2 = nodule rim, 3 vessel wall
    vessels = np.zeros((h, w), dtype=np.uint8)
    liver_depth = (capsule_r - geom.r_inner + 0.08 * span, 0.85 * span)

    def random_point(margin: float) -> tuple[int, int]:
        rad = geom.r_inner + rng.uniform(*liver_depth)
        ang = rng.uniform(-0.8, 0.8) * (half - margin / rad)
        return int(geom.apex_x + rad * math.sin(ang)), int(geom.apex_y + rad * math.cos(ang))

    n_nodules = int(round(40 * _clip01(texture, 0.5, 0.9) * (w * h) / (800 * 600) / s**2))
    for _ in range(n_nodules):
        radius = max(2, int(rng.uniform(7, 16) * s))
        centre = random_point(radius)
        cv2.circle(lesion, centre, radius + max(1, int(2 * s)), 2, -1)
        cv2.circle(lesion, centre, radius, 1, -1)
    for _ in range(int(rng.integers(2, 7))):
        axes = (max(2, int(rng.uniform(6, 22) * s)), max(2, int(rng.uniform(4, 14) * s)))
        centre = random_point(axes[0])
        angle = float(rng.uniform(0, 180))
        if rng.random() < 0.5:  # portal vein: bright wall
            wall = max(1, int(2 * s))
            cv2.ellipse(lesion, centre, (axes[0] + wall, axes[1] + wall), angle, 0, 360, 3, -1)
        cv2.ellipse(vessels, centre, axes, angle, 0, 360, 1, -1)
    liver *= np.array([1.0, 0.65, 1.9, 2.2], dtype=np.float32)[lesion]
    vessel_mask = vessels.astype(bool) & (d_cap > 0)
    liver = np.where(vessel_mask, np.float32(0.06), liver)

    # Other organs (no stage information) displace liver in some views.
    kidney_prob, gallbladder_prob = config.organ_prob
    organs = draw_organs(rng, geom, (h, w), capsule_r, kidney_prob, gallbladder_prob)
    organs[d_cap <= 0] = 0
    vessel_mask &= organs == 0
    enhancement = None
    if organs.any():
        organ_amp, enhancement = organ_echogenicity(organs, r, theta, s)
        liver = np.where(organs > 0, organ_amp, liver)
    liver = cv2.GaussianBlur(liver, (0, 0), max(0.6, 1.0 * s))

    amp = np.where(d_cap > 0, liver, amp)
    amp += 2.4 * np.exp(-((d_cap / np.float32(1.6 * s)) ** 2))  # capsule line

    # Diaphragm (bright curve) and the darker region beneath it.
    dia_r = geom.r_inner + rng.uniform(0.80, 1.08) * span + rng.uniform(-0.15, 0.15) * span * theta
    amp = np.where(r > dia_r, np.float32(0.5), amp)
    amp += 2.6 * np.exp(-(((r - dia_r) / np.float32(3.0 * s)) ** 2))

    # Artifacts: reverberation (over wall and near-field liver alike) and rib shadows.
    if reverb is not None:
        amp += reverb[r_index]
    shadow = np.zeros((h, w), dtype=bool)
    if rng.random() < config.rib_shadow_prob:
        rib_gain, rib_surface, shadow = rib_shadows(rng, geom, r, theta, capsule_r, s)
        amp = amp * rib_gain + rib_surface
    if enhancement is not None:
        amp *= enhancement

    # Depth attenuation after TGC, focal zone, lateral fall-off.
    rel = (radii - np.float32(geom.r_inner)) / np.float32(span)
    depth_gain = np.exp(-rng.uniform(0.2, 0.5) * rel)
    depth_gain *= 1.0 + 0.15 * np.exp(-(((rel - rng.uniform(0.3, 0.6)) / 0.15) ** 2))
    gain = depth_gain[r_index] * (1.0 - 0.2 * np.minimum(np.abs(theta) / half, 1.0) ** 6)

    # Speckle on the polar grid, scan-converted: Rayleigh envelope. Grain size from the style.
    grain = s * style.speckle_scale
    n_r = max(16, int(span / max(1.2 * grain, 1.0)))
    n_t = max(16, int(2 * half * geom.r_outer / max(2.4 * grain, 1.2)))
    phasor = rng.standard_normal((n_r, n_t, 2), dtype=np.float32)
    phasor = cv2.GaussianBlur(phasor, (0, 0), sigmaX=0.9, sigmaY=0.7)
    map_x = ((theta + half) / (2 * half) * (n_t - 1)).astype(np.float32)
    map_y = (depth_px / span * (n_r - 1)).astype(np.float32)
    speckle = cv2.remap(phasor, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    envelope = cv2.magnitude(speckle[..., 0], speckle[..., 1])
    envelope /= max(float(np.sqrt(np.mean(np.square(envelope), where=mask))), 1e-6)

    signal = np.maximum(envelope * amp * gain, 1e-4)
    db = _DB_PER_NEPER * np.log(signal.astype(np.float32))
    dr = style.dynamic_range_db
    offset_db = dr * 0.47 + rng.uniform(*style.gain_db)
    grey = np.clip((db + offset_db) * (255.0 / dr), 0, 255)
    image = (grey * mask).astype(np.uint8)
    return BModeScene(
        image=image,
        mask=mask,
        capsule_r=float(capsule_r),
        capsule_depth=d_cap,
        vessels=vessel_mask,
        organs=organs,
        shadow=shadow & mask,
    )
