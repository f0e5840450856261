"""Cross-modal spatial attention on registered maps: ``"cross_spatial_attention"``.

A hand-computed attention map (weights set by hand, kernel 1), the whole forward against an
independent numpy implementation (kernel 3), the cross-modal property (A's attention moves when
only B's map moves; the paper's ``"attention"`` fusion's does not), the defined attention of a
sample whose other modality is absent, masked == absent with NaN in the masked pixels, the
attention maps' shapes and the constructor's errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfusion.nn import FeatureSpec, create_fusion
from mmfusion.nn.fusions.cross_spatial_attention import CrossSpatialAttentionFusion


def maps(channels: dict[str, int], side: int = 2) -> dict[str, FeatureSpec]:
    return {m: FeatureSpec("map", c, (side, side)) for m, c in channels.items()}


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def hand_fusion() -> CrossSpatialAttentionFusion:
    """Two 2-channel 2x2 maps, identity reduction, kernel 1, hand-set attention weights."""
    fusion = create_fusion("cross_spatial_attention", maps({"a": 2, "b": 2}), embed_dim=3,
                           reduced_channels=(2, 2), kernel_size=1)
    with torch.no_grad():
        for m in ("a", "b"):
            fusion.reducers[m].weight.copy_(torch.eye(2).view(2, 2, 1, 1))
            fusion.reducers[m].bias.zero_()
        # input channels: [mean_a, max_a, present_a, mean_b, max_b, present_b]
        fusion.convs["a"].weight.copy_(torch.tensor([1.0, 0.5, 0.1, -1.0, 2.0, 0.3]).view(1, 6, 1, 1))
        fusion.convs["a"].bias.fill_(-0.2)
    return fusion


X_A = torch.tensor([[[1.0, -2.0], [0.5, 0.0]], [[3.0, 1.0], [-1.0, 2.0]]])  # [2, 2, 2]
X_B = torch.tensor([[[0.0, 1.0], [2.0, -1.0]], [[-2.0, 1.0], [0.0, 1.0]]])


def test_hand_computed_attention_map_reads_both_modalities() -> None:
    fusion = hand_fusion()
    with torch.no_grad():
        out = fusion({"a": X_A[None], "b": X_B[None]}, return_attention=True)
    expected = torch.zeros(2, 2)
    for r in range(2):
        for c in range(2):
            a, b = X_A[:, r, c].tolist(), X_B[:, r, c].tolist()
            s = (1.0 * (sum(a) / 2) + 0.5 * max(a) + 0.1
                 - 1.0 * (sum(b) / 2) + 2.0 * max(b) + 0.3 - 0.2)
            expected[r, c] = sigmoid(s)
    torch.testing.assert_close(out.attention["a"][0, 0], expected, atol=1e-6, rtol=0)
    assert out.attention["a"].shape == (1, 1, 2, 2) and out.attention["b"].shape == (1, 1, 2, 2)


def test_the_other_modality_absent_gives_the_self_attention_whether_left_out_or_masked() -> None:
    """The documented map: the presence channel and descriptors of b are zero."""
    fusion = hand_fusion()
    expected = torch.zeros(2, 2)
    for r in range(2):
        for c in range(2):
            a = X_A[:, r, c].tolist()
            expected[r, c] = sigmoid(1.0 * (sum(a) / 2) + 0.5 * max(a) + 0.1 - 0.2)
    nan_b = torch.full((1, 2, 2, 2), float("nan"))
    with torch.no_grad():
        left_out = fusion({"a": X_A[None]}, return_attention=True)
        masked = fusion({"a": X_A[None], "b": nan_b}, {"b": torch.tensor([False])},
                        return_attention=True)
    torch.testing.assert_close(left_out.attention["a"][0, 0], expected, atol=1e-6, rtol=0)
    assert torch.equal(masked.attention["a"], left_out.attention["a"])
    assert set(left_out.attention) == {"a"} and set(masked.attention) == {"a", "b"}
    assert torch.equal(masked.fused, left_out.fused)
    assert torch.equal(left_out.fused[0, 3:], fusion.placeholders["b"].detach())


def numpy_forward(fusion: CrossSpatialAttentionFusion, x: dict[str, np.ndarray]) -> np.ndarray:
    """The method, written again in numpy from the module's weights (all modalities present)."""
    def w(t: torch.Tensor) -> np.ndarray:
        return t.detach().double().numpy()

    def conv(inp: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
        k = weight.shape[-1]
        p = k // 2
        padded = np.pad(inp, ((0, 0), (p, p), (p, p)))
        h, wd = inp.shape[1:]
        out = np.zeros((weight.shape[0], h, wd))
        for o in range(weight.shape[0]):
            for r in range(h):
                for c in range(wd):
                    out[o, r, c] = (padded[:, r:r + k, c:c + k] * weight[o]).sum() + bias[o]
        return out

    def sig(v: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-v))

    reduced, descriptors = {}, []
    for m, xm in x.items():
        g = fusion.pools[m].group_size
        pooled = xm.reshape(-1, g, *xm.shape[1:]).mean(axis=1)
        reduced[m] = conv(pooled, w(fusion.reducers[m].weight), w(fusion.reducers[m].bias))
        descriptors += [reduced[m].mean(0), reduced[m].max(0), np.ones(xm.shape[1:])]
    stacked = np.stack(descriptors)
    parts = []
    for m, xm in x.items():
        att = sig(conv(stacked, w(fusion.convs[m].weight), w(fusion.convs[m].bias)))
        block = fusion.channels[m]
        context = (reduced[m] * att).mean(axis=(1, 2))
        hidden = np.maximum(w(block.fc1.weight) @ context + w(block.fc1.bias), 0)
        weights = sig(w(block.fc2.weight) @ hidden + w(block.fc2.bias))
        pooled = (xm * weights[:, None, None]).mean(axis=(1, 2))
        parts.append(w(fusion.projections[m].weight) @ pooled + w(fusion.projections[m].bias))
    return np.concatenate(parts)


