"""AttentionFusion, ConcatFusion, ClassifierHead and EnsembleHead."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfusion import (
    AttentionFusion,
    ClassifierHead,
    ConcatFusion,
    EnsembleHead,
)

NAMES = ("us", "swe", "doppler")


@settings(max_examples=12, deadline=None)
@given(m=st.integers(1, 3), b=st.integers(1, 3), hw=st.integers(1, 4),
       kind=st.sampled_from(["attention", "late"]))
def test_fusion_shapes_for_one_two_three_modalities(m, b, hw, kind):
    names = NAMES[:m]
    cls = AttentionFusion if kind == "attention" else ConcatFusion
    kwargs = {"reduced_channels": (8, 4)} if kind == "attention" else {}
    fusion = cls(16, names, embed_dim=6, **kwargs)
    maps = {n: torch.randn(b, 16, hw, hw) for n in names}
    out = fusion(maps, return_attention=True)
    assert out.fused.shape == (b, 6 * m)
    assert list(out.features) == list(names)
    for n in names:
        torch.testing.assert_close(out.fused[:, names.index(n) * 6:(names.index(n) + 1) * 6],
                                   out.features[n])
    if kind == "attention":
        assert {k: v.shape for k, v in out.attention.items()} == {n: (b, 1, hw, hw) for n in names}
    else:
        assert out.attention == {}


def test_fusion_order_is_the_constructor_order_not_the_input_order():
    fusion = ConcatFusion({"swe": 4, "us": 8}, embed_dim=3)
    assert fusion.modalities == ("swe", "us")
    maps = {"us": torch.randn(2, 8, 2, 2), "swe": torch.randn(2, 4, 2, 2)}
    out = fusion(maps)
    torch.testing.assert_close(out.fused[:, :3], out.features["swe"])


def test_attention_embedding_follows_the_paper_pipeline():
    torch.manual_seed(0)
    fusion = AttentionFusion(32, ("us",), embed_dim=5, reduced_channels=(8, 4))
    emb = fusion.embedders["us"]
    x = torch.randn(2, 32, 3, 3)
    pooled = x.view(2, 8, 4, 3, 3).mean(2)
    reduced = emb.reduce(pooled)
    att = emb.spatial.attention_map(reduced)
    weighted = x * emb.channel.channel_weights(reduced * att)[:, :, None, None]
    expected = emb.proj(weighted.mean(dim=(2, 3)))
    out = fusion({"us": x}, return_attention=True)
    torch.testing.assert_close(out.features["us"], expected)
    torch.testing.assert_close(out.attention["us"], att)


def test_missing_modality_uses_learned_placeholder():
    fusion = AttentionFusion(16, ("us", "swe"), embed_dim=4, reduced_channels=(8, 4))
    with torch.no_grad():
        fusion.placeholders["swe"].fill_(7.0)
    out = fusion({"us": torch.randn(3, 16, 2, 2)})
    assert torch.all(out.fused[:, 4:] == 7.0) and list(out.features) == ["us"]
    maps = {"us": torch.randn(2, 16, 2, 2), "swe": torch.randn(2, 16, 2, 2)}
    masked = fusion(maps, available={"swe": torch.tensor([True, False])})
    assert torch.all(masked.fused[1, 4:] == 7.0)
    torch.testing.assert_close(masked.fused[0, 4:], masked.features["swe"][0])


@pytest.mark.parametrize("fusion_cls", [AttentionFusion, ConcatFusion])
def test_placeholders_in_graph_gives_zero_gradients_and_the_same_output(fusion_cls):
    kwargs = {"reduced_channels": (8, 4)} if fusion_cls is AttentionFusion else {}
    torch.manual_seed(0)
    plain = fusion_cls(16, ("us", "swe"), embed_dim=4, **kwargs)
    in_graph = fusion_cls(16, ("us", "swe"), embed_dim=4, placeholders_in_graph=True, **kwargs)
    in_graph.load_state_dict(plain.state_dict())
    maps = {"us": torch.randn(3, 16, 2, 2), "swe": torch.randn(3, 16, 2, 2)}
    plain(maps).fused.sum().backward()
    out = in_graph(maps)
    out.fused.sum().backward()
    torch.testing.assert_close(out.fused, plain(maps).fused, rtol=0, atol=0)
    for name in ("us", "swe"):
        assert plain.placeholders[name].grad is None  # unused: DDP would wait for it
        assert torch.equal(in_graph.placeholders[name].grad, torch.zeros(4))
    plain.placeholders_in_graph = True  # also switchable on a built model
    plain.zero_grad(set_to_none=True)
    plain(maps).fused.sum().backward()
    assert torch.equal(plain.placeholders["us"].grad, torch.zeros(4))


def test_fusion_bad_input():
    fusion = AttentionFusion(16, ("us", "swe"), embed_dim=4, reduced_channels=(8, 4),
                             allow_missing=False)
    good = torch.randn(2, 16, 2, 2)
    with pytest.raises(ValueError, match=r"feature_maps: unknown modality name\(s\) \['ct'\]"):
        fusion({"us": good, "swe": good, "ct": good})
    with pytest.raises(ValueError, match=r"feature_maps: missing modality name\(s\) \['swe'\]"):
        fusion({"us": good})
    with pytest.raises(ValueError, match="expected 16 channels"):
        fusion({"us": good, "swe": torch.randn(2, 8, 2, 2)})
    with pytest.raises(ValueError, match="same batch size"):
        fusion({"us": good, "swe": torch.randn(3, 16, 2, 2)})
    with pytest.raises(TypeError, match="floating-point"):
        fusion({"us": good, "swe": good.long()})
    with pytest.raises(ValueError, match=r"available\['us'\]: expected shape \[2\]"):
        fusion({"us": good, "swe": good}, available={"us": torch.tensor([True])})
    with pytest.raises(ValueError, match="modalities"):
        AttentionFusion({"us": 16}, modalities=("swe",))
    with pytest.raises(ValueError, match="in_channels: expected a positive multiple"):
        AttentionFusion(20, ("us",), reduced_channels=(8, 4))


def test_classifier_head_flatten_and_avg():
    head = ClassifierHead(4 * 2 * 2, 5, hidden=(7, 3))
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 7), (7, 3), (3, 5)]
    assert head(torch.randn(2, 4, 2, 2)).shape == (2, 5)
    avg = ClassifierHead(4, 3, pool="avg")
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(avg(x), avg.mlp(x.mean(dim=(2, 3))))
    assert ClassifierHead(6, 5)(torch.randn(2, 6)).shape == (2, 5)
    with pytest.raises(ValueError, match="tied to the input image size"):
        head(torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match="pool"):
        ClassifierHead(4, 3, pool="max")
    with pytest.raises(ValueError, match="num_classes"):
        ClassifierHead(4, 1)


def test_ensemble_head_averages_softmaxes():
    torch.manual_seed(0)
    heads = {"us": ClassifierHead(4, 3, pool="avg"), "swe": ClassifierHead(4, 3, pool="avg")}
    ens = EnsembleHead(heads, ClassifierHead(6, 3), weights={"joint": 2.0})
    maps = {"us": torch.randn(2, 4, 2, 2), "swe": torch.randn(2, 4, 2, 2)}
    fused = torch.randn(2, 6)
    out = ens(maps, fused)
    p = {k: torch.softmax(v, 1) for k, v in out.logits.items()}
    torch.testing.assert_close(out.probs, (p["us"] + p["swe"] + 2 * p["joint"]) / 4)
    masked = ens(maps, fused, available={"swe": torch.tensor([True, False])})
    torch.testing.assert_close(masked.probs[1], ((p["us"] + 2 * p["joint"]) / 3)[1])
    torch.testing.assert_close(masked.probs.sum(1), torch.ones(2))


def test_ensemble_head_errors():
    with pytest.raises(ValueError, match="at least one head"):
        EnsembleHead({}, None)
    with pytest.raises(ValueError, match="weights: unknown branch"):
        EnsembleHead({"us": ClassifierHead(4, 3)}, weights={"swe": 1.0})
    with pytest.raises(ValueError, match="reserved"):
        EnsembleHead({"joint": ClassifierHead(4, 3)})
    ens = EnsembleHead({"us": ClassifierHead(4, 3, pool="avg")}, ClassifierHead(6, 3))
    with pytest.raises(ValueError, match=r"feature_maps/fused: .*same batch size.*'us': 5, 'joint': 1"):
        ens({"us": torch.randn(5, 4, 2, 2)}, torch.randn(1, 6))  # would broadcast silently


def test_an_empty_container_still_counts_as_a_joint_head():
    """A falsy module (an empty Sequential: identity) is still a joint head."""
    ens = EnsembleHead({"us": ClassifierHead(4, 3, pool="avg")}, torch.nn.Sequential())
    assert ens.branches == ("us", "joint")
    out = ens({"us": torch.randn(2, 4, 2, 2)}, torch.randn(2, 3))
    assert set(out.logits) == {"us", "joint"} and out.probs.shape == (2, 3)
