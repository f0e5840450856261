"""Cross-attention between token sequences, MulT-style (Tsai et al. 2019): ``"cross_attention"``.

Each modality becomes a token sequence (:class:`~mmfusion.nn.fusions.tokens.ModalityTokens`: a
map's positions with their 2-D positions, or one token for a vector). Every modality's tokens then
*query* the tokens of the other modalities through a crossmodal transformer, the MulT crossmodal
attention ``CM_{beta -> alpha}`` (Tsai et al. 2019, section 3.2, eq. 1-2, and the crossmodal
transformer of section 3.2, Figure 3): queries from the target modality ``alpha``, keys and values
from the source modalities' low-level tokens ``Z_beta^[0]`` at every layer. Here the sources of one
target are all the other modalities, concatenated, with a key mask, so a sample's absent modality
is never attended and N modalities cost one transformer per target instead of one per pair. A
self-attention block over the target's own tokens follows (MulT's self-attention transformer over
the crossmodal outputs, section 3.3), then the tokens are mean-pooled and projected to
``embed_dim``.

Every attention is computed per sample with
:class:`~mmfusion.nn.fusions.tokens.MaskedAttention` on ``[B, L, d]`` tensors: no sample attends
to another sample of its batch (unlike passing ``[B, D]`` tensors to ``nn.MultiheadAttention``,
which reads them as one unbatched sequence of ``B`` tokens).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
from torch import Tensor, nn

from mmfusion.nn.fusion import FusionOutput
from mmfusion.nn.fusions.base import BaseFusion, check_embed_dim
from mmfusion.nn.fusions.tokens import AttentionBlock, ModalityTokens
from mmfusion.nn.registry import FeatureSpec, register_fusion

__all__ = ["CrossAttentionFusion", "check_token_kwargs", "zero_absent"]


def check_token_kwargs(dim: object, heads: object, dropout: object) -> None:
    """Check the token width, head count and dropout shared by the token fusions.

    Raises:
        ValueError: Naming the argument, with what was expected and what came.
    """
    width = check_embed_dim(dim, "dim")
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 or width % heads:
        raise ValueError(f"heads: expected a positive int that divides dim={dim}, got {heads!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout: expected a float in [0, 1), got {dropout!r}")


def zero_absent(x: Tensor, present: Tensor) -> Tensor:
    """``x`` with the samples where ``present`` (bool ``[B]``) is ``False`` set to zero.

    An absent sample's input may hold anything (NaN included); zeroing it keeps every value finite,
    and its tokens are masked or weighted out afterwards, so this changes no present sample.
    """
    keep = present.reshape(present.shape[0], *([1] * (x.ndim - 1)))
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))


@register_fusion("cross_attention")
class CrossAttentionFusion(BaseFusion):
    """MulT-style crossmodal attention: each modality's tokens attend to the other modalities'.

    For each modality ``alpha`` with tokens ``X_alpha`` ``[B, L_alpha, d]`` and the concatenated
    tokens ``X_others`` ``[B, sum L_beta, d]`` of the other given modalities (key mask: a sample's
    absent modality's tokens are masked)::

        H^0 = X_alpha
        H^i = AttentionBlock_i(H^{i-1}, context=X_others, key_mask)      i = 1..depth
        H   = SelfAttentionBlock(H^depth)                                (if self_attention)
        f_alpha = Linear(mean_tokens(LayerNorm(H)))                      [B, embed_dim]

    ``AttentionBlock`` is a pre-norm block, ``H + Attn(LN(H), LN(X_others))`` then
    ``H + MLP(LN(H))``: MulT's crossmodal transformer layer (Tsai et al. 2019, section 3.2,
    the equations of Figure 3), keys and values from the sources' input tokens at every layer.
    The fused vector is ``[f_1, ..., f_M]`` in modality order.

    Missing modality: a sample's absent modality's tokens are masked as keys for the others (weight
    exactly 0, the same as leaving them out); a modality with no other modality present attends
    only to the attention's learned null key; the absent modality's own slot of the fused vector is
    a learned placeholder. Masked == absent per sample.

    Attention maps (``return_attention=True``): for each given map modality, ``[B, 1, H, W]``:
    the attention weight that the other present modalities' queries put on each position of its
    map, averaged over heads, over each query modality's tokens, over the ``depth`` layers, then
    over the present query modalities (zeros where the modality is absent or no other is present).

    Args:
        features: modality -> :class:`~mmfusion.nn.FeatureSpec` (maps and/or vectors, 2 or more).
        embed_dim: Size of each modality's vector ``f_m``.
        dim: Token width ``d``.
        heads: Attention heads (divides ``dim``).
        depth: Crossmodal attention layers per modality.
        self_attention: Add a self-attention block over each modality's tokens after the
            crossmodal layers.
        dropout: Dropout inside the blocks.
        allow_missing: Accept absent modalities (see :class:`BaseFusion`).

    Attributes:
        out_features: ``len(modalities) * embed_dim``.

    Example:
        >>> from mmfusion.nn import FeatureSpec
        >>> fusion = CrossAttentionFusion(
        ...     {"us": FeatureSpec("map", 8, (2, 2)), "labs": FeatureSpec("vector", 5)},
        ...     embed_dim=4, dim=8, heads=2)
        >>> fusion({"us": torch.randn(3, 8, 2, 2), "labs": torch.randn(3, 5)}).fused.shape
        torch.Size([3, 8])
    """

    kinds = ("map", "vector")
    min_modalities = 2
    max_modalities = None
    same_spatial = False
    reference = (
        "Tsai et al. 2019, Multimodal Transformer for Unaligned Multimodal Language Sequences "
        "(MulT)"
    )
    missing = "tokens masked as keys (null key if none left); learned placeholder in fused"
    compiles = True

    def __init__(
        self,
        features: Mapping[str, FeatureSpec],
        *,
        embed_dim: int = 64,
        dim: int = 64,
        heads: int = 4,
        depth: int = 1,
        self_attention: bool = True,
        dropout: float = 0.0,
        allow_missing: bool = True,
    ) -> None:
        super().__init__(features, allow_missing=allow_missing)
        check_embed_dim(embed_dim)
        check_token_kwargs(dim, heads, dropout)
        check_embed_dim(depth, "depth")
        if not isinstance(self_attention, bool):
            raise TypeError(f"self_attention: expected a bool, got {self_attention!r}")
        self.embed_dim = embed_dim
        self.dim = dim
        self.depth = depth
        mods = self.modalities
        self.tokens = nn.ModuleDict({m: ModalityTokens(self.specs[m], dim) for m in mods})
        self.cross = nn.ModuleDict({
            m: nn.ModuleList([AttentionBlock(dim, heads, dropout=dropout) for _ in range(depth)])
            for m in mods
        })
        self.self_blocks = (
            nn.ModuleDict({m: AttentionBlock(dim, heads, dropout=dropout) for m in mods})
            if self_attention else None
        )
        self.norm = nn.ModuleDict({m: nn.LayerNorm(dim) for m in mods})
        self.proj = nn.ModuleDict({m: nn.Linear(dim, embed_dim) for m in mods})
        self.placeholders = self.make_placeholders(embed_dim)
        self.out_features = len(mods) * embed_dim

    def fuse(
        self,
        features: dict[str, Tensor],
        masks: dict[str, Tensor] | None,
        batch: int,
        return_attention: bool,
    ) -> FusionOutput:
        """Tokens, crossmodal attention per target modality, pooling, placeholders.

        Args:
            features: modality -> tensor, the given modalities only.
            masks: ``None`` or modality -> bool ``[B]``.
            batch: ``B``.
            return_attention: Also return the attention maps of the map modalities.
        """
        present = self.presence(features, masks, batch)  # [B, M]
        column = {m: i for i, m in enumerate(self.modalities)}
        given = [m for m in self.modalities if m in features]
        tokens = {m: self.tokens[m](zero_absent(features[m], present[:, column[m]])) for m in given}
        key_masks = {m: present[:, column[m], None].expand(-1, tokens[m].shape[1]) for m in given}

        vectors: dict[str, Tensor] = {}
        received: dict[str, Tensor] = {}  # key modality -> summed attention [B, L] over queries
        for m in given:
            others = [n for n in given if n != m]
            h = tokens[m]
            if others:
                context = torch.cat([tokens[n] for n in others], dim=1)
                key_mask = torch.cat([key_masks[n] for n in others], dim=1)
            else:  # nothing to attend to but the null key
                context, key_mask = h[:, :0], key_masks[m][:, :0]
            layer_weights = []
            for block in cast(nn.ModuleList, self.cross[m]):
                h, weights = block(h, context, key_mask, return_attention)
                if weights is not None:
                    layer_weights.append(weights.mean(dim=(1, 2)))  # [B, Lk + 1]
            if self.self_blocks is not None:
                h, _ = self.self_blocks[m](h)
            vectors[m] = self.proj[m](self.norm[m](h).mean(dim=1))
            if layer_weights:
                mean = torch.stack(layer_weights).mean(dim=0)
                weight = present[:, column[m], None].to(mean.dtype)  # absent queries count 0
                start = 0
                for n in others:
                    stop = start + tokens[n].shape[1]
                    share = torch.where(weight > 0, mean[:, start:stop], torch.zeros_like(mean[:, :1]))
                    received[n] = received[n] + share if n in received else share
                    start = stop

        fused = self.concat_with_placeholders(vectors, present, batch)
        attention = None
        if return_attention:
            attention = {}
            for n in given:
                x = features[n]
                if x.ndim != 4 or n not in received:
                    continue
                others_present = torch.stack(
                    [present[:, column[m]] for m in given if m != n], dim=1
                ).sum(dim=1, keepdim=True).to(x.dtype)
                mean = received[n] / others_present.clamp_min(1.0)
                attention[n] = mean.reshape(batch, 1, x.shape[2], x.shape[3])
        return FusionOutput(fused=fused, features=vectors, attention=attention)
