"""A float64 numpy reference of the token fusions' parts, one sample at a time (tests only).

Written from the formulas (Vaswani et al. 2017; the sine-cosine positions of
:func:`mmfusion.nn.fusions.tokens.sincos_positions_2d`), reading the modules' parameters from their
``state_dict`` only: the token projection, LayerNorm, masked softmax attention with the null key,
the pre-norm block. Used by tests/test_fusion27_cross_attention.py and
tests/test_fusion27_bottleneck.py.
"""

from __future__ import annotations

import math
from math import erf

import numpy as np
import torch
from torch import nn


def params(module: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().double().numpy() for k, v in module.state_dict().items()}


def ref_positions(height: int, width: int, dim: int) -> np.ndarray:
    """Row-major 2-D sine-cosine codes: [sin(r w), cos(r w), sin(c w), cos(c w)], w_i = 1e4^(-i/n)."""
    n = dim // 4
    w = 10000.0 ** (-np.arange(n) / n)
    out = np.zeros((height * width, dim))
    for r in range(height):
        for c in range(width):
            out[r * width + c, :4 * n] = np.concatenate(
                [np.sin(r * w), np.cos(r * w), np.sin(c * w), np.cos(c * w)])
    return out


def ref_tokens(x: np.ndarray, p: dict, prefix: str) -> np.ndarray:
    """One sample's tokens: a map [C, H, W] -> [H*W, d]; a vector [D] -> [1, d]."""
    weight, bias, emb = p[f"{prefix}.proj.weight"], p[f"{prefix}.proj.bias"], p[f"{prefix}.modality"]
    if x.ndim == 1:
        return (weight @ x + bias + emb)[None]
    c, h, w = x.shape
    cells = x.reshape(c, h * w).T  # row-major positions
    return cells @ weight.T + bias + ref_positions(h, w, weight.shape[0]) + emb


def ref_norm(x: np.ndarray, p: dict, prefix: str, eps: float = 1e-5) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p[f"{prefix}.weight"] + p[f"{prefix}.bias"]


def ref_attention(q_in, kv_in, keep, p: dict, prefix: str, heads: int):
    """softmax(q k^T / sqrt(d_h)) v per head, keys + the null key; returns (out, weights [h, Lq, Lk+1])."""
    lin = lambda x, n: x @ p[f"{prefix}.{n}.weight"].T + p[f"{prefix}.{n}.bias"]  # noqa: E731
    q = lin(q_in, "q")
    k = np.vstack([lin(kv_in, "k"), p[f"{prefix}.null_key"][None]])
    v = np.vstack([lin(kv_in, "v"), p[f"{prefix}.null_value"][None]])
    keep = np.append(np.asarray(keep, bool), True)
    d = q.shape[1] // heads
    mixed, all_weights = [], []
    for h in range(heads):
        s = q[:, h * d:(h + 1) * d] @ k[:, h * d:(h + 1) * d].T / math.sqrt(d)
        s = np.where(keep[None], s, -np.inf)
        e = np.exp(s - s.max(axis=1, keepdims=True))
        w = e / e.sum(axis=1, keepdims=True)
        all_weights.append(w)
        mixed.append(w @ v[:, h * d:(h + 1) * d])
    return lin(np.hstack(mixed), "out"), np.stack(all_weights)


def ref_gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.vectorize(erf)(x / math.sqrt(2.0)))


def ref_block(x, context, keep, p: dict, prefix: str, heads: int):
    """Pre-norm block: x + Attn(LN(x), LN(ctx)), then x + MLP(LN(x))."""
    q = ref_norm(x, p, f"{prefix}.norm_q")
    kv = q if context is None else ref_norm(context, p, f"{prefix}.norm_kv")
    keep = np.ones(len(kv), bool) if keep is None else keep
    attended, weights = ref_attention(q, kv, keep, p, f"{prefix}.attention", heads)
    x = x + attended
    hidden = ref_gelu(ref_norm(x, p, f"{prefix}.norm_mlp") @ p[f"{prefix}.mlp.0.weight"].T
                      + p[f"{prefix}.mlp.0.bias"])
    return x + hidden @ p[f"{prefix}.mlp.3.weight"].T + p[f"{prefix}.mlp.3.bias"], weights


def randomize(module: nn.Module, seed: int, std: float = 0.5) -> None:
    """Every parameter (LayerNorms, null key/value, placeholders included) set to noise."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * std)
