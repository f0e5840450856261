"""Issue 24, models: non-finite weights (3), config vs weights (5), config types and sizes (18),
timm habits (23)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import mmfusion.models.pretrained as pretrained
from mmfusion.models import (
    ModelConfig,
    TrainingConfig,
    config_from_dict,
    create_model,
    from_pretrained,
    save_pretrained,
)
from mmfusion.nn import ModalityEncoder

TINY = dict(backbone="test_resnet", image_size=64, hidden=(16,), embed_dim=16)


def images(size: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {m: torch.randn(2, 3, size, size, generator=g) for m in ("us", "swe")}


def saved(tmp_path: Path, preset: str = "liver_fibrosis_quick", **changes) -> Path:
    torch.manual_seed(0)
    folder = tmp_path / "m"
    create_model(preset, **{**TINY, **changes}).save_pretrained(folder)
    return folder


def edit_config(folder: Path, **changes) -> None:
    document = json.loads((folder / "config.json").read_text())
    document["model"].update(changes)
    (folder / "config.json").write_text(json.dumps(document))


def rewrite_weights(folder: Path, change=None, metadata: dict[str, str] | None = None) -> None:
    """Rewrite model.safetensors with ``change`` applied to its tensors and ``metadata``."""
    path = folder / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        old = f.metadata()
    tensors = load_file(str(path))
    if change:
        change(tensors)
    save_file(tensors, str(path), metadata=old if metadata is None else metadata)


class BuildSpy:
    """Records the device of every model that from_pretrained builds."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.devices: list[str] = []
        real = pretrained.build_model

        def spy(*args, **kwargs):
            model = real(*args, **kwargs)
            self.devices.append(next(model.parameters()).device.type)
            return model

        monkeypatch.setattr(pretrained, "build_model", spy)


# ------------------------------------------------------------------ item 3: non-finite weights


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_from_pretrained_refuses_non_finite_weights(tmp_path: Path, bad: float) -> None:
    folder = saved(tmp_path)

    def poison(tensors: dict[str, torch.Tensor]) -> None:
        tensors["head.joint_head.mlp.0.bias"][1] = bad

    rewrite_weights(folder, poison)
    with pytest.raises(ValueError) as info:
        from_pretrained(folder)
    message = str(info.value)
    assert str(folder / "model.safetensors") in message
    assert "head.joint_head.mlp.0.bias" in message and "NaN/Inf" in message
    assert "diverged" in message


def test_save_pretrained_refuses_non_finite_parameters(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("liver_fibrosis_quick", **TINY)
    with torch.no_grad():
        model.head.joint_head.mlp[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"model: .*NaN/Inf.*head\.joint_head\.mlp\.0\.weight.*diverged"):
        save_pretrained(model, tmp_path / "m")
    assert not (tmp_path / "m" / "model.safetensors").exists()
    assert not (tmp_path / "m" / "config.json").exists()


# ------------------------------------------------------------- item 5: config vs weights' training


def test_weights_record_what_they_were_trained_with(tmp_path: Path) -> None:
    folder = saved(tmp_path, modalities=("us", "swe"))
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["modalities"]) == ["us", "swe"]
    assert (meta["image_size"], meta["num_classes"]) == ("64", "5")
    assert json.loads(meta["normalization_mean"]) == [0.485, 0.456, 0.406]
    assert json.loads(meta["normalization_std"]) == [0.229, 0.224, 0.225]
    document = json.loads((folder / "config.json").read_text())
    assert document["normalization"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def test_swapped_modalities_in_config_are_refused(tmp_path: Path) -> None:
    folder = saved(tmp_path)
    edit_config(folder, modalities=["swe", "us"])
    with pytest.raises(ValueError, match=r"modalities: config says \['swe', 'us'\], weights were "
                                         r"saved with \['us', 'swe'\]"):
        from_pretrained(folder)


def test_another_image_size_in_config_is_refused(tmp_path: Path) -> None:
    """The quick preset pools its heads, so 128 px fits the 64-px tensors: only the record tells."""
    folder = saved(tmp_path)
    edit_config(folder, image_size=128)
    with pytest.raises(ValueError, match=r"image_size: config says 128, weights were saved with 64"):
        from_pretrained(folder)


def test_every_disagreeing_field_is_named(tmp_path: Path) -> None:
    folder = saved(tmp_path, preset="liver_fibrosis_quick_us", modalities=("us",))
    edit_config(folder, modalities=["swe"], image_size=96)
    document = json.loads((folder / "config.json").read_text())
    document["normalization"] = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    (folder / "config.json").write_text(json.dumps(document))
    with pytest.raises(ValueError) as info:
        from_pretrained(folder)
    message = str(info.value)
    assert "modalities: config says ['swe'], weights were saved with ['us']" in message
    assert "image_size: config says 96, weights were saved with 64" in message
    assert "normalization mean: config says [0.5, 0.5, 0.5], weights were saved with " \
           "[0.485, 0.456, 0.406]" in message


def test_weights_saved_without_the_record_still_load(tmp_path: Path) -> None:
    """Files of older versions carry only the format in their metadata."""
    torch.manual_seed(0)
    model = create_model("liver_fibrosis_quick", **TINY).eval()
    model.save_pretrained(tmp_path)
    rewrite_weights(tmp_path, metadata={"format": "mmfusion.model/1"})
    loaded = from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(images()).probs, model(images()).probs)


