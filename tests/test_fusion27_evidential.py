"""Evidential decision fusion (TMC, Han et al. 2021): opinions, Dempster-Shafer combination."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfusion.models import build_loss, create_model, from_pretrained
from mmfusion.nn import FeatureSpec, create_fusion, list_fusions
from mmfusion.nn.fusions.evidential import (
    EvidentialFusion,
    combine_opinions,
    evidential_loss,
    opinion,
)

SPECS = {
    "us": FeatureSpec("map", 6, (3, 3)),
    "swe": FeatureSpec("map", 4, (2, 2)),
    "labs": FeatureSpec("vector", 5),
}


def inputs(specs: dict[str, FeatureSpec], batch: int, seed: int = 0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for m, s in specs.items():
        shape = (batch, s.channels, *s.spatial) if s.kind == "map" else (batch, s.channels)
        out[m] = torch.randn(*shape, generator=gen).to(dtype)
    return out


def fusion(specs=SPECS, seed: int = 0, **kwargs) -> EvidentialFusion:
    torch.manual_seed(seed)
    kwargs = {"embed_dim": 4, "num_classes": 3, **kwargs}
    module = create_fusion("evidential", specs, **kwargs)
    with torch.no_grad():  # larger evidence than at initialisation, so opinions differ
        for layer in module.evidence.values():
            layer.weight.mul_(4.0)
    return module.eval()


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_registered_and_described() -> None:
    assert "evidential" in list_fusions()
    module = fusion()
    assert isinstance(module, EvidentialFusion) and module.decision_level
    assert module.out_features == 3 and module.compiles
    assert "Han et al. 2021" in module.reference and module.missing


def test_two_opinions_by_hand_k2() -> None:
    """K = 2. e1 = (2, 0): alpha = (3, 1), S = 4, b1 = (1/2, 0), u1 = 2/4 = 1/2.
    e2 = (1, 1): alpha = (2, 2), S = 4, b2 = (1/4, 1/4), u2 = 1/2.
    C = b1_0 b2_1 + b1_1 b2_0 = 1/8 + 0 = 1/8, 1 - C = 7/8.
    b_0 = (1/8 + 1/4 + 1/8) / (7/8) = 4/7; b_1 = (0 + 0 + 1/8) / (7/8) = 1/7;
    u = (1/4) / (7/8) = 2/7 (4/7 + 1/7 + 2/7 = 1). S = K / u = 7, alpha = b S + 1 = (5, 2)."""
    b1, u1 = opinion(t([[2.0, 0.0]]))
    b2, u2 = opinion(t([[1.0, 1.0]]))
    assert b1.tolist() == [[0.5, 0.0]] and u1.tolist() == [0.5]
    assert b2.tolist() == [[0.25, 0.25]] and u2.tolist() == [0.5]
    b, u = combine_opinions(b1, u1, b2, u2)
    torch.testing.assert_close(b, t([[4 / 7, 1 / 7]]))
    torch.testing.assert_close(u, t([2 / 7]))
    alpha = b * (2 / u)[:, None] + 1
    torch.testing.assert_close(alpha, t([[5.0, 2.0]]))


def test_two_opinions_by_hand_k3_conflict() -> None:
    """K = 3. e1 = (3, 0, 0): alpha = (4, 1, 1), S = 6, b1 = (1/2, 0, 0), u1 = 1/2.
    e2 = (0, 3, 3): alpha = (1, 4, 4), S = 9, b2 = (0, 1/3, 1/3), u2 = 1/3.
    C = 1/2 (1/3 + 1/3) = 1/3, 1 - C = 2/3.
    b_0 = (0 + 1/2 * 1/3 + 0) / (2/3) = 1/4; b_1 = b_2 = (1/3 * 1/2) / (2/3) = 1/4;
    u = (1/2 * 1/3) / (2/3) = 1/4. S = 3 / (1/4) = 12, alpha = (4, 4, 4): the conflict
    leaves no preferred class."""
    b, u = combine_opinions(*opinion(t([[3.0, 0.0, 0.0]])), *opinion(t([[0.0, 3.0, 3.0]])))
    torch.testing.assert_close(b, t([[0.25, 0.25, 0.25]]))
    torch.testing.assert_close(u, t([0.25]))


def test_module_by_hand_end_to_end() -> None:
    """The module with evidence set through the bias (softplus^-1(e) = log(expm1(e))), K = 2.
    e1 = (3, 1): alpha = (4, 2), S = 6, b1 = (1/2, 1/6), u1 = 1/3.
    e2 = (1, 1): alpha = (2, 2), S = 4, b2 = (1/4, 1/4), u2 = 1/2.
    C = 1/2 * 1/4 + 1/6 * 1/4 = 1/6, 1 - C = 5/6.
    b_0 = (1/8 + 1/4 + 1/12) / (5/6) = (11/24)(6/5) = 11/20;
    b_1 = (1/24 + 1/12 + 1/12) / (5/6) = (5/24)(6/5) = 1/4; u = (1/6) / (5/6) = 1/5.
    S = 2 / (1/5) = 10, alpha = (6.5, 3.5), fused = log(0.65), log(0.35)."""
    specs = {"a": FeatureSpec("vector", 2), "b": FeatureSpec("vector", 2)}
    module = create_fusion("evidential", specs, num_classes=2, embed_dim=2).double().eval()
    with torch.no_grad():
        for m, e in {"a": [3.0, 1.0], "b": [1.0, 1.0]}.items():
            module.evidence[m].weight.zero_()
            module.evidence[m].bias.copy_(torch.log(torch.expm1(t(e))))
        x = {m: torch.randn(2, 2, dtype=torch.float64) for m in specs}
        out = module(x, {"b": torch.tensor([True, False])})
    torch.testing.assert_close(out.fused[0], torch.log(t([0.65, 0.35])))
    torch.testing.assert_close(out.uncertainty[0], t(0.2))
    # The combined Dirichlet, as evidential_loss's docstring recovers it: exp(fused) * K / u.
    torch.testing.assert_close((out.fused.exp() * 2 / out.uncertainty[:, None])[0], t([6.5, 3.5]))
    # b absent in sample 1: modality a's own Dirichlet, alpha = (4, 2), u = 1/3.
    torch.testing.assert_close(out.fused[1], torch.log(t([4 / 6, 2 / 6])))
    torch.testing.assert_close(out.uncertainty[1], t(1 / 3))


evidence_rows = st.lists(
    st.lists(st.floats(0.0, 50.0, allow_nan=False), min_size=3, max_size=3), min_size=1, max_size=4
)


def _opinions(rows):
    return opinion(t(rows))


@settings(max_examples=60, deadline=None)
@given(e1=evidence_rows, e2=evidence_rows, e3=evidence_rows)
def test_combination_commutative_associative_and_a_valid_opinion(e1, e2, e3) -> None:
    n = min(len(e1), len(e2), len(e3))
    o1, o2, o3 = _opinions(e1[:n]), _opinions(e2[:n]), _opinions(e3[:n])
    b12, u12 = combine_opinions(*o1, *o2)
    b21, u21 = combine_opinions(*o2, *o1)
    torch.testing.assert_close(b12, b21)
    torch.testing.assert_close(u12, u21)
    left = combine_opinions(b12, u12, *o3)
    right = combine_opinions(*o1, *combine_opinions(*o2, *o3))
    torch.testing.assert_close(left[0], right[0])
    torch.testing.assert_close(left[1], right[1])
    assert (b12 >= 0).all() and (u12 > 0).all() and (u12 <= 1).all()
    torch.testing.assert_close(b12.sum(dim=1) + u12, torch.ones(n, dtype=torch.float64))
    # Adding a modality's evidence never raises the uncertainty: u <= min(u1, u2).
    assert (u12 <= torch.minimum(o1[1], o2[1]) + 1e-12).all()


@settings(max_examples=40, deadline=None)
@given(e=evidence_rows)
def test_vacuous_opinion_is_the_identity(e) -> None:
    b, u = _opinions(e)
    vacuous = (torch.zeros_like(b), torch.ones_like(u))
    for combined in (combine_opinions(b, u, *vacuous), combine_opinions(*vacuous, b, u)):
        torch.testing.assert_close(combined[0], b, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(combined[1], u, rtol=1e-12, atol=1e-15)


def test_uncertainty_strictly_decreases_with_more_evidence() -> None:
    b1, u1 = opinion(t([[1.0, 0.5, 0.0]]))
    previous = u1
    for extra in ([0.0, 0.2, 0.0], [2.0, 0.0, 0.0], [0.1, 0.1, 0.1]):
        b1, u1 = combine_opinions(b1, u1, *opinion(t([extra])))
        assert float(u1) < float(previous) and 0 < float(u1) <= 1
        previous = u1


def test_masked_equals_absent_and_batch_independence() -> None:
    module = fusion()
    x = inputs(SPECS, 4, seed=2)
    flags = {"us": [1, 0, 1, 1], "swe": [1, 1, 0, 0], "labs": [0, 1, 1, 1]}
    masks = {m: torch.tensor(v, dtype=torch.bool) for m, v in flags.items()}
    with torch.no_grad():
        batched = module(x, masks)
        for i in range(4):
            alone = module({m: v[i:i + 1] for m, v in x.items() if flags[m][i]})
            torch.testing.assert_close(alone.fused[0], batched.fused[i], atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(alone.uncertainty[0], batched.uncertainty[i])
            shuffled = {m: torch.cat([v[i:i + 1], torch.randn_like(v[:3])]) for m, v in x.items()}
            torch.testing.assert_close(module(shuffled).fused[0], module(
                {m: v[i:i + 1] for m, v in x.items()}).fused[0], atol=1e-6, rtol=1e-6)
        # Same batch, "us" masked for every sample or left out: bit for bit the same.
        off = {"us": torch.zeros(4, dtype=torch.bool)}
        without = {m: v for m, v in x.items() if m != "us"}
        assert torch.equal(module(x, off).fused, module(without).fused)
        assert torch.equal(module(x, off).uncertainty, module(without).uncertainty)
        # A sample without any modality: the vacuous opinion, uniform probabilities, u = 1.
        none = module(x, {m: torch.zeros(4, dtype=torch.bool) for m in SPECS})
    torch.testing.assert_close(none.fused, torch.full((4, 3), -math.log(3.0)))
    assert torch.equal(none.uncertainty, torch.ones(4))
    assert set(batched.features) == set(SPECS)
    assert all(f.shape == (4, 4) for f in batched.features.values())
    assert torch.allclose(batched.fused.exp().sum(dim=1), torch.ones(4))
    assert ((batched.uncertainty > 0) & (batched.uncertainty <= 1)).all()


def test_one_more_modality_lowers_the_uncertainty() -> None:
    module = fusion()
    x = inputs(SPECS, 6, seed=5)
    with torch.no_grad():
        one = module({"us": x["us"]}).uncertainty
        two = module({"us": x["us"], "labs": x["labs"]}).uncertainty
        three = module(x).uncertainty
    assert (two < one).all() and (three < two).all()


@settings(max_examples=20, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(["map", "vector"]), min_size=1, max_size=3),
    classes=st.integers(2, 6),
    batch=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_any_modalities_masked_equals_absent(kinds, classes, batch, seed) -> None:
    specs = {
        f"m{k}": FeatureSpec("map", 3 + k, (2, 2)) if kind == "map" else FeatureSpec("vector", 4 + k)
        for k, kind in enumerate(kinds)
    }
    module = fusion(specs, seed=seed, num_classes=classes)
    x = inputs(specs, batch, seed=seed)
    rng = np.random.default_rng(seed)
    present = rng.random((batch, len(specs))) < 0.6
    present[np.arange(batch), rng.integers(0, len(specs), batch)] = True
    masks = {m: torch.from_numpy(present[:, k].copy()) for k, m in enumerate(specs)}
    with torch.no_grad():
        out = module(x, masks)
        assert out.fused.shape == (batch, classes) and torch.isfinite(out.fused).all()
        for i in range(batch):
            alone = module({m: v[i:i + 1] for k, (m, v) in enumerate(x.items()) if present[i, k]})
            torch.testing.assert_close(alone.fused[0], out.fused[i], atol=1e-5, rtol=1e-5)


def test_end_to_end_joint_logits_are_the_fused_log_probabilities(tmp_path) -> None:
    torch.manual_seed(0)
    model = create_model("liver_fibrosis_quick", fusion="evidential", backbone="test_resnet",
                         image_size=64, hidden=(16,), head_pool="avg", embed_dim=8)
    assert isinstance(model.fusion, EvidentialFusion)
    assert isinstance(model.head.joint_head, torch.nn.Identity)
    assert model.fusion.num_classes == model.config.num_classes
    images = {m: torch.randn(4, 3, 64, 64) for m in model.config.modalities}
    swe = {"swe": torch.tensor([True, False, True, True])}
    model.eval()
    with torch.no_grad():
        out = model(images, swe)
        maps = {m: model.encoders[m](v) for m, v in images.items()}
        direct = model.fusion(maps, swe)
    torch.testing.assert_close(out.logits["joint"], direct.fused)
    torch.testing.assert_close(out.logits["joint"].exp().sum(dim=1), torch.ones(4))
    assert out.uncertainty is not None and out.uncertainty.shape == (4,)
    torch.testing.assert_close(out.uncertainty, direct.uncertainty)
    assert ((out.uncertainty > 0) & (out.uncertainty <= 1)).all()
    # Saved and rebuilt through the registry (the builder passes num_classes again).
    model.save_pretrained(tmp_path)
    loaded = from_pretrained(tmp_path).eval()
    with torch.no_grad():
        again = loaded(images, swe)
    assert torch.equal(again.logits["joint"], out.logits["joint"])
    assert torch.equal(again.uncertainty, out.uncertainty)
    # The model's loss trains the evidence layers through the joint branch.
    model.train()
    out = model(images)
    loss = build_loss(model.config)(out.logits, torch.tensor([0, 1, 2, 3]), out.features,
                                    out.available)
    loss.total.backward()
    for layer in model.fusion.evidence.values():
        assert float(layer.weight.grad.abs().sum()) > 0


def test_evidential_loss_by_hand() -> None:
    """alpha = (1, 1, 1) (no evidence), y = 0: psi(3) - psi(1) = 1 + 1/2 = 3/2 and
    alpha~ = (1, 1, 1), KL(Dir(1) || Dir(1)) = 0."""
    loss = evidential_loss(t([[1.0, 1.0, 1.0]]), torch.tensor([0]), epoch_weight=1.0)
    torch.testing.assert_close(loss, t(1.5))
    # alpha = (5, 2, 3), y = 1: psi(10) - psi(2) = sum_{n=2}^{9} 1/n; alpha~ = (5, 1, 3).
    alpha, target = t([[5.0, 2.0, 3.0]]), torch.tensor([1])
    ace = sum(1.0 / n for n in range(2, 10))
    kl = torch.distributions.kl_divergence(
        torch.distributions.Dirichlet(t([5.0, 1.0, 3.0])), torch.distributions.Dirichlet(t([1.0] * 3))
    )
    torch.testing.assert_close(evidential_loss(alpha, target, 0.0), t(ace))
    torch.testing.assert_close(evidential_loss(alpha, target, 0.5), t(ace) + 0.5 * kl)
    with pytest.raises(ValueError, match=r"alpha: expected a \[B, K\] tensor"):
        evidential_loss(t([1.0, 2.0]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"target: expected shape \[1\]"):
        evidential_loss(alpha, torch.tensor([0, 1]))


def test_constructor_checks_its_kwargs() -> None:
    with pytest.raises(TypeError, match="num_classes"):
        create_fusion("evidential", SPECS)
    for bad in (1, True, 2.0):
        with pytest.raises(ValueError, match=f"num_classes: expected an int >= 2, got {bad!r}"):
            create_fusion("evidential", SPECS, num_classes=bad)
    with pytest.raises(ValueError, match="embed_dim: expected a positive int, got 0"):
        create_fusion("evidential", SPECS, num_classes=3, embed_dim=0)


