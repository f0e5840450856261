"""The "cross_attention" fusion (MulT-style, Tsai et al. 2019) and the masked attention under it.

The formula is checked against a float64 numpy re-implementation, one sample at a time
(tests/_fusion27_token_reference.py: tokens with sine-cosine positions, masked softmax with the
null key, pre-norm blocks; ref_cross_attention here); the null key, exact zero weights of masked
keys, batch independence (with the nn.MultiheadAttention-on-[B, D] pattern as the contrast),
masked == absent and the attention maps are checked on their own.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _fusion27_token_reference import params, randomize, ref_block, ref_norm, ref_tokens
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mmfusion.nn import FeatureSpec, create_fusion
from mmfusion.nn.fusions.cross_attention import CrossAttentionFusion
from mmfusion.nn.fusions.tokens import MaskedAttention


def ref_cross_attention(fusion: CrossAttentionFusion, x: dict, present: dict, heads: int):
    """The fused vector of ONE sample (x: modality -> array without the batch axis)."""
    p = params(fusion)
    mods = fusion.modalities
    tokens = {m: ref_tokens(x[m], p, f"tokens.{m}") for m in mods}
    parts = []
    for m in mods:
        if not present[m]:
            parts.append(p[f"placeholders.{m}"])
            continue
        others = [n for n in mods if n != m]
        context = np.vstack([tokens[n] for n in others])
        keep = np.concatenate([np.full(len(tokens[n]), present[n]) for n in others])
        h = tokens[m]
        for i in range(fusion.depth):
            h, _ = ref_block(h, context, keep, p, f"cross.{m}.{i}", heads)
        if fusion.self_blocks is not None:
            h, _ = ref_block(h, None, None, p, f"self_blocks.{m}", heads)
        pooled = ref_norm(h, p, f"norm.{m}").mean(0)
        parts.append(p[f"proj.{m}.weight"] @ pooled + p[f"proj.{m}.bias"])
    return np.concatenate(parts)


# ---------------------------------------------------------------------------------------------
# MaskedAttention: the formula, the null key, exact zeros
# ---------------------------------------------------------------------------------------------


def identity_attention(dim: int, heads: int) -> MaskedAttention:
    att = MaskedAttention(dim, heads)
    with torch.no_grad():
        for lin in (att.q, att.k, att.v, att.out):
            lin.weight.copy_(torch.eye(dim))
            lin.bias.zero_()
        att.null_key.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
        att.null_value.copy_(torch.tensor([10.0, 20.0, 30.0, 40.0]))
    return att


def test_masked_attention_matches_a_hand_written_softmax() -> None:
    """Identity projections: per head h, softmax(q_h [k_h; n_h]^T / sqrt(2)) [v_h; nv_h]."""
    att = identity_attention(4, heads=2)
    q = torch.tensor([[[1.0, 0.0, 0.0, 1.0], [0.0, 2.0, 1.0, 0.0]]])  # [1, 2, 4]
    k = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [3.0, 0.0, 1.0, 1.0], [0.0, 1.0, 2.0, 0.0]]])
    mask = torch.tensor([[True, False, True]])
    out, weights = att(q, k, mask, return_weights=True)

    keys = np.vstack([k[0].numpy(), [[0.5, -1.0, 2.0, 0.0]]])  # + the null key
    values = np.vstack([k[0].numpy(), [[10.0, 20.0, 30.0, 40.0]]])  # + the null value
    expected = np.zeros((2, 4))
    for h in range(2):
        cols = slice(2 * h, 2 * h + 2)
        scores = q[0].numpy()[:, cols] @ keys[:, cols].T / np.sqrt(2.0)
        scores[:, 1] = -np.inf  # the masked key
        w = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(weights[0, h].detach().numpy(), w, atol=1e-6)
        expected[:, cols] = w @ values[:, cols]
    np.testing.assert_allclose(out[0].detach().numpy(), expected, atol=1e-5)
    assert torch.all(weights[..., 1] == 0.0)  # exactly zero, not merely small


def test_all_keys_masked_reads_the_projected_null_value() -> None:
    torch.manual_seed(0)
    att = MaskedAttention(8, heads=2)
    randomize(att, seed=1)
    q, k = torch.randn(3, 5, 8), torch.randn(3, 4, 8)
    out, weights = att(q, k, torch.zeros(3, 4, dtype=torch.bool), return_weights=True)
    null = att.out(att.null_value)  # out(null_value): what every query reads
    torch.testing.assert_close(out, null.expand(3, 5, 8), atol=1e-6, rtol=0)
    assert torch.all(weights[..., :4] == 0.0) and torch.all(weights[..., 4] == 1.0)
    empty, _ = att(q, k[:, :0])  # no key at all: the same
    torch.testing.assert_close(empty, out, atol=1e-6, rtol=0)


def test_a_masked_key_is_an_absent_key_even_if_it_holds_nan() -> None:
    torch.manual_seed(0)
    att = MaskedAttention(8, heads=4)
    randomize(att, seed=2)
    q, k = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    mask = torch.tensor([[True, False, True, True, False], [True] * 5])
    out, _ = att(q, k, mask)
    alone, _ = att(q[:1], k[:1, [0, 2, 3]])
    torch.testing.assert_close(out[:1], alone, atol=1e-6, rtol=0)
    garbage = k.clone()
    garbage[0, 1] = float("nan")
    garbage[0, 4] = float("inf")
    out_garbage, _ = att(q, garbage, mask)
    torch.testing.assert_close(out_garbage, out, atol=0, rtol=0)


# ---------------------------------------------------------------------------------------------
# The fusion
# ---------------------------------------------------------------------------------------------

SPECS = {"us": FeatureSpec("map", 3, (2, 3)), "labs": FeatureSpec("vector", 2),
         "swe": FeatureSpec("map", 2, (2, 2))}


def inputs(batch: int, specs=SPECS, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shape = lambda s: (batch, s.channels, *s.spatial) if s.kind == "map" else (batch, s.channels)  # noqa: E731
    return {m: torch.randn(shape(s), generator=gen) for m, s in specs.items()}


@pytest.mark.parametrize(("depth", "self_attention"), [(1, False), (2, True)])
def test_fused_matches_the_numpy_reference(depth: int, self_attention: bool) -> None:
    fusion = create_fusion("cross_attention", SPECS, embed_dim=3, dim=4, heads=2, depth=depth,
                           self_attention=self_attention).eval()
    randomize(fusion, seed=depth)
    x = inputs(4)
    available = {"labs": torch.tensor([True, False, True, False]),
                 "swe": torch.tensor([True, True, False, False])}  # sample 3: us alone
    with torch.no_grad():
        fused = fusion(x, available).fused.double().numpy()
    for i in range(4):
        present = {m: bool(available[m][i]) if m in available else True for m in SPECS}
        expected = ref_cross_attention(fusion, {m: v[i].double().numpy() for m, v in x.items()},
                                       present, heads=2)
        np.testing.assert_allclose(fused[i], expected, atol=1e-5, rtol=0)


def test_alone_the_queries_read_only_the_null_value() -> None:
    """No other modality present: the crossmodal layer adds out(null_value) to every token."""
    fusion = CrossAttentionFusion(SPECS, embed_dim=3, dim=4, heads=2, self_attention=False).eval()
    randomize(fusion, seed=5)
    x = inputs(2)
    block = fusion.cross["us"][0]
    with torch.no_grad():
        tokens = fusion.tokens["us"](x["us"])
        after = tokens + block.attention.out(block.attention.null_value)
        expected = fusion.proj["us"](fusion.norm["us"](after + block.mlp(block.norm_mlp(after)))
                                     .mean(dim=1))
        out = fusion({"us": x["us"]})
    torch.testing.assert_close(out.features["us"], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.fused[:, 3:6], fusion.placeholders["labs"].expand(2, 3))


def test_multihead_attention_on_batch_by_dim_tensors_mixes_the_samples() -> None:
    """The contrast: fusilli's CrossmodalMultiheadAttention passes [B, D] tensors to
    nn.MultiheadAttention. A 2-D input is an UNBATCHED sequence (L, E) there, so the B rows are
    the B tokens of ONE sequence and each sample's query attends to every sample's key: a
    sample's output changes when the OTHER samples of its batch change."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2).eval()
    query, context = torch.randn(4, 8), torch.randn(4, 8)
    with torch.no_grad():
        out, weights = mha(query, context, context)
        as_sequence, _ = mha(query[:, None], context[:, None], context[:, None])  # L=B, N=1
        changed = context.clone()
        changed[1:] = torch.randn(3, 8)  # other samples only
        out_changed, _ = mha(query, changed, changed)
    assert weights.shape == (4, 4)  # sample 0's query weighs the 4 samples' keys
    torch.testing.assert_close(out, as_sequence[:, 0])  # it is one sequence of B tokens
    assert (out[0] - out_changed[0]).abs().max() > 1e-3  # sample 0 depends on samples 1..3


