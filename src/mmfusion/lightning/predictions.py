"""Evaluation outputs gathered over processes, in data set order, each sample once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Predictions"]


@dataclass
class Predictions:
    """Every branch's probabilities for an evaluation set.

    Attributes:
        probs: branch -> ``[N, K]`` float64 probabilities; ``"ensemble"`` is the model's combined
            prediction, the other keys its branches (e.g. ``"us"``, ``"swe"``, ``"joint"``).
        labels: ``[N]`` true classes.
        groups: ``[N]`` patient ids.
        indices: ``[N]`` data set indices (sorted).
        available: modality -> ``[N]`` bool: was the modality present for that sample.

    Raises:
        ValueError: A branch's probabilities are not all finite (a diverged model, or non-finite
            inputs): no metric or predicted class is computed from them.
    """

    probs: dict[str, np.ndarray]
    labels: np.ndarray
    groups: np.ndarray
    indices: np.ndarray
    available: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        for branch, p in self.probs.items():
            finite = np.isfinite(np.asarray(p, dtype=np.float64))
            bad = ~finite.all(axis=tuple(range(1, finite.ndim))) if finite.ndim > 1 else ~finite
            if bad.any():
                raise ValueError(
                    f"probs[{branch!r}]: {int(bad.sum())} of {len(p)} samples have non-finite "
                    "probabilities (NaN/inf): the model's weights or inputs are not finite (a "
                    "diverged training?); refusing to compute predictions or metrics from them")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, keep: np.ndarray) -> Predictions:
        """The samples where the bool mask ``keep`` ``[N]`` is true."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != self.labels.shape:
            raise ValueError(f"keep: expected a bool mask of shape {self.labels.shape}, got {keep.shape}")
        return Predictions({k: v[keep] for k, v in self.probs.items()}, self.labels[keep],
                           self.groups[keep], self.indices[keep],
                           {k: v[keep] for k, v in self.available.items()})

    @classmethod
    def merge(cls, parts: Sequence[Predictions]) -> Predictions:
        """Concatenate per-process parts, sort by index and keep each index once (a distributed
        sampler pads the last shard with repeats)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("parts: no predictions to merge (the evaluation set is empty)")
        index = np.concatenate([p.indices for p in parts])
        order = np.argsort(index, kind="stable")
        keep = order[np.concatenate([[True], np.diff(index[order]) != 0])]

        def cat(arrays: Sequence[np.ndarray]) -> np.ndarray:
            return np.concatenate(list(arrays))[keep]

        return cls(
            probs={k: cat([p.probs[k] for p in parts]) for k in parts[0].probs},
            labels=cat([p.labels for p in parts]),
            groups=cat([p.groups for p in parts]),
            indices=index[keep],
            available={k: cat([p.available[k] for p in parts]) for k in parts[0].available},
        )
