"""Training losses of the paper's model ensemble (section III.D, equations (1)-(3)).

* :class:`ConsistencyLoss` - eq. (2): ``L_C = sum_{i<j} mean(|f_i - f_j|)`` over unordered
  modality pairs (mean absolute error over batch and features, docs/paper_map.rst).
* :class:`EnsembleLoss` - eq. (1) and (3): ``L_total = sum_b CE_b + alpha * L_C`` over the
  branches ``b`` (US, SWE, joint), ``alpha = 0.2``.

Both ignore absent modalities: a sample whose modality is flagged unavailable adds nothing to that
branch's cross-entropy nor to the consistency terms of its pairs.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfusion._checks import batch_size_of, check_tensor


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values`` ``[B]`` over the samples where ``mask`` ``[B]`` is true (0 if none)."""
    if mask is None:
        return values.mean()
    weights = mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


class ConsistencyLoss(nn.Module):
    """Feature consistency between modalities, eq. (2) of the paper.

    ``L_C = sum over unordered pairs i < j of mean(|f_i - f_j|)``, the mean taken over the samples
    where both modalities are available and over the features. One modality gives 0.

    Example:
        >>> f = {"us": torch.zeros(2, 4), "swe": torch.ones(2, 4)}
        >>> ConsistencyLoss()(f)
        tensor(1.)
    """

    def forward(
        self,
        features: Mapping[str, Tensor],
        available: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """Compute ``L_C``.

        Args:
            features: modality -> ``[B, D]`` feature vectors (same ``D`` for all).
            available: optional modality -> bool ``[B]`` availability.

        Returns:
            A scalar tensor.
        """
        if not isinstance(features, Mapping) or not features:
            raise ValueError(f"features: expected a non-empty mapping name -> [B, D] tensor, got {features!r}")
        for name, f in features.items():
            check_tensor(f, f"features[{name!r}]", ndim=2)
        batch_size_of(features, "features")
        dims = {k: int(v.shape[1]) for k, v in features.items()}
        if len(set(dims.values())) > 1:
            raise ValueError(f"features: all modalities need the same feature size, got {dims}")
        available = available or {}
        first = next(iter(features.values()))
        total = first.new_zeros((), dtype=torch.float32)
        for a, b in itertools.combinations(features, 2):
            per_sample = (features[a].float() - features[b].float()).abs().mean(dim=1)
            ma, mb = available.get(a), available.get(b)
            mask = ma & mb if ma is not None and mb is not None else (ma if ma is not None else mb)
            total = total + _masked_mean(per_sample, mask)
        return total


@dataclass
class LossOutput:
    """What :class:`EnsembleLoss` returns.

    Attributes:
        total: scalar loss to back-propagate.
        components: ``"ce_<branch>"`` -> scalar cross-entropy per branch and ``"consistency"``
            -> the unweighted ``L_C`` (for logging; the total uses ``alpha * L_C``).
    """

    total: Tensor
    components: dict[str, Tensor]


class EnsembleLoss(nn.Module):
    """``L_total = sum_b CE_b + alpha * L_C`` (paper eq. (1)-(3)).

    Args:
        alpha: weight of the consistency loss (0.2 in the paper; 0 disables it).
        branches: which branches get a cross-entropy term; ``None`` means every branch in the
            logits mapping. ``("joint",)`` is the paper's "single" loss of Table I.
        label_smoothing: passed to :func:`torch.nn.functional.cross_entropy` (0 in the paper).

    Example:
        >>> loss_fn = EnsembleLoss(alpha=0.2)
        >>> logits = {b: torch.zeros(2, 5) for b in ("us", "swe", "joint")}
        >>> out = loss_fn(logits, torch.tensor([0, 4]), features={"us": torch.zeros(2, 8),
        ...                                                    "swe": torch.ones(2, 8)})
        >>> round(out.total.item(), 4)  # 3 * ln(5) + 0.2 * 1
        5.0283
    """

    def __init__(
        self,
        alpha: float = 0.2,
        branches: Sequence[str] | None = None,
        *,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(alpha, int | float) or alpha < 0:
            raise ValueError(f"alpha: expected a non-negative number, got {alpha!r}")
        if branches is not None:
            branches = tuple(branches)
            if not branches or not all(isinstance(b, str) for b in branches):
                raise ValueError(f"branches: expected a non-empty sequence of names, got {branches!r}")
        self.alpha = float(alpha)
        self.branches = branches
        self.label_smoothing = label_smoothing
        self.consistency = ConsistencyLoss()

    def forward(
        self,
        logits: Mapping[str, Tensor],
        target: Tensor,
        features: Mapping[str, Tensor] | None = None,
        available: Mapping[str, Tensor] | None = None,
    ) -> LossOutput:
        """Compute the total loss and its components.

        Args:
            logits: branch name -> ``[B, K]`` logits (e.g. ``ClassifierOutput.logits``).
            target: ``[B]`` integer class labels in ``[0, K)``.
            features: modality -> ``[B, D]`` vectors for the consistency term (may be omitted
                or hold a single modality: ``L_C = 0``).
            available: modality -> bool ``[B]``; a modality branch's cross-entropy averages only
                over samples where its modality is available.

        Returns:
            :class:`LossOutput`.
        """
        if not isinstance(logits, Mapping) or not logits:
            raise ValueError(f"logits: expected a non-empty mapping branch -> [B, K] tensor, got {logits!r}")
        names = self.branches if self.branches is not None else tuple(logits)
        missing = [b for b in names if b not in logits]
        if missing:
            raise ValueError(f"logits: missing branch(es) {missing}; got {list(logits)}")
        for name in names:
            check_tensor(logits[name], f"logits[{name!r}]", ndim=2)
        batch = batch_size_of({b: logits[b] for b in names}, "logits")
        num_classes = int(logits[names[0]].shape[1])
        if not isinstance(target, Tensor) or target.dtype in (torch.bool,) or torch.is_floating_point(target):
            got = target.dtype if isinstance(target, Tensor) else type(target).__name__
            raise TypeError(f"target: expected an integer tensor of class indices, got {got}")
        if tuple(target.shape) != (batch,):
            raise ValueError(f"target: expected shape [{batch}] (one label per sample), got {tuple(target.shape)}")
        # The range check reads the labels back to the host: skip it where that would stall the
        # GPU every step or break a compiled graph (cross_entropy still rejects bad labels there).
        if (
            target.numel()
            and target.device.type == "cpu"
            and not torch.compiler.is_compiling()
            and (int(target.min()) < 0 or int(target.max()) >= num_classes)
        ):
            raise ValueError(
                f"target: labels must lie in [0, {num_classes}), got min {int(target.min())} "
                f"and max {int(target.max())}"
            )
        available = available or {}
        components: dict[str, Tensor] = {}
        total = logits[names[0]].new_zeros((), dtype=torch.float32)
        for name in names:
            per_sample = F.cross_entropy(
                logits[name].float(), target, reduction="none", label_smoothing=self.label_smoothing
            )
            ce = _masked_mean(per_sample, available.get(name))
            components[f"ce_{name}"] = ce
            total = total + ce
        if features:
            consistency = self.consistency(features, available)
            components["consistency"] = consistency
            total = total + self.alpha * consistency
        return LossOutput(total=total, components=components)
