"""The phantom's Bayes ceiling that matches a run: what its model sees and its test set's class mix
(a class-balanced test set, as ``--split paper``'s, has a higher per-view ceiling)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmfusion.liver import NUM_STAGES, bayes_ceiling

__all__ = ["MODALITY_LATENTS", "SWE_FRAME_LATENTS", "phantom_ceilings"]

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
