"""Issue 25: open registries of fusions, encoders and models; a user's own pieces end to end.

The fusion and the encoder below are "a user's own file": defined here, registered here (inside a
fixture that unregisters them afterwards, so that no other test sees them), built by
``create_model`` through a ``ModelConfig``, trained one step, and round-tripped through
``save_pretrained`` / ``from_pretrained``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

import mmfusion
import mmfusion.models
import mmfusion.nn
from mmfusion.models import (
    FeatureSpec,
    ModelConfig,
    build_loss,
    build_model,
    create_encoder,
    create_fusion,
    create_model,
    from_pretrained,
    list_encoders,
    list_fusions,
    list_models,
    register_encoder,
    register_fusion,
)
from mmfusion.nn import FusionOutput, ModalityEncoder
from mmfusion.nn import registry as nn_registry

REPO = Path(__file__).resolve().parents[1]


# --- a user's own fusion and encoder ----------------------------------------------------------


class GatedFusion(nn.Module):
    """A user's fusion: per modality (pooled map or vector) -> Linear -> sigmoid gate; concatenated."""

    def __init__(self, features: Mapping[str, FeatureSpec], embed_dim: int = 8,
                 gate_bias: float = 0.0) -> None:
        super().__init__()
        self.modalities = tuple(features)
        self.embed_dim = embed_dim
        self.out_features = embed_dim * len(self.modalities)
        self.gate_bias = gate_bias
        self.proj = nn.ModuleDict({m: nn.Linear(s.channels, embed_dim) for m, s in features.items()})
        self.gate = nn.ParameterDict(
            {m: nn.Parameter(torch.full((embed_dim,), float(gate_bias))) for m in self.modalities}
        )

    def forward(self, features: Mapping[str, Tensor], available: Mapping[str, Tensor] | None = None,
                return_attention: bool = False) -> FusionOutput:
        batch = next(iter(features.values())).shape[0]
        vectors, parts = {}, []
        for m in self.modalities:
            if m not in features:
                parts.append(torch.zeros(batch, self.embed_dim))
                continue
            x = features[m]
            x = x.mean(dim=(2, 3)) if x.ndim == 4 else x
            v = self.proj[m](x) * torch.sigmoid(self.gate[m])
            vectors[m] = v
            if available is not None and m in available:
                v = v * available[m][:, None].to(v.dtype)
            parts.append(v)
        return FusionOutput(fused=torch.cat(parts, dim=1), features=vectors)


class ColourStatsEncoder(nn.Module):
    """A user's encoder: per-channel mean and std of an image -> Linear -> ReLU, ``[B, 3, H, W] -> [B, width]``."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.width = width
        self.proj = nn.Linear(6, width)

    def feature_spec(self, image_size: int) -> FeatureSpec:
        return FeatureSpec("vector", self.width)

    def check_input(self, x: object, name: str) -> None:
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{name}: expected a [B, 3, H, W] image batch")

    def forward(self, x: Tensor) -> Tensor:
        stats = torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)
        return torch.relu(self.proj(stats))


@pytest.fixture
def user_pieces() -> Iterator[None]:
    """Register the user's fusion and encoder for one test, and unregister them afterwards."""
    register_fusion("user_gated")(GatedFusion)
    register_encoder("user_stats")(ColourStatsEncoder)
    try:
        yield
    finally:
        nn_registry._FUSIONS.entries.pop("user_gated", None)
        nn_registry._ENCODERS.entries.pop("user_stats", None)


def user_config(**changes: object) -> ModelConfig:
    base = dict(
        modalities=("us", "swe"), fusion="user_gated", fusion_kwargs={"gate_bias": 1.5},
        encoders={"swe": {"name": "user_stats", "width": 12}}, backbone="test_resnet",
        image_size=32, frozen_stages=0, hidden=(8,), head_pool="avg", embed_dim=6,
    )
    return ModelConfig(**{**base, **changes})


def images(batch: int = 3, size: int = 32, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, 3, size, size, generator=g) for m in ("us", "swe")}


# --- the registries ---------------------------------------------------------------------------


def test_registry_names_are_reexported_from_nn_models_and_the_top_level() -> None:
    for name in ("FeatureSpec", "register_fusion", "create_fusion", "list_fusions",
                 "register_encoder", "create_encoder", "list_encoders"):
        obj = getattr(nn_registry, name)
        assert getattr(mmfusion.nn, name) is obj
        assert getattr(mmfusion.models, name) is obj
        assert getattr(mmfusion, name) is obj
    assert {"attention", "late"} <= set(list_fusions())
    assert {"timm", "tabular"} <= set(list_encoders())