def test_forward_matches_an_independent_numpy_implementation() -> None:
    torch.manual_seed(0)
    specs = maps({"us": 8, "swe": 4}, side=3)
    fusion = create_fusion("cross_spatial_attention", specs, embed_dim=5, kernel_size=3).eval()
    x = {m: torch.randn(2, s.channels, 3, 3) for m, s in specs.items()}
    with torch.no_grad():
        fused = fusion(x).fused
    for i in range(2):
        ref = numpy_forward(fusion, {m: t[i].double().numpy() for m, t in x.items()})
        np.testing.assert_allclose(fused[i].numpy(), ref, atol=1e-5, rtol=0)


def test_attention_of_a_moves_when_only_b_moves_unlike_the_papers_attention() -> None:
    torch.manual_seed(3)
    specs = maps({"us": 8, "swe": 8}, side=4)
    x = {m: torch.randn(2, 8, 4, 4) for m in specs}
    moved = {"us": x["us"], "swe": x["swe"] + torch.randn(2, 8, 4, 4)}
    for name, cross in (("cross_spatial_attention", True), ("attention", False)):
        fusion = create_fusion(name, specs, embed_dim=4).eval()
        with torch.no_grad():
            before = fusion(x, return_attention=True).attention["us"]
            after = fusion(moved, return_attention=True).attention["us"]
        change = float((after - before).abs().max())
        assert (change > 1e-4) if cross else (change == 0.0), (name, change)


def test_masked_equals_absent_with_nan_pixels_for_three_modalities() -> None:
    torch.manual_seed(4)
    specs = maps({"us": 8, "swe": 4, "dop": 12}, side=3)
    fusion = create_fusion("cross_spatial_attention", specs, embed_dim=4).eval()
    with torch.no_grad():
        for p in fusion.placeholders.values():
            p.normal_()
    x = {m: torch.randn(4, s.channels, 3, 3) for m, s in specs.items()}
    mask = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [0, 0, 1]], dtype=torch.bool)
    available = {m: mask[:, j] for j, m in enumerate(specs)}
    for m, flags in available.items():
        x[m][~flags] = float("nan")
    with torch.no_grad():
        out = fusion(x, available, return_attention=True)
        assert torch.isfinite(out.fused).all()
        for i in range(4):
            alone = fusion({m: t[i:i + 1] for m, t in x.items() if available[m][i]},
                           return_attention=True)
            torch.testing.assert_close(out.fused[i:i + 1], alone.fused, atol=1e-6, rtol=0)
            for m in alone.attention:
                torch.testing.assert_close(out.attention[m][i:i + 1], alone.attention[m],
                                           atol=1e-6, rtol=0)


@settings(max_examples=8, deadline=None)
@given(count=st.integers(2, 3), batch=st.integers(1, 3), side=st.integers(1, 5),
       kernel=st.sampled_from([1, 3, 7]), seed=st.integers(0, 2**16))
def test_return_attention_shapes(count: int, batch: int, side: int, kernel: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    specs = maps({f"m{j}": 4 * (j + 1) for j in range(count)}, side=side)
    fusion = create_fusion("cross_spatial_attention", specs, embed_dim=8, kernel_size=kernel)
    x = {m: torch.randn(batch, s.channels, side, side, generator=gen) for m, s in specs.items()}
    with torch.no_grad():
        out = fusion(x, return_attention=True)
        assert fusion(x).attention is None
    assert out.fused.shape == (batch, 8 * count) == (batch, fusion.out_features)
    assert set(out.attention) == set(specs) == set(out.features)
    for att in out.attention.values():
        assert att.shape == (batch, 1, side, side) and ((att > 0) & (att < 1)).all()


@pytest.mark.parametrize(
    ("specs", "kwargs", "error", "match"),
    [
        (maps({"a": 4, "b": 4}), {"kernel_size": 4}, ValueError,
         r"kernel_size: expected an odd positive int, got 4"),
        (maps({"a": 4, "b": 4}), {"embed_dim": -1}, ValueError,
         r"embed_dim: expected a positive int, got -1"),
        (maps({"a": 4, "b": 4}), {"hidden_channels": 0}, ValueError,
         r"hidden_channels: expected a positive int, got 0"),
        (maps({"a": 4, "b": 6}), {"reduced_channels": (4, 2)}, ValueError,
         r"reduced_channels: the pooled width 4 must divide .*features\['b'\] has 6"),
        (maps({"a": 4, "b": 4}), {"reduced_channels": (2,)}, ValueError,
         r"reduced_channels: expected None or two positive ints"),
        ({"a": FeatureSpec("map", 4, (2, 2)), "b": FeatureSpec("map", 4, (3, 3))}, {}, ValueError,
         r"needs registered maps of one spatial size"),
        ({"a": FeatureSpec("map", 4, (2, 2)), "t": FeatureSpec("vector", 4)}, {}, ValueError,
         r"features\['t'\]: CrossSpatialAttentionFusion takes map features, got a vector"),
        (maps({"a": 4}), {}, ValueError, r"fuses 2 to any number"),
    ],
)
def test_constructor_errors_name_the_argument(specs, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        create_fusion("cross_spatial_attention", specs, **kwargs)


def test_describes_itself() -> None:
    cls = CrossSpatialAttentionFusion
    assert cls.kinds == ("map",) and cls.same_spatial and cls.compiles and cls.min_modalities == 2
    assert "Woo et al. 2018" in cls.reference and cls.missing
