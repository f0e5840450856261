"""Issue 26: encoder weights through timm's pretrained machinery (mmfusion.nn.weights).

timm loads every file (``pretrained_cfg_overlay=dict(file=...)``) and names the Hub repository of
named weights; mmfusion keeps the strict-key, finiteness, no-download and fail-fast checks. Every
test builds its own weight files and, where the Hub is involved, a fake Hugging Face cache in
``tmp_path``; nothing reaches the network (its calls are replaced by ones that fail the test).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import huggingface_hub
import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from mmfusion import ModalityEncoder
from mmfusion.nn import weights as weights_mod

REVISION = "89abcdef0123456789abcdef0123456789abcdef"


def state_of(name: str, seed: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def cache_file(cache: Path, repo_id: str, tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``model.safetensors`` of ``repo_id`` into a Hub cache laid out as huggingface_hub's."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(snapshot / "model.safetensors"))
    return snapshot / "model.safetensors"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the network was asked")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "hub"
    path.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return path


def test_named_weights_come_from_the_tags_own_repository(cache: Path) -> None:
    """``resnet18.tv_in1k`` is timm's repository timm/resnet18.tv_in1k, not resnet18's default."""
    source = state_of("resnet18")
    cache_file(cache, timm.models.get_pretrained_cfg("resnet18.tv_in1k").hf_hub_id, source)
    enc = ModalityEncoder("resnet18.tv_in1k", weights="imagenet", frozen_stages=3)
    torch.testing.assert_close(enc.body.layer4[1].conv2.weight, source["layer4.1.conv2.weight"],
                               rtol=0, atol=0)
    assert enc.body.layer4[1].conv2.weight.requires_grad  # stage 4 trains
    assert not enc.body.layer3[0].conv1.weight.requires_grad  # frozen after loading
    with pytest.raises(RuntimeError, match=r"'resnet18' \(timm/resnet18\.a1_in1k\) are not in"):
        ModalityEncoder("resnet18", weights="imagenet")


def test_first_convolution_is_adapted_by_timm_for_other_channel_counts(tmp_path: Path) -> None:
    """A 3-channel file into a 1-channel encoder: timm sums the RGB kernels (adapt_input_conv)."""
    source = state_of("test_resnet")
    path = tmp_path / "rgb.safetensors"
    save_file(source, str(path))
    enc = ModalityEncoder("test_resnet", weights=path, in_chans=1, frozen_stages=0)
    expected = source["conv1.0.weight"].sum(dim=1, keepdim=True)
    torch.testing.assert_close(enc.body.state_dict()["conv1.0.weight"], expected)
    torch.testing.assert_close(enc.body.state_dict()["layer2.0.conv1.weight"],
                               source["layer2.0.conv1.weight"], rtol=0, atol=0)
    assert enc(torch.randn(2, 1, 64, 64)).shape == (2, 96, 2, 2)


def test_a_wrong_file_names_the_missing_and_the_unexpected_tensors(tmp_path: Path) -> None:
    source = state_of("test_resnet")
    source["layer3.0.conv9.weight"] = source.pop("layer3.0.conv1.weight")
    path = tmp_path / "renamed.safetensors"
    save_file(source, str(path))
    with pytest.raises(ValueError) as info:
        ModalityEncoder("test_resnet", weights=path, frozen_stages=0)
    message = str(info.value)
    assert "does not fit backbone 'test_resnet': 1 of" in message
    assert "missing from the file (e.g. ['layer3.0.conv1.weight'])" in message
    assert "1 of the file's" in message and "unexpected" in message and "(e.g. ['layer3.0.conv9.weight'])" in message


def test_a_file_with_only_the_classifier_missing_loads(tmp_path: Path) -> None:
    """The features model has no classifier, so a headless file is complete."""
    source = {k: v for k, v in state_of("test_resnet").items() if not k.startswith("fc.")}
    path = tmp_path / "headless.pth"
    torch.save(source, path)
    enc = ModalityEncoder("test_resnet", weights=path, frozen_stages=0)
    assert all(k in source for k in enc.body.state_dict())


def test_weights_true_never_asks_the_network_even_online(
    cache: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    source = state_of("test_resnet")
    cache_file(cache, timm.models.get_pretrained_cfg("test_resnet").hf_hub_id, source)
    enc = ModalityEncoder("test_resnet", weights=True, frozen_stages=0)
    torch.testing.assert_close(enc.body.layer1[0].conv1.weight, source["layer1.0.conv1.weight"],
                               rtol=0, atol=0)
    for path in cache.rglob("model.safetensors"):
        path.unlink()
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="weights=True never downloads"):
        ModalityEncoder("test_resnet", weights=True)
    assert time.perf_counter() - start < 10


def test_offline_set_at_import_is_honoured_when_the_variable_is_gone(
    cache: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    """No HF_HUB_OFFLINE now: huggingface_hub's value read at import decides."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE is set, so nothing is downloaded"):
        ModalityEncoder("test_resnet", weights="imagenet")
    assert time.perf_counter() - start < 10


@settings(max_examples=60, deadline=None)
@given(value=st.one_of(
    st.sampled_from(["1", "on", "Yes", " TRUE ", "true", "0", "off", "no", "false", ""]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=6),
))
def test_offline_flag_follows_huggingface_hubs_spellings(value: str) -> None:
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = value
    try:
        _, offline = weights_mod._hub_env()
    finally:
        if old is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = old
    expected = value.strip().upper() in {"1", "ON", "YES", "TRUE"}
    assert offline is expected


@settings(max_examples=60, deadline=None)
@given(parts=st.lists(st.from_regex(r"[a-z]{1,4}(_[a-z0-9]{1,3})?", fullmatch=True),
                      min_size=1, max_size=4))
def test_candidate_keys_accept_each_spelling_of_timms_wrappers(parts: list[str]) -> None:
    """A features key (``stages_0.x``) matches its full-model name (``stages.0.x``), with or
    without the wrapper's ``model.`` / ``body.`` prefix, and always itself."""
    key = ".".join(parts + ["weight"])
    names = weights_mod._candidate_keys(key)
    assert key in names
    assert weights_mod._candidate_keys(f"model.{key}") >= {key}
    assert weights_mod._candidate_keys(f"body.{key}") >= {key}
    head, _, rest = key.partition(".")
    if "_" in head:
        left, right = head.split("_", 1)
        assert f"{left}.{right}.{rest}" in names
