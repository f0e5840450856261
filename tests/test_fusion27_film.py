"""Issue 27: FiLM / DAFT conditioning (``"film"``), on the final map and at an encoder stage.

The formula by hand (``gamma * F + beta`` per channel, hand-set weights), the identity at
initialisation and when every source is absent, the placement after stage 2 of a timm encoder
(checked with hooks on the encoder's own stage modules, independent of the fusion's code path),
and models built by ``create_model`` with two images and with a tabular source: forward/backward,
masked == absent per sample, ONNX and ``torch.compile``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from mmfusion.models import ModelConfig, create_model
from mmfusion.nn import FeatureSpec, create_fusion
from mmfusion.nn.encoder import ModalityEncoder
from mmfusion.nn.fusions.film import FiLMFusion

SIZE = 64
MODS = ("us", "swe")
QUICK = dict(backbone="test_resnet", image_size=SIZE, hidden=(16,), embed_dim=16, frozen_stages=0)


@functools.cache
def builder_passes_encoders() -> bool:
    """Whether ``build_model`` gives a fusion that takes ``encoders`` the model's encoders."""
    try:
        create_model("liver_fibrosis_quick", fusion="film", fusion_kwargs={"stage": 2}, **QUICK)
    except ValueError as err:
        if "needs that stage's channels" in str(err):
            return False
        raise
    return True


def stage2_kwargs() -> dict[str, object]:
    """``fusion_kwargs`` for FiLM after stage 2 of the quick models' ``test_resnet`` (48 channels).

    ``build_model`` passes the encoders to a fusion that takes them, which gives the stage's
    channels; until it does, they are named by hand.
    """
    if builder_passes_encoders():
        return {"stage": 2}
    return {"stage": 2, "stage_channels": {"us": 48, "swe": 48}}


