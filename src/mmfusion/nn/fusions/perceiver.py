"""Perceiver-style latent fusion: a shared latent array cross-attends to every present modality.

Jaegle et al. 2021, "Perceiver: General Perception with Iterative Attention" (ICML), section 2
and figure 1: a small learned latent array ``z`` ``[N, d]`` (``N`` = ``n_latents``) reads a large
input array ``x`` ``[L, d]`` by cross-attention (queries from the latents, keys and values from
the input), then a latent transformer (self-attention among the ``N`` latents) processes it; the
cross-attend + latent transformer pair may be repeated, the cross-attends after the first sharing
their weights and every instance of the latent transformer sharing its weights (section 2.1,
"weight sharing"). The classifier reads the average of the latents (section 2.1, last paragraph).

Here the input array is the concatenation of the tokens of the given modalities
(:class:`~mmfusion.nn.fusions.tokens.ModalityTokens`: a map's positions with 2-D sine-cosine
positions and a learned modality embedding, a vector as one token), as in the multimodal use of
Perceiver IO (Jaegle et al. 2022) and HighMMT (Liang et al. 2022): one latent array for all
modalities, for any number ``M`` of modalities.

Missing modality: the tokens of a modality absent for a sample are masked keys of the
cross-attention (:class:`~mmfusion.nn.fusions.tokens.MaskedAttention`: softmax weight exactly 0),
so the sample's latents read only its present modalities - the same as leaving the modality out.
The attention's always-present learned null key/value defines the (unused) case of a sample with
no modality at all.

Cost: each cross-attend is ``O(N L d)`` and each latent self-attention ``O(N^2 d)``, so the cost is
LINEAR in the total number of tokens ``L = sum_m H_m W_m`` (plus one per vector modality), against
the ``O(L_a L_b d)`` (quadratic) of the pairwise ``"cross_attention"`` fusion.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmfusion.nn.fusion import FusionOutput
from mmfusion.nn.fusions.base import BaseFusion, check_embed_dim
from mmfusion.nn.fusions.tokens import AttentionBlock, ModalityTokens, masked_mean
from mmfusion.nn.registry import FeatureSpec, register_fusion

__all__ = ["PerceiverFusion"]


def _check_count(value: object, name: str, minimum: int) -> int:
    """``value`` if it is an int ``>= minimum``; otherwise a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return value