def test_a_sample_does_not_depend_on_the_rest_of_its_batch() -> None:
    fusion = create_fusion("cross_attention", SPECS, embed_dim=4, dim=8, heads=2, depth=2).eval()
    x = inputs(5)
    changed = {m: v.clone() for m, v in x.items()}
    for v in changed.values():
        v[1:] = torch.randn_like(v[1:]) * 3
    available = {"swe": torch.tensor([True, False, True, True, False])}
    with torch.no_grad():
        out = fusion(x, available).fused
        out_changed = fusion(changed, available).fused
        alone = fusion({m: v[:1] for m, v in x.items()}, {"swe": available["swe"][:1]}).fused
    torch.testing.assert_close(out_changed[0], out[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(alone[0], out[0], atol=1e-6, rtol=0)


def test_masked_equals_absent_per_sample_even_with_nan_inputs() -> None:
    fusion = create_fusion("cross_attention", SPECS, embed_dim=4, dim=8, heads=2).eval()
    x = inputs(6, seed=3)
    flags = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1], [1, 0, 0]],
                         dtype=torch.bool)
    available = {m: flags[:, i] for i, m in enumerate(SPECS)}
    for m, v in x.items():  # an absent sample's input may hold anything
        v[~available[m]] = float("nan")
    with torch.no_grad():
        out = fusion(x, available)
        for i in range(6):
            alone = fusion({m: v[i:i + 1] for m, v in x.items() if available[m][i]}).fused
            torch.testing.assert_close(out.fused[i:i + 1], alone, atol=1e-5, rtol=0)
    assert torch.isfinite(out.fused).all()