def randomise(module: nn.Module, seed: int = 0) -> None:
    """Move every parameter off its initial value (the zero last layers, the placeholders)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=gen))


# ---------------------------------------------------------------------------------------------
# The formula
# ---------------------------------------------------------------------------------------------


def test_film_by_hand_on_a_tiny_map() -> None:
    """One map (2 channels, 2x2) conditioned on one scalar, every weight set by hand."""
    specs = {"img": FeatureSpec("map", 2, (2, 2)), "tab": FeatureSpec("vector", 1)}
    fusion = create_fusion("film", specs, embed_dim=2, hidden_dim=2, self_condition=False).eval()
    first, _, last = fusion.generators["img"]
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        first.bias.zero_()
        # rows: dgamma_0, dgamma_1, beta_0, beta_1; columns: hidden units
        last.weight.copy_(torch.tensor([[0.5, 9.0], [-0.25, 9.0], [1.0, 9.0], [0.0, 9.0]]))
        last.bias.copy_(torch.tensor([0.0, 0.0, 0.0, -1.0]))
        for name in ("img", "tab"):
            fusion.projections[name].weight.copy_(torch.eye(2, fusion.projections[name].in_features))
            fusion.projections[name].bias.zero_()
    fmap = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[-1.0, 0.0], [1.0, 2.0]]]])  # [1, 2, 2, 2]
    tab = torch.tensor([[2.0]])
    # hidden = relu([2, -2]) = [2, 0]; dgamma = [1, -0.5]; beta = [2, -1]
    # gamma = [2, 0.5]: channel 0 -> 2 F + 2, channel 1 -> 0.5 F - 1
    expected = torch.tensor([[[[4.0, 6.0], [8.0, 10.0]], [[-1.5, -1.0], [-0.5, 0.0]]]])
    z = tab  # no self term
    got = fusion.modulation("img", fmap, z, torch.tensor([True]))
    torch.testing.assert_close(got, expected)
    out = fusion({"img": fmap, "tab": tab})
    # fused = [GAP of the conditioned map (identity projection), the vector (eye(2, 1))]
    torch.testing.assert_close(out.fused, torch.tensor([[7.0, -0.75, 2.0, 0.0]]))
    torch.testing.assert_close(out.features["img"], torch.tensor([[7.0, -0.75]]))


def test_daft_self_term_joins_the_conditioning_vector() -> None:
    """With ``self_condition`` (DAFT) z = [GAP(F_t), v_source]: computed here with plain torch."""
    specs = {"img": FeatureSpec("map", 3, (2, 2)), "tab": FeatureSpec("vector", 2)}
    fusion = create_fusion("film", specs, embed_dim=4, hidden_dim=5).eval()
    randomise(fusion)
    gen = torch.Generator().manual_seed(1)
    fmap, tab = torch.randn(2, 3, 2, 2, generator=gen), torch.randn(2, 2, generator=gen)
    first, _, last = fusion.generators["img"]
    z = torch.cat([fmap.mean(dim=(2, 3)), tab], dim=1)
    out = torch.relu(z @ first.weight.T + first.bias) @ last.weight.T + last.bias
    gamma, beta = 1 + out[:, :3], out[:, 3:]
    conditioned = gamma[:, :, None, None] * fmap + beta[:, :, None, None]
    proj = fusion.projections["img"]
    expected = conditioned.mean(dim=(2, 3)) @ proj.weight.T + proj.bias
    with torch.no_grad():
        got = fusion({"img": fmap, "tab": tab}).fused[:, :4]
    torch.testing.assert_close(got, expected)


def test_an_untrained_film_is_the_identity() -> None:
    specs = {"us": FeatureSpec("map", 6, (3, 3)), "swe": FeatureSpec("map", 4, (3, 3)),
             "labs": FeatureSpec("vector", 5)}
    fusion = create_fusion("film", specs, embed_dim=8).eval()
    gen = torch.Generator().manual_seed(0)
    x = {"us": torch.randn(3, 6, 3, 3, generator=gen), "swe": torch.randn(3, 4, 3, 3, generator=gen),
         "labs": torch.randn(3, 5, generator=gen)}
    with torch.no_grad():
        out = fusion(x)
        for m, t in x.items():
            pooled = t.mean(dim=(2, 3)) if t.ndim == 4 else t
            torch.testing.assert_close(out.features[m], fusion.projections[m](pooled))
        for m in ("us", "swe"):
            fmap = x[m]
            z = torch.randn(3, fusion.generators[m][0].in_features, generator=gen)
            assert torch.equal(fusion.modulation(m, fmap, z, torch.ones(3, dtype=torch.bool)), fmap)


def test_all_sources_absent_is_exactly_the_identity() -> None:
    """Per sample: a target whose sources are all absent keeps its map (gamma=1, beta=0)."""
    specs = {"us": FeatureSpec("map", 6, (3, 3)), "labs": FeatureSpec("vector", 5)}
    fusion = create_fusion("film", specs, embed_dim=8).eval()
    randomise(fusion)
    gen = torch.Generator().manual_seed(2)
    x = {"us": torch.randn(4, 6, 3, 3, generator=gen), "labs": torch.randn(4, 5, generator=gen)}
    labs_present = torch.tensor([True, False, True, False])
    proj = fusion.projections["us"]
    unconditioned = proj(x["us"].mean(dim=(2, 3)))
    with torch.no_grad():
        masked = fusion(x, {"labs": labs_present}).features["us"]
        left_out = fusion({"us": x["us"]}).features["us"]
        # absent rows: exactly the unconditioned map; present rows: conditioned (differ)
        assert torch.equal(masked[~labs_present], unconditioned[~labs_present])
        assert torch.equal(left_out, unconditioned)
        assert (masked[labs_present] - unconditioned[labs_present]).abs().max() > 1e-3
        # and the raw modulation with active=False returns the map bit for bit
        z = torch.randn(4, fusion.generators["us"][0].in_features, generator=gen)
        assert torch.equal(fusion.modulation("us", x["us"], z, torch.zeros(4, dtype=torch.bool)),
                           x["us"])


def test_an_absent_source_gets_its_placeholder_in_the_conditioning_vector() -> None:
    """us conditioned on swe and labs: with labs absent z holds the learned labs placeholder."""
    specs = {"us": FeatureSpec("map", 4, (2, 2)), "swe": FeatureSpec("map", 3, (2, 2)),
             "labs": FeatureSpec("vector", 2)}
    fusion = create_fusion("film", specs, embed_dim=4, condition={"us": ["swe", "labs"]}).eval()
    randomise(fusion)
    gen = torch.Generator().manual_seed(3)
    x = {"us": torch.randn(1, 4, 2, 2, generator=gen), "swe": torch.randn(1, 3, 2, 2, generator=gen)}
    z = torch.cat([x["us"].mean(dim=(2, 3)), x["swe"].mean(dim=(2, 3)),
                   fusion.source_placeholders["labs"][None]], dim=1)
    with torch.no_grad():
        want = fusion.projections["us"](fusion.modulation("us", x["us"], z, torch.tensor([True]))
                                        .mean(dim=(2, 3)))
        torch.testing.assert_close(fusion(x).features["us"], want)


def test_condition_chooses_targets_and_sources() -> None:
    specs = {"us": FeatureSpec("map", 4, (2, 2)), "swe": FeatureSpec("map", 3, (2, 2)),
             "labs": FeatureSpec("vector", 2)}
    default = create_fusion("film", specs, embed_dim=4)
    assert default.targets == {"us": ("swe", "labs"), "swe": ("us", "labs")}
    chosen = create_fusion("film", specs, embed_dim=4, condition={"swe": ["labs"]})
    assert chosen.targets == {"swe": ("labs",)} and set(chosen.generators) == {"swe"}
    assert chosen.generators["swe"][0].in_features == 3 + 2  # GAP(swe) + labs
    assert chosen.generators["swe"][2].out_features == 2 * 3  # dgamma and beta per channel


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"condition": {"labs": ["us"]}}, ValueError, r"condition\['labs'\]: a target must be a map"),
        ({"condition": {"us": ["us"]}}, ValueError, r"condition\['us'\]: expected sources"),
        ({"condition": {"us": []}}, ValueError, r"condition\['us'\]: expected a non-empty"),
        ({"condition": {"ct": ["us"]}}, ValueError, "condition: the target 'ct'"),
        ({"condition": ["us"]}, TypeError, "condition: expected None or a mapping"),
        ({"stage": 0}, ValueError, "stage: expected None, -1 or an encoder stage"),
        ({"stage": 2}, ValueError, "stage: FiLM after encoder stage 2 needs"),
        ({"self_condition": 1}, TypeError, "self_condition: expected a bool"),
        ({"hidden_dim": 0}, ValueError, "hidden_dim: expected a positive int"),
    ],
)
def test_invalid_arguments_are_named(kwargs: dict, error: type, match: str) -> None:
    specs = {"us": FeatureSpec("map", 4, (2, 2)), "labs": FeatureSpec("vector", 2)}
    with pytest.raises(error, match=match):
        create_fusion("film", specs, **kwargs)


# ---------------------------------------------------------------------------------------------
# Placement at an encoder stage
# ---------------------------------------------------------------------------------------------


def test_forward_modulated_with_the_identity_is_forward() -> None:
    encoder = ModalityEncoder("test_resnet", frozen_stages=1).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    for stage in range(1, encoder.num_stages + 1):
        assert torch.equal(encoder.forward_modulated(x, stage, lambda f: f), encoder(x))
        kept: list[Tensor] = []

        def double(fmap: Tensor, kept: list[Tensor] = kept) -> Tensor:
            kept.append(fmap)
            return 2 * fmap

        doubled = encoder.forward_modulated(x, stage, double)
        assert torch.equal(encoder.resume(2 * kept[0], stage), doubled)  # resumes after the stage
    assert encoder.stage_channels == (32, 48, 192, 96)


def test_a_transformer_encoder_cannot_be_modulated_at_a_stage() -> None:
    vit = ModalityEncoder("test_vit", frozen_stages=0, img_size=SIZE)
    specs = {"us": FeatureSpec("map", 64, (4, 4)), "labs": FeatureSpec("vector", 2)}
    with pytest.raises(ValueError, match="stage: the stages of 'test_vit' cannot be run one by one"):
        create_fusion("film", specs, stage=2, encoders={"us": vit})
    with pytest.raises(ValueError, match="cannot be run one by one"):
        vit.forward_modulated(torch.randn(1, 3, SIZE, SIZE), 2, lambda f: f)
    # the final map needs no stage-wise run: FiLM on a ViT's output works
    fusion = create_fusion("film", specs, stage=-1, encoders={"us": vit})
    assert fusion.encoder_stage == {}


@pytest.mark.parametrize("backbone", ["test_resnet", "resnet10t"])
def test_stage_two_modulates_the_stage_two_output(backbone: str) -> None:
    """Hooks on the encoder's stage 2 and 3 modules: stage 3 reads FiLM(stage 2's output)."""
    torch.manual_seed(0)
    encoders = nn.ModuleDict({"us": ModalityEncoder(backbone, frozen_stages=0).eval(),
                              "labs": nn.Identity()})
    channels = encoders["us"].stage_channels
    specs = {"us": encoders["us"].feature_spec(SIZE), "labs": FeatureSpec("vector", 3)}
    late = create_fusion("film", specs, embed_dim=8, encoders=encoders)
    early = create_fusion("film", specs, embed_dim=8, stage=2, encoders=encoders)
    assert late.encoder_stage == {} and early.encoder_stage == {"us": 2}
    assert early.generators["us"][2].out_features == 2 * channels[1]
    assert late.generators["us"][2].out_features == 2 * channels[-1]
    randomise(early), randomise(late)
    early.eval(), late.eval()

    seen: dict[str, Tensor] = {}
    stage2, stage3 = encoders["us"].stage(2), encoders["us"].stage(3)
    hooks = [
        stage2.register_forward_hook(lambda mod, args, out: seen.__setitem__("out2", out)),
        stage3.register_forward_pre_hook(lambda mod, args: seen.__setitem__("in3", args[0])),
    ]
    gen = torch.Generator().manual_seed(4)
    inputs = {"us": torch.randn(2, 3, SIZE, SIZE, generator=gen), "labs": torch.randn(2, 3, generator=gen)}
    try:
        with torch.no_grad():
            maps = early.encode_inputs(encoders, inputs, None)
    finally:
        for hook in hooks:
            hook.remove()
    out2, labs = seen["out2"], inputs["labs"]
    first, _, last = early.generators["us"]
    z = torch.cat([out2.mean(dim=(2, 3)), labs], dim=1)
    params = torch.relu(z @ first.weight.T + first.bias) @ last.weight.T + last.bias
    gamma, beta = 1 + params[:, : channels[1]], params[:, channels[1]:]
    torch.testing.assert_close(seen["in3"], gamma[:, :, None, None] * out2 + beta[:, :, None, None])
    with torch.no_grad():
        plain = encoders["us"](inputs["us"])
        assert maps["us"].shape == plain.shape and (maps["us"] - plain).abs().max() > 1e-4
        assert torch.equal(maps["labs"], labs)
        # the same weights elsewhere: placement at stage 2 and at the last stage differ
        at_stage2 = early(maps).fused
        at_last = late(late.encode_inputs(encoders, inputs, None)).fused
    assert (at_stage2 - at_last).abs().max() > 1e-4


def test_two_images_condition_each_other_at_stage_two() -> None:
    """us and swe both targets and sources: stage 3 of us reads FiLM(stage 2 of us) with z built
    from GAP(us stage 2) and GAP(swe's unconditioned final map), checked with hooks."""
    torch.manual_seed(0)
    encoders = nn.ModuleDict({m: ModalityEncoder("test_resnet", frozen_stages=0).eval() for m in MODS})
    specs = {m: encoders[m].feature_spec(SIZE) for m in MODS}
    fusion = create_fusion("film", specs, embed_dim=8, stage=2, encoders=encoders)
    randomise(fusion)
    fusion.eval()
    seen: dict[str, list[Tensor]] = {"out2": [], "in3": []}
    us = encoders["us"]
    hooks = [
        us.stage(2).register_forward_hook(lambda mod, args, out: seen["out2"].append(out)),
        us.stage(3).register_forward_pre_hook(lambda mod, args: seen["in3"].append(args[0])),
    ]
    gen = torch.Generator().manual_seed(7)
    x = {m: torch.randn(2, 3, SIZE, SIZE, generator=gen) for m in MODS}
    try:
        with torch.no_grad():
            maps = fusion.encode_inputs(encoders, x, None)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen["out2"]) == 1  # the stem and stages 1-2 of us ran once
    out2, modulated_input = seen["out2"][0], seen["in3"][-1]
    with torch.no_grad():
        swe_plain = encoders["swe"](x["swe"])
    first, _, last = fusion.generators["us"]
    z = torch.cat([out2.mean(dim=(2, 3)), swe_plain.mean(dim=(2, 3))], dim=1)
    params = torch.relu(z @ first.weight.T + first.bias) @ last.weight.T + last.bias
    gamma, beta = 1 + params[:, :48], params[:, 48:]
    torch.testing.assert_close(modulated_input, gamma[:, :, None, None] * out2 + beta[:, :, None, None])
    assert maps["us"].shape == swe_plain.shape


