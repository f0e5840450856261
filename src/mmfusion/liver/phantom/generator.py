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
from mmfusion.liver.phantom.overlays import Overlay, draw_colour_bar
from mmfusion.liver.phantom.swe import colour_lut, render_swe, sample_swe_box
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
        swe_box: ``(x0, y0, x1, y1)`` SWE colour box in frame pixels, end-exclusive.
        geometry: The fan geometry (gives the sector mask).
        width: Frame width.
        height: Frame height.
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

    def sector_mask(self) -> np.ndarray:
        """``[H, W]`` bool mask of the true scan sector."""
        return self.geometry.mask(self.width, self.height)

    def sector_bbox(self) -> Box:
        """``(x0, y0, x1, y1)`` bounding box of the true sector, end-exclusive."""
        ys, xs = np.nonzero(self.sector_mask())
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1

    def swe_box_in_crop(
        self, out_size: tuple[int, int] | None = None, bbox: Box | None = None
    ) -> tuple[float, float, float, float]:
        """The SWE colour box in the coordinates of the ROI crop (optionally resized).

        Args:
            out_size: ``(H, W)`` the crop is resized to (e.g. the model input); None: crop pixels.
            bbox: ``(x0, y0, x1, y1)`` crop box actually used (e.g. ``detect_sector(...).bbox``);
                None uses the true sector's bounding box.

        Returns:
            ``(x0, y0, x1, y1)`` as floats.
        """
        bx0, by0, bx1, by1 = bbox if bbox is not None else self.sector_bbox()
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
    """

    us: np.ndarray
    swe: np.ndarray
    truth: PhantomTruth


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
        return self._render(rng, patient, view)

    def sample(self, stage: int | None = None, index: int = 0) -> PhantomPair:
        """Render a single pair of a fresh patient (not part of any cohort).

        Args:
            stage: Stage 0..4; None draws one by prevalence.
            index: Which sample of this seed (different indices give different patients).
        """
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
        )
        return self._render(rng, patient, 0)

    def _render(self, rng: np.random.Generator, patient: PatientLatent, view: int) -> PhantomPair:
        cfg = self.config
        latent = sample_view(patient, rng, cfg)
        geom = sample_geometry(rng, cfg)
        scene = render_bmode(rng, geom, latent.texture, cfg)
        box = sample_swe_box(rng, geom, scene.capsule_r, cfg)
        swe = render_swe(rng, scene, box, latent.stiffness_kpa, cfg)

        overlay = Overlay.around(scene.mask, cfg)
        overlay.standard(rng, geom, depth_cm=float(rng.uniform(14, 18)))
        label_x, label_y = cfg.width - int(150 * cfg.scale), int(4 * overlay.line)
        us_extra, swe_extra = overlay.fork(), overlay.fork()
        us = overlay.draw(scene.image.copy())
        us_extra.text("B  Gen", label_x, label_y)
        us = us_extra.draw(us)
        swe = overlay.draw(swe)
        swe_extra.text("SWE  Q-Box", label_x, label_y)
        swe = swe_extra.draw(draw_colour_bar(swe, swe_extra, colour_lut(), cfg.kpa_max))

        truth = PhantomTruth(
            patient_id=patient.patient_id,
            view=view,
            stage=patient.stage,
            stiffness_kpa=latent.stiffness_kpa,
            latent_stiffness_kpa=patient.stiffness_kpa,
            texture=latent.texture,
            latent_texture=patient.texture,
            swe_box=box,
            geometry=geom,
            width=cfg.width,
            height=cfg.height,
        )
        return PhantomPair(us=us, swe=swe, truth=truth)
