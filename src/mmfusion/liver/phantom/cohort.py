"""The phantom's patients: stage, latent stiffness and texture, number of views (paper II.B).

Every patient has one stage, one latent stiffness (kPa) and one latent texture score; each of their
4-7 views varies modestly around these latents. An image-level split therefore puts near-copies of a
patient on both sides and leaks, exactly as with real data (docs/paper_map.rst "Decisions").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmfusion.liver.phantom.config import PhantomConfig

__all__ = ["PatientLatent", "ViewLatent", "sample_cohort", "sample_latents", "sample_view"]


@dataclass(frozen=True)
class PatientLatent:
    """One phantom patient.

    Attributes:
        index: 0-based position in the cohort.
        patient_id: ``"P001"``-style identifier.
        stage: Fibrosis stage 0..4 (F0..F4).
        stiffness_kpa: Latent liver stiffness.
        texture: Latent texture score (0 = fine, homogeneous; ~1 = coarse, nodular).
        n_views: Number of image pairs of this patient.
        site: The site (hospital) the patient was scanned at, ``"A"``, ``"B"``, ...
    """

    index: int
    patient_id: str
    stage: int
    stiffness_kpa: float
    texture: float
    n_views: int
    site: str = "A"


@dataclass(frozen=True)
class ViewLatent:
    """What one view (image pair) shows: the patient's latents plus per-view variation."""

    stiffness_kpa: float
    texture: float


def sample_latents(
    stages: np.ndarray, rng: np.random.Generator, config: PhantomConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Draw latent stiffness (kPa) and texture for each stage label.

    Args:
        stages: ``[N]`` int stage labels 0..4.
        rng: Random generator.
        config: Phantom configuration (per-stage distributions).

    Returns:
        ``(stiffness [N], texture [N])`` float64 arrays.
    """
    stages = np.asarray(stages, dtype=np.int64)
    median = np.asarray(config.stiffness_median_kpa)[stages]
    sigma = np.asarray(config.stiffness_log_sigma)[stages]
    stiffness = median * np.exp(sigma * rng.standard_normal(stages.shape))
    texture = np.asarray(config.texture_mean)[stages] + config.texture_sd * rng.standard_normal(
        stages.shape
    )
    return stiffness, texture


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Split ``total`` into integer counts proportional to ``weights`` (largest remainder)."""
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    remainder = exact - counts
    order = np.argsort(-remainder, kind="stable")
    counts[order[: total - int(counts.sum())]] += 1
    return counts


def _assign_sites(stages: np.ndarray, seed: int, n_sites: int) -> np.ndarray:
    """Site index of each patient: within each stage, an even round-robin in random order."""
    rng = np.random.default_rng([seed, 3])
    sites = np.zeros(len(stages), dtype=np.int64)
    start = 0
    for stage in range(int(stages.max()) + 1):
        members = np.flatnonzero(stages == stage)
        sites[rng.permutation(members)] = (start + np.arange(len(members))) % n_sites
        start += len(members)  # the remainders of successive stages go to different sites
    return sites


def sample_cohort(n_patients: int, seed: int, config: PhantomConfig) -> list[PatientLatent]:
    """Draw a deterministic cohort of phantom patients.

    Stage counts follow ``config.stage_prevalence`` exactly (largest-remainder rounding, e.g. 250
    patients -> 40/70/69/48/23); the total number of views is ``round(n_patients *
    pairs_per_patient)`` (1,414 for 250 patients), spread at random within ``views_range``.

    Args:
        n_patients: Number of patients (at least 1).
        seed: Seed; the same seed gives the same cohort.
        config: Phantom configuration.

    Returns:
        The patients, in patient-id order.
    """
    if not isinstance(n_patients, int) or n_patients < 1:
        raise ValueError(f"n_patients: expected a positive int, got {n_patients!r}")
    rng = np.random.default_rng([seed, 0])
    counts = _apportion(n_patients, np.asarray(config.stage_prevalence, dtype=np.float64))
    stages = rng.permutation(np.repeat(np.arange(5), counts))
    stiffness, texture = sample_latents(stages, rng, config)

    lo, hi = config.views_range
    total = int(round(n_patients * config.pairs_per_patient))
    total = min(max(total, n_patients * lo), n_patients * hi)
    extra_slots = rng.choice(n_patients * (hi - lo), size=total - n_patients * lo, replace=False)
    n_views = lo + np.bincount(extra_slots // (hi - lo), minlength=n_patients)

    sites = _assign_sites(stages, seed, len(config.sites))
    width = max(3, len(str(n_patients)))
    return [
        PatientLatent(
            index=i,
            patient_id=f"P{i + 1:0{width}d}",
            stage=int(stages[i]),
            stiffness_kpa=float(stiffness[i]),
            texture=float(texture[i]),
            n_views=int(n_views[i]),
            site=config.sites[sites[i]],
        )
        for i in range(n_patients)
    ]


def sample_view(
    patient: PatientLatent, rng: np.random.Generator, config: PhantomConfig
) -> ViewLatent:
    """Draw one view's stiffness and texture around the patient's latents (modest noise)."""
    stiffness = patient.stiffness_kpa * float(
        np.exp(config.view_stiffness_log_sd * rng.standard_normal())
    )
    texture = patient.texture + config.view_texture_sd * float(rng.standard_normal())
    return ViewLatent(stiffness_kpa=stiffness, texture=texture)