def test_stage_two_at_initialisation_is_the_plain_encoder() -> None:
    torch.manual_seed(0)
    encoders = nn.ModuleDict({m: ModalityEncoder("test_resnet", frozen_stages=0).eval() for m in MODS})
    specs = {m: encoders[m].feature_spec(SIZE) for m in MODS}
    fusion = create_fusion("film", specs, embed_dim=8, stage=2, encoders=encoders).eval()
    x = {m: torch.randn(2, 3, SIZE, SIZE) for m in MODS}
    with torch.no_grad():
        maps = fusion.encode_inputs(encoders, x, None)
        for m in MODS:
            assert torch.equal(maps[m], encoders[m](x[m]))


# ---------------------------------------------------------------------------------------------
# Whole models
# ---------------------------------------------------------------------------------------------


def quick_model(**fusion_kwargs: object) -> nn.Module:
    torch.manual_seed(0)
    return create_model("liver_fibrosis_quick", fusion="film", fusion_kwargs=fusion_kwargs, **QUICK)


def check_masked_equals_absent(model: nn.Module, x: dict[str, Tensor], masks: dict[str, Tensor]) -> None:
    model.eval()
    with torch.no_grad():
        out = model(x, available=masks)
        for i in range(len(next(iter(x.values())))):
            present = [m for m in x if bool(masks[m][i])]
            alone = model({m: x[m][i:i + 1] for m in present})
            torch.testing.assert_close(out.logits["joint"][i:i + 1], alone.logits["joint"],
                                       atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out.probs[i:i + 1], alone.probs, atol=1e-5, rtol=1e-5)


