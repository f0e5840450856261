"""Evaluation outputs gathered over processes, in data set order, each sample once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import lightning

__all__ = ["Predictions", "gather_predictions"]


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


def gather_predictions(module: lightning.pytorch.LightningModule, local: dict[str, Any] | None,
                       groups: Sequence[str]) -> Predictions | None:
    """Every process's evaluation outputs, merged (``Predictions.merge``), on every process.

    The tensors go through Lightning's :meth:`~lightning.pytorch.core.LightningModule.all_gather`
    (each process's rows padded to the largest share, since a collective needs equal shapes, and
    cut back after). The patient ids are strings, which no tensor collective carries: they go
    through ``torch.distributed.all_gather_object``, with each process's layout (branches,
    classes, modalities) so that a process without samples can take part.

    Args:
        module: The module (its trainer's processes take part; all must call this).
        local: This process's outputs: ``{"probs": {branch: [n, K] float}, "labels": [n],
            "indices": [n], "available": {modality: [n] uint8}}``; ``None``: it had no samples.
        groups: This process's ``n`` patient ids, in the order of ``local``'s rows.

    Returns:
        The merged predictions (probabilities as float64), ``None`` when no process had any.

    Raises:
        ValueError: Non-finite probabilities (on any process: every process raises alike).
    """
    import torch
    import torch.distributed as dist
    from lightning_utilities.core.apply_func import apply_to_collection

    parts: list[tuple[Sequence[str], dict[str, Any] | None]] = [(list(groups), local)]
    world = module.trainer.world_size
    if world > 1 and dist.is_available() and dist.is_initialized():
        meta: list[Any] = [None] * world
        layout = None if local is None else {"probs": {k: v.shape[1] for k, v in local["probs"].items()},
                                             "available": list(local["available"])}
        dist.all_gather_object(meta, (list(groups), layout))
        layout = next((m[1] for m in meta if m[1] is not None), None)
        if layout is None:
            return None
        size = max(len(m[0]) for m in meta)
        if local is None:
            z = torch.zeros(0, dtype=torch.long, device=module.device)
            local = {"probs": {k: torch.zeros(0, c, device=module.device) for k, c in layout["probs"].items()},
                     "labels": z, "indices": z,
                     "available": {m: z.to(torch.uint8) for m in layout["available"]}}

        def pad(t: torch.Tensor) -> torch.Tensor:
            return torch.cat([t, t.new_zeros((size - len(t), *t.shape[1:]))])

        gathered = module.all_gather(apply_to_collection(local, torch.Tensor, pad))
        parts = [(g, apply_to_collection(gathered, torch.Tensor, _rows, r, len(g)))
                 for r, (g, _) in enumerate(meta)]
    found = [Predictions(
        probs={k: v.cpu().numpy().astype(np.float64) for k, v in t["probs"].items()},
        labels=t["labels"].cpu().numpy(), groups=np.asarray(list(g), dtype=object),
        indices=t["indices"].cpu().numpy(),
        available={m: v.cpu().numpy().astype(bool) for m, v in t["available"].items()},
    ) for g, t in parts if t is not None and len(g)]
    return Predictions.merge(found) if found else None


def _rows(t: Any, rank: int, n: int) -> Any:
    """Process ``rank``'s first ``n`` rows of a gathered ``[world, size, ...]`` tensor."""
    return t[rank, :n]
