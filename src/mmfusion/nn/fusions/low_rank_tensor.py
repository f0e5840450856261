"""Low-rank multimodal fusion (LMF): tensor fusion with modality-specific low-rank factors.

Liu et al. 2018, "Efficient Low-rank Multimodal Fusion with Modality-Specific Factors" (ACL).
Tensor fusion (Zadeh et al. 2017, TFN) appends a 1 to each modality vector, ``z_m = [x_m, 1]``,
takes the outer product ``Z = z_1 (x) z_2 (x) ... (x) z_M`` and maps it linearly,
``h = W . Z + b`` (the 1s keep the unimodal and lower-order interaction terms). LMF writes the
weight tensor as a rank-``r`` sum of products of per-modality factors,
``W = sum_{i=1}^r W_1^(i) (x) ... (x) W_M^(i)``, so that (LMF, eq. 6 with its bias)

    h = sum_{i=1}^r  prod_{m=1}^M (W_m^(i) . z_m)  +  b

(``prod``: element-wise over the ``D`` outputs) is computed without building ``Z``: it is exactly
TFN with that weight tensor (tested against the full outer product).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmfusion.nn.fusion import FusionOutput
from mmfusion.nn.fusions.base import BaseFusion, check_embed_dim
from mmfusion.nn.registry import FeatureSpec, register_fusion

__all__ = ["LowRankTensorFusion"]


@register_fusion("low_rank_tensor")
class LowRankTensorFusion(BaseFusion):
    """Low-rank tensor fusion (LMF, Liu et al. 2018) of ``M`` modalities.

    Each modality is first reduced to a vector ``x_m`` of ``embed_dim`` values: a map
    ``[B, C, H, W]`` by global average pooling then ``Linear(C, embed_dim)``, a vector ``[B, D]``
    by ``Linear(D, embed_dim)`` (LMF's modality sub-networks, here one layer). With
    ``z_m = [x_m, 1]`` (``[B, embed_dim + 1]``) and the factors
    ``W_m`` (``[r, embed_dim + 1, embed_dim]``, one ``nn.Parameter`` per modality, in
    :attr:`factors`)::

        h = sum_{i=1}^r  prod_m (z_m @ W_m[i])  +  b          # [B, embed_dim]

    which equals ``W . (z_1 (x) ... (x) z_M) + b`` with
    ``W[a_1, ..., a_M, o] = sum_i prod_m W_m[i, a_m, o]`` (TFN with a rank-``r`` weight).
    MultiBench's ``LowRankTensorFusion`` keeps its factors in a plain list, so neither
    ``state_dict`` nor an optimizer built from ``parameters()`` sees them; here they are
    registered parameters.

    **Missing modality.** An absent modality (left out, or flagged ``False`` in ``available``) gets
    ``x_m = 0``, so ``z_m = [0, ..., 0, 1]`` and its factor contributes only its last row
    ``W_m[i, -1]``: of the tensor-fusion polynomial, exactly the terms that do not involve ``x_m``
    remain, each rank's product scaled by a learned per-output gate. The last rows are
    initialised to 1, so at initialisation an absent modality is a neutral factor (a product
    with 1). Masked and absent are the same computation (``torch.where`` on ``x_m``).

    Args:
        features: modality -> :class:`~mmfusion.nn.FeatureSpec` (maps or vectors), fusion order.
        embed_dim: Size of each ``x_m`` and of the fused vector ``h``.
        rank: Rank ``r`` of the weight tensor (LMF uses 1 to 16; 4 by default).
        allow_missing: Accept inputs where a modality is absent.

    Attributes:
        factors: modality -> ``W_m`` ``[rank, embed_dim + 1, embed_dim]`` (``nn.ParameterDict``).
        bias: ``b`` ``[embed_dim]``.
        out_features: ``embed_dim``.

    Shape:
        - features: modality -> ``[B, C, H, W]`` or ``[B, D]``.
        - fused: ``[B, embed_dim]``; ``features`` of the output: modality -> ``x_m``
          ``[B, embed_dim]`` (given modalities, before the absent ones are zeroed).

    Raises:
        ValueError: ``embed_dim`` or ``rank`` is not a positive int.

    Example:
        >>> from mmfusion.nn import create_fusion
        >>> specs = {"us": FeatureSpec("map", 8, (2, 2)), "labs": FeatureSpec("vector", 5)}
        >>> fusion = create_fusion("low_rank_tensor", specs, embed_dim=4, rank=2)
        >>> fusion({"us": torch.randn(3, 8, 2, 2), "labs": torch.randn(3, 5)}).fused.shape
        torch.Size([3, 4])
    """

    kinds = ("map", "vector")
    min_modalities = 1
    max_modalities = None
    same_spatial = False
    reference = "Liu et al. 2018, Efficient Low-rank Multimodal Fusion with Modality-Specific Factors"
    missing = "x_m = 0, z_m = [0, ..., 0, 1]: the tensor-product terms without m"
    compiles = True

    def __init__(
        self,
        features: Mapping[str, FeatureSpec],
        *,
        embed_dim: int = 64,
        rank: int = 4,
        allow_missing: bool = True,
    ) -> None:
        super().__init__(features, allow_missing=allow_missing)
        self.embed_dim = check_embed_dim(embed_dim)
        self.rank = check_embed_dim(rank, "rank")
        self.proj = nn.ModuleDict(
            {m: nn.Linear(spec.channels, embed_dim) for m, spec in self.specs.items()}
        )
        self.factors = nn.ParameterDict(
            {m: nn.Parameter(self._init_factor(rank, embed_dim)) for m in self.modalities}
        )
        self.bias = nn.Parameter(torch.zeros(embed_dim))
        self.out_features = embed_dim

    @staticmethod
    def _init_factor(rank: int, embed_dim: int) -> Tensor:
        """``[rank, embed_dim + 1, embed_dim]``: Xavier-normal rows for ``x_m``, ones for the 1."""
        factor = torch.empty(rank, embed_dim + 1, embed_dim)
        nn.init.normal_(factor, std=math.sqrt(2.0 / (2 * embed_dim + 1)))
        with torch.no_grad():
            factor[:, -1, :] = 1.0
        return factor

    def fuse(
        self,
        features: dict[str, Tensor],
        masks: dict[str, Tensor] | None,
        batch: int,
        return_attention: bool,
    ) -> FusionOutput:
        """``h = sum_i prod_m (z_m @ W_m[i]) + b`` over the modalities; see the class docstring."""
        present = self.presence(features, masks, batch)  # [B, M]
        ref = next(iter(features.values()))
        vectors: dict[str, Tensor] = {}
        product: Tensor | None = None  # [B, r, D]
        for k, name in enumerate(self.modalities):
            factor = self.factors[name]
            if name in features:
                x = features[name]
                pooled = x.mean(dim=(2, 3)) if x.ndim == 4 else x
                vector = self.proj[name](pooled)  # x_m [B, D]
                vectors[name] = vector
                kept = torch.where(present[:, k, None], vector, torch.zeros_like(vector))
                # z_m @ W_m[i] = x_m @ W_m[i, :-1] + W_m[i, -1], for every rank i at once.
                term = torch.einsum("bd,rdo->bro", kept, factor[:, :-1, :].to(kept.dtype))
                term = term + factor[:, -1, :].to(kept.dtype)
            else:  # z_m = [0, ..., 0, 1]: the last row only
                term = factor[:, -1, :].to(ref.dtype).expand(batch, self.rank, self.embed_dim)
            product = term if product is None else product * term
        assert product is not None  # at least one modality
        fused = product.sum(dim=1) + self.bias.to(product.dtype)
        return FusionOutput(fused=fused, features=vectors)
