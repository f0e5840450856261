"""Tokens for the attention-based fusions: maps and vectors as token sequences, masked attention.

* :func:`sincos_positions_2d` - fixed 2-D sine-cosine positions (Vaswani et al. 2017, eq. in
  section 3.5, applied to rows and columns as in MAE / ViT variants): ``[H * W, d]``.
* :class:`ModalityTokens` - one modality's map ``[B, C, H, W]`` -> ``[B, H * W, d]`` tokens
  (a linear projection of each position's channels, plus its 2-D position and a learned modality
  embedding); a vector ``[B, D]`` -> one token ``[B, 1, d]``.
* :class:`MaskedAttention` - multi-head attention of queries ``[B, Lq, d]`` over keys
  ``[B, Lk, d]`` with a key mask ``[B, Lk]`` (``True``: attend), written with plain matrix
  products so that every sample is computed on its own (no attention across the batch) and the
  graph exports to ONNX. It has one learned *null* key/value that is always attended: a query
  whose keys are all masked (every modality it may look at is absent) reads the null value instead
  of a NaN, and a masked key contributes exactly what an absent key contributes (its softmax
  weight is exactly zero).
* :class:`AttentionBlock` - pre-norm transformer block: masked attention plus an MLP, each with a
  residual connection.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmfusion.nn.registry import FeatureSpec

__all__ = ["AttentionBlock", "MaskedAttention", "ModalityTokens", "masked_mean", "sincos_positions_2d"]


def sincos_positions_2d(height: int, width: int, dim: int, *, device: torch.device | None = None,
                        dtype: torch.dtype = torch.float32) -> Tensor:
    """Fixed 2-D sine-cosine position codes, row-major.

    The first half of the ``dim`` channels encode the row, the second half the column; each half
    is ``[sin(p w_0), ..., sin(p w_{n-1}), cos(p w_0), ..., cos(p w_{n-1})]`` with
    ``w_i = 10000^(-i / n)`` and ``n = dim // 4``. Channels beyond ``4 n`` are zero.

    Args:
        height: ``H``.
        width: ``W``.
        dim: Size ``d`` of a code.
        device: Device of the result.
        dtype: Floating-point type of the result.

    Returns:
        ``[H * W, d]``: the code of position ``(r, c)`` in row ``r * W + c``.

    Example:
        >>> sincos_positions_2d(2, 3, 8).shape
        torch.Size([6, 8])
    """
    n = dim // 4
    out = torch.zeros(height * width, dim, device=device, dtype=torch.float32)
    if n == 0:
        return out.to(dtype)
    freq = torch.pow(10000.0, -torch.arange(n, device=device, dtype=torch.float32) / n)
    rows = torch.arange(height, device=device, dtype=torch.float32).repeat_interleave(width)
    cols = torch.arange(width, device=device, dtype=torch.float32).repeat(height)
    for k, pos in enumerate((rows, cols)):
        angle = pos[:, None] * freq[None, :]
        out[:, 2 * n * k:2 * n * k + n] = torch.sin(angle)
        out[:, 2 * n * k + n:2 * n * (k + 1)] = torch.cos(angle)
    return out.to(dtype)


class ModalityTokens(nn.Module):
    """One modality's features as a token sequence of width ``dim``.

    A map ``[B, C, H, W]``: each position's ``C`` channels are projected to ``dim``
    (``Linear(C, dim)``), plus the fixed 2-D position code of the position
    (:func:`sincos_positions_2d`) and a learned modality embedding: ``[B, H * W, dim]``.
    A vector ``[B, D]``: ``Linear(D, dim)`` plus the modality embedding: one token
    ``[B, 1, dim]``.

    Args:
        spec: What the modality's encoder gives.
        dim: Token width ``d``.

    Example:
        >>> tokens = ModalityTokens(FeatureSpec("map", 16, (3, 4)), dim=8)
        >>> tokens(torch.randn(2, 16, 3, 4)).shape
        torch.Size([2, 12, 8])
    """

    def __init__(self, spec: FeatureSpec, dim: int) -> None:
        super().__init__()
        self.spec = spec
        self.dim = dim
        self.proj = nn.Linear(spec.channels, dim)
        self.modality = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.modality, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, H * W, d]``, or ``[B, D]`` -> ``[B, 1, d]``."""
        if self.spec.kind == "vector":
            return (self.proj(x) + self.modality)[:, None, :]
        height, width = int(x.shape[2]), int(x.shape[3])
        tokens = self.proj(x.flatten(2).transpose(1, 2))
        positions = sincos_positions_2d(height, width, self.dim, device=x.device, dtype=tokens.dtype)
        return tokens + positions + self.modality

    def count(self) -> int | None:
        """Number of tokens ``L`` it gives (``None`` for a map of unknown size)."""
        if self.spec.kind == "vector":
            return 1
        if self.spec.spatial is None:
            return None
        return self.spec.spatial[0] * self.spec.spatial[1]


