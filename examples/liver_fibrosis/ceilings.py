"""The phantom's Bayes ceiling that matches a run: its modalities and its test set's class mix.

A model's accuracy is judged against the best any classifier can do on the same task. That best
depends on what the model sees (B-mode texture, SWE stiffness or both) and on the class mix of
the set it is tested on: a class-balanced test set (the paper protocol's ``--split paper``) has a
higher per-view ceiling than one drawn with the cohort's prevalence. :func:`phantom_ceilings`
computes the ceiling under exactly those conditions with :func:`mmfusion.liver.bayes_ceiling`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmfusion.liver import NUM_STAGES, bayes_ceiling

__all__ = ["MODALITY_LATENTS", "SWE_FRAME_LATENTS", "phantom_ceilings"]

#: What each modality shows of the phantom's latents: the SWE colour box the stiffness, B-mode
#: the texture.
MODALITY_LATENTS: dict[str, tuple[str, ...]] = {"swe": ("stiffness",), "us": ("texture",)}
#: The whole SWE frame (``--swe-input frame``, the paper's input) also shows the B-mode texture
#: around its colour box, so an SWE model reads both latents.
SWE_FRAME_LATENTS: tuple[str, ...] = ("stiffness", "texture")
_SWE_INPUTS = ("frame", "box", "box_mask", "box_kpa")


def _latents(modalities: Sequence[str], swe_input: str) -> tuple[str, ...]:
    if isinstance(modalities, str) or not isinstance(modalities, Sequence):
        raise ValueError(
            f"modalities: expected a sequence of names from {tuple(MODALITY_LATENTS)}, "
            f"got {modalities!r}"
        )
    unknown = [m for m in modalities if m not in MODALITY_LATENTS]
    if unknown or not modalities or len(set(modalities)) != len(modalities):
        raise ValueError(
            f"modalities: expected one or more distinct names from {tuple(MODALITY_LATENTS)}, "
            f"got {tuple(modalities)!r}"
        )
    if swe_input not in _SWE_INPUTS:
        raise ValueError(f"swe_input: expected one of {_SWE_INPUTS}, got {swe_input!r}")
    seen = {
        latent
        for m in modalities
        for latent in (SWE_FRAME_LATENTS if m == "swe" and swe_input == "frame"
                       else MODALITY_LATENTS[m])
    }
    return tuple(latent for latent in ("stiffness", "texture") if latent in seen)


def _stage_counts(labels: Any, name: str) -> np.ndarray:
    """``[5]`` counts of stages 0..4 in ``labels``."""
    array = np.asarray(labels)
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"{name}: expected a non-empty 1-D sequence of integer stages 0..{NUM_STAGES - 1}, "
            f"got {array.dtype} of shape {array.shape}"
        )
    if array.min() < 0 or array.max() >= NUM_STAGES:
        raise ValueError(
            f"{name}: expected stages 0..{NUM_STAGES - 1}, got values "
            f"{int(array.min())}..{int(array.max())}"
        )
    return np.bincount(array, minlength=NUM_STAGES)


def phantom_ceilings(
    modalities: Sequence[str],
    test_labels: Any,
    accuracy: float,
    *,
    swe_input: str = "frame",
    test_groups: Any = None,
    n_samples: int = 200_000,
    seed: int = 0,
) -> dict[str, Any]:
    """The Bayes ceilings that match a phantom run, and its accuracy over the per-view one.

    Args:
        modalities: What the model sees, e.g. ``("us", "swe")``, ``("us",)`` or ``("swe",)``.
        test_labels: ``[N]`` stages 0..4 of the test pairs (views): their class mix is the prior
            of the per-view ceiling.
        accuracy: The run's test accuracy per pair.
        swe_input: What the SWE encoder sees (the run's ``--swe-input``): ``"frame"`` shows the
            B-mode texture around the colour box as well (both latents); ``"box"``,
            ``"box_mask"``, ``"box_kpa"`` the stiffness only.
        test_groups: Optional ``[N]`` patient ids of the test pairs. With them the per-patient
            ceiling is computed under the test patients' class mix; without them it is ``None``
            (the per-patient mix is unknown).
        n_samples: Simulated patients per ceiling (standard error about 0.001 at the default).
        seed: Seed of the simulation.

    Returns:
        A JSON-ready dict: ``bayes_ceiling_per_view`` (the ceiling for a classifier of one view
        of these modalities, under the test pairs' class mix), ``bayes_ceiling_per_patient``
        (a classifier of a patient's latents, under the test patients' class mix, or ``None``),
        ``accuracy_over_ceiling`` (``accuracy / bayes_ceiling_per_view``), ``modalities``,
        ``latents``, ``prior_per_view`` (``{"F0": share, ...}`` of the test pairs),
        ``prior_per_patient`` (likewise, or ``None``), ``n_samples`` and ``seed``.

    Raises:
        ValueError: Unknown or repeated modalities, an unknown ``swe_input``, labels that are not
            stages 0..4, groups of another length, a patient with two stages, or an accuracy
            outside ``[0, 1]``.
    """
    latents = _latents(modalities, swe_input)
    counts = _stage_counts(test_labels, "test_labels")
    if isinstance(accuracy, bool) or not 0.0 <= float(accuracy) <= 1.0:
        raise ValueError(f"accuracy: expected a number in [0, 1], got {accuracy!r}")
    names = [f"F{c}" for c in range(NUM_STAGES)]
    per_view = bayes_ceiling(n_samples, seed, per_view=True, latents=latents, prior=counts)
    per_patient: float | None = None
    patient_prior: dict[str, float] | None = None
    if test_groups is not None:
        patient_counts = _patient_counts(test_groups, np.asarray(test_labels))
        per_patient = bayes_ceiling(n_samples, seed, latents=latents, prior=patient_counts)
        patient_prior = dict(zip(names, (patient_counts / patient_counts.sum()).tolist(), strict=True))
    return {
        "bayes_ceiling_per_view": per_view,
        "bayes_ceiling_per_patient": per_patient,
        "accuracy_over_ceiling": float(accuracy) / per_view,
        "modalities": list(modalities),
        "swe_input": swe_input,
        "latents": list(latents),
        "prior_per_view": dict(zip(names, (counts / counts.sum()).tolist(), strict=True)),
        "prior_per_patient": patient_prior,
        "n_samples": n_samples,
        "seed": seed,
    }


def _patient_counts(groups: Any, labels: np.ndarray) -> np.ndarray:
    """``[5]`` number of distinct patients per stage."""
    ids = np.asarray(groups)
    if ids.shape != labels.shape:
        raise ValueError(
            f"test_groups: expected one patient id per test label ({labels.shape[0]}), "
            f"got shape {ids.shape}"
        )
    stage_of: dict[Any, int] = {}
    for pid, stage in zip(ids.tolist(), labels.tolist(), strict=True):
        if stage_of.setdefault(pid, stage) != stage:
            raise ValueError(
                f"test_groups: patient {pid!r} has pairs of stages {stage_of[pid]} and {stage}; "
                "expected one stage per patient"
            )
    return np.bincount(np.fromiter(stage_of.values(), dtype=np.int64), minlength=NUM_STAGES)
