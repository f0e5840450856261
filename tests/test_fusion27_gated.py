"""The gated multimodal unit (Arevalo et al. 2017) for N modalities: ``"gated"``.

Hand-computed output against the paper's two-modality sigmoid formula, the softmax/sigmoid
equivalence, gates that sum to 1 over the present modalities and are 0 for an absent one,
masked == absent with garbage in the masked values, N = 3, and the constructor's errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfusion.nn import FeatureSpec, create_fusion
from mmfusion.nn.fusions.gated import GatedFusion


def vectors(*sizes: int) -> dict[str, FeatureSpec]:
    return {f"m{i}": FeatureSpec("vector", d) for i, d in enumerate(sizes)}


def test_hand_computed_two_modalities_match_the_papers_sigmoid_gate() -> None:
    """h = z * tanh(W_v x_v) + (1 - z) * tanh(W_t x_t), z = sigmoid(W_z [x_v; x_t])."""
    fusion = create_fusion("gated", {"v": FeatureSpec("vector", 2), "t": FeatureSpec("vector", 1)},
                           embed_dim=2, bias=False)
    with torch.no_grad():
        fusion.hidden["v"].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        fusion.hidden["t"].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        # rows: (modality v, unit 0), (v, 1), (t, 0), (t, 1); W_z for v, zeros for t
        fusion.scores.weight.copy_(torch.tensor(
            [[1.0, 0.0, 0.5], [0.0, 1.0, -1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    x_v, x_t = [0.5, -1.0], [2.0]
    out = fusion({"v": torch.tensor([x_v]), "t": torch.tensor([x_t])})

    h_v = [math.tanh(0.5), math.tanh(-2.0)]
    h_t = [math.tanh(2.0), math.tanh(-2.0)]
    s = [0.5 * 1 + 2.0 * 0.5, -1.0 - 2.0]  # W_z [x_v; x_t]
    z = [1 / (1 + math.exp(-v)) for v in s]
    expected = [z[k] * h_v[k] + (1 - z[k]) * h_t[k] for k in range(2)]
    torch.testing.assert_close(out.fused, torch.tensor([expected]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.features["v"], torch.tensor([h_v]), atol=1e-6, rtol=0)
    gates = fusion.gates({"v": torch.tensor([x_v]), "t": torch.tensor([x_t])})
    torch.testing.assert_close(gates[0, 0], torch.tensor(z), atol=1e-6, rtol=0)
    torch.testing.assert_close(gates[0, 1], 1 - torch.tensor(z), atol=1e-6, rtol=0)


def test_softmax_of_two_scores_is_the_sigmoid_of_their_difference() -> None:
    torch.manual_seed(0)
    fusion = create_fusion("gated", {"us": FeatureSpec("map", 4, (3, 3)),
                                     "labs": FeatureSpec("vector", 5)}, embed_dim=6)
    x = {"us": torch.randn(7, 4, 3, 3), "labs": torch.randn(7, 5)}
    cat = torch.cat([x["us"].mean(dim=(2, 3)), x["labs"]], dim=1)
    w, b = fusion.scores.weight, fusion.scores.bias
    w_z, b_z = w[:6] - w[6:], b[:6] - b[6:]  # the paper's W_z = W_{s,1} - W_{s,2}
    z = torch.sigmoid(cat @ w_z.T + b_z)
    with torch.no_grad():
        gates = fusion.gates(x)
        torch.testing.assert_close(gates[:, 0], z, atol=1e-6, rtol=0)
        torch.testing.assert_close(gates[:, 1], 1 - z, atol=1e-6, rtol=0)
        h_us = torch.tanh(fusion.hidden["us"](x["us"].mean(dim=(2, 3))))
        h_labs = torch.tanh(fusion.hidden["labs"](x["labs"]))
        torch.testing.assert_close(fusion(x).fused, z * h_us + (1 - z) * h_labs,
                                   atol=1e-6, rtol=0)


@settings(max_examples=15, deadline=None)
@given(count=st.integers(2, 4), batch=st.integers(1, 5), gate=st.sampled_from(["unit", "modality"]),
       seed=st.integers(0, 2**16))
def test_gates_sum_to_one_over_present_modalities_and_are_zero_for_absent(
    count: int, batch: int, gate: str, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    specs = vectors(*[3 + i for i in range(count)])
    fusion = create_fusion("gated", specs, embed_dim=4, gate=gate)
    x = {m: torch.randn(batch, s.channels, generator=gen) for m, s in specs.items()}
    mask = torch.rand(batch, count, generator=gen) < 0.5
    mask[:, seed % count] = True  # one present modality at least
    available = {m: mask[:, j] for j, m in enumerate(specs)}
    with torch.no_grad():
        z = fusion.gates(x, available)
        assert z.shape == (batch, count, 4 if gate == "unit" else 1)
        torch.testing.assert_close(z.sum(dim=1), torch.ones(batch, z.shape[2]), atol=1e-6, rtol=0)
        assert (z[~mask] == 0).all()
        assert (z[mask] > 0).all()
        # a modality left out entirely: gate 0 for every sample, the others renormalised
        first = next(iter(specs))
        z = fusion.gates({m: t for m, t in x.items() if m != first})
        assert (z[:, 0] == 0).all()
        torch.testing.assert_close(z.sum(dim=1), torch.ones(batch, z.shape[2]), atol=1e-6, rtol=0)


def test_masked_equals_absent_whatever_the_masked_values_hold() -> None:
    torch.manual_seed(1)
    specs = {"us": FeatureSpec("map", 8, (2, 2)), "swe": FeatureSpec("map", 4, (3, 3)),
             "labs": FeatureSpec("vector", 5)}
    fusion = create_fusion("gated", specs, embed_dim=8).eval()
    with torch.no_grad():
        for p in fusion.placeholders.values():
            p.normal_()
    x = {"us": torch.randn(3, 8, 2, 2), "swe": torch.randn(3, 4, 3, 3), "labs": torch.randn(3, 5)}
    available = {"us": torch.tensor([True, False, True]), "swe": torch.tensor([False, True, True]),
                 "labs": torch.tensor([True, True, False])}
    for m, flags in available.items():  # NaN and inf where absent: never read
        x[m][~flags] = float("nan") if m != "labs" else float("inf")
    with torch.no_grad():
        out = fusion(x, available)
        assert torch.isfinite(out.fused).all()
        for i in range(3):
            alone = fusion({m: t[i:i + 1] for m, t in x.items() if available[m][i]}).fused
            torch.testing.assert_close(out.fused[i:i + 1], alone, atol=1e-6, rtol=0)


def test_three_modalities_fuse_to_the_weighted_sum_of_their_units() -> None:
    torch.manual_seed(2)
    specs = vectors(3, 4, 5)
    fusion = create_fusion("gated", specs, embed_dim=6, gate="modality")
    x = {m: torch.randn(2, s.channels) for m, s in specs.items()}
    with torch.no_grad():
        out = fusion(x, return_attention=True)
        z = fusion.gates(x)
        hs = torch.stack([torch.tanh(fusion.hidden[m](x[m])) for m in specs], dim=1)
        torch.testing.assert_close(out.fused, (z * hs).sum(dim=1), atol=1e-6, rtol=0)
    assert out.fused.shape == (2, 6) and fusion.out_features == 6 and out.attention is None
    assert set(out.features) == set(specs)


def test_a_sample_with_no_modality_present_gets_zeros_and_finite_gradients() -> None:
    fusion = create_fusion("gated", vectors(3, 4), embed_dim=4)
    x = {"m0": torch.randn(2, 3), "m1": torch.randn(2, 4)}
    available = {"m0": torch.tensor([True, False]), "m1": torch.tensor([False, False])}
    out = fusion(x, available)
    assert torch.equal(out.fused[1], torch.zeros(4))
    out.fused.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in fusion.parameters() if p.grad is not None)


def test_compiles_fullgraph_with_the_modality_gate() -> None:
    torch._dynamo.reset()
    fusion = create_fusion("gated", vectors(3, 4), embed_dim=4, gate="modality").eval()
    x = {"m0": torch.randn(3, 3), "m1": torch.randn(3, 4)}
    available = {"m1": torch.tensor([True, False, True])}
    compiled = torch.compile(fusion, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, available).fused, fusion(x, available).fused)
    torch._dynamo.reset()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"embed_dim": 0}, ValueError, r"embed_dim: expected a positive int, got 0"),
        ({"gate": "scalar"}, ValueError, r"gate: expected 'unit' or 'modality', got 'scalar'"),
        ({"bias": 1}, TypeError, r"bias: expected a bool, got 1"),
    ],
)
def test_constructor_errors_name_the_argument(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        create_fusion("gated", vectors(3, 4), **kwargs)


def test_needs_two_modalities_and_describes_itself() -> None:
    with pytest.raises(ValueError, match=r"GatedFusion fuses 2 to any number.*got 1 \(m0\)"):
        create_fusion("gated", vectors(3))
    assert GatedFusion.reference.startswith("Arevalo et al. 2017")
    assert GatedFusion.kinds == ("map", "vector") and GatedFusion.compiles
    with pytest.raises(ValueError, match=r"features\['m0'\]: expected 3 channels"):
        GatedFusion(vectors(3, 4)).gates({"m0": torch.randn(2, 5)})
