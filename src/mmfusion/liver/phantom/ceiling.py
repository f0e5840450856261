"""The phantom's ceiling: accuracy of the Bayes-optimal stage classifier (Monte Carlo).

Adjacent fibrosis stages overlap in stiffness (NOTES.md "Real data is private"), so no classifier
reaches 100% on the phantom. The Bayes-optimal classifier that sees a patient's true latent
stiffness and texture predicts ``argmax_c prior_c * p(stiffness | c) * p(texture | c)``; its accuracy
is the best any model can achieve. With ``per_view=True`` it sees one view's stiffness and texture
instead (latents plus the per-view noise), the ceiling for an image-level classifier that reads the
view perfectly. Judge a trained model's accuracy against these numbers.
"""

from __future__ import annotations

import numpy as np

from mmfusion.liver.phantom.cohort import sample_latents
from mmfusion.liver.phantom.config import PhantomConfig

__all__ = ["bayes_ceiling"]


def bayes_ceiling(
    n_samples: int = 200_000,
    seed: int = 0,
    config: PhantomConfig | None = None,
    per_view: bool = False,
) -> float:
    """Monte-Carlo accuracy of the Bayes-optimal classifier on the phantom's latents.

    Args:
        n_samples: Number of simulated patients (the standard error is about
            ``sqrt(a (1 - a) / n_samples)``, 0.001 at the default).
        seed: Seed of the simulation.
        config: Phantom configuration; the default configuration if None.
        per_view: Classify from one view's stiffness and texture (with per-view noise) instead of
            the patient's latents.

    Returns:
        Accuracy in ``[0, 1]`` (default configuration: about 0.74 per patient, 0.73 per view).
    """
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples: expected a positive int, got {n_samples!r}")
    cfg = config or PhantomConfig()
    rng = np.random.default_rng([seed, 7])
    prior = np.asarray(cfg.stage_prevalence, dtype=np.float64)
    prior = prior / prior.sum()
    stages = rng.choice(len(prior), size=n_samples, p=prior)
    stiffness, texture = sample_latents(stages, rng, cfg)

    mu = np.log(np.asarray(cfg.stiffness_median_kpa))
    sigma = np.asarray(cfg.stiffness_log_sigma)
    t_mu = np.asarray(cfg.texture_mean)
    t_sd = np.full(len(prior), cfg.texture_sd)
    log_s = np.log(stiffness)
    if per_view:
        log_s = log_s + cfg.view_stiffness_log_sd * rng.standard_normal(n_samples)
        texture = texture + cfg.view_texture_sd * rng.standard_normal(n_samples)
        sigma = np.hypot(sigma, cfg.view_stiffness_log_sd)
        t_sd = np.hypot(t_sd, cfg.view_texture_sd)

    log_post = (
        np.log(prior)[None, :]
        - np.log(sigma)[None, :]
        - 0.5 * ((log_s[:, None] - mu[None, :]) / sigma[None, :]) ** 2
        - np.log(t_sd)[None, :]
        - 0.5 * ((texture[:, None] - t_mu[None, :]) / t_sd[None, :]) ** 2
    )
    return float(np.mean(log_post.argmax(axis=1) == stages))