def test_builtins_register_themselves_under_the_names_the_registry_expects() -> None:
    """The registry knows the built-ins by name (no torch); importing them registers those names."""
    from mmfusion.nn.fusion import AttentionFusion, ConcatFusion
    from mmfusion.nn.tabular import TabularEncoder

    assert nn_registry.get_fusion("attention") is AttentionFusion
    assert nn_registry.get_fusion("late") is ConcatFusion
    assert nn_registry.get_encoder("timm") is ModalityEncoder
    assert nn_registry.get_encoder("tabular") is TabularEncoder
    for name, module in nn_registry._FUSIONS.builtins.items():  # the catalogue, lazily imported
        factory = nn_registry.get_fusion(name)
        assert factory.__module__ == module, name
    assert set(nn_registry._FUSIONS.builtins) <= set(nn_registry._FUSIONS.entries)
    assert set(nn_registry._ENCODERS.builtins) <= set(nn_registry._ENCODERS.entries)


def test_create_fusion_gives_a_vector_modality_a_linear_embedding() -> None:
    features = {"us": FeatureSpec("map", 16, (2, 2)), "labs": FeatureSpec("vector", 5)}
    for name in ("attention", "late"):
        fusion = create_fusion(name, features, embed_dim=4)
        assert fusion.modalities == ("us", "labs") and fusion.out_features == 8
        labs = fusion.embedders["labs"]
        assert [(p.shape) for p in labs.parameters()] == [torch.Size([4, 5]), torch.Size([4])]
        x = {"us": torch.randn(2, 16, 2, 2), "labs": torch.randn(2, 5)}
        out = fusion(x)
        torch.testing.assert_close(out.features["labs"], labs.proj(x["labs"]))
        assert out.fused.shape == (2, 8)


def test_unknown_names_are_refused_with_the_registered_ones_and_close_matches() -> None:
    with pytest.raises(ValueError, match=r"name: expected 'attention', 'bottleneck', .*'late', "
                                         r"'low_rank_tensor' or 'perceiver', got 'atention' "
                                         r"\(did you mean 'attention' or 'cross_attention'\?\)"):
        create_fusion("atention", {"us": FeatureSpec("map", 8)})
    with pytest.raises(ValueError, match=r"name: expected 'tabular' or 'timm', got 'mlp'\. No encoder "
                                         r"is registered as 'mlp': .*register_encoder\('mlp'\)"):
        create_encoder("mlp")
    with pytest.raises(ValueError, match=r"encoders\['swe'\]\['name'\]: expected 'tabular' or 'timm', "
                                         r"got 'resnet18'"):
        ModelConfig(encoders={"swe": {"name": "resnet18"}})
    with pytest.raises(ValueError, match=r"name: unknown model 'liver_fibrosis_quik'; registered: .*"
                                         r"did you mean 'liver_fibrosis_quick'"):
        create_model("liver_fibrosis_quik")
    with pytest.raises(TypeError, match=r"features\['us'\]: expected a FeatureSpec, got int"):
        create_fusion("late", {"us": 8})


def test_a_name_registered_twice_is_refused(user_pieces: None) -> None:
    with pytest.raises(ValueError, match="register_fusion: the fusion name 'user_gated' is already "
                                         "registered .*GatedFusion.*; pick another name"):
        register_fusion("user_gated")(GatedFusion)
    with pytest.raises(ValueError, match="register_encoder: the encoder name 'user_stats' is already"):
        register_encoder("user_stats")(ColourStatsEncoder)
    with pytest.raises(ValueError, match="'attention' is the name of mmfusion's built-in fusion"):
        register_fusion("attention")(GatedFusion)
    with pytest.raises(ValueError, match="'timm' is the name of mmfusion's built-in encoder"):
        register_encoder("timm")(ColourStatsEncoder)
    with pytest.raises(ValueError, match="name: expected a non-empty fusion name"):
        register_fusion(" spaced ")


