"""ModalityEncoder(weights="imagenet" | True): timm's weights through the Hugging Face cache.

Each test prepares its own cache in ``tmp_path`` (the hub layout ``models--timm--<name>/
snapshots/<rev>/model.safetensors`` with ``refs/main``), holding the tensors of a freshly
initialised tiny timm model, and points ``HF_HUB_CACHE`` or ``HF_HOME`` at it. Nothing is
downloaded: the download path is exercised with huggingface_hub's network calls replaced.
"""

from __future__ import annotations

import time
from pathlib import Path

import huggingface_hub
import pytest
import timm
import torch
from safetensors.torch import save_file

from mmfusion import ModalityEncoder

REVISION = "0123456789abcdef0123456789abcdef01234567"


def hub_id(name: str) -> str:
    return timm.models.get_pretrained_cfg(name).hf_hub_id


def source_state(name: str, seed: int = 7, **kwargs) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, **kwargs)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def write_hub_file(cache: Path, repo_id: str, filename: str = "model.safetensors",
                   tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``filename`` for ``repo_id`` into a Hugging Face hub cache at ``cache``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    if tensors is not None:
        save_file(tensors, str(snapshot / filename))
    return snapshot / filename


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty hub cache in tmp_path, with HF_HUB_OFFLINE=1."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HOME", raising=False)
    return cache


def assert_loaded(enc: ModalityEncoder, source: dict[str, torch.Tensor]) -> None:
    loaded = enc.body.state_dict()
    assert loaded
    for key, tensor in loaded.items():
        name = key if key in source else key.removeprefix("model.")
        torch.testing.assert_close(tensor, source[name], rtol=0, atol=0)


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "HF_HOME"])
def test_imagenet_weights_load_from_the_cache_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("HF_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    if variable == "HF_HUB_CACHE":
        cache = tmp_path / "somewhere"
        monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    else:
        cache = tmp_path / "home" / "hub"
        monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    source = source_state("test_resnet")
    write_hub_file(cache, hub_id("test_resnet"), tensors=source)

    enc = ModalityEncoder("test_resnet", weights="imagenet", frozen_stages=3)
    assert_loaded(enc, source)
    assert_loaded(ModalityEncoder("test_resnet", weights=True, frozen_stages=0), source)
    torch.manual_seed(8)
    random = ModalityEncoder("test_resnet", frozen_stages=0)
    assert not torch.equal(random.body.layer4[0].conv1.weight, enc.body.layer4[0].conv1.weight)


def test_imagenet_weights_of_a_vit_use_the_state_dict_not_the_npz_loader(
    offline_cache: Path,
) -> None:
    """vit_tiny_patch16_224's timm config loads Google's .npz with its own loader; the cached
    Hub file is a plain state dict, which is what is loaded."""
    kwargs = dict(img_size=64, depth=3)
    source = source_state("vit_tiny_patch16_224", **kwargs)
    write_hub_file(offline_cache, hub_id("vit_tiny_patch16_224"), tensors=source)
    enc = ModalityEncoder("vit_tiny_patch16_224", weights="imagenet", frozen_stages=1, **kwargs)
    assert_loaded(enc, source)
    assert enc(torch.randn(1, 3, 64, 64)).shape == (1, 192, 4, 4)


def test_pytorch_bin_in_the_cache_is_loaded_without_unpickling(offline_cache: Path) -> None:
    source = source_state("test_resnet")
    path = write_hub_file(offline_cache, hub_id("test_resnet"), "pytorch_model.bin")
    torch.save(source, path)
    assert_loaded(ModalityEncoder("test_resnet", weights="imagenet"), source)
    torch.save({"state_dict": {"x": object()}}, path)
    with pytest.raises(ValueError, match="never unpickles"):
        ModalityEncoder("test_resnet", weights="imagenet")


def test_missing_cache_offline_fails_fast_naming_the_fix(offline_cache: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(RuntimeError) as info:
        ModalityEncoder("test_resnet", weights="imagenet")
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert message.startswith(
        "weights='imagenet': timm's weights for 'test_resnet' (timm/test_resnet.r160_in1k) are "
        f"not in the Hugging Face cache {str(offline_cache)!r}, and HF_HUB_OFFLINE is set"
    )
    assert message.endswith(
        "To fix: run once with network access, or pass a local weights file "
        "(weights='test_resnet.safetensors'), or set HF_HOME (or HF_HUB_CACHE) to a cache that "
        "holds timm/test_resnet.r160_in1k."
    )
    with pytest.raises(RuntimeError, match="weights=True never downloads"):
        ModalityEncoder("test_resnet", weights=True)


def test_missing_cache_without_network_fails_fast(
    offline_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="the Hugging Face Hub cannot be reached") as info:
        ModalityEncoder("test_resnet", weights="imagenet")
    assert time.perf_counter() - start < 10
    assert "run once with network access" in str(info.value)
    assert not list(offline_cache.rglob("*.safetensors"))


def test_download_goes_into_the_cache_and_is_loaded(
    offline_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Online and not cached: the file timm uses is fetched into the cache, then loaded."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    source = source_state("test_resnet")
    calls: list[tuple] = []

    def fake_metadata(url: str, timeout: float):
        calls.append(("metadata", url, timeout))

    def fake_download(repo_id, filename, *, revision, cache_dir, endpoint, library_name):
        calls.append(("download", repo_id, filename, Path(cache_dir)))
        return str(write_hub_file(Path(cache_dir), repo_id, filename, source))

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", fake_metadata)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    enc = ModalityEncoder("test_resnet", weights="imagenet", frozen_stages=0)
    assert_loaded(enc, source)
    repo = hub_id("test_resnet")
    assert calls == [
        ("metadata", f"https://huggingface.co/{repo}/resolve/main/model.safetensors", 5.0),
        ("download", repo, "model.safetensors", offline_cache),
    ]
    calls.clear()
    ModalityEncoder("test_resnet", weights="imagenet")  # now cached: no network call at all
    assert calls == []


def test_unknown_tag_and_bad_weights_argument() -> None:
    with pytest.raises(ValueError, match=r"backbone: Invalid pretrained tag \(nope\) for resnet18"):
        ModalityEncoder("resnet18.nope", weights="imagenet")
    with pytest.raises(TypeError, match="weights: expected None, 'imagenet', True or a path"):
        ModalityEncoder("test_resnet", weights=3)
    with pytest.raises(FileNotFoundError, match="weights: no such file 'imagenet1k'"):
        ModalityEncoder("test_resnet", weights="imagenet1k")