def test_create_model_gives_film_the_encoders_for_an_earlier_stage() -> None:
    if not builder_passes_encoders():
        pytest.skip("build_model does not pass encoders= to the fusion yet (the lead's change)")
    model = quick_model(stage=2)
    assert model.fusion.encoder_stage == {"us": 2, "swe": 2}
    assert not any(isinstance(m, ModalityEncoder) for m in model.fusion.modules())


def test_the_quick_model_with_film_at_stage_two_trains_and_masked_equals_absent() -> None:
    model = quick_model(**stage2_kwargs())
    assert model.fusion.encoder_stage == {"us": 2, "swe": 2}
    randomise(model.fusion)  # leave the identity
    model.train()
    gen = torch.Generator().manual_seed(5)
    x = {m: torch.randn(4, 3, SIZE, SIZE, generator=gen) for m in MODS}
    out = model(x)
    out.logits["joint"].sum().backward()
    for name, param in model.fusion.generators.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert model.encoders["us"].stage(1)[0].conv1.weight.grad is not None  # stage 1 reached

    masks = {"us": torch.tensor([True, False, True, True, True]),
             "swe": torch.tensor([True, True, False, False, True])}
    x = {m: torch.randn(5, 3, SIZE, SIZE, generator=gen) for m in MODS}
    check_masked_equals_absent(model, x, masks)
    with torch.no_grad():  # a masked modality's pixels are never read
        noisy = {m: torch.where(masks[m][:, None, None, None], t, t * 100 + 7) for m, t in x.items()}
        torch.testing.assert_close(model(noisy, available=masks).probs,
                                   model(x, available=masks).probs, atol=1e-5, rtol=1e-5)


