"""The phantom's ceiling: accuracy of the Bayes-optimal stage classifier (Monte Carlo).

Adjacent fibrosis stages overlap in stiffness (docs/paper_map.rst "Decisions"), so no classifier
reaches 100% on the phantom. The Bayes-optimal classifier that sees a patient's true latent
stiffness and texture predicts ``argmax_c prior_c * p(stiffness | c) * p(texture | c)``; its accuracy
is the best any model can achieve. With ``per_view=True`` it sees one view's stiffness and texture
instead (latents plus the per-view noise), the ceiling for an image-level classifier that reads the
view perfectly. Judge a trained model's accuracy against these numbers.

``latents`` restricts what the classifier sees, one ceiling per modality: ``("stiffness",)`` is
what the SWE colour box can tell at best, ``("texture",)`` what the B-mode texture can tell, and
both (the default) what a fusion model can reach. The gap between a single-modality ceiling and
the joint one is the most that fusing the modalities can add on the phantom.

``prior`` sets the class mix of the evaluated set. The ceiling depends on it: a test set with
equally many patients per stage (the paper protocol's balanced split) has another ceiling than
one drawn with the cohort's prevalence, because the Bayes classifier for that set weighs the
classes by that set's own frequencies. Compare a model with the ceiling of the class mix it was
tested on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmfusion.liver.phantom.cohort import sample_latents
from mmfusion.liver.phantom.config import PhantomConfig
from mmfusion.liver.stages import NUM_STAGES

__all__ = ["LATENTS", "MODALITY_LATENTS", "SWE_FRAME_LATENTS", "bayes_ceiling", "phantom_ceilings"]

#: The latent variables a ceiling can be computed from: the SWE stiffness and the B-mode texture.
LATENTS: tuple[str, ...] = ("stiffness", "texture")


def _check_latents(latents: Sequence[str]) -> frozenset[str]:
    if isinstance(latents, str) or not isinstance(latents, Sequence):
        raise TypeError(
            f"latents: expected a sequence of names from {LATENTS}, e.g. ('stiffness',), "
            f"got {latents!r}"
        )
    unknown = [name for name in latents if name not in LATENTS]
    if unknown or not latents or len(set(latents)) != len(latents):
        raise ValueError(
            f"latents: expected one or more distinct names from {LATENTS}, got {tuple(latents)!r}"
        )
    return frozenset(latents)


def _check_prior(prior: Sequence[float] | np.ndarray, n_classes: int) -> np.ndarray:
    """Class weights (counts or probabilities) -> probabilities ``[K]``."""
    try:
        weights = np.asarray(prior, dtype=np.float64)
    except (TypeError, ValueError):
        weights = np.full(0, np.nan)
    if weights.shape != (n_classes,) or not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError(
            f"prior: expected {n_classes} non-negative finite class weights (counts or "
            f"probabilities, one per stage F0..F{n_classes - 1}), got {prior!r}"
        )
    if weights.sum() <= 0:
        raise ValueError(f"prior: expected class weights that sum to more than 0, got {prior!r}")
    return weights / weights.sum()


def bayes_ceiling(
    n_samples: int = 200_000,
    seed: int = 0,
    config: PhantomConfig | None = None,
    per_view: bool = False,
    latents: Sequence[str] = LATENTS,
    prior: Sequence[float] | np.ndarray | None = None,
) -> float:
    """Monte-Carlo accuracy of the Bayes-optimal classifier on the phantom's latents.

    The simulation draws the same patients (and per-view noise) whatever ``latents`` is, so the
    ceilings of one seed are directly comparable: the classifier only ignores the latents it is
    not given.

    Args:
        n_samples: Number of simulated patients (the standard error is about
            ``sqrt(a (1 - a) / n_samples)``, 0.001 at the default).
        seed: Seed of the simulation.
        config: Phantom configuration; the default configuration if None.
        per_view: Classify from one view's stiffness and texture (with per-view noise) instead of
            the patient's latents.
        latents: What the classifier sees: ``("stiffness",)`` (SWE alone), ``("texture",)``
            (B-mode alone) or both (default).
        prior: Class mix of the evaluated set, one weight per stage (counts, e.g. a test set's
            label counts, or probabilities; a zero weight excludes the stage). The simulated
            patients are drawn from it and the Bayes classifier uses it. ``None``: the cohort's
            ``config.stage_prevalence``.

    Returns:
        Accuracy in ``[0, 1]``. Default configuration, 200,000 samples, seed 0 (stiffness
        alone / texture alone / both): 0.512 / 0.669 / 0.741 per patient and
        0.507 / 0.657 / 0.729 per view, under the cohort's prevalence.

    Raises:
        TypeError: ``latents`` is not a sequence of names.
        ValueError: ``n_samples`` is not a positive int, ``latents`` is empty, repeats a name
            or names an unknown latent, or ``prior`` is not one non-negative weight per stage
            with a positive sum.
    """
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples: expected a positive int, got {n_samples!r}")
    seen = _check_latents(latents)
    cfg = config or PhantomConfig()
    rng = np.random.default_rng([seed, 7])
    if prior is None:
        p_class = np.asarray(cfg.stage_prevalence, dtype=np.float64)
        p_class = p_class / p_class.sum()
    else:
        p_class = _check_prior(prior, len(cfg.stage_prevalence))
    stages = rng.choice(len(p_class), size=n_samples, p=p_class)
    stiffness, texture = sample_latents(stages, rng, cfg)

    mu = np.log(np.asarray(cfg.stiffness_median_kpa))
    sigma = np.asarray(cfg.stiffness_log_sigma)
    t_mu = np.asarray(cfg.texture_mean)
    t_sd = np.full(len(p_class), cfg.texture_sd)
    log_s = np.log(stiffness)
    if per_view:
        log_s = log_s + cfg.view_stiffness_log_sd * rng.standard_normal(n_samples)
        texture = texture + cfg.view_texture_sd * rng.standard_normal(n_samples)
        sigma = np.hypot(sigma, cfg.view_stiffness_log_sd)
        t_sd = np.hypot(t_sd, cfg.view_texture_sd)

    # log p(log s | c) of the normal in log-space; the Jacobian 1/s is the same for every class.
    with np.errstate(divide="ignore"):  # a stage absent from the prior: log 0 = -inf
        log_prior = np.log(p_class)
    log_post = np.broadcast_to(log_prior[None, :], (n_samples, len(p_class)))
    if "stiffness" in seen:
        log_post = (
            log_post
            - np.log(sigma)[None, :]
            - 0.5 * ((log_s[:, None] - mu[None, :]) / sigma[None, :]) ** 2
        )
    if "texture" in seen:
        log_post = (
            log_post
            - np.log(t_sd)[None, :]
            - 0.5 * ((texture[:, None] - t_mu[None, :]) / t_sd[None, :]) ** 2
        )
    return float(np.mean(log_post.argmax(axis=1) == stages))


# The ceiling that matches a trained model: what it sees and its test set's class mix (a
# class-balanced test set, as the example's ``--split paper``'s, has a higher per-view ceiling).

#: What each modality shows of the phantom's latents: the SWE colour box the stiffness, B-mode the texture.
MODALITY_LATENTS: dict[str, tuple[str, ...]] = {"swe": ("stiffness",), "us": ("texture",)}
#: The whole SWE frame (``--swe_input frame``) also shows the B-mode texture around its colour box.
SWE_FRAME_LATENTS: tuple[str, ...] = ("stiffness", "texture")
_SWE_INPUTS = ("frame", "box", "box_mask", "box_kpa")


def _stage_counts(labels: Any, name: str) -> np.ndarray:
    """``[5]`` counts of stages 0..4 in ``labels``."""
    array = np.asarray(labels)
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name}: expected a non-empty 1-D sequence of integer stages 0..{NUM_STAGES - 1}, "
                         f"got {array.dtype} of shape {array.shape}")
    if array.min() < 0 or array.max() >= NUM_STAGES:
        raise ValueError(f"{name}: expected stages 0..{NUM_STAGES - 1}, got values "
                         f"{int(array.min())}..{int(array.max())}")
    return np.bincount(array, minlength=NUM_STAGES)


def phantom_ceilings(modalities: Sequence[str], test_labels: Any, accuracy: float, *, swe_input: str = "frame",
                     test_groups: Any = None, n_samples: int = 200_000, seed: int = 0) -> dict[str, Any]:
    """The Bayes ceilings (:func:`mmfusion.liver.bayes_ceiling`) for what the model sees
    (``modalities``; ``swe_input="frame"`` shows both latents) under the test pairs' class mix
    (``test_labels``), per patient under the test patients' mix (with ``test_groups``, else None),
    and ``accuracy / bayes_ceiling_per_view``. Bad input is a ``ValueError`` naming the argument."""
    if isinstance(modalities, str) or not isinstance(modalities, Sequence):
        raise ValueError(f"modalities: expected a sequence of names from {tuple(MODALITY_LATENTS)}, got {modalities!r}")
    if not modalities or len(set(modalities)) != len(modalities) or any(m not in MODALITY_LATENTS for m in modalities):
        raise ValueError(f"modalities: expected one or more distinct names from {tuple(MODALITY_LATENTS)}, "
                         f"got {tuple(modalities)!r}")
    if swe_input not in _SWE_INPUTS:
        raise ValueError(f"swe_input: expected one of {_SWE_INPUTS}, got {swe_input!r}")
    seen = {latent for m in modalities
            for latent in (SWE_FRAME_LATENTS if m == "swe" and swe_input == "frame" else MODALITY_LATENTS[m])}
    latents = tuple(latent for latent in ("stiffness", "texture") if latent in seen)
    counts = _stage_counts(test_labels, "test_labels")
    if isinstance(accuracy, bool) or not 0.0 <= float(accuracy) <= 1.0:
        raise ValueError(f"accuracy: expected a number in [0, 1], got {accuracy!r}")
    names = [f"F{c}" for c in range(NUM_STAGES)]
    per_view = bayes_ceiling(n_samples, seed, per_view=True, latents=latents, prior=counts)
    per_patient = patient_prior = None
    if test_groups is not None:
        labels, ids = np.asarray(test_labels), np.asarray(test_groups)
        if ids.shape != labels.shape:
            raise ValueError(f"test_groups: expected one patient id per test label ({labels.shape[0]}), "
                             f"got shape {ids.shape}")
        stage_of: dict[Any, int] = {}
        for pid, stage in zip(ids.tolist(), labels.tolist(), strict=True):
            if stage_of.setdefault(pid, stage) != stage:
                raise ValueError(f"test_groups: patient {pid!r} has pairs of stages {stage_of[pid]} and "
                                 f"{stage}; expected one stage per patient")
        patients = np.bincount(np.fromiter(stage_of.values(), dtype=np.int64), minlength=NUM_STAGES)
        per_patient = bayes_ceiling(n_samples, seed, latents=latents, prior=patients)
        patient_prior = dict(zip(names, (patients / patients.sum()).tolist(), strict=True))
    return {"bayes_ceiling_per_view": per_view, "bayes_ceiling_per_patient": per_patient,
            "accuracy_over_ceiling": float(accuracy) / per_view, "modalities": list(modalities),
            "swe_input": swe_input, "latents": list(latents),
            "prior_per_view": dict(zip(names, (counts / counts.sum()).tolist(), strict=True)),
            "prior_per_patient": patient_prior, "n_samples": n_samples, "seed": seed}
