"""Issue 26: whole-model persistence on ``huggingface_hub.PyTorchModelHubMixin``.

``FusionClassifier`` is a ``PyTorchModelHubMixin`` whose save / load are mmfusion's checked ones:
``config.json`` + ``model.safetensors`` (nothing pickled), strict, no random number drawn while
loading, a run folder is a saved model, and ``from_pretrained("user/repo")`` reads a Hub cache.
The Hub is never contacted: a cache with the Hub's layout is prepared in ``tmp_path`` and
``HF_HUB_OFFLINE`` is set (huggingface_hub reads both variables when it is imported, so the test
sets its constants too, as a shell would have before Python started).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import huggingface_hub
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from mmfusion.models import FusionClassifier, ModelConfig, create_model, from_pretrained
from mmfusion.models.checkpoint import write_model

CONFIG = ModelConfig(backbone="test_resnet", image_size=32, frozen_stages=0, hidden=(8,),
                     head_pool="avg", embed_dim=8)
SHA = "0123456789abcdef0123456789abcdef01234567"


def images() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {m: torch.randn(2, 3, 32, 32, generator=g) for m in CONFIG.modalities}


def model(seed: int = 0) -> FusionClassifier:
    torch.manual_seed(seed)
    return create_model(CONFIG).eval()


def hub_cache(root: Path, repo: str, source: Path) -> Path:
    """A Hugging Face cache (``models--user--repo/{refs/main, snapshots/<sha>/}``) holding ``source``."""
    entry = root / f"models--{repo.replace('/', '--')}"
    snapshot = entry / "snapshots" / SHA
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((source / name).read_bytes())
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(SHA)
    return snapshot


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hub cache in ``tmp_path``, offline."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_the_classifier_is_a_hub_mixin_that_writes_json_and_safetensors_only(tmp_path: Path) -> None:
    net = model()
    assert isinstance(net, huggingface_hub.PyTorchModelHubMixin)
    folder = net.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    document = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert document["model"] == CONFIG.to_dict()
    tensors = load_file(str(folder / "model.safetensors"))
    assert tensors.keys() == net.state_dict().keys()


def test_from_pretrained_reads_a_repo_id_from_the_hub_cache_offline(tmp_path: Path, offline: Path) -> None:
    net = model()
    snapshot = hub_cache(offline, "user/repo", net.save_pretrained(tmp_path / "m"))
    for load in (from_pretrained, FusionClassifier.from_pretrained):
        before = torch.random.get_rng_state()
        loaded = load("user/repo")
        assert torch.equal(torch.random.get_rng_state(), before)
        assert not loaded.training
        with torch.no_grad():
            assert torch.equal(loaded(images()).probs, net(images()).probs)
    pinned = from_pretrained("user/repo", revision=SHA)
    assert pinned.config == CONFIG
    assert snapshot.is_dir()


def test_a_missing_repo_offline_fails_fast_naming_the_fixes(offline: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as info:
        from_pretrained("user/absent")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    for words in ("'user/absent' is not a folder", str(offline), "HF_HUB_OFFLINE",
                  "hf download user/absent", "HF_HUB_CACHE", "save_pretrained"):
        assert words in message


def test_local_files_only_fails_the_same_way_without_the_offline_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(FileNotFoundError, match="local_files_only=True"):
        from_pretrained("user/absent", cache_dir=tmp_path, local_files_only=True)


def test_a_path_is_always_a_folder_never_a_repo_id(offline: Path, tmp_path: Path) -> None:
    hub_cache(offline, "user/repo", model().save_pretrained(tmp_path / "m"))
    with pytest.raises(FileNotFoundError, match="no config.json in user/repo"):
        from_pretrained(Path("user/repo"))


def test_a_hub_snapshot_goes_through_the_same_checks(tmp_path: Path, offline: Path) -> None:
    source = model().save_pretrained(tmp_path / "m")
    snapshot = hub_cache(offline, "user/repo", source)
    document = json.loads((snapshot / "config.json").read_text())
    document["model"]["modalities"] = ["swe", "us"]
    (snapshot / "config.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"modalities: config says \['swe', 'us'\], weights were saved "
                                         r"with \['us', 'swe'\]"):
        from_pretrained("user/repo")
    del document["model"]
    (snapshot / "config.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"config\.json: no \"model\" key"):
        FusionClassifier.from_pretrained("user/repo")
    (snapshot / "config.json").write_bytes((source / "config.json").read_bytes())
    tensors = load_file(str(source / "model.safetensors"))
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(snapshot / "model.safetensors"), metadata={"format": "mmfusion.model/1"})
    with pytest.raises(ValueError, match="NaN/Inf"):
        from_pretrained("user/repo")


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_loading_draws_no_random_numbers_and_is_exact(tmp_path_factory: pytest.TempPathFactory,
                                                      seed: int) -> None:
    net = model(seed)
    folder = net.save_pretrained(tmp_path_factory.mktemp("m"), overwrite=True)
    torch.manual_seed(seed + 1)
    before = torch.random.get_rng_state()
    loaded = FusionClassifier.from_pretrained(folder)
    assert torch.equal(torch.random.get_rng_state(), before)
    with torch.no_grad():
        assert torch.equal(loaded(images()).probs, net(images()).probs)


def test_a_run_folder_is_a_saved_model_locally_and_on_the_hub(tmp_path: Path, offline: Path) -> None:
    """A training run's folder: sections besides "model" and files besides the two."""
    net = model()
    run = write_model(net, CONFIG, tmp_path / "run", extra={"training": {"epochs": 1}, "run": {"seed": 0}})
    (run / "log.jsonl").write_text("{}\n")
    (run / "metrics.json").write_text("{}")
    hub_cache(offline, "user/run", run)
    for source in (run, str(run), "user/run"):
        with torch.no_grad():
            assert torch.equal(from_pretrained(source)(images()).probs, net(images()).probs)


def test_push_to_hub_uploads_the_checked_files_and_a_model_card(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mixin's push_to_hub, with the Hub replaced by a recorder (no network)."""
    uploaded: dict[str, bytes] = {}

    def create_repo(self: object, repo_id: str, **kwargs: object) -> object:
        return type("Repo", (), {"repo_id": repo_id})()

    def upload_folder(self: object, *, folder_path: Path, **kwargs: object) -> str:
        uploaded.update({p.name: p.read_bytes() for p in Path(folder_path).iterdir()})
        return "https://huggingface.co/user/repo/commit/1"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    net = model()
    assert net.push_to_hub("user/repo", config={"note": "shared"}) == "https://huggingface.co/user/repo/commit/1"
    assert sorted(uploaded) == ["README.md", "config.json", "model.safetensors"]
    document = json.loads(uploaded["config.json"])
    assert document["note"] == "shared" and document["model"] == CONFIG.to_dict()
    assert b"mmfusion" in uploaded["README.md"]
    folder = tmp_path / "pushed"
    folder.mkdir()
    for name, data in uploaded.items():
        (folder / name).write_bytes(data)
    with torch.no_grad():
        assert torch.equal(from_pretrained(folder)(images()).probs, net(images()).probs)


def test_the_mixin_save_hook_is_the_checked_writer(tmp_path: Path) -> None:
    net = model()
    with torch.no_grad():
        next(net.parameters()).fill_(float("inf"))
    with pytest.raises(ValueError, match="NaN/Inf"):
        net._save_pretrained(tmp_path)
    assert list(tmp_path.iterdir()) == []
