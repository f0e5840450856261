"""The Perceiver-style latent fusion (issue 27): formula, masking, batching, N modalities, cost."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from mmfusion.nn.fusions.perceiver import PerceiverFusion
from mmfusion.nn.fusions.tokens import sincos_positions_2d
from mmfusion.nn.registry import FeatureSpec, create_fusion

SPECS = {
    "us": FeatureSpec("map", 6, (2, 3)),
    "swe": FeatureSpec("map", 4, (2, 2)),
    "labs": FeatureSpec("vector", 5),
}


def tiny(specs=SPECS, seed: int = 0, **kwargs) -> PerceiverFusion:
    torch.manual_seed(seed)
    kwargs = {"embed_dim": 8, "dim": 8, "n_latents": 3, "heads": 2, **kwargs}
    return create_fusion("perceiver", specs, **kwargs).eval()


def inputs(batch: int, specs=SPECS, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, s.channels, *(s.spatial or ()), generator=g)
            for m, s in specs.items()}


def run(fusion, x, available=None, attention=False):
    with torch.no_grad():
        return fusion(x, available, attention)


# -- the formula, by hand ---------------------------------------------------------------------

def _identity(linear: torch.nn.Linear) -> None:
    with torch.no_grad():
        linear.weight.copy_(torch.eye(linear.out_features, linear.in_features))
        linear.bias.zero_()


def _ln(v: np.ndarray) -> np.ndarray:
    return (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + 1e-5)


def test_one_latent_one_head_cross_attention_by_hand() -> None:
    """z' = z + sum_j w_j LN(x_j), w = softmax([LN(z).LN(x_j) / sqrt(d)]_j + [0 (null key)])."""
    specs = {"a": FeatureSpec("vector", 3), "b": FeatureSpec("map", 3, (1, 2))}
    fusion = create_fusion("perceiver", specs, embed_dim=3, dim=3, n_latents=1, heads=1,
                           cross_heads=1, self_layers=0).eval()
    assert torch.equal(sincos_positions_2d(1, 2, 3), torch.zeros(2, 3))  # d=3: no position code
    block = fusion.cross[0]
    with torch.no_grad():
        for tok in fusion.tokens.values():
            _identity(tok.proj)
            tok.modality.zero_()
        for lin in (block.attention.q, block.attention.k, block.attention.v, block.attention.out,
                    fusion.head, fusion.feature_proj):
            _identity(lin)
        block.attention.null_key.zero_()
        block.attention.null_value.zero_()
        block.mlp[-1].weight.zero_()  # the MLP adds exactly 0
        block.mlp[-1].bias.zero_()
        fusion.latents.copy_(torch.tensor([[0.5, -1.0, 2.0]]))
    a = np.array([[1.0, 2.0, -0.5], [0.0, -1.0, 1.5]], np.float32)  # [B=2, 3]
    b = np.array([[[[0.3, -2.0]], [[1.0, 0.0]], [[-1.0, 0.5]]],
                  [[[2.0, 1.0]], [[-1.0, 0.0]], [[0.2, 0.4]]]], np.float32)  # [2, 3, 1, 2]
    avail = {"b": torch.tensor([True, False])}
    out = run(fusion, {"a": torch.from_numpy(a), "b": torch.from_numpy(b)}, avail, True)

    z = np.array([0.5, -1.0, 2.0])
    for i in range(2):
        keys = [a[i]] + ([b[i, :, 0, 0], b[i, :, 0, 1]] if i == 0 else [])
        k = _ln(np.stack(keys).astype(np.float64))
        scores = np.append(k @ _ln(z) / math.sqrt(3), 0.0)  # the null key's score is 0
        w = np.exp(scores) / np.exp(scores).sum()
        expected = z + w[:-1] @ k  # the null value is 0
        np.testing.assert_allclose(out.fused[i].numpy(), expected, rtol=1e-5, atol=1e-5)
        b_weights = w[1:3] if i == 0 else np.zeros(2)
        np.testing.assert_allclose(out.attention["b"][i, 0, 0].numpy(), b_weights, atol=1e-6)
    # features: the mean of the modality's own tokens (zeros for the sample where it is absent)
    np.testing.assert_allclose(out.features["b"][0].numpy(), b[0, :, 0].mean(-1), atol=1e-6)
    assert torch.equal(out.features["b"][1], torch.zeros(3))
    np.testing.assert_allclose(out.features["a"].numpy(), a, atol=1e-6)
    assert "a" not in out.attention  # a vector has no map


