"""Issue 25: inputs are checked once, at the public entry point, not again in every inner layer.

Every module that imported a check (``check_tensor``, ``check_availability``, ``batch_size_of``,
``check_modality_keys``) gets a counting wrapper in its own namespace, so the counts say which
module checked what during one forward pass.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from mmfusion import (
    AttentionFusion,
    ChannelAttentionBlock,
    ChannelGroupPool,
    ClassifierHead,
    ConcatFusion,
    EnsembleHead,
    ModalityEncoder,
    SpatialAttention,
    TabularEncoder,
)
from mmfusion.models import ModelConfig, create_model
from mmfusion.nn._validation import checking, validated

CHECKS = ("check_tensor", "check_availability", "batch_size_of", "check_modality_keys")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[tuple[str, str]]]:
    """(module, check) -> number of calls, for every loaded mmfusion module."""
    counts: Counter[tuple[str, str]] = Counter()

    def counting(module: str, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[(module, name)] += 1
            return original(*args, **kwargs)

        return wrapper

    for module_name, module in list(sys.modules.items()):
        if module is None or not module_name.startswith("mmfusion"):
            continue
        for name in CHECKS:
            original = getattr(module, name, None)
            if callable(original) and module_name != "mmfusion._values":
                monkeypatch.setattr(module, name, counting(module_name, name, original))
    yield counts


def model(**changes: object) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="test_resnet", image_size=32, frozen_stages=0, hidden=(8,),
                      head_pool="avg", embed_dim=8, **changes)
    return create_model(cfg).eval()


def images(batch: int = 2) -> dict[str, torch.Tensor]:
    return {m: torch.randn(batch, 3, 32, 32) for m in ("us", "swe")}


@pytest.mark.parametrize("fusion", ["attention", "late"])
def test_the_classifier_checks_its_inputs_once_and_inner_layers_not_again(
    fusion: str, calls: Counter[tuple[str, str]]
) -> None:
    m = model(fusion=fusion)
    available = {"swe": torch.tensor([True, False])}
    calls.clear()  # building ran the encoders once (feature_spec)
    with torch.no_grad():
        m(images(), available)
    by_module = Counter()
    for (module, _), n in calls.items():
        by_module[module] += n
    # the classifier: one check per input (through each encoder's check_input), one batch size,
    # one availability check, the modality names
    assert calls[("mmfusion.nn.encoder", "check_tensor")] == 2
    assert calls[("mmfusion.nn.model", "batch_size_of")] == 1
    assert calls[("mmfusion.nn.model", "check_availability")] == 1
    assert calls[("mmfusion.nn.model", "check_modality_keys")] == 1
    inner = ("mmfusion.nn.fusion", "mmfusion.nn.attention", "mmfusion.nn.pooling",
             "mmfusion.nn.heads")
    assert {module: by_module[module] for module in inner} == dict.fromkeys(inner, 0)
    assert dict(calls) == {  # all of it (check_availability names the modalities once itself)
        ("mmfusion.nn.encoder", "check_tensor"): 2,
        ("mmfusion.nn.model", "batch_size_of"): 1,
        ("mmfusion.nn.model", "check_availability"): 1,
        ("mmfusion.nn.model", "check_modality_keys"): 1,
        ("mmfusion._checks", "check_modality_keys"): 1,
    }
    assert checking()  # the context is left behind clean


def test_inner_layers_check_again_on_every_forward_without_the_classifier(
    calls: Counter[tuple[str, str]],
) -> None:
    """Called directly, each module checks its inputs (and its layers skip theirs)."""
    m = model()
    calls.clear()
    with torch.no_grad():
        maps = {k: m.encoders[k](x) for k, x in images().items()}
        assert calls[("mmfusion.nn.encoder", "check_tensor")] == 2
        out = m.fusion(maps)
        m.head(maps, out.fused)
    assert calls[("mmfusion.nn.fusion", "check_tensor")] == 2  # the fusion's two maps
    assert calls[("mmfusion.nn.heads", "check_tensor")] == 1  # the ensemble head's fused vector
    assert calls[("mmfusion.nn.attention", "check_tensor")] == 0  # inside the fusion: not again
    assert calls[("mmfusion.nn.pooling", "check_tensor")] == 0


def test_direct_calls_with_bad_tensors_still_raise_naming_the_argument() -> None:
    fusion = AttentionFusion(16, ("us", "swe"), embed_dim=4)
    good = torch.randn(2, 16, 3, 3)
    with pytest.raises(ValueError, match=r"feature_maps\['swe'\]: expected a 4-D tensor, got shape "
                                         r"\(2, 16\)"):
        fusion({"us": good, "swe": good[:, :, 0, 0]})
    with pytest.raises(ValueError, match=r"feature_maps\['us'\]: expected 16 channels"):
        ConcatFusion(16, ("us",))({"us": torch.randn(2, 8, 3, 3)})
    with pytest.raises(ValueError, match=r"x: expected 3 channels"):
        ModalityEncoder("test_resnet", frozen_stages=0)(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"x: expected 4 columns"):
        TabularEncoder(("a", "b", "c", "d"))(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"x: expected 8 channels"):
        ChannelGroupPool(8, 4)(torch.randn(1, 6, 2, 2))
    with pytest.raises(ValueError, match=r"x: expected a 4-D tensor"):
        SpatialAttention()(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"target: expected 6 channels"):
        ChannelAttentionBlock(4, out_channels=6)(torch.randn(1, 4, 2, 2), torch.randn(1, 5, 2, 2))
    with pytest.raises(ValueError, match=r"fused: expected a 2-D tensor"):
        EnsembleHead({}, ClassifierHead(4, 3))({}, fused=torch.randn(2, 4, 1))


def test_the_classifier_still_refuses_bad_inputs_before_any_layer_runs() -> None:
    m = model()
    x = images()
    with pytest.raises(ValueError, match=r"inputs\['swe'\]: expected 3 channels"):
        m({**x, "swe": x["swe"][:, :1]})
    with pytest.raises(ValueError, match=r"inputs\['us'\]: expected a 4-D tensor"):
        m({**x, "us": x["us"][0]})
    with pytest.raises(ValueError, match=r"available\['us'\]: expected shape \[2\]"):
        m(x, {"us": torch.tensor([True])})
    assert checking()  # a failed check leaves no validated context behind


def test_a_flattening_head_still_names_an_input_of_another_image_size() -> None:
    torch.manual_seed(0)
    m = create_model(ModelConfig(backbone="test_resnet", image_size=64, frozen_stages=0,
                                 hidden=(8,), embed_dim=8, modalities=("us",)))
    with pytest.raises(ValueError, match="tied to the input image size"):
        m({"us": torch.randn(1, 3, 96, 96)})


def test_validated_nests_and_is_left_on_an_exception() -> None:
    assert checking()
    with validated():
        assert not checking()
        with validated():
            assert not checking()
        assert not checking()
    assert checking()
    with pytest.raises(RuntimeError), validated():
        raise RuntimeError("inside")
    assert checking()


def test_results_are_the_same_with_and_without_inner_checks() -> None:
    """Skipping the checks changes no value: the fusion called directly equals it inside the model."""
    m = model()
    x = images()
    with torch.no_grad():
        out = m(x, return_attention=True)
        maps = {k: m.encoders[k](v) for k, v in x.items()}
        direct = m.fusion(maps, None, True)
    torch.testing.assert_close(out.features["us"], direct.features["us"], rtol=0, atol=0)
    torch.testing.assert_close(out.attention["swe"], direct.attention["swe"], rtol=0, atol=0)
