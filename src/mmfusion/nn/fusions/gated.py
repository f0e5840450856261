"""The gated multimodal unit (Arevalo et al. 2017) for N modalities, with renormalised gates.

Arevalo et al. 2017 ("Gated multimodal units for information fusion", ICLR workshop, section 3,
eq. (1)-(4)) fuse a visual and a textual vector as::

    h_v = tanh(W_v x_v)          h_t = tanh(W_t x_t)
    z = sigmoid(W_z [x_v; x_t])  h = z * h_v + (1 - z) * h_t

:class:`GatedFusion` generalises the gate to ``M`` modalities with a softmax over modalities of
linear scores; registered as the fusion ``"gated"``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmfusion.nn.fusion import FusionOutput
from mmfusion.nn.fusions.base import BaseFusion, check_embed_dim
from mmfusion.nn.registry import FeatureSpec, register_fusion

__all__ = ["GATES", "GatedFusion"]

GATES = ("unit", "modality")
"""The gate kinds: one gate per modality and hidden unit (the paper's), or one per modality."""


@register_fusion("gated")
class GatedFusion(BaseFusion):
    """Gated multimodal unit for ``M`` modalities: ``fused = sum_m z_m * tanh(W_m x_m)``.

    With ``x_m`` the global average pool of a map ``[B, C_m, H, W]`` or the vector ``[B, D_m]``
    itself:

    * ``h_m = tanh(W_m x_m)`` ``[B, E]`` (``E = embed_dim``; paper eq. (1)-(2));
    * scores ``s = W_s [x_1; ...; x_M]`` ``[B, M, E]`` (``gate="unit"``: one gate per modality and
      hidden unit, as the paper's vector ``z``) or ``[B, M, 1]`` (``gate="modality"``: one weight
      per modality, a modality-weighted sum);
    * gates ``z = softmax_m(s)``, over the modalities (paper eq. (3) generalised);
    * ``fused = sum_m z_m * h_m`` ``[B, E]`` (paper eq. (4)); ``out_features = E``.

    For two modalities this is the paper's unit: ``softmax(s_1, s_2)_1 = 1 / (1 + exp(s_2 - s_1))
    = sigmoid(s_1 - s_2)``, so the paper's ``z = sigmoid(W_z [x_1; x_2])`` is the softmax gate
    with ``W_z = W_{s,1} - W_{s,2}`` (and ``1 - z`` its second entry). The paper writes no
    biases; ``bias=False`` drops them here too.

    A missing modality: for a sample where ``m`` is absent, ``x_m`` is replaced by a learned
    placeholder (zeros at first; chosen with ``torch.where``, so a masked modality's values are
    never read and masked == absent holds bit for bit) in both ``h_m`` and the score input, and its
    score is set to ``-inf`` before the softmax: its gate is exactly 0 and the present modalities'
    gates are renormalised to sum to 1. A sample with no modality present gets ``fused = 0``.

    Args:
        features: modality -> :class:`~mmfusion.nn.FeatureSpec` (maps or vectors).
        embed_dim: ``E``, the size of each ``h_m`` and of ``fused``.
        gate: ``"unit"`` (default, the paper's per-unit gate) or ``"modality"``.
        bias: Give the linear layers biases (the paper's equations have none).
        allow_missing: Accept absent modalities.

    Shape:
        - ``features[m]``: ``[B, C_m, H, W]`` or ``[B, D_m]``.
        - ``fused``: ``[B, embed_dim]``; ``features[m]`` (``h_m``): ``[B, embed_dim]``.
        - :meth:`gates`: ``[B, M, embed_dim]`` (``"unit"``) or ``[B, M, 1]`` (``"modality"``).

    Raises:
        ValueError: A bad ``embed_dim`` or ``gate`` (named, with the value that came).
        TypeError: A ``bias`` that is not a bool.

    Example:
        >>> from mmfusion.nn import FeatureSpec, create_fusion
        >>> specs = {"us": FeatureSpec("map", 16, (4, 4)), "labs": FeatureSpec("vector", 5)}
        >>> fusion = create_fusion("gated", specs, embed_dim=8)
        >>> out = fusion({"us": torch.randn(2, 16, 4, 4), "labs": torch.randn(2, 5)})
        >>> out.fused.shape, fusion.out_features
        (torch.Size([2, 8]), 8)
    """

    kinds = ("map", "vector")
    min_modalities = 2
    max_modalities = None
    same_spatial = False
    reference = "Arevalo et al. 2017, Gated multimodal units for information fusion"
    missing = "gate 0 (score -inf), present gates renormalised; placeholder input"
    compiles = True

    def __init__(
        self,
        features: Mapping[str, FeatureSpec],
        *,
        embed_dim: int = 64,
        gate: str = "unit",
        bias: bool = True,
        allow_missing: bool = True,
    ) -> None:
        super().__init__(features, allow_missing=allow_missing)
        embed_dim = check_embed_dim(embed_dim)
        if gate not in GATES:
            raise ValueError(f"gate: expected 'unit' or 'modality', got {gate!r}")
        if not isinstance(bias, bool):
            raise TypeError(f"bias: expected a bool, got {bias!r}")
        self.embed_dim = embed_dim
        self.gate = gate
        self.out_features = embed_dim
        count = len(self.modalities)
        self.gate_width = embed_dim if gate == "unit" else 1
        self.hidden = nn.ModuleDict(
            {m: nn.Linear(s.channels, embed_dim, bias=bias) for m, s in self.specs.items()}
        )
        total = sum(s.channels for s in self.specs.values())
        self.scores = nn.Linear(total, count * self.gate_width, bias=bias)
        self.placeholders = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(s.channels)) for m, s in self.specs.items()}
        )

    def inputs(
        self, features: Mapping[str, Tensor], presence: Tensor, batch: int
    ) -> list[Tensor]:
        """The ``x_m`` of every modality, in order, a placeholder where absent.

        Args:
            features: modality -> map or vector, the given modalities.
            presence: ``[B, M]`` bool.
            batch: ``B``.

        Returns:
            ``M`` tensors ``[B, D_m]`` (``D_m = C_m`` for a map: its global average pool).
        """
        ref = next(iter(features.values()))
        out = []
        for i, m in enumerate(self.modalities):
            placeholder = self.placeholders[m].to(ref.dtype)
            if m not in features:
                out.append(placeholder.expand(batch, placeholder.shape[0]))
                continue
            x = features[m]
            x = x.mean(dim=(2, 3)) if x.ndim == 4 else x
            out.append(torch.where(presence[:, i, None], x, placeholder))
        return out

    def _gates(self, xs: list[Tensor], presence: Tensor) -> Tensor:
        scores = self.scores(torch.cat(xs, dim=1)).unflatten(1, (len(xs), self.gate_width))
        mask = presence[:, :, None]
        z = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
        return torch.where(mask, z, torch.zeros_like(z))  # a sample with none present: all 0

    def gates(
        self, features: Mapping[str, Tensor], available: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """The gates ``z`` of a call (unchecked inputs are checked as in ``forward``).

        Returns:
            ``[B, M, embed_dim]`` (``gate="unit"``) or ``[B, M, 1]``, in modality order: 0 for
            an absent modality, summing to 1 over the present ones.
        """
        batch, masks = self.check_inputs(features, available)
        presence = self.presence(features, masks, batch)
        return self._gates(self.inputs(features, presence, batch), presence)

    def fuse(
        self,
        features: dict[str, Tensor],
        masks: dict[str, Tensor] | None,
        batch: int,
        return_attention: bool,
    ) -> FusionOutput:
        """``sum_m z_m * tanh(W_m x_m)`` over the present modalities.

        Args:
            features: modality -> map or vector, the given modalities.
            masks: ``None`` or modality -> bool ``[B]``.
            batch: ``B``.
            return_attention: Ignored (the gates are no spatial map; see :meth:`gates`).

        Returns:
            ``fused`` ``[B, embed_dim]``, ``features`` (``h_m`` of the given modalities, from
            their own values), ``attention`` ``None``.
        """
        presence = self.presence(features, masks, batch)
        xs = self.inputs(features, presence, batch)
        z = self._gates(xs, presence)
        vectors: dict[str, Tensor] = {}
        hidden = []
        for i, m in enumerate(self.modalities):
            # h of the placeholder: finite, and weighted by a gate of exactly 0
            stand_in = torch.tanh(self.hidden[m](self.placeholders[m].to(z.dtype)))
            if m in features:
                x = features[m]
                vectors[m] = torch.tanh(self.hidden[m](x.mean(dim=(2, 3)) if x.ndim == 4 else x))
                hidden.append(torch.where(presence[:, i, None], vectors[m], stand_in))
            else:
                hidden.append(stand_in.expand(batch, self.embed_dim))
        fused = (z * torch.stack(hidden, dim=1)).sum(dim=1)
        return FusionOutput(fused=fused, features=vectors, attention=None)
