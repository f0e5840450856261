"""Low-rank tensor fusion (LMF, Liu et al. 2018): equals tensor fusion with a low-rank weight."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfusion.models import build_loss, create_model
from mmfusion.nn import FeatureSpec, create_fusion, list_fusions
from mmfusion.nn.fusions.low_rank_tensor import LowRankTensorFusion

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


def fusion(specs=SPECS, seed: int = 0, **kwargs) -> LowRankTensorFusion:
    torch.manual_seed(seed)
    kwargs = {"embed_dim": 3, "rank": 2, **kwargs}
    module = create_fusion("low_rank_tensor", specs, **kwargs)
    with torch.no_grad():  # learned-looking last rows (not all ones) and bias
        for p in module.factors.values():
            p[:, -1, :].normal_()
        module.bias.normal_()
    return module.eval()


def tensor_fusion_reference(module: LowRankTensorFusion, x: dict[str, torch.Tensor],
                            present: np.ndarray) -> np.ndarray:
    """TFN, h = W . (z_1 (x) ... (x) z_M) + b, in float64 NumPy, with the full weight tensor
    W[a_1..a_M, o] = sum_i prod_m W_m[i, a_m, o] rebuilt from the factors."""
    mods = module.modalities
    zs = []
    for k, m in enumerate(mods):
        weight = module.proj[m].weight.detach().double().numpy()
        bias = module.proj[m].bias.detach().double().numpy()
        if m in x:
            v = x[m].double().numpy()
            pooled = v.mean(axis=(2, 3)) if v.ndim == 4 else v
            xm = pooled @ weight.T + bias
        else:
            xm = np.zeros((present.shape[0], weight.shape[0]))
        xm = np.where(present[:, k, None], xm, 0.0)
        zs.append(np.concatenate([xm, np.ones((xm.shape[0], 1))], axis=1))
    letters = "acdefg"[: len(mods)]
    factors = [module.factors[m].detach().double().numpy() for m in mods]  # [r, d+1, D]
    # Full weight tensor [d+1, ..., d+1, D], then the outer product of the z_m, then contract.
    w_full = np.einsum(",".join(f"r{c}o" for c in letters) + "->" + letters + "o", *factors)
    z_outer = np.einsum(",".join(f"b{c}" for c in letters) + "->b" + letters, *zs)
    h = np.einsum(f"b{letters},{letters}o->bo", z_outer, w_full)
    return h + module.bias.detach().double().numpy()


def test_registered_and_described() -> None:
    assert "low_rank_tensor" in list_fusions()
    module = fusion()
    assert isinstance(module, LowRankTensorFusion) and module.out_features == 3
    assert not module.decision_level and module.compiles
    assert "Liu et al. 2018" in module.reference and module.missing


def test_by_hand_two_scalars() -> None:
    """embed_dim = 1, rank = 1: h = (a x1 + c)(d x2 + f) + g."""
    specs = {"a": FeatureSpec("vector", 1), "b": FeatureSpec("vector", 1)}
    module = create_fusion("low_rank_tensor", specs, embed_dim=1, rank=1).eval()
    with torch.no_grad():
        for m in specs:  # x_m = the input
            module.proj[m].weight.fill_(1.0)
            module.proj[m].bias.zero_()
        module.factors["a"].copy_(torch.tensor([[[0.5], [1.0]]]))  # a = 0.5, c = 1
        module.factors["b"].copy_(torch.tensor([[[2.0], [-1.0]]]))  # d = 2, f = -1
        module.bias.fill_(0.25)  # g
        x = {"a": torch.tensor([[2.0], [2.0]]), "b": torch.tensor([[3.0], [3.0]])}
        out = module(x, {"b": torch.tensor([True, False])})
        # present: (0.5*2 + 1) * (2*3 - 1) + 0.25 = 2 * 5 + 0.25 = 10.25
        # b absent, z_b = [0, 1]: (0.5*2 + 1) * (-1) + 0.25 = -1.75
        assert out.fused[:, 0].tolist() == [10.25, -1.75]
        assert module({"a": x["a"]}).fused[:, 0].tolist() == [-1.75, -1.75]


@pytest.mark.parametrize("count", [1, 2, 3])
def test_equals_tensor_fusion_with_the_low_rank_weight(count: int) -> None:
    specs = dict(list(SPECS.items())[:count])
    module = fusion(specs, rank=3).double()
    x = inputs(specs, 5, seed=1, dtype=torch.float64)
    present = np.ones((5, count), bool)
    if count > 1:
        present[[1, 3], 0] = False
        present[[2, 3], count - 1] = False
    masks = {m: torch.from_numpy(present[:, k].copy()) for k, m in enumerate(specs)}
    with torch.no_grad():
        got = module(x, masks).fused.numpy()
    np.testing.assert_allclose(got, tensor_fusion_reference(module, x, present), rtol=1e-10,
                               atol=1e-10)
    if count > 1:  # a modality left out entirely: z_m = [0, ..., 0, 1] for every sample
        left = {m: v for m, v in x.items() if m != "us"}
        present = np.ones((5, count), bool)
        present[:, 0] = False
        with torch.no_grad():
            got = module(left).fused.numpy()
        np.testing.assert_allclose(got, tensor_fusion_reference(module, left, present),
                                   rtol=1e-10, atol=1e-10)


def test_factors_are_registered_saved_and_trained() -> None:
    """MultiBench keeps the factors in a plain list; here state_dict and the optimizer see them."""
    torch.manual_seed(0)
    model = create_model("liver_fibrosis_quick", fusion="low_rank_tensor", backbone="test_resnet",
                         image_size=64, hidden=(16,), head_pool="avg", embed_dim=8,
                         fusion_kwargs={"rank": 3})
    state = model.state_dict()
    for m in model.config.modalities:
        assert state[f"fusion.factors.{m}"].shape == (3, 9, 8)
    before = {m: p.detach().clone() for m, p in model.fusion.factors.items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    images = {m: torch.randn(4, 3, 64, 64) for m in model.config.modalities}
    target = torch.tensor([0, 1, 2, 3])
    out = model(images)
    loss = build_loss(model.config)(out.logits, target, out.features, out.available)
    loss.total.backward()
    optimizer.step()
    for m, p in model.fusion.factors.items():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0
        assert not torch.equal(p.detach(), before[m])
    assert torch.isfinite(model(images).logits["joint"]).all()


def test_masked_equals_absent_exactly_and_batch_independence() -> None:
    module = fusion()
    x = inputs(SPECS, 4, seed=2)
    flags = {"us": [1, 0, 1, 1], "swe": [1, 1, 0, 0], "labs": [0, 1, 1, 1]}
    masks = {m: torch.tensor(v, dtype=torch.bool) for m, v in flags.items()}
    with torch.no_grad():
        batched = module(x, masks)
        for i in range(4):
            alone = {m: v[i:i + 1] for m, v in x.items() if flags[m][i]}
            torch.testing.assert_close(module(alone).fused[0], batched.fused[i], atol=1e-6,
                                       rtol=1e-6)
            # Eval mode: sample i's output does not depend on the other samples.
            shuffled = {m: torch.cat([v[i:i + 1], torch.randn_like(v[:3])]) for m, v in x.items()}
            torch.testing.assert_close(module(shuffled).fused[0], module(
                {m: v[i:i + 1] for m, v in x.items()}).fused[0], atol=1e-6, rtol=1e-6)
        # Same batch, "us" masked for every sample or left out: bit for bit the same computation.
        off = {"us": torch.zeros(4, dtype=torch.bool)}
        without = {m: v for m, v in x.items() if m != "us"}
        assert torch.equal(module(x, off).fused, module(without).fused)
    assert set(batched.features) == set(SPECS)
    assert all(f.shape == (4, 3) for f in batched.features.values())


@settings(max_examples=20, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(["map", "vector"]), min_size=1, max_size=3),
    rank=st.integers(1, 4),
    embed_dim=st.integers(1, 6),
    batch=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_any_modalities_masked_equals_absent(kinds, rank, embed_dim, batch, seed) -> None:
    specs = {
        f"m{k}": FeatureSpec("map", 3 + k, (2, 2)) if kind == "map" else FeatureSpec("vector", 4 + k)
        for k, kind in enumerate(kinds)
    }
    module = fusion(specs, seed=seed, embed_dim=embed_dim, rank=rank)
    x = inputs(specs, batch, seed=seed)
    rng = np.random.default_rng(seed)
    present = rng.random((batch, len(specs))) < 0.6
    present[np.arange(batch), rng.integers(0, len(specs), batch)] = True  # >= 1 each
    masks = {m: torch.from_numpy(present[:, k].copy()) for k, m in enumerate(specs)}
    with torch.no_grad():
        out = module(x, masks)
        assert out.fused.shape == (batch, embed_dim) and torch.isfinite(out.fused).all()
        for i in range(batch):
            alone = {m: v[i:i + 1] for k, (m, v) in enumerate(x.items()) if present[i, k]}
            torch.testing.assert_close(module(alone).fused[0], out.fused[i], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rank": 0}, "rank: expected a positive int, got 0"),
        ({"rank": True}, "rank: expected a positive int, got True"),
        ({"rank": 2.0}, "rank: expected a positive int, got 2.0"),
        ({"embed_dim": 0}, "embed_dim: expected a positive int, got 0"),
    ],
)
def test_constructor_checks_its_kwargs(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        create_fusion("low_rank_tensor", SPECS, **kwargs)