def _check_heads(value: object, name: str, dim: int) -> int:
    """``value`` if it is a positive int that divides ``dim``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or dim % value:
        raise ValueError(f"{name}: expected a positive int that divides dim={dim}, got {value!r}")
    return value


@register_fusion("perceiver")
class PerceiverFusion(BaseFusion):
    """A learned latent array cross-attending to the concatenated tokens of the present modalities.

    For a sample with tokens ``x = [x_1; ...; x_M]`` (``[L, d]``, each modality's tokens from its
    own :class:`~mmfusion.nn.fusions.tokens.ModalityTokens`) and key mask ``k`` (``True`` where the
    token's modality is present), with ``z_0`` the learned latents ``[N, d]``::

        for t in 1..iterations:
            z = CrossBlock_t(z, x, k)         # z + Attn(LN(z), LN(x)), then z + MLP(LN(z))
            z = LatentBlock_s(z) for s in 1..self_layers   # latent self-attention
        fused    = Linear(mean_n z_n)                      # [embed_dim]
        features = {m: Linear_f(mean of x_m)}               # [embed_dim] per given modality

    ``CrossBlock_t`` is one block for ``t = 1`` and one shared block for every ``t >= 2``; the
    ``self_layers`` latent blocks are shared by all iterations (Jaegle et al. 2021, section 2.1).
    ``fused`` has ``out_features = embed_dim`` (the mean of the latents, not the flattened
    latents: the size does not grow with ``n_latents``).

    Args:
        features: modality -> :class:`~mmfusion.nn.FeatureSpec` (maps and/or vectors, any
            number of modalities, maps of any sizes).
        embed_dim: Size of ``fused`` and of each modality vector in ``features``.
        allow_missing: Accept absent modalities.
        dim: Width ``d`` of the latents and tokens.
        n_latents: Number ``N`` of latents.
        heads: Heads of the latent self-attention; must divide ``dim``.
        cross_heads: Heads of the cross-attention (1 in the paper); must divide ``dim``.
        self_layers: Latent self-attention blocks after each cross-attend (``0``: none).
        iterations: Cross-attends (each followed by the latent blocks).
        mlp_ratio: Hidden width of the blocks' MLPs, in multiples of ``dim``.
        dropout: Dropout of the blocks.

    Shape:
        - features: modality -> ``[B, C, H, W]`` or ``[B, D]``; available: modality -> ``[B]``.
        - fused: ``[B, embed_dim]``; features: modality -> ``[B, embed_dim]``; attention (when
          asked for): map modality -> ``[B, 1, H, W]``, the cross-attention weight on each
          position averaged over latents, heads and iterations (0 where the modality is absent).

    Raises:
        ValueError: A size, count or ratio out of range (the argument is named).

    Example:
        >>> from mmfusion.nn import FeatureSpec, create_fusion
        >>> specs = {"us": FeatureSpec("map", 8, (2, 2)), "labs": FeatureSpec("vector", 5)}
        >>> fusion = create_fusion("perceiver", specs, embed_dim=8, dim=16, n_latents=4)
        >>> out = fusion({"us": torch.randn(3, 8, 2, 2), "labs": torch.randn(3, 5)})
        >>> tuple(out.fused.shape), sorted(out.features)
        ((3, 8), ['labs', 'us'])
    """

    kinds = ("map", "vector")
    min_modalities = 1
    max_modalities = None
    same_spatial = False
    reference = "Jaegle et al. 2021, Perceiver: General perception with iterative attention"
    missing = "absent modality's tokens are masked keys of the latents' cross-attention (weight 0)"
    compiles = True

    def __init__(
        self,
        features: Mapping[str, FeatureSpec],
        *,
        embed_dim: int = 64,
        allow_missing: bool = True,
        dim: int = 64,
        n_latents: int = 8,
        heads: int = 4,
        cross_heads: int = 1,
        self_layers: int = 1,
        iterations: int = 1,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(features, allow_missing=allow_missing)
        embed_dim = check_embed_dim(embed_dim)
        dim = check_embed_dim(dim, "dim")
        n_latents = _check_count(n_latents, "n_latents", 1)
        heads = _check_heads(heads, "heads", dim)
        cross_heads = _check_heads(cross_heads, "cross_heads", dim)
        self_layers = _check_count(self_layers, "self_layers", 0)
        iterations = _check_count(iterations, "iterations", 1)
        if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, int | float) or mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio: expected a positive number, got {mlp_ratio!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
            raise ValueError(f"dropout: expected a number in [0, 1), got {dropout!r}")
        self.dim, self.n_latents, self.iterations = dim, n_latents, iterations
        self.tokens = nn.ModuleDict({m: ModalityTokens(spec, dim) for m, spec in features.items()})
        self.latents = nn.Parameter(torch.empty(n_latents, dim))
        nn.init.trunc_normal_(self.latents, std=0.02, a=-2.0, b=2.0)
        # cross[0]: the first cross-attend; cross[1]: shared by every later one (section 2.1)
        self.cross = nn.ModuleList(
            AttentionBlock(dim, cross_heads, mlp_ratio, dropout) for _ in range(min(iterations, 2))
        )
        self.latent_blocks = nn.ModuleList(
            AttentionBlock(dim, heads, mlp_ratio, dropout) for _ in range(self_layers)
        )
        self.head = nn.Linear(dim, embed_dim)
        self.feature_proj = nn.Linear(dim, embed_dim)
        self.out_features = embed_dim

    def fuse(
        self,
        features: dict[str, Tensor],
        masks: dict[str, Tensor] | None,
        batch: int,
        return_attention: bool,
    ) -> FusionOutput:
        """Cross-attend the latents to the present modalities' tokens (see the class docstring)."""
        present = self.presence(features, masks, batch)  # [B, M]
        tokens, keep, spans = [], [], []
        vectors: dict[str, Tensor] = {}
        start = 0
        for i, name in enumerate(self.modalities):
            if name not in features:
                continue
            x = features[name]
            t = self.tokens[name](x)  # [B, L_m, d]
            k = present[:, i:i + 1].expand(batch, t.shape[1])  # [B, L_m]
            vectors[name] = self.feature_proj(masked_mean(t, k))
            tokens.append(t)
            keep.append(k)
            if x.ndim == 4:
                spans.append((name, start, int(x.shape[2]), int(x.shape[3])))
            start += t.shape[1]
        context = torch.cat(tokens, dim=1)  # [B, L, d]
        key_mask = torch.cat(keep, dim=1)  # [B, L]
        latents, weights = self.process(context, key_mask, return_attention)
        fused = self.head(latents.mean(dim=1))
        attention = None
        if return_attention and weights is not None:
            attention = {
                name: weights[:, s:s + h * w].reshape(batch, 1, h, w) for name, s, h, w in spans
            }
        return FusionOutput(fused=fused, features=vectors, attention=attention)

    def process(
        self, context: Tensor, key_mask: Tensor | None, return_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """The latents after the cross-attends and latent blocks, for one token array.

        Args:
            context: Tokens ``[B, L, d]``.
            key_mask: ``[B, L]`` bool (``True``: attend) or ``None``.
            return_weights: Also return the cross-attention weights.

        Returns:
            Latents ``[B, N, d]`` and (when asked for) the cross-attention weight of every token,
            averaged over latents, heads and iterations, ``[B, L]`` (null key dropped).
        """
        batch = context.shape[0]
        # a copy, not an expand: FlopCounterMode's module tracker fails on a view of a parameter
        # passed to a module under no_grad / inference_mode (torch 2.14)
        latents = self.latents.to(context.dtype).repeat(batch, 1, 1)
        total = None
        for step in range(self.iterations):
            block = self.cross[min(step, len(self.cross) - 1)]
            latents, weights = block(latents, context, key_mask, return_weights)
            if weights is not None:  # [B, heads, N, L + 1] -> [B, L]
                mean = weights[..., :-1].mean(dim=(1, 2))
                total = mean if total is None else total + mean
            for layer in self.latent_blocks:
                latents, _ = layer(latents)
        return latents, (None if total is None else total / self.iterations)
