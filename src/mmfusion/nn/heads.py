"""Classifier heads and the model ensemble (paper sections III.B and III.D).

* :class:`ClassifierHead` - an MLP on a flattened (or pooled) feature map or vector. With
  ``pool="flatten"`` and two hidden layers it is the paper's single-modal branch (three fully
  connected layers on the flattened stage-4 map); with no hidden layers it is the joint branch's
  single FC layer on the fused vector.
* :class:`EnsembleHead` - per-modality branch heads plus the joint head; returns every branch's
  logits by name and the combined class probabilities (weighted mean of the branch softmaxes,
  section III.D and docs/paper_map.rst).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from mmfusion._checks import batch_size_of, check_availability, check_tensor
from mmfusion.nn._validation import checking, validated

JOINT = "joint"
"""Name of the fusion (joint) branch in logits mappings and loss components."""


class ClassifierHead(nn.Module):
    """MLP classifier: ``pool -> [Linear -> ReLU -> Dropout] * len(hidden) -> Linear``.

    Args:
        in_features: Number of values after pooling (``C * H * W`` for ``pool="flatten"`` on a
            map, ``C`` for ``pool="avg"``, ``D`` for a ``[B, D]`` vector).
        num_classes: Number of output logits (5 stages F0-F4).
        hidden: Widths of the hidden layers; ``()`` gives a single linear layer.
        pool: ``"flatten"`` flattens everything after the batch axis (the paper's single-modal
            branch); ``"avg"`` global-average-pools a ``[B, C, H, W]`` map first.
        dropout: Dropout probability after each hidden layer.

    Shape:
        - Input: ``[B, C, H, W]`` or ``[B, D]``.
        - Output: ``[B, num_classes]`` logits.

    Example:
        >>> head = ClassifierHead(2048 * 7 * 7, 5, hidden=(384, 128))
        >>> head(torch.randn(2, 2048, 7, 7)).shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: Sequence[int] = (),
        *,
        pool: Literal["flatten", "avg"] = "flatten",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features: expected a positive int, got {in_features!r}")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes: expected an int >= 2, got {num_classes!r}")
        if pool not in ("flatten", "avg"):
            raise ValueError(f"pool: expected 'flatten' or 'avg', got {pool!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        hidden = tuple(hidden)
        if not all(isinstance(h, int) and h > 0 for h in hidden):
            raise ValueError(f"hidden: expected positive ints, got {hidden!r}")
        self.in_features = in_features
        self.num_classes = num_classes
        self.pool = pool
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Classify a batch of maps ``[B, C, H, W]`` or vectors ``[B, D]`` into logits.

        The tensor is checked when the head is called directly, not inside
        :class:`EnsembleHead`; the feature count is compared in both cases (an int comparison,
        and the only place where a flattening head sees an input of another image size).
        """
        if checking():
            check_tensor(x, "x", ndim=(2, 4))
        if self.pool == "avg" and x.ndim == 4:
            x = x.mean(dim=(2, 3))
        x = x.flatten(1)
        if x.shape[1] != self.in_features:
            hint = " (a flattening head is tied to the input image size)" if self.pool == "flatten" else ""
            raise ValueError(
                f"x: expected {self.in_features} features after {self.pool!r} pooling, "
                f"got {x.shape[1]}{hint}"
            )
        return self.mlp(x)


@dataclass
class EnsembleOutput:
    """What :class:`EnsembleHead` returns.

    Attributes:
        logits: branch name -> ``[B, K]`` logits (modality names and ``"joint"``).
        probs: ``[B, K]`` combined class probabilities (float32, rows sum to 1).
    """

    logits: dict[str, Tensor]
    probs: Tensor


class EnsembleHead(nn.Module):
    """Single-modal branch heads plus the joint head, combined by averaging their softmaxes.

    The combined prediction is ``sum_b w_b a_b softmax(z_b) / sum_b w_b a_b`` over the branches
    ``b``, with weights ``w_b`` (equal by default, docs/paper_map.rst) and ``a_b`` the per-sample availability
    of the branch's modality (the joint branch is always available). Single-modal heads receive the
    encoder outputs (maps or vectors); the joint head receives the fused vector. Called directly,
    it checks its inputs; inside :class:`~mmfusion.nn.MultiModalClassifier` it does not check them
    again.

    Args:
        branch_heads: modality name -> head for that modality's map (may be empty).
        joint_head: head for the fused vector, or ``None`` for a model without fusion.
        weights: branch name -> weight in the combined prediction; missing names weigh 1.
            A weight of 0 keeps a branch trained (by its loss) but out of the prediction.

    Example:
        >>> head = EnsembleHead({"us": ClassifierHead(96, 5, pool="avg")}, ClassifierHead(64, 5))
        >>> out = head({"us": torch.randn(2, 96, 2, 2)}, fused=torch.randn(2, 64))
        >>> sorted(out.logits), out.probs.shape
        (['joint', 'us'], torch.Size([2, 5]))
    """

    def __init__(
        self,
        branch_heads: Mapping[str, nn.Module] | None = None,
        joint_head: nn.Module | None = None,
        *,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        branch_heads = dict(branch_heads or {})
        if JOINT in branch_heads:
            raise ValueError(f"branch_heads: {JOINT!r} is reserved for the joint head")
        if not branch_heads and joint_head is None:
            raise ValueError("branch_heads/joint_head: expected at least one head, got none")
        self.branch_heads = nn.ModuleDict(branch_heads)
        self.joint_head = joint_head
        self.branches: tuple[str, ...] = tuple(branch_heads) + ((JOINT,) if joint_head is not None else ())
        weights = dict(weights or {})
        unknown = [k for k in weights if k not in self.branches]
        if unknown:
            raise ValueError(f"weights: unknown branch name(s) {unknown}; branches are {list(self.branches)}")
        if any(float(w) < 0 for w in weights.values()):
            raise ValueError(f"weights: expected non-negative weights, got {weights}")
        self.weights = {b: float(weights.get(b, 1.0)) for b in self.branches}
        if sum(self.weights.values()) <= 0:
            raise ValueError(f"weights: at least one branch needs a positive weight, got {weights}")

    def forward(
        self,
        feature_maps: Mapping[str, Tensor],
        fused: Tensor | None = None,
        available: Mapping[str, Tensor] | None = None,
    ) -> EnsembleOutput:
        """Run every head whose input is present and combine their probabilities.

        Args:
            feature_maps: modality -> ``[B, C, H, W]`` encoder map or ``[B, D]`` vector (absent
                modalities are skipped).
            fused: ``[B, D]`` fused vector; required when there is a joint head.
            available: optional modality -> bool ``[B]`` per-sample availability.

        Returns:
            :class:`EnsembleOutput` with the logits of every branch that ran and the combined
            probabilities ``[B, K]``.
        """
        present = {m: x for m, x in feature_maps.items() if m in self.branch_heads}
        sized = {**present, JOINT: fused} if fused is not None else present
        if checking():
            if self.joint_head is not None:
                check_tensor(fused, "fused", ndim=2)
            batch = batch_size_of(sized, "feature_maps/fused")
            masks = check_availability(available, list(feature_maps), batch) or {}
        else:  # checked by the caller (MultiModalClassifier)
            batch = next(iter(sized.values())).shape[0] if sized else 0
            masks = dict(available or {})

        with validated():
            logits: dict[str, Tensor] = {m: self.branch_heads[m](x) for m, x in present.items()}
            if self.joint_head is not None:
                logits[JOINT] = self.joint_head(fused)
        if not logits:
            raise ValueError(
                f"feature_maps: none of the branch modalities {list(self.branch_heads)} was given"
            )
        total = None
        norm = None
        for name, z in logits.items():
            weight = self.weights[name]
            if weight == 0:
                continue
            p = torch.softmax(z.float(), dim=1)
            w = torch.full((batch, 1), weight, device=p.device)
            if name in masks:
                w = w * masks[name][:, None].float()
            total = p * w if total is None else total + p * w
            norm = w if norm is None else norm + w
        if total is None or norm is None:
            raise ValueError("weights: every branch that ran has weight 0; nothing to combine")
        return EnsembleOutput(logits=logits, probs=total / norm.clamp_min(1e-12))