class MaskedAttention(nn.Module):
    """Multi-head attention with a key mask and one always-present learned null key/value.

    ``softmax(q k^T / sqrt(d_h))`` over the ``Lk`` keys plus the null key, masked keys getting
    ``-inf`` (weight exactly 0), then the weighted sum of the values, per head, then an output
    projection (Vaswani et al. 2017, eq. 1 and section 3.2.2).

    Args:
        dim: Width ``d`` of queries, keys and values.
        heads: Number of heads; must divide ``dim``.

    Shape:
        - query: ``[B, Lq, d]``; context: ``[B, Lk, d]``; key_mask: ``[B, Lk]`` bool or ``None``.
        - output: ``([B, Lq, d], weights [B, heads, Lq, Lk + 1] or None)``; the last key of
          ``weights`` is the null key.
    """

    def __init__(self, dim: int, heads: int = 4) -> None:
        super().__init__()
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 or dim % heads:
            raise ValueError(f"heads: expected a positive int that divides dim={dim}, got {heads!r}")
        self.dim = dim
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.null_key = nn.Parameter(torch.zeros(dim))
        self.null_value = nn.Parameter(torch.zeros(dim))

    def _split(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, self.dim // self.heads).transpose(1, 2)

    def forward(
        self,
        query: Tensor,
        context: Tensor,
        key_mask: Tensor | None = None,
        return_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` to ``context`` (keys where ``key_mask`` is ``True``)."""
        batch = query.shape[0]
        null_k = self.null_key.to(context.dtype).expand(batch, 1, self.dim)
        null_v = self.null_value.to(context.dtype).expand(batch, 1, self.dim)
        q = self._split(self.q(query))
        k = self._split(torch.cat([self.k(context), null_k], dim=1))
        v = self._split(torch.cat([self.v(context), null_v], dim=1))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.dim // self.heads)
        if key_mask is not None:
            keep = torch.cat(
                [key_mask.to(torch.bool),
                 torch.ones(batch, 1, dtype=torch.bool, device=key_mask.device)], dim=1
            )
            scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
            # a masked key's value is zeroed too: its weight is exactly 0, and 0 * inf or
            # 0 * NaN (an absent sample's garbage) would not be
            v = v.masked_fill(~keep[:, None, :, None], 0.0)
        weights = scores.softmax(dim=-1)
        mixed = (weights @ v).transpose(1, 2).reshape(batch, query.shape[1], self.dim)
        return self.out(mixed), (weights if return_weights else None)


class AttentionBlock(nn.Module):
    """Pre-norm transformer block: ``x + Attn(LN(x), LN(ctx))``, then ``x + MLP(LN(x))``.

    Self-attention when ``context`` is ``None`` (the queries' own tokens, masked by
    ``key_mask``); cross-attention otherwise.

    Args:
        dim: Token width ``d``.
        heads: Attention heads.
        mlp_ratio: Hidden width of the MLP, in multiples of ``dim``.
        dropout: Dropout after the attention and inside the MLP.

    Shape:
        - x: ``[B, Lq, d]``; context: ``[B, Lk, d]`` or ``None``; key_mask: ``[B, Lk]``
          (``[B, Lq]`` for self-attention) or ``None``.
        - output: ``[B, Lq, d]`` (and the attention weights when asked for).
    """

    def __init__(self, dim: int, heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attention = MaskedAttention(dim, heads)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = max(1, int(round(dim * mlp_ratio)))
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        key_mask: Tensor | None = None,
        return_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """One block; returns the new tokens and (optionally) the attention weights."""
        q = self.norm_q(x)
        kv = q if context is None else self.norm_kv(context)
        attended, weights = self.attention(q, kv, key_mask, return_weights)
        x = x + self.dropout(attended)
        return x + self.mlp(self.norm_mlp(x)), weights


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean of the tokens where ``mask`` is ``True``; zeros where no token is.

    Masked tokens are never read (a NaN there does not reach the mean).

    Args:
        tokens: ``[B, L, d]``.
        mask: ``[B, L]`` bool.

    Returns:
        ``[B, d]``.

    Example:
        >>> masked_mean(torch.tensor([[[1.0], [3.0]]]), torch.tensor([[True, False]]))
        tensor([[1.]])
    """
    keep = mask.to(torch.bool)[..., None]
    total = torch.where(keep, tokens, torch.zeros((), dtype=tokens.dtype, device=tokens.device))
    return total.sum(dim=1) / keep.to(tokens.dtype).sum(dim=1).clamp_min(1.0)

