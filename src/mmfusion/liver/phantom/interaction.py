"""The interaction knob of the phantom (issue 28): a decoy that only B-mode can locate.

In a share ``rho`` (``PhantomConfig.decoy_share``) of views a stage-independent hypoechoic region
(a structure such as a bed of small vessels or a band of fatty sparing) overlaps the SWE box and
covers a share ``u ~ U(decoy_cover)`` of its pixels. Inside it the SWE colour encodes a decoy
stiffness instead of the liver's, with the liver's spatial variation and artifacts
(``render_swe``), so the colour alone cannot tell liver from decoy.

The decoy is part of the PATIENT's anatomy, modelled like the liver itself: the patient has one
decoy stiffness ``Z`` (``patient_decoy_kpa``: ``log Z ~ N(log decoy_median_kpa,
decoy_log_sigma^2)``, stage-independent) and each decoy view shows ``Z exp(e)``, ``e ~ N(0,
view_stiffness_log_sd^2)``, the liver's per-view variation. Across a patient's views the two
regions are therefore statistically alike (each agrees with itself from view to view to the same
0.04 in log kPa) and differ only in their priors (liver: the stage's distribution; decoy: the
decoy's), so fusing all of a patient's views finds two consistent values but not which one is the
liver: that question stays open per patient, and B-mode answers it. (A decoy drawn anew per view
would give itself away: the views' liver values agree, the decoy values do not.) Whether a view
has the decoy is decided per view (a share ``rho`` of them).

Nor can the shape or the share tell them apart: inside the box the region is one side of a wavy
line of uniform direction (0-360 degrees), so the decoy and the liver are the two sides of the same
random cut and, given their shares, their shapes have the same distribution; and the default cover
range (0.3, 0.7) is symmetric around 0.5, so the liver's share ``1 - u`` has the decoy's
distribution (a range such as (0.3, 0.6) would make any region covering more than 60 % liver).
Outside the box the region ends on an ellipse around it (1.7 times the box's half-sides, which
contains the box). The region is drawn, registered (same tissue position), in the B-mode frame
only: there it is 9 dB darker (amplitude times 0.355; our choice, clearly hypoechoic but not
anechoic: speckle and texture stay visible). The SWE frame's grey background keeps the undarkened
B-mode, so the SWE frame shows the decoy only through its colour values (no outline).
A model that uses B-mode to know where to read the SWE colour can
therefore beat one that cannot; :mod:`~mmfusion.liver.phantom.ceilings` gives the exact ceilings.

Every draw comes from a random stream of its own (``LiverPhantom``: ``[seed, 28, 12, patient]``
for the patient's ``Z``, ``[seed, 28, 10, patient, view]`` for each view; ``LiverPhantom.sample``:
``[seed, 28, 13, index]`` and ``[seed, 28, 11, index]``), so with ``decoy_share =
0`` nothing here runs and the phantom is unchanged. :func:`interaction_config` names the
benchmark's configurations (default and weak texture).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from mmfusion.liver.phantom.bmode import BModeScene
from mmfusion.liver.phantom.config import PhantomConfig
from mmfusion.liver.phantom.fields import smooth_field
from mmfusion.liver.phantom.styles import ScannerStyle

__all__ = [
    "DECOY_DARKENING_DB",
    "WEAK_TEXTURE_SCALE",
    "Decoy",
    "darken_bmode",
    "interaction_config",
    "patient_decoy_kpa",
    "sample_decoy",
]

#: How much darker (dB of amplitude) the region is in B-mode (our choice, see the module text).
DECOY_DARKENING_DB = 9.0


@dataclass(frozen=True, eq=False)
class Decoy:
    """One view's decoy region.

    Attributes:
        signed: ``[H, W]`` float32 signed distance (pixels) of each panel pixel from the wavy
            cut; the region lies where ``signed <= threshold``.
        threshold: Offset of the cut that gives the drawn cover.
        outer: ``[H, W]`` float32 ellipse coordinate around the box (``<= 1`` inside it; the
            box lies inside 0.7).
        kpa: The decoy's stiffness in this view (the patient's ``Z`` times the per-view
            variation).
        cover: Share of the SWE box's pixels inside the region (the drawn ``u``, exact up to
            ties).
    """

    signed: np.ndarray
    threshold: float
    outer: np.ndarray
    kpa: float
    cover: float

    def mask(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """``[h, w]`` bool: the region inside ``box`` (``x0, y0, x1, y1``)."""
        return self.signed[box[1] : box[3], box[0] : box[2]] <= self.threshold


#: The ellipse that bounds the region outside the box, in box half-sides (contains the box:
#: its corners lie at ``2 / 1.7^2 = 0.69`` of the ellipse coordinate).
_OUTER = 1.7


def patient_decoy_kpa(rng: np.random.Generator, config: PhantomConfig) -> float:
    """The patient's decoy stiffness ``Z``: ``decoy_median_kpa * exp(decoy_log_sigma * N(0, 1))``.

    Args:
        rng: The patient's decoy generator (one standard normal is drawn).
        config: Phantom configuration (``decoy_median_kpa``, ``decoy_log_sigma``).

    Returns:
        ``Z`` in kPa.
    """
    return config.decoy_median_kpa * math.exp(config.decoy_log_sigma * float(rng.standard_normal()))


def sample_decoy(
    rng: np.random.Generator,
    scene: BModeScene,
    box: tuple[int, int, int, int],
    config: PhantomConfig,
    patient_kpa: float,
) -> Decoy | None:
    """Decide whether a view has a decoy and draw it.

    Draw order: one uniform (decoy if ``< decoy_share``); then the cover ``u``, the standard normal
    of the view's variation (``kpa = patient_kpa * exp(view_stiffness_log_sd * n)``, as the
    liver's), the cut's direction (uniform in [0, 2 pi)) and a smooth wobble of the cut
    (``smooth_field`` with a 60 px correlation length at 800 x 600, amplitude 8 px).

    Args:
        rng: The view's decoy random generator (consumed).
        scene: The view's B-mode scene (its panel size).
        box: The SWE box ``(x0, y0, x1, y1)`` in panel pixels.
        config: Phantom configuration (``decoy_*``, ``view_stiffness_log_sd``).
        patient_kpa: The patient's decoy stiffness ``Z`` (``patient_decoy_kpa``).

    Returns:
        The :class:`Decoy`, or None for a view without one.
    """
    if not rng.random() < config.decoy_share:
        return None
    cover = float(rng.uniform(*config.decoy_cover))
    kpa = patient_kpa * math.exp(config.view_stiffness_log_sd * float(rng.standard_normal()))
    angle = float(rng.uniform(0.0, 2.0 * math.pi))
    h, w = scene.mask.shape
    s = config.scale
    wobble = np.float32(8.0 * s) * smooth_field(rng, (h, w), 60.0 * s)
    x0, y0, x1, y1 = box
    cx, cy = np.float32(0.5 * (x0 + x1)), np.float32(0.5 * (y0 + y1))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    signed = (
        np.float32(math.cos(angle)) * (xs - cx) + np.float32(math.sin(angle)) * (ys - cy) + wobble
    )
    inside = np.sort(signed[y0:y1, x0:x1].ravel())
    threshold = float(inside[max(int(round(cover * inside.size)) - 1, 0)])
    ax, ay = np.float32(_OUTER * 0.5 * (x1 - x0)), np.float32(_OUTER * 0.5 * (y1 - y0))
    outer = ((xs - cx) / ax) ** 2 + ((ys - cy) / ay) ** 2
    return Decoy(signed=signed, threshold=threshold, outer=outer, kpa=float(kpa), cover=cover)


def darken_bmode(
    image: np.ndarray, scene: BModeScene, decoy: Decoy, style: ScannerStyle, scale: float
) -> np.ndarray:
    """The B-mode panel with the region drawn: :data:`DECOY_DARKENING_DB` darker in the liver.

    Log compression maps amplitude linearly in dB to grey (``255 / dynamic_range_db`` levels per
    dB), so scaling the amplitude is subtracting grey levels; the region's edge is a 1.5 px ramp
    (scaled) at the cut and a soft ramp at the ellipse (outside the box).

    Args:
        image: ``[H, W]`` uint8 B-mode panel.
        scene: Its scene (sector mask, capsule depth: only tissue below the capsule darkens).
        decoy: The view's decoy.
        style: Scanner style (dynamic range).
        scale: ``PhantomConfig.scale``.

    Returns:
        ``[H, W]`` uint8, a new array.
    """
    edge = np.float32(1.5 * max(scale, 0.5))
    weight = np.clip((np.float32(decoy.threshold) + edge - decoy.signed) / (2 * edge), 0.0, 1.0)
    weight *= np.clip((1.0 - decoy.outer) / np.float32(0.15), 0.0, 1.0)
    weight *= scene.mask & (scene.capsule_depth > 0)
    shift = np.float32(DECOY_DARKENING_DB * 255.0 / style.dynamic_range_db)
    return np.clip(image.astype(np.float32) - shift * weight, 0, 255).astype(np.uint8)


#: Scale of the texture means (relative to F0) in the weak-texture configuration of
#: :func:`interaction_config`. Our choice, for issue 28's "about 6 points with weaker texture":
#: measured (:func:`~mmfusion.liver.phantom.ceilings.interaction_ceilings`, 200,000 patients)
#: per-patient joint - late gaps at ``rho = 1`` of 5.6 / 5.0 points (cohort prior / balanced; 4.5
#: / 3.9 with labs), against 2.6 / 2.1 with the default texture; scales 0.5 and 0.4 gave 4.4 / 3.7
#: and 4.9 / 4.2 points without labs (40,000 patients).
WEAK_TEXTURE_SCALE = 0.3


def interaction_config(
    rho: float, *, weak_texture: bool = False, base: PhantomConfig | None = None
) -> PhantomConfig:
    """The benchmark's phantom configuration: ``base`` (default :class:`PhantomConfig`) with
    ``decoy_share = rho`` and, with ``weak_texture``, the texture means scaled by
    :data:`WEAK_TEXTURE_SCALE` around F0's (``m_c -> m_0 + scale (m_c - m_0)``: B-mode tells the
    stages apart less well, so SWE, and knowing where to read it, matter more).

    Args:
        rho: Share of views with a decoy, in [0, 1].
        weak_texture: Use the weak-texture preset.
        base: Configuration to start from (image size, labs, ...); None: the default.

    Returns:
        The configuration (``rho = 0`` without ``weak_texture``: ``base`` itself, equal fields).

    Raises:
        ValueError: ``rho`` outside [0, 1] (from :class:`PhantomConfig`).
    """
    cfg = base or PhantomConfig()
    changes: dict[str, object] = {"decoy_share": float(rho)}
    if weak_texture:
        m0 = cfg.texture_mean[0]
        changes["texture_mean"] = tuple(
            m0 + WEAK_TEXTURE_SCALE * (m - m0) for m in cfg.texture_mean
        )
    return dataclasses.replace(cfg, **changes)  # type: ignore[arg-type]