def test_config_arguments_are_json_and_checked() -> None:
    cfg = ModelConfig(fusion_kwargs={"reduced_channels": (16, 8)},
                      encoders={"us": {"name": "timm", "backbone": "resnet18"}})
    assert cfg.fusion_kwargs == {"reduced_channels": [16, 8]}  # plain JSON: tuples are lists
    assert ModelConfig(**json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.encoder("us") == {"name": "timm", "backbone": "resnet18", "frozen_stages": 3}
    assert cfg.encoder("swe") == {"name": "timm", "backbone": "resnet50", "frozen_stages": 3}
    with pytest.raises(ValueError, match="fusion_kwargs: expected JSON values"):
        ModelConfig(fusion_kwargs={"f": object()})
    with pytest.raises(ValueError, match="fusion_kwargs: 'embed_dim' is set by the embed_dim field"):
        ModelConfig(fusion_kwargs={"embed_dim": 3})
    with pytest.raises(ValueError, match=r"encoders: unknown modality name\(s\) \['ct'\]"):
        ModelConfig(encoders={"ct": {"name": "timm"}})
    with pytest.raises(ValueError, match=r"encoders\['us'\]: expected a 'name' key"):
        ModelConfig(encoders={"us": {"backbone": "resnet18"}})
    with pytest.raises(ValueError, match=r"encoders\['us'\]: weights are not part of the architecture"):
        ModelConfig(encoders={"us": {"name": "timm", "weights": "imagenet"}})


def test_different_backbones_per_modality_through_the_config() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="test_resnet", image_size=32, frozen_stages=0, hidden=(8,),
                      head_pool="avg", embed_dim=8,
                      encoders={"swe": {"name": "timm", "backbone": "resnet10t"}})
    model = create_model(cfg)
    assert model.encoders["us"].backbone_name == "test_resnet"
    assert model.encoders["swe"].backbone_name == "resnet10t"
    channels = {m: e.out_channels for m, e in model.encoders.items()}
    assert channels == {"us": 96, "swe": 512}
    assert model.fusion.embedders["swe"].in_channels == 512
    assert model.head.branch_heads["swe"].in_features == 512
    with torch.no_grad():
        assert model.eval()(images()).probs.shape == (3, 5)


# --- a user's pieces, end to end --------------------------------------------------------------


