"""The paper's deterministic offline expansion as a plan, and a data set that applies it (II.B).

Paper II.B: "All data were subjected to horizontal flipping and translated 5 pixels to the left and
5 pixels to the right. Additionally, to balance the number of samples in each class, data
augmentation included horizontal translation ranging from 0 to 10 pixels for classes with fewer
samples." Hence every sample x {original, flip, shift -5, shift +5} (4 per sample: the paper's 94
F4 pairs give 376), then extra shifts for the smaller classes until each reaches the target (about
1,100 in the paper). The plan balances whatever classes the labels hold (any label set: the
class indices of a manifest's :class:`~mmfusion.labels.LabelSpec`).

Apply the plan to the TRAINING part of a patient-level split only (docs/paper_map.rst "Decisions").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from mmfusion.data.gpu_augment import FlipShift, apply_flip_shift
from mmfusion.data.transforms import zero_unavailable

__all__ = ["AugmentationItem", "PlannedAugmentationDataset", "balanced_augmentation_plan"]


class AugmentationItem(NamedTuple):
    """One planned sample: which source item, whether to flip, and the horizontal shift.

    Attributes:
        index: Index into the source data set.
        flip: Flip horizontally (before shifting).
        shift: Horizontal shift in pixels, positive = to the right.
    """

    index: int
    flip: bool
    shift: int


def balanced_augmentation_plan(
    labels: Sequence[int] | np.ndarray,
    target_per_class: int | Mapping[int, int] | None = None,
    shift_px: int = 5,
    max_extra_shift: int = 10,
    seed: int = 0,
) -> list[AugmentationItem]:
    """The paper's offline augmentation plan (deterministic for ``seed``).

    Every sample gives 4 items: original, flip, shift ``-shift_px``, shift ``+shift_px``. A class
    with fewer than its target then gets extra shifted items, spread round-robin over its samples
    (in a seeded order): each sample first takes unused shifts of 1 to ``max_extra_shift`` pixels
    in either direction (skipping ``0`` and ``+-shift_px``, which would repeat an item), then the
    same shifts of the flipped image, then repeats. Classes at or above their target keep their 4
    items per sample; nothing is dropped.

    Args:
        labels: ``[N]`` class label of each sample.
        target_per_class: Items wanted per class: an int for all classes, a mapping
            label -> target (e.g. the paper's ``{0: 1103, 1: 1148, 2: 1136, 3: 1121, 4: 1087}``),
            or None for the largest class's ``4 * count``.
        shift_px: The fixed left/right shift in pixels (paper: 5).
        max_extra_shift: Largest extra shift in pixels (paper: 10).
        seed: Seed of the extra items' order and shifts.

    Returns:
        The plan: the 4 items of each sample in sample order, then the extra items by class.

    Example:
        >>> plan = balanced_augmentation_plan([0] * 94 + [1] * 287, target_per_class=1100)
        >>> sum(item.index < 94 for item in plan), sum(item.index >= 94 for item in plan)
        (1100, 1148)
    """
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"labels: expected a 1-D sequence of ints, got dtype {y.dtype} shape {y.shape}"
        )
    if not isinstance(shift_px, int) or shift_px < 1:
        raise ValueError(f"shift_px: expected a positive int, got {shift_px!r}")
    if not isinstance(max_extra_shift, int) or max_extra_shift < 1:
        raise ValueError(f"max_extra_shift: expected a positive int, got {max_extra_shift!r}")
    classes, counts = np.unique(y, return_counts=True)
    if target_per_class is None:
        targets = {int(c): 4 * int(counts.max()) for c in classes}
    elif isinstance(target_per_class, Mapping):
        missing = [int(c) for c in classes if int(c) not in target_per_class]
        if missing:
            raise ValueError(
                f"target_per_class: expected a target for every class, missing {missing}"
            )
        targets = {int(c): int(target_per_class[int(c)]) for c in classes}
    elif isinstance(target_per_class, (int, np.integer)) and target_per_class >= 0:
        targets = {int(c): int(target_per_class) for c in classes}
    else:
        raise ValueError(
            f"target_per_class: expected a non-negative int, a mapping or None, got {target_per_class!r}"
        )

    plan = [
        AugmentationItem(int(i), flip, shift)
        for i in range(len(y))
        for flip, shift in ((False, 0), (True, 0), (False, -shift_px), (False, shift_px))
    ]
    magnitudes = [s for s in range(1, max_extra_shift + 1) if s != shift_px]
    rng = np.random.default_rng([seed, 11])
    for c in classes:
        members = np.flatnonzero(y == c)
        extra = targets[int(c)] - 4 * len(members)
        if extra <= 0:
            continue
        order = rng.permutation(members)
        options: dict[int, list[tuple[bool, int]]] = {}
        for k in range(extra):
            i = int(order[k % len(order)])
            if i not in options:
                shifts = [sign * m for m in magnitudes for sign in (-1, 1)]
                plain = [(False, int(s)) for s in rng.permutation(shifts)]
                flipped = [(True, int(s)) for s in rng.permutation([*shifts, shift_px, -shift_px])]
                options[i] = plain + flipped
            flip, shift = options[i][(k // len(order)) % len(options[i])]
            plan.append(AugmentationItem(i, flip, shift))
    return plan


class PlannedAugmentationDataset(Dataset[dict[str, Any]]):
    """Apply an offline augmentation plan to a data set of uint8 image dicts, deterministically.

    Item ``k`` is source item ``plan[k].index``, flipped and shifted horizontally as planned (the
    same for every modality; black fill), then passed to ``transform``. The shift is in pixels
    of the images the source returns (e.g. after ``PairedImageDataset(size=...)``). The other keys
    pass through, ``"available"`` included; a missing modality's image is zero before and after.

    Args:
        dataset: Source returning dicts with uint8 ``[C, H, W]`` tensors per modality, e.g.
            :class:`~mmfusion.data.dataset.PairedImageDataset` without a transform (cache it).
        plan: Items from :func:`balanced_augmentation_plan`.
        transform: Applied afterwards to the sample dict (modalities as ``tv_tensors.Image``),
            typically :func:`~mmfusion.data.transforms.eval_transforms` (resize, normalise).
    """

    def __init__(
        self,
        dataset: Dataset[dict[str, Any]],
        plan: Sequence[AugmentationItem | tuple[int, bool, int]],
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        n = len(dataset)  # type: ignore[arg-type]
        items = [AugmentationItem(int(i), bool(f), int(s)) for i, f, s in plan]
        bad = [it for it in items if not 0 <= it.index < n]
        if bad:
            raise ValueError(f"plan: expected indices in [0, {n}), got {bad[:3]}")
        self.dataset = dataset
        self.plan = items
        self.transform = transform

    def __len__(self) -> int:
        return len(self.plan)

    @property
    def labels(self) -> np.ndarray:
        """``[len(plan)]`` labels of the planned items (needs ``dataset.labels``)."""
        return np.asarray(self.dataset.labels)[[it.index for it in self.plan]]  # type: ignore[attr-defined]

    def __getitem__(self, k: int) -> dict[str, Any]:
        index, flip, shift = self.plan[k]
        sample = dict(self.dataset[index])
        # images only: a tabular modality's [F] vector is neither flipped nor shifted
        keys = [
            key for key in getattr(self.dataset, "modalities", None) or sample
            if isinstance(sample.get(key), torch.Tensor) and sample[key].ndim == 3
        ]
        draw = FlipShift(torch.tensor([flip]), torch.tensor([shift]))
        for key in keys:
            image = sample[key]
            if flip or shift:  # one gather, exact integer pixels, black fill
                image = apply_flip_shift(image[None], draw)[0]
            sample[key] = tv_tensors.Image(image)
        if self.transform is not None:
            sample = zero_unavailable(self.transform(sample))
        return {
            key: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v
            for key, v in sample.items()
        }
