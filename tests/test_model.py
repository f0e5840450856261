"""MultiModalClassifier: composition, 1-3 modalities, missing modalities, modality dropout."""

from __future__ import annotations

import pytest
import torch

from mmfusion import (
    AttentionFusion,
    ClassifierHead,
    EnsembleHead,
    EnsembleLoss,
    ModalityEncoder,
    MultiModalClassifier,
)

NAMES = ("us", "swe", "doppler")


def tiny_model(names=("us", "swe"), joint=True, branches=True, frozen=3, **kwargs):
    torch.manual_seed(0)
    enc = {m: ModalityEncoder("test_resnet", frozen_stages=frozen) for m in names}
    fusion = AttentionFusion(96, names, embed_dim=8, reduced_channels=(32, 16)) if joint else None
    heads = {m: ClassifierHead(96 * 2 * 2, 5, hidden=(8,)) for m in names} if branches else {}
    head = EnsembleHead(heads, ClassifierHead(8 * len(names), 5) if joint else None)
    return MultiModalClassifier(enc, fusion, head, **kwargs)


def batch(names, b=2, size=64):
    return {m: torch.randn(b, 3, size, size) for m in names}


@pytest.mark.parametrize("m", [1, 2, 3])
def test_shapes_for_one_two_three_modalities(m):
    names = NAMES[:m]
    model = tiny_model(names)
    out = model(batch(names), return_attention=True)
    assert set(out.logits) == {*names, "joint"}
    assert all(v.shape == (2, 5) for v in out.logits.values())
    assert out.probs.shape == (2, 5)
    torch.testing.assert_close(out.probs.sum(1), torch.ones(2))
    assert {k: v.shape for k, v in out.features.items()} == {n: (2, 8) for n in names}
    assert {k: v.shape for k, v in out.attention.items()} == {n: (2, 1, 2, 2) for n in names}


def test_single_modality_model_without_fusion():
    model = tiny_model(("us",), joint=False)
    out = model(batch(("us",)))
    assert list(out.logits) == ["us"] and out.features == {}
    torch.testing.assert_close(out.probs, torch.softmax(out.logits["us"], 1))


def test_training_step_reaches_exactly_the_trainable_parameters():
    model = tiny_model().train()
    loss_fn = EnsembleLoss(alpha=0.2)
    out = model(batch(("us", "swe"), b=3))
    loss = loss_fn(out.logits, torch.tensor([0, 2, 4]), out.features, out.available)
    loss.total.backward()
    for name, p in model.named_parameters():
        frozen = p.requires_grad is False
        if "placeholders" in name:
            assert p.grad is None  # nothing was missing, the placeholder was not used
        elif frozen:
            assert p.grad is None, name
            assert any(f".body.{s}" in name for s in ("conv1", "bn1", "layer1", "layer2", "layer3"))
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_missing_modality_still_predicts_from_present_branches():
    model = tiny_model().eval()
    x = batch(("us", "swe"))
    out = model({"us": x["us"]})
    assert set(out.logits) == {"us", "joint"}
    expected = (torch.softmax(out.logits["us"], 1) + torch.softmax(out.logits["joint"], 1)) / 2
    torch.testing.assert_close(out.probs, expected)


def test_availability_mask_equals_leaving_the_modality_out():
    model = tiny_model().eval()
    x = batch(("us", "swe"), b=2)
    masked = model(x, available={"swe": torch.tensor([False, True])})
    alone = model({"us": x["us"][:1]})
    full = model({k: v[1:] for k, v in x.items()})
    torch.testing.assert_close(masked.probs[:1], alone.probs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(masked.probs[1:], full.probs, atol=1e-5, rtol=1e-4)


def test_modality_dropout_never_drops_every_modality_and_only_in_training():
    model = tiny_model(modality_dropout=0.9).train()
    avail = model._drop_modalities({m: torch.ones(500, dtype=torch.bool) for m in ("us", "swe")})
    both = torch.stack(list(avail.values()), 1)
    assert both.any(1).all()
    assert (~both[:, 0]).float().mean() > 0.4  # dropped often with p = 0.9
    out = model(batch(("us", "swe"), b=4))
    assert torch.stack(list(out.available.values()), 1).any(1).all()
    model.eval()
    out = model(batch(("us", "swe"), b=4))
    assert all(v.all() for v in out.available.values())


def test_modality_dropout_respects_given_absences():
    model = tiny_model(modality_dropout={"us": 0.5}).train()
    given = {"us": torch.tensor([True, False, True, False]), "swe": torch.tensor([True] * 4)}
    for _ in range(20):
        avail = model._drop_modalities(dict(given))
        assert not (avail["us"] & ~given["us"]).any()  # never resurrects an absent modality
        assert (avail["us"] | avail["swe"]).all()


def test_bad_inputs():
    model = tiny_model()
    x = batch(("us", "swe"))
    with pytest.raises(ValueError, match=r"inputs: unknown modality name\(s\) \['ct'\]"):
        model({**x, "ct": x["us"]})
    with pytest.raises(ValueError, match="inputs: expected at least one"):
        model({})
    with pytest.raises(ValueError, match="same batch size"):
        model({"us": x["us"], "swe": x["swe"][:1]})
    with pytest.raises(TypeError, match=r"inputs\['us'\]: expected a floating-point tensor"):
        model({"us": x["us"].to(torch.uint8), "swe": x["swe"]})
    with pytest.raises(TypeError, match="inputs: expected a mapping"):
        model(x["us"])
    with pytest.raises(ValueError, match="modality_dropout"):
        tiny_model(modality_dropout=1.0)
    enc = {"us": ModalityEncoder("test_resnet", frozen_stages=0)}
    with pytest.raises(ValueError, match="fusion: the head has a joint branch"):
        MultiModalClassifier(enc, None, EnsembleHead({}, ClassifierHead(8, 5)))
    fusion = AttentionFusion(96, ("swe",), embed_dim=8, reduced_channels=(32, 16))
    with pytest.raises(ValueError, match="fusion: its modalities"):
        MultiModalClassifier(enc, fusion, EnsembleHead({}, ClassifierHead(8, 5)))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_channels_last_training_step():
    model = tiny_model().cuda().to(memory_format=torch.channels_last).train()
    x = {m: v.cuda().to(memory_format=torch.channels_last) for m, v in batch(("us", "swe")).items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(x, available={"swe": torch.tensor([True, False], device="cuda")})
        loss = EnsembleLoss()(out.logits, torch.tensor([1, 3], device="cuda"), out.features,
                              out.available)
    loss.total.backward()
    assert out.probs.dtype == torch.float32 and torch.isfinite(loss.total)
    assert model.fusion.placeholders["swe"].grad is not None  # the placeholder stood in for SWE