def test_config_without_model_key_is_refused_before_any_model_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = saved(tmp_path)
    document = json.loads((folder / "config.json").read_text())
    del document["model"]
    (folder / "config.json").write_text(json.dumps(document))
    spy = BuildSpy(monkeypatch)
    with pytest.raises(ValueError, match=r"config\.json: no \"model\" key"):
        from_pretrained(folder)
    assert spy.devices == []


# ------------------------------------------------------------ item 18: config types and sizes

WRONG_TYPED = {
    "modalities": st.sampled_from(["us", 5, None, ["us", 1], [["us"]], {"us": 1}]),
    "fusion": st.sampled_from([1, None, ["attention"], True]),
    "loss": st.sampled_from([1, None, ["multi"]]),
    "backbone": st.sampled_from([1, None, ["resnet50"], True]),
    "image_size": st.one_of(st.booleans(), st.text(max_size=3), st.floats(32, 100), st.none(),
                            st.lists(st.integers(32, 64), max_size=2)),
    "frozen_stages": st.one_of(st.booleans(), st.text(max_size=3), st.floats(0.5, 3.5), st.none()),
    "hidden": st.one_of(st.integers(1, 64), st.text(min_size=1, max_size=3), st.none(),
                        st.lists(st.one_of(st.booleans(), st.text(max_size=2), st.floats(1.5, 9.5),
                                           st.lists(st.integers(1, 9), max_size=2)),
                                 min_size=1, max_size=3)),
    "head_pool": st.sampled_from([1, None, ["avg"]]),
    "embed_dim": st.one_of(st.booleans(), st.text(max_size=3), st.floats(1.5, 100), st.none()),
    "num_classes": st.one_of(st.booleans(), st.text(max_size=3), st.floats(2.5, 100), st.none()),
    "alpha": st.one_of(st.booleans(), st.text(max_size=3), st.none(), st.lists(st.floats(0, 1)),
                       st.sampled_from([float("nan"), float("inf")])),
    "modality_dropout": st.one_of(st.booleans(), st.text(max_size=3), st.none(),
                                  st.just(float("nan"))),
}
WRONG_TRAINING = {
    "epochs": st.one_of(st.booleans(), st.text(max_size=3), st.floats(1.5, 9.5), st.none()),
    "batch_size": st.one_of(st.booleans(), st.text(max_size=3), st.floats(1.5, 9.5), st.none()),
    "lr": st.one_of(st.booleans(), st.text(max_size=3), st.none(), st.just(float("nan")),
                    st.just(float("inf"))),
    "weight_decay": st.one_of(st.booleans(), st.text(max_size=3), st.none(),
                              st.just(float("nan"))),
    "schedule": st.sampled_from([1, None, ["cosine"]]),
    "augment": st.sampled_from([1, None, ["paper"]]),
}


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_wrong_typed_model_fields_raise_value_error_naming_the_field(data: st.DataObject) -> None:
    field = data.draw(st.sampled_from(sorted(WRONG_TYPED)))
    value = data.draw(WRONG_TYPED[field])
    with pytest.raises(ValueError, match=rf"^{field}: expected"):
        ModelConfig(**{field: value})
    with pytest.raises(ValueError, match=rf"{field}: expected"):
        config_from_dict(ModelConfig, {field: value}, "config.json")


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_wrong_typed_training_fields_raise_value_error_naming_the_field(data: st.DataObject) -> None:
    field = data.draw(st.sampled_from(sorted(WRONG_TRAINING)))
    value = data.draw(WRONG_TRAINING[field])
    with pytest.raises(ValueError, match=rf"^{field}: expected"):
        TrainingConfig(**{field: value})


def test_the_reported_config_values_give_value_errors() -> None:
    with pytest.raises(ValueError, match=r"embed_dim: expected an int >= 1 and <= 65536, got True"):
        ModelConfig(embed_dim=True)
    with pytest.raises(ValueError, match=r"alpha: expected >= 0 \(a finite number\), got 'abc'"):
        ModelConfig(alpha="abc")
    with pytest.raises(ValueError, match=r"hidden: expected a sequence of ints >= 1 and <= 65536, got 5"):
        ModelConfig(hidden=5)
    with pytest.raises(ValueError, match=r"modalities: expected a sequence of distinct non-empty "
                                         r"names, got 'us'"):
        ModelConfig(modalities="us")  # a string is not a sequence of names (was ('u', 's'))