# -- missing modalities -----------------------------------------------------------------------

def test_masked_modality_gets_weight_zero_and_its_inputs_change_nothing() -> None:
    fusion = tiny(iterations=2)
    x = inputs(4)
    avail = {"swe": torch.tensor([True, False, True, False]),
             "us": torch.tensor([True, True, False, True])}
    out = run(fusion, x, avail, attention=True)
    assert torch.equal(out.attention["swe"][[1, 3]], torch.zeros(2, 1, 2, 2))
    assert torch.equal(out.attention["us"][2], torch.zeros(1, 2, 3))
    assert out.attention["swe"][[0, 2]].min() > 0
    noisy = dict(x)
    noisy["swe"] = x["swe"].clone()
    noisy["swe"][[1, 3]] = 100 * torch.randn(2, 4, 2, 2)
    noisy["us"] = x["us"].clone()
    noisy["us"][2] = -50.0
    again = run(fusion, noisy, avail)
    assert torch.equal(again.fused, out.fused)


def test_masked_equals_absent_per_sample_three_modalities() -> None:
    fusion = tiny(self_layers=2, iterations=3)
    x = inputs(5)
    flags = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=torch.bool)
    avail = {m: flags[:, i] for i, m in enumerate(fusion.modalities)}
    out = run(fusion, x, avail)
    for i in range(5):
        alone = {m: x[m][i:i + 1] for j, m in enumerate(fusion.modalities) if flags[i, j]}
        ref = run(fusion, alone)
        torch.testing.assert_close(out.fused[i:i + 1], ref.fused, atol=1e-5, rtol=0)
        for m in alone:
            torch.testing.assert_close(out.features[m][i:i + 1], ref.features[m], atol=1e-5, rtol=0)


def test_a_modality_left_out_entirely() -> None:
    fusion = tiny()
    x = inputs(3)
    out = run(fusion, {"us": x["us"], "labs": x["labs"]}, attention=True)
    assert out.fused.shape == (3, 8) and set(out.features) == {"us", "labs"}
    assert set(out.attention) == {"us"}
    masked = run(fusion, x, {"swe": torch.zeros(3, dtype=torch.bool)})
    torch.testing.assert_close(masked.fused, out.fused, atol=1e-5, rtol=0)


# -- batching, order, N -----------------------------------------------------------------------

def test_batch_independence() -> None:
    fusion = tiny()
    x = inputs(6)
    out = run(fusion, x)
    for i in (0, 3, 5):
        alone = run(fusion, {m: v[i:i + 1] for m, v in x.items()})
        torch.testing.assert_close(out.fused[i:i + 1], alone.fused, atol=1e-5, rtol=0)
    # other samples changed: sample 0 unchanged
    other = {m: torch.cat([v[:1], torch.randn_like(v[1:])]) for m, v in x.items()}
    torch.testing.assert_close(run(fusion, other).fused[0], out.fused[0], atol=1e-5, rtol=0)


def test_fused_output_does_not_depend_on_the_modality_order() -> None:
    """The latents read a SET of tokens: the concatenation order of the modalities is irrelevant."""
    fusion = tiny()
    reordered = tiny({m: SPECS[m] for m in ("labs", "swe", "us")}, seed=5)
    reordered.load_state_dict(fusion.state_dict())
    assert reordered.modalities != fusion.modalities
    x = inputs(3)
    avail = {"us": torch.tensor([True, False, True])}
    torch.testing.assert_close(run(reordered, x, avail).fused, run(fusion, x, avail).fused,
                               atol=1e-5, rtol=0)


def test_latents_do_not_depend_on_the_token_order() -> None:
    """Cross-attention pools keys: permuting the tokens (with their mask) changes nothing."""
    fusion = tiny(iterations=2)
    g = torch.Generator().manual_seed(3)
    context = torch.randn(2, 7, 8, generator=g)
    mask = torch.rand(2, 7, generator=g) > 0.3
    perm = torch.randperm(7, generator=g)
    with torch.no_grad():
        latents, weights = fusion.process(context, mask, True)
        permuted, pweights = fusion.process(context[:, perm], mask[:, perm], True)
    torch.testing.assert_close(permuted, latents, atol=1e-5, rtol=0)
    torch.testing.assert_close(pweights, weights[:, perm], atol=1e-6, rtol=0)


