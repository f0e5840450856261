"""Evidential decision fusion: Dirichlet evidence per modality, Dempster-Shafer combination.

Han et al. 2021, "Trusted Multi-View Classification" (ICLR; TMC), and its extension, Han et al.
2022, "Trusted Multi-View Classification with Dynamic Evidential Fusion" (TPAMI). Each modality
gives non-negative evidence ``e_m`` for the ``K`` classes, read as a Dirichlet
``alpha_m = e_m + 1`` and, by subjective logic, as an opinion (TMC eq. 1)::

    S_m = sum_k alpha_mk,   b_m = e_m / S_m  (belief masses),   u_m = K / S_m  (uncertainty)

with ``sum_k b_mk + u_m = 1``. Two opinions combine by the reduced Dempster-Shafer rule
(TMC definition 3.1, eq. 3)::

    C = sum_{i != j} b1_i b2_j                       (the conflict)
    b = (b1 * b2 + b1 * u2 + b2 * u1) / (1 - C)
    u = u1 * u2 / (1 - C)

and ``M`` opinions sequentially (the rule is commutative and associative). The combined opinion
is read back as a Dirichlet, ``S = K / u``, ``alpha = b * S + 1`` (TMC eq. 4 inverted).

:func:`evidential_loss` is TMC's training loss (eq. 5-7): the integrated cross-entropy under the
Dirichlet plus an annealed KL term.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfusion.nn.fusion import FusionOutput
from mmfusion.nn.fusions.base import BaseFusion, check_embed_dim
from mmfusion.nn.registry import FeatureSpec, register_fusion

__all__ = ["EvidentialFusion", "combine_opinions", "evidential_loss", "opinion"]


def opinion(evidence: Tensor) -> tuple[Tensor, Tensor]:
    """The subjective-logic opinion of Dirichlet evidence (TMC eq. 1).

    Args:
        evidence: ``e`` ``[B, K]``, non-negative.

    Returns:
        ``(b, u)``: belief masses ``b = e / S`` ``[B, K]`` and uncertainty ``u = K / S`` ``[B]``,
        with ``S = sum_k (e_k + 1)``.

    Example:
        >>> b, u = opinion(torch.tensor([[2.0, 0.0]]))  # alpha = (3, 1), S = 4
        >>> b.tolist(), u.tolist()
        ([[0.5, 0.0]], [0.5])
    """
    strength = (evidence + 1.0).sum(dim=-1)
    return evidence / strength[:, None], evidence.shape[-1] / strength


def combine_opinions(b1: Tensor, u1: Tensor, b2: Tensor, u2: Tensor) -> tuple[Tensor, Tensor]:
    """Combine two opinions by the reduced Dempster-Shafer rule (TMC definition 3.1).

    ``b = (b1 b2 + b1 u2 + b2 u1) / (1 - C)``, ``u = u1 u2 / (1 - C)`` with the conflict
    ``C = sum_{i != j} b1_i b2_j``. The normaliser is computed as
    ``1 - C = u1 + u2 - u1 u2 + sum_k b1_k b2_k`` (equal, since ``sum_k b_k = 1 - u``), which is
    positive whenever ``u1`` or ``u2`` is, with no cancellation. The vacuous opinion
    (``b = 0``, ``u = 1``) is the rule's identity.

    Args:
        b1: ``[B, K]`` belief masses of the first opinion.
        u1: ``[B]`` its uncertainty.
        b2: ``[B, K]`` belief masses of the second opinion.
        u2: ``[B]`` its uncertainty.

    Returns:
        ``(b, u)``, ``[B, K]`` and ``[B]``.
    """
    normaliser = u1 + u2 - u1 * u2 + (b1 * b2).sum(dim=-1)  # 1 - C, [B]
    b = (b1 * b2 + b1 * u2[:, None] + b2 * u1[:, None]) / normaliser[:, None]
    return b, u1 * u2 / normaliser


def evidential_loss(alpha: Tensor, target: Tensor, epoch_weight: float | Tensor = 1.0) -> Tensor:
    """TMC's loss of a Dirichlet ``alpha`` (Han et al. 2021, eq. 5-7), mean over the batch.

    ``L = sum_k y_k (psi(S) - psi(alpha_k)) + lambda_t KL(Dir(alpha~) || Dir(1))`` with
    ``alpha~ = y + (1 - y) * alpha`` (the target's evidence removed), ``psi`` the digamma
    function, ``S = sum_k alpha_k`` and ``lambda_t = epoch_weight`` (TMC anneals it as
    ``min(1, t / 10)`` over epochs ``t``). TMC sums this loss over the combined Dirichlet and each
    modality's own. :class:`EvidentialFusion` trains with the model's cross-entropy on the
    Dirichlet mean instead; this function is for a training loop that wants TMC's loss. The
    combined Dirichlet of an :class:`EvidentialFusion` output is
    ``alpha = exp(fused) * K / uncertainty`` (``S = K / u`` and ``fused = log(alpha / S)``).

    Args:
        alpha: ``[B, K]`` Dirichlet parameters (``>= 1`` for evidence; any positive values work).
        target: ``[B]`` class indices.
        epoch_weight: ``lambda_t``, the weight of the KL term.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: ``alpha`` is not ``[B, K]``, or ``target`` not ``[B]``.
    """
    if alpha.ndim != 2:
        raise ValueError(f"alpha: expected a [B, K] tensor, got shape {tuple(alpha.shape)}")
    if target.shape != alpha.shape[:1]:
        raise ValueError(
            f"target: expected shape [{alpha.shape[0]}] (class indices), got {tuple(target.shape)}"
        )
    classes = alpha.shape[1]
    y = F.one_hot(target.long(), classes).to(alpha.dtype)
    strength = alpha.sum(dim=1, keepdim=True)
    ace = (y * (torch.digamma(strength) - torch.digamma(alpha))).sum(dim=1)
    tilde = y + (1.0 - y) * alpha
    tilde_sum = tilde.sum(dim=1)
    kl = (
        torch.lgamma(tilde_sum)
        - torch.lgamma(torch.tensor(float(classes), dtype=alpha.dtype, device=alpha.device))
        - torch.lgamma(tilde).sum(dim=1)
        + ((tilde - 1.0) * (torch.digamma(tilde) - torch.digamma(tilde_sum)[:, None])).sum(dim=1)
    )
    return (ace + epoch_weight * kl).mean()


@register_fusion("evidential")
class EvidentialFusion(BaseFusion):
    """Trusted multi-view classification (TMC, Han et al. 2021): decision-level evidential fusion.

    Per modality ``m``: ``x_m`` (a map's global average pool, or the vector) ->
    ``f_m = Linear(C_m, embed_dim)`` (the modality vector of ``features``) -> ReLU ->
    ``Linear(embed_dim, K)`` -> softplus: the evidence ``e_m`` ``[B, K] >= 0``. TMC replaces
    the softmax by a non-negative activation (the paper names ReLU; its released code uses
    softplus, which we take: smooth, with a gradient everywhere). Then ``alpha_m = e_m + 1``,
    opinions ``(b_m, u_m)`` (:func:`opinion`), combined over the modalities in order by the
    reduced Dempster-Shafer rule (:func:`combine_opinions`), starting from the vacuous opinion
    ``(0, 1)``. The combined Dirichlet ``alpha = b S + 1``, ``S = K / u`` gives::

        fused = log(alpha / sum_k alpha_k)       # [B, K], log of the expected probabilities

    the joint branch's logits as they are (``decision_level``: the model adds no joint layer).
    The model's cross-entropy on them is the cross-entropy of the Dirichlet *mean*, not TMC's
    integrated loss with KL annealing (eq. 5-7), which :func:`evidential_loss` provides for a
    loop of your own. ``uncertainty`` is the combined ``u`` ``[B]`` in ``(0, 1]``.

    **Missing modality.** Its opinion is dropped: the combination runs over the present
    modalities only. Per sample this is combining with the vacuous opinion ``(b=0, u=1)``, the
    rule's identity; it is written as ``torch.where(present, combined, previous)``, so it is
    branch-free and masked == absent holds exactly. A sample with no modality gets the vacuous
    opinion: uniform probabilities, ``u = 1``.

    Args:
        features: modality -> :class:`~mmfusion.nn.FeatureSpec` (maps or vectors), fusion order.
        num_classes: ``K`` (required; the model builder passes it).
        embed_dim: Size of each modality vector ``f_m``.
        allow_missing: Accept inputs where a modality is absent.

    Attributes:
        proj: modality -> ``Linear(C_m, embed_dim)``.
        evidence: modality -> ``Linear(embed_dim, K)`` (before the softplus).
        out_features: ``K``.

    Shape:
        - features: modality -> ``[B, C, H, W]`` or ``[B, D]``.
        - fused: ``[B, K]`` log-probabilities; ``uncertainty``: ``[B]``; ``features`` of the
          output: modality -> ``f_m`` ``[B, embed_dim]`` (given modalities).

    Raises:
        ValueError: ``num_classes`` is not an int >= 2, or ``embed_dim`` not a positive int.

    Example:
        >>> from mmfusion.nn import create_fusion
        >>> specs = {"us": FeatureSpec("map", 8, (2, 2)), "labs": FeatureSpec("vector", 5)}
        >>> fusion = create_fusion("evidential", specs, num_classes=3, embed_dim=4)
        >>> out = fusion({"us": torch.randn(2, 8, 2, 2), "labs": torch.randn(2, 5)})
        >>> out.fused.shape, out.uncertainty.shape
        (torch.Size([2, 3]), torch.Size([2]))
    """

    decision_level = True
    kinds = ("map", "vector")
    min_modalities = 1
    max_modalities = None
    same_spatial = False
    reference = "Han et al. 2021, Trusted Multi-View Classification (TMC)"
    missing = "opinion dropped (vacuous b=0, u=1: the Dempster-Shafer identity)"
    compiles = True

    def __init__(
        self,
        features: Mapping[str, FeatureSpec],
        *,
        num_classes: int,
        embed_dim: int = 64,
        allow_missing: bool = True,
    ) -> None:
        super().__init__(features, allow_missing=allow_missing)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes: expected an int >= 2, got {num_classes!r}")
        self.embed_dim = check_embed_dim(embed_dim)
        self.num_classes = num_classes
        self.proj = nn.ModuleDict(
            {m: nn.Linear(spec.channels, embed_dim) for m, spec in self.specs.items()}
        )
        self.evidence = nn.ModuleDict(
            {m: nn.Linear(embed_dim, num_classes) for m in self.modalities}
        )
        self.out_features = num_classes

    def fuse(
        self,
        features: dict[str, Tensor],
        masks: dict[str, Tensor] | None,
        batch: int,
        return_attention: bool,
    ) -> FusionOutput:
        """Evidence per modality, Dempster-Shafer combination over the present ones."""
        present = self.presence(features, masks, batch)  # [B, M]
        ref = next(iter(features.values()))
        dtype = torch.promote_types(ref.dtype, torch.float32)  # opinions in >= float32
        b = torch.zeros(batch, self.num_classes, dtype=dtype, device=ref.device)
        u = torch.ones(batch, dtype=dtype, device=ref.device)  # the vacuous opinion
        vectors: dict[str, Tensor] = {}
        for k, name in enumerate(self.modalities):
            if name not in features:  # absent for every sample: nothing to combine
                continue
            x = features[name]
            pooled = x.mean(dim=(2, 3)) if x.ndim == 4 else x
            vector = self.proj[name](pooled)  # f_m [B, embed_dim]
            vectors[name] = vector
            evidence = F.softplus(self.evidence[name](F.relu(vector))).to(dtype)  # e_m >= 0
            b_m, u_m = opinion(evidence)
            b_new, u_new = combine_opinions(b, u, b_m, u_m)
            keep = present[:, k]
            b = torch.where(keep[:, None], b_new, b)
            u = torch.where(keep, u_new, u)
        # alpha = b S + 1 with S = K / u (u floored so that S stays finite in extreme cases)
        strength = self.num_classes / u.clamp_min(torch.finfo(dtype).eps ** 2)
        alpha = b * strength[:, None] + 1.0
        fused = torch.log(alpha) - torch.log(alpha.sum(dim=1, keepdim=True))
        return FusionOutput(fused=fused, features=vectors, uncertainty=u)