COLUMNS = ("age", "ast", "alt", "platelets")


@pytest.mark.parametrize("stage", [None, 2])
def test_a_tabular_modality_conditions_the_image(stage: int | None) -> None:
    kwargs: dict[str, object] = {"stage": stage}
    if stage is not None and not builder_passes_encoders():
        kwargs["stage_channels"] = {"us": 48}
    config = ModelConfig(
        modalities=("us", "labs"), backbone="test_resnet", image_size=SIZE, frozen_stages=1,
        hidden=(8,), head_pool="avg", embed_dim=8, num_classes=3, fusion="film",
        fusion_kwargs=kwargs,
        encoders={"labs": {"name": "tabular", "columns": list(COLUMNS), "hidden": [16],
                           "out_features": 6}},
    )
    torch.manual_seed(0)
    model = create_model(config)
    assert model.fusion.targets == {"us": ("labs",)}
    assert model.fusion.encoder_stage == ({} if stage is None else {"us": 2})
    randomise(model.fusion)
    gen = torch.Generator().manual_seed(6)
    x = {"us": torch.randn(4, 3, SIZE, SIZE, generator=gen), "labs": torch.randn(4, 4, generator=gen)}
    x["labs"][1, 2] = float("nan")  # a missing value: the tabular encoder's business
    model.train()
    model(x).logits["joint"].sum().backward()
    assert model.encoders["labs"].mlp[0].weight.grad.abs().sum() > 0  # the tabular source learns
    masks = {"us": torch.tensor([True, True, False, True]),
             "labs": torch.tensor([False, True, True, True])}
    check_masked_equals_absent(model, x, masks)
    with torch.no_grad():  # without labs, FiLM leaves the image as it is: us branch unchanged
        plain = model.encoders["us"](x["us"])
        maps = model.fusion.encode_inputs(model.encoders, {"us": x["us"]}, None)
        assert torch.equal(maps["us"], plain)


