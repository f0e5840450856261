"""The liver phantom: paired B-mode + SWE frames with their ground truth (paper II.A).

:class:`LiverPhantom` renders one image pair per (patient, view) deterministically from its seed:
both frames share the fan geometry and the B-mode anatomy; the SWE frame adds the colour box and the
colour bar. Each pair carries a :class:`PhantomTruth` (sector mask, SWE box, latents) so that ROI
detection and models can be checked against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmfusion.liver.phantom.bmode import render_bmode
from mmfusion.liver.phantom.cohort import PatientLatent, sample_cohort, sample_latents, sample_view
from mmfusion.liver.phantom.config import PhantomConfig
from mmfusion.liver.phantom.geometry import SectorGeometry, sample_geometry
from mmfusion.liver.phantom.interaction import darken_bmode, patient_decoy_kpa, sample_decoy
from mmfusion.liver.phantom.overlays import Overlay, draw_colour_bar
from mmfusion.liver.phantom.styles import ScannerStyle
from mmfusion.liver.phantom.swe import render_swe, sample_swe_box
from mmfusion.liver.stages import NUM_STAGES

__all__ = ["LiverPhantom", "PhantomPair", "PhantomTruth"]

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class PhantomTruth:
    """Ground truth of one phantom pair.

    Attributes:
        patient_id: Patient identifier (``"P001"``).
        view: 0-based view index within the patient.
        stage: Fibrosis stage 0..4.
        stiffness_kpa: Stiffness shown in this view's SWE box (latent times view noise).
        latent_stiffness_kpa: The patient's latent stiffness.
        texture: Texture score rendered in this view.
        latent_texture: The patient's latent texture score.
        swe_box: ``(x0, y0, x1, y1)`` SWE colour box in SWE-frame pixels, end-exclusive.
        geometry: The fan geometry of the B-mode frame (gives its sector mask).
        width: Frame width.
        height: Frame height.
        site: The patient's site (``"A"``, ...).
        style: Name of the site's scanner style.
        swe_shift: Horizontal offset in pixels of the SWE frame's fan from the B-mode frame's
            (0 for a single layout; a dual-view screen shows its elastogram to the right).
        decoy: Whether the view has a decoy region (``PhantomConfig.decoy_share``).
        decoy_cover: Share of the SWE box's pixels the decoy covers (0 without one).
        decoy_kpa: The decoy's stiffness in this view (0 without one): the patient's decoy
            stiffness times the per-view variation (:mod:`~mmfusion.liver.phantom.interaction`).
    """

    patient_id: str
    view: int
    stage: int
    stiffness_kpa: float
    latent_stiffness_kpa: float
    texture: float
    latent_texture: float
    swe_box: Box
    geometry: SectorGeometry
    width: int
    height: int
    site: str = "A"
    style: str = "classic"
    swe_shift: int = 0
    decoy: bool = False
    decoy_cover: float = 0.0
    decoy_kpa: float = 0.0

    def sector_geometry(self, modality: str = "us") -> SectorGeometry:
        """The fan geometry of the ``"us"`` or the ``"swe"`` frame."""
        if modality not in ("us", "swe"):
            raise ValueError(f"modality: expected 'us' or 'swe', got {modality!r}")
        return self.geometry.shifted(self.swe_shift) if modality == "swe" else self.geometry

    def sector_mask(self, modality: str = "us") -> np.ndarray:
        """``[H, W]`` bool mask of the true scan sector of the ``"us"`` or ``"swe"`` frame."""
        return self.sector_geometry(modality).mask(self.width, self.height)

    def sector_bbox(self, modality: str = "us") -> Box:
        """``(x0, y0, x1, y1)`` bounding box of the true sector, end-exclusive."""
        ys, xs = np.nonzero(self.sector_mask(modality))
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1

    def swe_box_in_crop(
        self, out_size: tuple[int, int] | None = None, bbox: Box | None = None
    ) -> tuple[float, float, float, float]:
        """The SWE colour box in the coordinates of the ROI crop (optionally resized).

        Args:
            out_size: ``(H, W)`` the crop is resized to (e.g. the model input); None: crop pixels.
            bbox: ``(x0, y0, x1, y1)`` crop box of the SWE frame actually used (e.g.
                ``detect_sector(...).bbox``); None uses the true SWE sector's bounding box.

        Returns:
            ``(x0, y0, x1, y1)`` as floats.
        """
        bx0, by0, bx1, by1 = bbox if bbox is not None else self.sector_bbox("swe")
        sy = 1.0 if out_size is None else out_size[0] / (by1 - by0)
        sx = 1.0 if out_size is None else out_size[1] / (bx1 - bx0)
        x0, y0, x1, y1 = self.swe_box
        return ((x0 - bx0) * sx, (y0 - by0) * sy, (x1 - bx0) * sx, (y1 - by0) * sy)


@dataclass(frozen=True, eq=False)
class PhantomPair:
    """One phantom image pair.

    Attributes:
        us: ``[H, W]`` uint8 grey-scale B-mode frame with overlays.
        swe: ``[H, W, 3]`` uint8 RGB SWE frame with overlays and colour bar.
        truth: Its :class:`PhantomTruth`.
        swe_kpa: ``[h, w]`` float32 true stiffness in kPa that each pixel of the SWE box encodes
            (``truth.swe_box``; NaN where void), before the colour scale quantizes it.
        decoy_mask: ``[h, w]`` bool over the SWE box, True where the decoy region covers it
            (None: no decoy in this view).
    """

    us: np.ndarray
    swe: np.ndarray
    truth: PhantomTruth
    swe_kpa: np.ndarray | None = None
    decoy_mask: np.ndarray | None = None


class LiverPhantom:
    """Generator of paired B-mode + SWE liver frames (the embedded default data set).

    Deterministic: the same ``seed`` and arguments give byte-identical frames, in any process.

    Args:
        config: Phantom configuration (frame size, per-stage distributions, ...).
        seed: Seed of the cohort and of every view.

    Example:
        >>> phantom = LiverPhantom(PhantomConfig(width=320, height=240), seed=0)
        >>> pair = phantom.sample(stage=4)
        >>> pair.us.shape, pair.swe.shape
        ((240, 320), (240, 320, 3))
    """

    def __init__(self, config: PhantomConfig | None = None, seed: int = 0) -> None:
        if config is not None and not isinstance(config, PhantomConfig):
            raise TypeError(f"config: expected PhantomConfig or None, got {type(config).__name__}")
        self.config = config or PhantomConfig()
        self.seed = int(seed)

    def cohort(self, n_patients: int) -> list[PatientLatent]:
        """The first ``n_patients`` patients of this seed's cohort (see ``sample_cohort``)."""
        return sample_cohort(n_patients, self.seed, self.config)

    def render(self, patient: PatientLatent, view: int) -> PhantomPair:
        """Render view ``view`` of ``patient``; deterministic in (seed, patient.index, view)."""
        if not 0 <= view < max(patient.n_views, 1):
            raise ValueError(f"view: expected 0 <= view < {patient.n_views}, got {view}")
        rng = np.random.default_rng([self.seed, 1, patient.index, view])
        decoy_rng = np.random.default_rng([self.seed, 28, 10, patient.index, view])
        key = [self.seed, 28, 12, patient.index]  # the patient's decoy stiffness (all its views)
        return self._render(rng, patient, view, decoy_rng, key)

    def sample(self, stage: int | None = None, index: int = 0, site: str | None = None) -> PhantomPair:
        """Render a single pair of a fresh patient (not part of any cohort).

        Args:
            stage: Stage 0..4; None draws one by prevalence.
            index: Which sample of this seed (different indices give different patients).
            site: The site whose scanner style renders it; None: the first (``"A"``).
        """
        site = self.config.sites[0] if site is None else site
        self.config.style(site)  # validates
        rng = np.random.default_rng([self.seed, 2, index])
        if stage is None:
            p = np.asarray(self.config.stage_prevalence, dtype=np.float64)
            stage = int(rng.choice(NUM_STAGES, p=p / p.sum()))
        if not isinstance(stage, (int, np.integer)) or not 0 <= stage < NUM_STAGES:
            raise ValueError(f"stage: expected an int in 0..4 or None, got {stage!r}")
        stiffness, texture = sample_latents(np.array([stage]), rng, self.config)
        patient = PatientLatent(
            index=-1 - index,
            patient_id=f"S{index:04d}",
            stage=int(stage),
            stiffness_kpa=float(stiffness[0]),
            texture=float(texture[0]),
            n_views=1,
            site=site,
        )
        decoy_rng = np.random.default_rng([self.seed, 28, 11, index])
        return self._render(rng, patient, 0, decoy_rng, [self.seed, 28, 13, index])

    def _render(
        self,
        rng: np.random.Generator,
        patient: PatientLatent,
        view: int,
        decoy_rng: np.random.Generator,
        decoy_key: list[int],
    ) -> PhantomPair:
        cfg = self.config
        style = cfg.style(patient.site)
        latent = sample_view(patient, rng, cfg)
        dual = style.layout == "dual"
        panel_w = cfg.width // 2 if dual else cfg.width
        geom = sample_geometry(rng, cfg, style, panel_w)
        scene = render_bmode(rng, geom, latent.texture, cfg, style, panel_w)
        box = sample_swe_box(rng, geom, scene.capsule_r, cfg, scene.shadow)
        # The decoy (issue 28) draws from its own stream only; without one nothing changes.
        decoy = None
        if cfg.decoy_share > 0:
            z_kpa = patient_decoy_kpa(np.random.default_rng(decoy_key), cfg)
            decoy = sample_decoy(decoy_rng, scene, box, cfg, z_kpa)
        decoy_mask = None if decoy is None else decoy.mask(box)
        swe_panel, swe_kpa = render_swe(
            rng, scene, box, latent.stiffness_kpa, cfg, style,
            None if decoy is None else (decoy_mask, decoy.kpa),
        )  # fmt: skip
        us_image = scene.image if decoy is None else darken_bmode(
            scene.image, scene, decoy, style, cfg.scale
        )  # the region shows in the B-mode frame only (registered: same panel pixels)

        us_dx, swe_dx = ((cfg.width - panel_w) // 2, panel_w) if dual else (0, 0)
        us = _place(us_image, cfg, us_dx)
        us_fan = _place(scene.mask, cfg, us_dx)
        if dual:  # the B-mode view on the left, the elastogram on the right
            swe = np.repeat(_place(scene.image, cfg, 0)[:, :, None], 3, axis=2)
            swe[:, swe_dx : swe_dx + panel_w] = swe_panel
            swe_fans = _place(scene.mask, cfg, 0) | _place(scene.mask, cfg, swe_dx)
        else:
            swe, swe_fans = swe_panel, scene.mask
        depth_cm = float(rng.uniform(14, 18))
        text_seed = int(rng.integers(2**32))  # both frames of a view carry the same settings text
        us = _annotate(text_seed, us, Overlay.around(us_fan, cfg), geom.shifted(us_dx), depth_cm, style,
                       "B  Gen", None)
        swe = _annotate(text_seed, swe, Overlay.around(swe_fans, cfg), geom.shifted(swe_dx), depth_cm,
                        style, "SWE  Q-Box", style)

        x0, y0, x1, y1 = box
        truth = PhantomTruth(
            patient_id=patient.patient_id,
            view=view,
            stage=patient.stage,
            stiffness_kpa=latent.stiffness_kpa,
            latent_stiffness_kpa=patient.stiffness_kpa,
            texture=latent.texture,
            latent_texture=patient.texture,
            swe_box=(x0 + swe_dx, y0, x1 + swe_dx, y1),
            geometry=geom.shifted(us_dx),
            width=cfg.width,
            height=cfg.height,
            site=patient.site,
            style=style.name,
            swe_shift=swe_dx - us_dx,
            decoy=decoy is not None,
            decoy_cover=0.0 if decoy is None else decoy.cover,
            decoy_kpa=0.0 if decoy is None else decoy.kpa,
        )
        return PhantomPair(us=us, swe=swe, truth=truth, swe_kpa=swe_kpa, decoy_mask=decoy_mask)


def _place(panel: np.ndarray, config: PhantomConfig, dx: int) -> np.ndarray:
    """The ``[H, Wp(, C)]`` panel pasted into an empty ``[H, W(, C)]`` frame at column ``dx``."""
    if panel.shape[1] == config.width and dx == 0:
        return panel
    frame = np.zeros((config.height, config.width, *panel.shape[2:]), dtype=panel.dtype)
    frame[:, dx : dx + panel.shape[1]] = panel
    return frame


def _annotate(
    seed: int,
    image: np.ndarray,
    overlay: Overlay,
    geom: SectorGeometry,
    depth_cm: float,
    style: ScannerStyle,
    label: str,
    colour_bar: ScannerStyle | None,
) -> np.ndarray:
    """Draw the style's standard annotations, the mode label and (SWE) the colour bar."""
    cfg = overlay.config
    overlay.standard(np.random.default_rng(seed), geom, depth_cm, style)
    image = overlay.draw(image.copy())
    extra = overlay.fork()
    label_x = 2 if style.ruler_side == "right" else cfg.width - int(150 * cfg.scale)
    extra.text(label, max(2, label_x + int(6 * cfg.scale)), int(4 * overlay.line))
    if colour_bar is not None:
        side = "left" if style.ruler_side == "right" else "right"
        image = draw_colour_bar(image, extra, colour_bar.colour_lut(), colour_bar.kpa_max, side)
    return extra.draw(image)
