"""The "bottleneck" fusion (MBT, Nagrani et al. 2021): bottleneck tokens averaged over the present
modalities (eq. 8-9).

The formula is checked against a float64 numpy re-implementation, one sample at a time
(tests/_fusion27_token_reference.py; ref_bottleneck here), and the average of eq. 9 by hand on a
one-layer toy; then masked == absent, an absent modality taking no part, batch independence.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _fusion27_token_reference import params, randomize, ref_block, ref_norm, ref_tokens
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfusion.nn import FeatureSpec, create_fusion
from mmfusion.nn.fusions.bottleneck import BottleneckFusion

SPECS = {"us": FeatureSpec("map", 3, (2, 2)), "labs": FeatureSpec("vector", 2),
         "swe": FeatureSpec("map", 2, (1, 3))}


def inputs(batch: int, specs=SPECS, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shape = lambda s: (batch, s.channels, *s.spatial) if s.kind == "map" else (batch, s.channels)  # noqa: E731
    return {m: torch.randn(shape(s), generator=gen) for m, s in specs.items()}


def ref_bottleneck(fusion: BottleneckFusion, x: dict, present: dict, heads: int) -> np.ndarray:
    """The fused vector of ONE sample: eq. 8 per modality, eq. 9 over the present ones."""
    p = params(fusion)
    mods = fusion.modalities
    tokens = {m: ref_tokens(x[m], p, f"tokens.{m}") for m in mods}
    z = p["bottleneck"]
    for layer in range(len(fusion.layers)):
        updates = []
        for m in mods:
            out, _ = ref_block(np.vstack([tokens[m], z]), None, None, p, f"layers.{layer}.{m}", heads)
            tokens[m] = out[:len(tokens[m])]
            if present[m]:
                updates.append(out[len(tokens[m]):])
        z = sum(updates) / len(updates)
    parts = [
        p[f"proj.{m}.weight"] @ ref_norm(tokens[m], p, f"norm.{m}").mean(0) + p[f"proj.{m}.bias"]
        if present[m] else p[f"placeholders.{m}"]
        for m in mods
    ]
    if fusion.include_bottleneck:
        pooled = ref_norm(z, p, "norm_bottleneck").mean(0)
        parts.append(p["proj_bottleneck.weight"] @ pooled + p["proj_bottleneck.bias"])
    return np.concatenate(parts)


@pytest.mark.parametrize(("layers", "include_bottleneck"), [(1, True), (2, False)])
def test_fused_matches_the_numpy_reference(layers: int, include_bottleneck: bool) -> None:
    fusion = create_fusion("bottleneck", SPECS, embed_dim=3, dim=4, heads=2, layers=layers,
                           n_bottleneck=2, include_bottleneck=include_bottleneck).eval()
    assert fusion.out_features == (3 + include_bottleneck) * 3
    randomize(fusion, seed=layers)
    x = inputs(4)
    available = {"labs": torch.tensor([True, False, True, False]),
                 "swe": torch.tensor([True, True, False, False])}  # sample 3: us alone
    with torch.no_grad():
        fused = fusion(x, available).fused.double().numpy()
    for i in range(4):
        present = {m: bool(available[m][i]) if m in available else True for m in SPECS}
        expected = ref_bottleneck(fusion, {m: v[i].double().numpy() for m, v in x.items()},
                                  present, heads=2)
        np.testing.assert_allclose(fused[i], expected, atol=1e-5, rtol=0)


def test_one_layer_bottleneck_is_the_average_over_present_modalities() -> None:
    """Hand-made tokens, one layer: z^1 = (u_us + u_labs) / 2 with both, u_us alone with labs
    absent, where u_m is modality m's block output at the bottleneck positions (eq. 8-9)."""
    specs = {"us": FeatureSpec("map", 3, (1, 2)), "labs": FeatureSpec("vector", 2)}
    fusion = BottleneckFusion(specs, embed_dim=3, dim=4, heads=2, layers=1, n_bottleneck=2).eval()
    randomize(fusion, seed=3)
    tokens = {"us": torch.tensor([[[1.0, 0.0, -1.0, 2.0], [0.5, 0.5, 0.0, 1.0]]] * 2),
              "labs": torch.tensor([[[0.0, 3.0, 1.0, -1.0]]] * 2)}
    present = torch.tensor([[True, True], [True, False]])
    z0 = fusion.bottleneck.detach()
    with torch.no_grad():
        u_us = fusion.layers[0]["us"](torch.cat([tokens["us"][:1], z0[None]], dim=1))[0][0, 2:]
        u_labs = fusion.layers[0]["labs"](torch.cat([tokens["labs"][:1], z0[None]], dim=1))[0][0, 1:]
        out_tokens, z = fusion.exchange(tokens, present)
    torch.testing.assert_close(z[0], (u_us + u_labs) / 2, atol=1e-6, rtol=0)
    torch.testing.assert_close(z[1], u_us, atol=1e-6, rtol=0)
    assert not torch.allclose(u_us, u_labs, atol=1e-3)  # the two cases differ
    assert out_tokens["us"].shape == (2, 2, 4) and out_tokens["labs"].shape == (2, 1, 4)