def test_attention_maps_show_where_the_other_modalities_look() -> None:
    specs = {"us": FeatureSpec("map", 3, (2, 3)), "labs": FeatureSpec("vector", 2)}
    fusion = create_fusion("cross_attention", specs, embed_dim=4, dim=8, heads=2).eval()
    randomize(fusion, seed=7)
    x = inputs(3, specs)
    available = {"us": torch.tensor([True, False, True]), "labs": torch.tensor([True, True, False])}
    with torch.no_grad():
        out = fusion(x, available, return_attention=True)
        # the labs token's weights on the us tokens, by the attention module itself
        block = fusion.cross["labs"][0]
        tokens = {m: fusion.tokens[m](x[m]) for m in specs}
        _, weights = block.attention(block.norm_q(tokens["labs"]), block.norm_kv(tokens["us"]),
                                     available["us"][:, None].expand(3, 6), return_weights=True)
    assert set(out.attention) == {"us"} and out.attention["us"].shape == (3, 1, 2, 3)
    expected = weights.mean(dim=(1, 2))[0, :6].reshape(1, 2, 3)
    torch.testing.assert_close(out.attention["us"][0], expected, atol=1e-6, rtol=0)
    assert torch.all(out.attention["us"][1:] == 0.0)  # us absent / labs (the query) absent
    assert fusion(x).attention is None


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match=r"heads: expected a positive int that divides dim=6"):
        CrossAttentionFusion(SPECS, dim=6, heads=4)
    with pytest.raises(ValueError, match="depth: expected a positive int, got 0"):
        CrossAttentionFusion(SPECS, depth=0)
    with pytest.raises(ValueError, match="fuses 2 to any number"):
        CrossAttentionFusion({"us": SPECS["us"]})
    with pytest.raises(TypeError, match="self_attention: expected a bool"):
        CrossAttentionFusion(SPECS, self_attention=1)


@settings(max_examples=12, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 3)), min_size=2, max_size=3),
    batch=st.integers(1, 3),
    depth=st.integers(1, 2),
    seed=st.integers(0, 2**16),
)
def test_any_token_counts(sizes: list[tuple[int, int]], batch: int, depth: int, seed: int) -> None:
    """Maps of 1..9 tokens and vectors (one token), 2-3 modalities, random per-sample presence."""
    specs = {f"m{i}": FeatureSpec("map", 2, (h, w)) if h else FeatureSpec("vector", w + 1)
             for i, (h, w) in enumerate(sizes)}
    torch.manual_seed(seed)
    fusion = CrossAttentionFusion(specs, embed_dim=3, dim=4, heads=2, depth=depth).eval()
    x = inputs(batch, specs, seed)
    flags = torch.rand(batch, len(specs)) < 0.6
    flags[torch.arange(batch), torch.randint(len(specs), (batch,))] = True  # >= 1 per sample
    available = {m: flags[:, i] for i, m in enumerate(specs)}
    with torch.no_grad():
        out = fusion(x, available, return_attention=True)
        alone = fusion({m: v[:1] for m, v in x.items() if available[m][0]}).fused
    assert out.fused.shape == (batch, 3 * len(specs)) and torch.isfinite(out.fused).all()
    assert set(out.features) == set(specs)
    assert set(out.attention) == {m for m, s in specs.items() if s.kind == "map"}
    torch.testing.assert_close(out.fused[:1], alone, atol=1e-5, rtol=0)