def test_a_users_fusion_and_encoder_build_train_and_round_trip(
    user_pieces: None, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = create_model(user_config())
    assert isinstance(model.fusion, GatedFusion) and model.fusion.gate_bias == 1.5
    assert isinstance(model.encoders["swe"], ColourStatsEncoder) and model.encoders["swe"].width == 12
    assert isinstance(model.encoders["us"], ModalityEncoder)
    assert model.head.branch_heads["swe"].in_features == 12  # a head on the encoder's vector
    assert model.fusion.proj["swe"].in_features == 12 and model.fusion.out_features == 12

    # one optimizer step reaches the user's fusion and encoder
    loss_fn = build_loss(model.config)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = model.train()(images())
    loss = loss_fn(out.logits, torch.tensor([0, 2, 4]), out.features, out.available).total
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    for key in ("fusion.gate.swe", "fusion.proj.us.weight", "encoders.swe.proj.weight"):
        assert not torch.equal(before[key], after[key]), key

    model.save_pretrained(tmp_path / "m")
    document = json.loads((tmp_path / "m" / "config.json").read_text())
    assert document["model"]["fusion"] == "user_gated"
    assert document["model"]["fusion_kwargs"] == {"gate_bias": 1.5}
    assert document["model"]["encoders"] == {"swe": {"name": "user_stats", "width": 12}}
    loaded = from_pretrained(tmp_path / "m")
    assert loaded.config == model.config and isinstance(loaded.fusion, GatedFusion)
    x = images(seed=1)
    with torch.no_grad():
        a, b = model.eval()(x), loaded(x)
    assert torch.equal(a.probs, b.probs)
    for name in a.logits:
        assert torch.equal(a.logits[name], b.logits[name])


def test_a_saved_model_whose_fusion_is_not_registered_fails_with_one_error(
    user_pieces: None, tmp_path: Path
) -> None:
    create_model(user_config()).save_pretrained(tmp_path)
    nn_registry._FUSIONS.entries.pop("user_gated")
    with pytest.raises(ValueError) as info:
        from_pretrained(tmp_path)
    message = str(info.value)
    assert message.startswith("fusion: expected 'attention', 'bottleneck', ")
    assert "or 'perceiver', got 'user_gated'" in message
    assert "No fusion is registered as 'user_gated': if it is your own, import the module that " \
           "registers it (@mmfusion.nn.register_fusion('user_gated')) first" in message
    assert info.value.__cause__ is None and info.value.__context__ is None  # one error, not a chain
    # registered again (the user imports their module): it loads
    register_fusion("user_gated")(GatedFusion)
    assert isinstance(from_pretrained(tmp_path).fusion, GatedFusion)
    # the same for an encoder
    nn_registry._ENCODERS.entries.pop("user_stats")
    with pytest.raises(ValueError, match=r"^encoders\['swe'\]\['name'\]: expected 'tabular' or "
                                         r"'timm', got 'user_stats'\. No encoder is registered"):
        from_pretrained(tmp_path)


def test_an_encoder_given_arguments_it_does_not_take_is_named(user_pieces: None) -> None:
    with pytest.raises(TypeError, match=r"encoders\['swe'\]: the 'user_stats' encoder does not take "
                                        r"the arguments \['depth', 'width'\]"):
        build_model(user_config(encoders={"swe": {"name": "user_stats", "width": 4, "depth": 2}}))
    with pytest.raises(ValueError, match=r"weights\['swe'\]: the 'user_stats' encoder of 'swe' takes "
                                         "no weights"):
        build_model(user_config(), weights={"swe": "weights.safetensors"})


# --- old config.json files and the liver plug-in ----------------------------------------------

LEGACY_MODEL = {
    "modalities": ["us", "swe"], "fusion": "attention", "loss": "multi", "backbone": "test_resnet",
    "image_size": 32, "frozen_stages": 0, "hidden": [8], "head_pool": "avg", "embed_dim": 8,
    "num_classes": 5, "alpha": 0.2, "modality_dropout": 0.0,
}
"""The "model" section of a config.json written before issue 25 (no fusion_kwargs, no encoders)."""

LEGACY_STATE_DIGEST = "ad475704921c3186fd0b3f4ee5b3fb83de2f23c4a476baf7b51ba69b6abd6ed4"
"""sha256 of the sorted "key:shape" lines of the state dict that the code before issue 25
(commit 01a0ea0) built from LEGACY_MODEL: 212 tensors."""


def _state_digest(model: nn.Module) -> str:
    lines = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(model.state_dict().items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def test_an_old_config_json_loads_unchanged_into_the_same_architecture(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(**LEGACY_MODEL)).eval()
    assert len(model.state_dict()) == 212 and _state_digest(model) == LEGACY_STATE_DIGEST
    document = {"format": "mmfusion.model/1", "mmfusion_version": "0.1.0", "model": LEGACY_MODEL,
                "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
    (tmp_path / "config.json").write_text(json.dumps(document))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(tmp_path / "model.safetensors"), {"format": "mmfusion.model/1"})
    loaded = from_pretrained(tmp_path)
    assert loaded.config.fusion_kwargs == {} and loaded.config.encoders == {}
    x = images()
    with torch.no_grad():
        assert torch.equal(loaded(x).probs, model(x).probs)


def test_liver_presets_are_found_through_the_plugin_entry_point() -> None:
    """A fresh process: create_model finds the liver's preset without importing the liver."""
    script = (
        "import sys\n"
        "from mmfusion.models import create_model\n"
        "assert 'mmfusion.liver' not in sys.modules\n"
        "m = create_model('liver_fibrosis_quick', backbone='test_resnet', image_size=32)\n"
        "print(m.config.backbone, 'mmfusion.liver' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=REPO, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert out.stdout.split() == ["test_resnet", "True"]
    assert {"liver_fibrosis_paper", "liver_fibrosis_quick_late_single"} <= set(list_models())


@pytest.mark.parametrize("statement", [
    "import mmfusion.liver",
    "import mmfusion.liver.presets",
    "from mmfusion.models import ModelConfig, register_model, list_models; list_models()",
    "from mmfusion.nn import FeatureSpec, list_fusions; list_fusions()",
])
def test_registering_and_listing_import_no_torch(statement: str) -> None:
    code = f"import sys\n{statement}\nprint([m for m in ('torch', 'timm') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_a_broken_plugin_is_reported_and_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    class BrokenPoint:
        name, value = "broken", "nowhere.at_all"

        def load(self) -> None:
            raise ImportError("No module named 'nowhere'")

    monkeypatch.setitem(nn_registry._PLUGINS, "loaded", False)
    monkeypatch.setattr(nn_registry, "entry_points", lambda group: [BrokenPoint()])
    with pytest.warns(RuntimeWarning, match=r"mmfusion plug-in 'broken' \(nowhere.at_all\) failed "
                                            "to import and was skipped: ImportError"):
        assert nn_registry.load_plugins() == ()
    assert nn_registry.load_plugins() == ()  # once per process
