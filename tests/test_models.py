"""mmfusion.models: the registry, the configuration dataclasses, whole-model save / load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfusion.liver.presets import TABLE_I
from mmfusion.models import (
    FusionClassifier,
    ModelConfig,
    Preset,
    TrainingConfig,
    build_loss,
    create_model,
    from_pretrained,
    get_preset,
    list_models,
    register_model,
)

REPO = Path(__file__).resolve().parents[1]
TINY = dict(backbone="test_resnet", image_size=64, hidden=(16,), embed_dim=16)


def images(batch: int = 2, size: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, 3, size, size, generator=g) for m in ("us", "swe")}


def test_paper_network_has_the_counted_parameters() -> None:
    """Two ResNet-50 encoders, flattened 3-FC heads, attention fusion: 127.9 M parameters."""
    model = create_model("liver_fibrosis_paper")
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e6, 1) == 127.9
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable < n  # stem and stages 1-3 frozen
    assert model.config == ModelConfig() and isinstance(model, FusionClassifier)
    paper = get_preset("liver_fibrosis_paper").training
    assert (paper.lr, paper.weight_decay, paper.batch_size, paper.epochs) == (7e-5, 1e-3, 4, 40)


def test_registry_lists_every_table_i_variant() -> None:
    names = list_models("liver_fibrosis_*")
    for base in ("liver_fibrosis_paper", "liver_fibrosis_quick", "liver_fibrosis_texture"):
        assert base in names
        assert {f"{base}_{suffix}" for suffix in TABLE_I} <= set(names)
    assert get_preset("liver_fibrosis_paper_us").model.modalities == ("us",)
    late = get_preset("liver_fibrosis_quick_late_single").model
    assert (late.fusion, late.loss, late.backbone) == ("late", "single", "resnet10t")


def test_texture_preset_is_the_quick_network_at_a_higher_resolution() -> None:
    quick, texture = get_preset("liver_fibrosis_quick"), get_preset("liver_fibrosis_texture")
    assert texture.model == quick.model.replace(image_size=128)
    assert texture.training == quick.training
    assert get_preset("liver_fibrosis_texture_swe").model.image_size == 128


@pytest.mark.parametrize("suffix", ["", "_us", "_late_single", "_att_single", "_late_multi"])
def test_variants_build_with_their_branches(suffix: str) -> None:
    model = create_model(f"liver_fibrosis_quick{suffix}", **TINY).eval()
    out = model({m: x for m, x in images().items() if m in model.modalities})
    branches = set(out.logits)
    cfg = model.config
    expected = set(cfg.modalities) if not cfg.is_fused else (
        {"joint"} if cfg.loss == "single" else {*cfg.modalities, "joint"})
    assert branches == expected
    assert out.probs.shape == (2, 5)
    loss = build_loss(cfg)
    assert loss.alpha == (0.2 if cfg.is_fused and cfg.loss == "multi" else 0.0)


def test_unknown_names_and_fields_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet'; registered: liver_fibrosis_paper"):
        create_model("resnet")
    with pytest.raises(ValueError, match=r"unknown ModelConfig field\(s\) \['dropout'\]"):
        create_model("liver_fibrosis_quick", dropout=0.1)
    with pytest.raises(ValueError, match=r"fusion: expected 'attention', .* got 'gatd' "
                                         r"\(did you mean 'gated'\?\)"):
        ModelConfig(fusion="gatd")
    with pytest.raises(ValueError, match="modality_dropout: needs two or more modalities"):
        ModelConfig(modalities=("us",), modality_dropout=0.2)
    with pytest.raises(ValueError, match="lr: expected > 0"):
        TrainingConfig(lr=0)
    with pytest.raises(ValueError, match="already registered"):
        register_model("liver_fibrosis_paper", Preset(ModelConfig()))


@settings(max_examples=25, deadline=None)
@given(
    modalities=st.sampled_from([("us",), ("swe",), ("us", "swe"), ("swe", "us"), ("a", "b", "c")]),
    fusion=st.sampled_from(["attention", "late"]),
    loss=st.sampled_from(["multi", "single"]),
    hidden=st.lists(st.integers(1, 64), max_size=3).map(tuple),
    alpha=st.floats(0, 2),
)
def test_config_json_round_trip(modalities, fusion, loss, hidden, alpha) -> None:
    cfg = ModelConfig(modalities=modalities, fusion=fusion, loss=loss, hidden=hidden, alpha=alpha)
    again = ModelConfig(**json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and hash(again) == hash(cfg)


def test_save_then_load_gives_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = create_model("liver_fibrosis_paper", **TINY, modalities=("us", "swe")).eval()
    model.save_pretrained(tmp_path / "m")
    state = torch.random.get_rng_state()
    loaded = from_pretrained(tmp_path / "m")
    assert torch.equal(torch.random.get_rng_state(), state)  # loading draws no random numbers
    assert loaded.config == model.config and not loaded.training
    x = images()
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.equal(a.probs, b.probs)
    for name in a.logits:
        assert torch.equal(a.logits[name], b.logits[name])
    # SWE missing: the learned placeholder travels too
    with torch.no_grad():
        assert torch.equal(model({"us": x["us"]}).probs, loaded({"us": x["us"]}).probs)
    document = json.loads((tmp_path / "m" / "config.json").read_text())
    assert document["format"] == "mmfusion.model/1" and document["model"]["backbone"] == "test_resnet"


def test_save_never_overwrites_unasked(tmp_path: Path) -> None:
    model = create_model("liver_fibrosis_quick", **TINY)
    model.save_pretrained(tmp_path)
    with pytest.raises(FileExistsError, match="already holds config.json, model.safetensors"):
        model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path, overwrite=True)


def test_weights_of_another_architecture_name_the_mismatch(tmp_path: Path) -> None:
    create_model("liver_fibrosis_quick", **TINY).save_pretrained(tmp_path)
    document = json.loads((tmp_path / "config.json").read_text())
    document["model"]["fusion"] = "late"
    (tmp_path / "config.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"another architecture: 16 unexpected \(e.g. fusion\.embedders"):
        from_pretrained(tmp_path)
    document["model"].update(fusion="attention", hidden=[32])
    (tmp_path / "config.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"6 of another shape \(e\.g\. head\.branch_heads\.swe\.mlp\.0\.bias: file \(16,\), model \(32,\)\)"):
        from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "something/2"}))
    with pytest.raises(ValueError, match="expected format 'mmfusion.model/1', found 'something/2'"):
        from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        from_pretrained(tmp_path / "nothing")


def test_a_hand_assembled_model_cannot_be_saved_whole(tmp_path: Path) -> None:
    from mmfusion import ClassifierHead, EnsembleHead, ModalityEncoder, MultiModalClassifier
    from mmfusion.models import save_pretrained

    model = MultiModalClassifier({"us": ModalityEncoder("test_resnet", frozen_stages=0)}, None,
                                 EnsembleHead({"us": ClassifierHead(96, 5, pool="avg")}))
    with pytest.raises(TypeError, match="no configuration to save"):
        save_pretrained(model, tmp_path)


@pytest.mark.slow
def test_installed_wheel_builds_the_paper_network(tmp_path: Path) -> None:
    """``pip install .`` (no checkout on the path): create_model and the save/load round trip."""
    wheel_dir, site = tmp_path / "wheel", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), str(REPO)],
                   check=True, timeout=300)
    wheel = next(wheel_dir.glob("mmfusion-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=300)
    script = (
        "import mmfusion, torch, tempfile, pathlib\n"
        f"assert pathlib.Path(mmfusion.__file__).is_relative_to({str(site)!r}), mmfusion.__file__\n"
        "from mmfusion.models import create_model, from_pretrained\n"
        "m = create_model('liver_fibrosis_paper').eval()\n"
        "print(round(sum(p.numel() for p in m.parameters()) / 1e6, 1))\n"
        "d = tempfile.mkdtemp(); m.save_pretrained(d)\n"
        "x = {k: torch.randn(1, 3, 224, 224) for k in ('us', 'swe')}\n"
        "with torch.no_grad(): print(torch.equal(m(x).probs, from_pretrained(d)(x).probs))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["127.9", "True"]
