"""Attention-bottleneck fusion (Nagrani et al. 2021, MBT): ``"bottleneck"``.

Each modality is a token sequence (:class:`~mmfusion.nn.fusions.tokens.ModalityTokens`); the
modalities exchange information only through a few shared *bottleneck* tokens ``z_fsn``
(Nagrani et al. 2021, section 3.2, eq. 8-9). In every fusion layer ``l`` each modality ``i`` runs
its own transformer layer over its tokens and the bottleneck tokens::

    [z_i^{l+1} ; z^_fsn,i^{l+1}] = Transformer_i^l([z_i^l ; z_fsn^l])        (eq. 8)
    z_fsn^{l+1} = Avg_i z^_fsn,i^{l+1}                                        (eq. 9)

Here the average of eq. 9 runs over the modalities PRESENT in each sample: every given modality's
update is computed for every sample (branch-free) and averaged with per-sample presence weights,
so an absent modality takes no part, and a sample with a masked modality gets exactly what it gets
with that modality left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
from torch import Tensor, nn

from mmfusion.nn.fusion import FusionOutput
from mmfusion.nn.fusions.base import BaseFusion, check_embed_dim
from mmfusion.nn.fusions.cross_attention import check_token_kwargs, zero_absent
from mmfusion.nn.fusions.tokens import AttentionBlock, ModalityTokens
from mmfusion.nn.registry import FeatureSpec, register_fusion

__all__ = ["BottleneckFusion"]


@register_fusion("bottleneck")
class BottleneckFusion(BaseFusion):
    """MBT: modalities exchange information only through shared bottleneck tokens.

    Tokens ``z_i`` ``[B, L_i, d]`` per modality and ``n_bottleneck`` learned bottleneck tokens
    ``z_fsn^0`` ``[n_bottleneck, d]`` shared by all. Each of the ``layers`` fusion layers applies,
    for every given modality ``i``, its own pre-norm self-attention
    :class:`~mmfusion.nn.fusions.tokens.AttentionBlock` to ``[z_i ; z_fsn]`` (eq. 8), and the new
    bottleneck tokens are the average of the modalities' updated bottleneck tokens over the
    modalities present in the sample (eq. 9). Output::

        f_i   = Linear_i(mean_tokens(LayerNorm_i(z_i^L)))                [B, embed_dim]
        f_fsn = Linear_fsn(mean_tokens(LayerNorm_fsn(z_fsn^L)))          [B, embed_dim]
        fused = [f_1, ..., f_M, f_fsn]      (f_fsn only with include_bottleneck=True)

    MBT pools a CLS token per modality and averages the modalities' logits; here each modality's
    tokens are mean-pooled into ``f_i`` (the consistency loss compares those), and the pooled
    bottleneck ``f_fsn`` (which only present modalities wrote to) is appended, so the joint head
    sees the fused representation itself.

    Missing modality: its update is left out of the average of eq. 9 (presence weights per sample:
    masked == absent exactly), and its slot of the fused vector is a learned placeholder.

    Args:
        features: modality -> :class:`~mmfusion.nn.FeatureSpec` (maps and/or vectors, 2 or more).
        embed_dim: Size of each modality's vector ``f_i``.
        dim: Token width ``d``.
        heads: Attention heads (divides ``dim``).
        layers: Fusion layers ``L``.
        n_bottleneck: Bottleneck tokens (MBT uses 4).
        include_bottleneck: Append the pooled bottleneck ``f_fsn`` to the fused vector.
        dropout: Dropout inside the blocks.
        allow_missing: Accept absent modalities (see :class:`BaseFusion`).

    Attributes:
        out_features: ``(len(modalities) + include_bottleneck) * embed_dim``.

    Example:
        >>> from mmfusion.nn import FeatureSpec
        >>> fusion = BottleneckFusion(
        ...     {"us": FeatureSpec("map", 8, (2, 2)), "labs": FeatureSpec("vector", 5)},
        ...     embed_dim=4, dim=8, heads=2)
        >>> fusion({"us": torch.randn(3, 8, 2, 2), "labs": torch.randn(3, 5)}).fused.shape
        torch.Size([3, 12])
    """

    kinds = ("map", "vector")
    min_modalities = 2
    max_modalities = None
    same_spatial = False
    reference = "Nagrani et al. 2021, Attention Bottlenecks for Multimodal Fusion (MBT)"
    missing = "left out of the bottleneck average; learned placeholder in fused"
    compiles = True

    def __init__(
        self,
        features: Mapping[str, FeatureSpec],
        *,
        embed_dim: int = 64,
        dim: int = 64,
        heads: int = 4,
        layers: int = 2,
        n_bottleneck: int = 4,
        include_bottleneck: bool = True,
        dropout: float = 0.0,
        allow_missing: bool = True,
    ) -> None:
        super().__init__(features, allow_missing=allow_missing)
        check_embed_dim(embed_dim)
        check_token_kwargs(dim, heads, dropout)
        check_embed_dim(layers, "layers")
        check_embed_dim(n_bottleneck, "n_bottleneck")
        if not isinstance(include_bottleneck, bool):
            raise TypeError(f"include_bottleneck: expected a bool, got {include_bottleneck!r}")
        self.embed_dim = embed_dim
        self.dim = dim
        self.include_bottleneck = include_bottleneck
        mods = self.modalities
        self.tokens = nn.ModuleDict({m: ModalityTokens(self.specs[m], dim) for m in mods})
        self.bottleneck = nn.Parameter(torch.randn(n_bottleneck, dim) * 0.02)
        self.layers = nn.ModuleList([
            nn.ModuleDict({m: AttentionBlock(dim, heads, dropout=dropout) for m in mods})
            for _ in range(layers)
        ])
        self.norm = nn.ModuleDict({m: nn.LayerNorm(dim) for m in mods})
        self.proj = nn.ModuleDict({m: nn.Linear(dim, embed_dim) for m in mods})
        self.norm_bottleneck = nn.LayerNorm(dim)
        self.proj_bottleneck = nn.Linear(dim, embed_dim)
        self.placeholders = self.make_placeholders(embed_dim)
        self.out_features = (len(mods) + int(include_bottleneck)) * embed_dim

    def exchange(
        self, tokens: dict[str, Tensor], present: Tensor
    ) -> tuple[dict[str, Tensor], Tensor]:
        """The fusion layers: eq. 8 per modality, eq. 9 over the present modalities.

        Args:
            tokens: modality -> ``[B, L_i, d]`` tokens of the given modalities.
            present: ``[B, M]`` bool presence in ``modalities`` order.

        Returns:
            The final tokens of each given modality and the final bottleneck tokens
            ``[B, n_bottleneck, d]``.
        """
        ref = next(iter(tokens.values()))
        batch = ref.shape[0]
        column = {m: i for i, m in enumerate(self.modalities)}
        z = self.bottleneck.to(ref.dtype).expand(batch, -1, -1)
        zero = torch.zeros((), dtype=ref.dtype, device=ref.device)
        for layer in cast(list[nn.ModuleDict], self.layers):
            total = torch.zeros_like(z)
            count = torch.zeros(batch, 1, 1, dtype=ref.dtype, device=ref.device)
            updated = {}
            for m, x in tokens.items():
                out, _ = layer[m](torch.cat([x, z], dim=1))  # eq. 8
                length = x.shape[1]
                updated[m] = out[:, :length]
                keep = present[:, column[m], None, None]
                total = total + torch.where(keep, out[:, length:], zero)
                count = count + keep.to(ref.dtype)
            z = torch.where(count > 0, total / count.clamp_min(1.0), z)  # eq. 9, present only
            tokens = updated
        return tokens, z

    def fuse(
        self,
        features: dict[str, Tensor],
        masks: dict[str, Tensor] | None,
        batch: int,
        return_attention: bool,
    ) -> FusionOutput:
        """Tokens, bottleneck exchange, pooling, placeholders (no attention maps).

        Args:
            features: modality -> tensor, the given modalities only.
            masks: ``None`` or modality -> bool ``[B]``.
            batch: ``B``.
            return_attention: Accepted; the method returns no attention maps.
        """
        present = self.presence(features, masks, batch)
        column = {m: i for i, m in enumerate(self.modalities)}
        tokens = {
            m: self.tokens[m](zero_absent(features[m], present[:, column[m]]))
            for m in self.modalities if m in features
        }
        tokens, z = self.exchange(tokens, present)
        vectors = {m: self.proj[m](self.norm[m](x).mean(dim=1)) for m, x in tokens.items()}
        parts = [self.concat_with_placeholders(vectors, present, batch)]
        if self.include_bottleneck:
            parts.append(self.proj_bottleneck(self.norm_bottleneck(z).mean(dim=1)))
        return FusionOutput(fused=torch.cat(parts, dim=1), features=vectors)