@settings(max_examples=15, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(["map", "vector"]), min_size=1, max_size=3),
    sizes=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=3, max_size=3),
    batch=st.integers(1, 3),
    n_latents=st.integers(1, 4),
    iterations=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_any_token_and_modality_counts(kinds, sizes, batch, n_latents, iterations, seed) -> None:
    specs = {f"m{i}": FeatureSpec("map", 3 + i, sizes[i]) if k == "map" else FeatureSpec("vector", 4)
             for i, k in enumerate(kinds)}
    fusion = tiny(specs, n_latents=n_latents, iterations=iterations)
    x = inputs(batch, specs, seed)
    g = torch.Generator().manual_seed(seed)
    flags = torch.rand(batch, len(specs), generator=g) > 0.5
    flags[torch.arange(batch), torch.randint(len(specs), (batch,), generator=g)] = True
    avail = {m: flags[:, i] for i, m in enumerate(specs)}
    out = run(fusion, x, avail, attention=True)
    assert out.fused.shape == (batch, 8) and torch.isfinite(out.fused).all()
    assert set(out.features) == set(specs)
    for m, spec in specs.items():
        if spec.kind == "map":
            att = out.attention[m]
            assert att.shape == (batch, 1, *spec.spatial)
            assert torch.equal(att[~avail[m]], torch.zeros_like(att[~avail[m]]))
    # the cross-attention weights of a sample (null key dropped) sum to at most 1
    total = sum(a.sum(dim=(1, 2, 3)) for a in out.attention.values()) if out.attention else None
    if total is not None:
        assert (total <= 1 + 1e-5).all()
    for i in range(batch):
        alone = {m: x[m][i:i + 1] for j, m in enumerate(specs) if flags[i, j]}
        torch.testing.assert_close(out.fused[i:i + 1], run(fusion, alone).fused, atol=1e-5, rtol=0)


# -- structure and cost -----------------------------------------------------------------------

def test_weight_sharing_after_the_first_cross_attend() -> None:
    counts = {}
    for iterations in (1, 2, 4):
        fusion = tiny(iterations=iterations)
        assert len(fusion.cross) == min(iterations, 2)
        counts[iterations] = sum(p.numel() for p in fusion.parameters())
    assert counts[2] == counts[4] > counts[1]


def test_cost_is_linear_in_the_number_of_tokens() -> None:
    def flops(width: int) -> int:
        fusion = tiny({"us": FeatureSpec("map", 4, (2, width))})
        counter = FlopCounterMode(display=False)
        with counter, torch.inference_mode():  # as benchmarks/flops.py counts
            fusion({"us": torch.randn(1, 4, 2, width)})
        return counter.get_total_flops()

    f4, f8, f12 = flops(4), flops(8), flops(12)
    assert f8 - f4 == f12 - f8 > 0  # affine in L = 2 * width


def test_all_parameters_train() -> None:
    fusion = tiny(iterations=2, self_layers=1).train()
    out = fusion(inputs(2))
    (out.fused.sum() + sum(v.sum() for v in out.features.values())).backward()
    missing = [n for n, p in fusion.named_parameters() if p.grad is None]
    # AttentionBlock's context norm is unused in self-attention (tokens.py)
    assert [n for n in missing if not n.endswith(("norm_kv.weight", "norm_kv.bias"))] == []
    assert fusion.latents.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"dim": 6, "heads": 4}, "heads"), ({"cross_heads": 3}, "cross_heads"),
     ({"n_latents": 0}, "n_latents"), ({"self_layers": -1}, "self_layers"),
     ({"iterations": 0}, "iterations"), ({"dropout": 1.0}, "dropout"),
     ({"mlp_ratio": 0}, "mlp_ratio"), ({"dim": True}, "dim"), ({"embed_dim": 0}, "embed_dim")],
)
def test_bad_arguments_are_named(kwargs, name) -> None:
    with pytest.raises(ValueError, match=f"^{name}:"):
        PerceiverFusion(SPECS, **{"dim": 8, "heads": 2, **kwargs})


def test_registered_with_its_description() -> None:
    fusion = create_fusion("perceiver", SPECS)
    assert isinstance(fusion, PerceiverFusion) and fusion.out_features == 64
    assert fusion.latents.shape == (8, 64) and len(fusion.latent_blocks) == 1
    assert fusion.reference.startswith("Jaegle") and fusion.missing and fusion.compiles