def test_wrong_values_are_quoted_short() -> None:
    """A huge or deeply nested value is elided in the message, never printed whole."""
    with pytest.raises(ValueError, match=r"^alpha: expected") as info:
        ModelConfig(alpha="x" * 100_000)
    assert len(str(info.value)) < 200
    nested: list = []
    for _ in range(900):
        nested = [nested]
    with pytest.raises(ValueError, match=r"^hidden: expected .*\[\[\[\.\.\.\]\]\]") as info:
        config_from_dict(ModelConfig, {"hidden": nested})
    assert len(str(info.value)) < 200


def test_sizes_have_documented_upper_bounds() -> None:
    with pytest.raises(ValueError, match=r"num_classes: expected an int >= 2 and <= 100000, got 5000000"):
        ModelConfig(num_classes=5_000_000)
    with pytest.raises(ValueError, match=r"image_size: expected an int >= 32 and <= 4096, got 100000"):
        ModelConfig(image_size=100_000)
    with pytest.raises(ValueError, match=r"num_classes: expected an int >= 2 and <= 100000, got 5000000\.0"):
        ModelConfig(num_classes=5e6)
    assert ModelConfig(image_size=4096, num_classes=100_000).image_size == 4096


def test_deeply_nested_config_json_is_a_value_error_naming_the_file(tmp_path: Path) -> None:
    folder = saved(tmp_path)
    (folder / "config.json").write_text('{"format": "mmfusion.model/1", "model": ' + "[" * 200_000
                                        + "]" * 200_000 + "}")
    with pytest.raises(ValueError, match=r"config\.json: .*nested too deeply"):
        from_pretrained(folder)


def test_config_sizes_are_checked_against_the_weights_before_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An old file (no record) and a config that asks for 50000 classes: refused from the file's
    tensor shapes, with no model allocated (only shape-only "meta" models are built)."""
    folder = saved(tmp_path)
    rewrite_weights(folder, metadata={"format": "mmfusion.model/1"})
    edit_config(folder, num_classes=50_000)
    spy = BuildSpy(monkeypatch)
    with pytest.raises(ValueError, match=r"another architecture: .*of another shape \(e\.g\. "
                                         r"head\.\S+: file \(5.*\), model \(50000"):
        from_pretrained(folder)
    assert spy.devices and set(spy.devices) == {"meta"}


def test_matching_load_builds_one_real_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = saved(tmp_path)
    spy = BuildSpy(monkeypatch)
    from_pretrained(folder)
    assert spy.devices.count("cpu") == 1


# ------------------------------------------------------------------------- item 23: timm habits


def test_timm_pretrained_flag_gets_a_hint() -> None:
    with pytest.raises(ValueError, match=r"unknown ModelConfig field\(s\) \['pretrained'\].*"
                                         r"weights='imagenet'"):
        create_model("liver_fibrosis_quick", pretrained=True)
    with pytest.raises(ValueError, match=r"\['img_size'\].*image_size="):
        create_model("liver_fibrosis_quick", img_size=64)
    with pytest.raises(ValueError, match=r"\['checkpoint_path'\].*weights="):
        create_model("liver_fibrosis_quick", checkpoint_path="x.safetensors")
    with pytest.raises(ValueError, match=r"\['imagesize'\].*did you mean image_size"):
        create_model("liver_fibrosis_quick", imagesize=64)


@pytest.mark.parametrize(
    ("typo", "first"),
    [("resnet5O", "resnet50"), ("ResNet50", "resnet50"), ("resnetl8", "resnet18"),
     ("efficientnet_bO", "efficientnet_b0"), ("resnet50.a1_in1k_typo", "resnet50")],
)
def test_backbone_typos_suggest_the_intended_model_first(typo: str, first: str) -> None:
    from mmfusion.nn.encoder import similar_backbones

    assert similar_backbones(typo)[0] == first


def test_unknown_backbone_error_suggests_resnet50() -> None:
    with pytest.raises(ValueError, match=r"unknown timm model 'resnet5O'; did you mean "
                                         r"'resnet50'"):
        ModalityEncoder("resnet5O")
    with pytest.raises(ValueError, match=r"did you mean 'resnet50'"):
        create_model("liver_fibrosis_quick", backbone="resnet5O")


def test_encoder_weights_file_with_nan_is_refused(tmp_path: Path) -> None:
    """Item 3 for encoder initialisation: a local weights file that holds NaN is an error."""
    import timm

    torch.manual_seed(1)
    state = {k: v.contiguous() for k, v in timm.create_model("test_resnet").state_dict().items()}
    state["layer4.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "diverged.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError, match=r"weights: .*diverged\.safetensors' holds NaN/Inf .*"
                                         r"layer4\.0\.conv1\.weight"):
        ModalityEncoder("test_resnet", weights=path, frozen_stages=0)