def test_an_absent_modality_takes_no_part() -> None:
    """Whatever an absent modality's input holds (NaN included), the sample's output is the same."""
    fusion = create_fusion("bottleneck", SPECS, embed_dim=4, dim=8, heads=2).eval()
    x = inputs(3, seed=1)
    available = {"swe": torch.tensor([False, True, False])}
    garbage = {m: v.clone() for m, v in x.items()}
    garbage["swe"][0] = float("nan")
    garbage["swe"][2] = 1e6
    with torch.no_grad():
        out = fusion(x, available).fused
        out_garbage = fusion(garbage, available).fused
    torch.testing.assert_close(out_garbage, out, atol=0, rtol=0)


def test_masked_equals_absent_per_sample() -> None:
    fusion = create_fusion("bottleneck", SPECS, embed_dim=4, dim=8, heads=2, layers=2).eval()
    x = inputs(6, seed=3)
    flags = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1], [1, 0, 0]],
                         dtype=torch.bool)
    available = {m: flags[:, i] for i, m in enumerate(SPECS)}
    with torch.no_grad():
        out = fusion(x, available).fused
        for i in range(6):
            alone = fusion({m: v[i:i + 1] for m, v in x.items() if available[m][i]}).fused
            torch.testing.assert_close(out[i:i + 1], alone, atol=1e-5, rtol=0)
        left_out = fusion({"us": x["us"], "labs": x["labs"]}).fused  # swe not given at all
        flagged = fusion(x, {"swe": torch.zeros(6, dtype=torch.bool)}).fused
    torch.testing.assert_close(left_out, flagged, atol=1e-5, rtol=0)


def test_a_sample_does_not_depend_on_the_rest_of_its_batch() -> None:
    fusion = create_fusion("bottleneck", SPECS, embed_dim=4, dim=8, heads=2).eval()
    x = inputs(4)
    changed = {m: v.clone() for m, v in x.items()}
    for v in changed.values():
        v[1:] = torch.randn_like(v[1:]) * 3
    with torch.no_grad():
        out = fusion(x).fused
        out_changed = fusion(changed).fused
        alone = fusion({m: v[:1] for m, v in x.items()}).fused
    torch.testing.assert_close(out_changed[0], out[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(alone[0], out[0], atol=1e-6, rtol=0)


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="n_bottleneck: expected a positive int, got 0"):
        BottleneckFusion(SPECS, n_bottleneck=0)
    with pytest.raises(ValueError, match="layers: expected a positive int"):
        BottleneckFusion(SPECS, layers=-1)
    with pytest.raises(ValueError, match="dropout: expected a float in"):
        BottleneckFusion(SPECS, dropout=1.5)
    with pytest.raises(TypeError, match="include_bottleneck: expected a bool"):
        BottleneckFusion(SPECS, include_bottleneck="yes")


@settings(max_examples=12, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 3)), min_size=2, max_size=3),
    batch=st.integers(1, 3),
    n_bottleneck=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_any_token_counts(sizes: list[tuple[int, int]], batch: int, n_bottleneck: int,
                          seed: int) -> None:
    """Maps of 1..9 tokens and vectors (one token), 2-3 modalities, random per-sample presence."""
    specs = {f"m{i}": FeatureSpec("map", 2, (h, w)) if h else FeatureSpec("vector", w + 1)
             for i, (h, w) in enumerate(sizes)}
    torch.manual_seed(seed)
    fusion = BottleneckFusion(specs, embed_dim=3, dim=4, heads=2, layers=1,
                              n_bottleneck=n_bottleneck).eval()
    x = inputs(batch, specs, seed)
    flags = torch.rand(batch, len(specs)) < 0.6
    flags[torch.arange(batch), torch.randint(len(specs), (batch,))] = True  # >= 1 per sample
    available = {m: flags[:, i] for i, m in enumerate(specs)}
    with torch.no_grad():
        out = fusion(x, available, return_attention=True)
        alone = fusion({m: v[:1] for m, v in x.items() if available[m][0]}).fused
    assert out.fused.shape == (batch, 3 * (len(specs) + 1)) and torch.isfinite(out.fused).all()
    assert set(out.features) == set(specs) and out.attention is None
    torch.testing.assert_close(out.fused[:1], alone, atol=1e-5, rtol=0)