def test_the_quick_model_compiles_in_one_graph() -> None:
    model = quick_model(**stage2_kwargs())
    randomise(model.fusion)
    model.eval()
    x = {m: torch.randn(2, 3, SIZE, SIZE) for m in MODS}
    masks = {"us": torch.tensor([True, False]), "swe": torch.tensor([True, True])}

    def probs(us: Tensor, swe: Tensor, us_on: Tensor, swe_on: Tensor) -> Tensor:
        return model({"us": us, "swe": swe}, available={"us": us_on, "swe": swe_on}).probs

    torch._dynamo.reset()
    compiled = torch.compile(probs, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x["us"], x["swe"], masks["us"], masks["swe"]),
                                   probs(x["us"], x["swe"], masks["us"], masks["swe"]),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_the_quick_model_exports_to_onnx_with_the_availability_input(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="needs the mmfusion[export] extra")
    pytest.importorskip("onnxscript", reason="needs the mmfusion[export] extra")
    from mmfusion.export import OnnxPredictor, to_onnx

    model = quick_model(**stage2_kwargs())
    randomise(model.fusion)
    model.eval()
    path = to_onnx(model, tmp_path / "film.onnx", image_size=SIZE, availability_input=True)
    rng = np.random.default_rng(0)
    x = {m: rng.standard_normal((3, 3, SIZE, SIZE)).astype(np.float32) for m in MODS}
    flags = {"us": np.array([1, 1, 0], bool), "swe": np.array([1, 0, 1], bool)}
    got = OnnxPredictor(path)(x, available=flags)
    with torch.no_grad():
        want = model({m: torch.from_numpy(v) for m, v in x.items()},
                     available={m: torch.from_numpy(v) for m, v in flags.items()}).probs.numpy()
    assert np.abs(got - want).max() < 1e-5


def test_film_is_registered_with_its_description() -> None:
    assert FiLMFusion.reference.startswith("Perez et al. 2018") and "DAFT" in FiLMFusion.reference
    assert "identity" in FiLMFusion.missing and FiLMFusion.compiles


def test_a_stage_the_encoder_does_not_have_is_named() -> None:
    encoders = {"us": ModalityEncoder("test_resnet", frozen_stages=0)}
    specs = {"us": FeatureSpec("map", 96, (2, 2)), "labs": FeatureSpec("vector", 2)}
    with pytest.raises(ValueError, match=r"stage: expected an int in \[1, 4\] for 'test_resnet'"):
        create_fusion("film", specs, stage=5, encoders=encoders)
    assert create_fusion("film", specs, stage=4, encoders=encoders).encoder_stage == {}  # the last
