"""Encoder weights: random, a local file, or timm's pretrained weights from the Hugging Face cache.

timm loads the weights: :func:`timm.create_model` with ``pretrained=True`` and
``pretrained_cfg_overlay=dict(file=...)`` reads the file, applies the model's checkpoint filter,
adapts the first convolution to ``in_chans`` and wraps the model in ``features_only`` mode. The name, tag and Hub
repository of named weights (``"resnet50.tv_in1k"``) come from timm's ``pretrained_cfg``, and the
cached file from ``huggingface_hub.try_to_load_from_cache``. mmfusion keeps four checks that
timm's machinery does not make (measured with timm 1.0.31, huggingface_hub 2.4):

- *Strict keys.* timm loads a ``features_only`` model with ``strict=False`` (``load_pretrained``
  drops the classifier because ``num_classes=0``) and only logs missing keys, so every tensor of
  the feature extractor is checked here against the file's names; the error names the missing
  ones and the file's tensors that fit none.
- *Finite values* (a diverged model's NaN/Inf are refused).
- *Nothing downloaded unless asked, failing fast.* timm's own Hub path calls ``hf_hub_download``,
  which online may fetch a newer revision although a file is cached (so ``weights=True`` could
  download), and without network retries for 47 s before failing. Here the cached file is looked
  up first; a download is one metadata request without retries, then ``hf_hub_download``.
- *The environment as it is now.* huggingface_hub reads ``HF_HUB_CACHE``, ``HF_HOME`` and
  ``HF_HUB_OFFLINE`` once, at import; values set later in the process (a notebook cell, a test)
  are honoured.
"""

from __future__ import annotations

import os
from pathlib import Path

import timm
from huggingface_hub import constants
from timm.models._hub import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME, hf_split
from torch import nn

WeightsSpec = str | os.PathLike | bool | None
"""``weights=`` of :class:`~mmfusion.nn.ModalityEncoder`: ``None``/``False``, ``"imagenet"``,
``True`` or a path to a local weights file."""

IMAGENET = "imagenet"
"""``weights=`` value for timm's pretrained (ImageNet) weights through the Hugging Face cache."""

_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_HUB_PROBE_TIMEOUT_S = 5.0


def create_features_model(
    backbone: str, weights: WeightsSpec, in_chans: int, timm_kwargs: dict
) -> nn.Module:
    """Create timm's ``features_only`` model of ``backbone`` with the requested weights.

    Args:
        backbone: A timm model name, optionally with a pretrained tag (``"resnet50.tv_in1k"``).
        weights: ``None``/``False`` (random), ``"imagenet"`` (the Hugging Face cache, downloaded
            into it when missing unless offline), ``True`` (the cache only) or a local file
            (``.safetensors``, ``.pth``, ``.pt``, ``.bin``; read with ``weights_only=True``).
        in_chans: Input channels (pretrained first-layer weights are adapted by timm).
        timm_kwargs: Passed to :func:`timm.create_model`.

    Returns:
        The features model; with weights, every tensor of it came from the file and is finite.

    Raises:
        TypeError: ``weights`` has another type.
        FileNotFoundError: No such local file.
        ValueError: The file does not fit ``backbone`` (names the missing/unexpected tensors),
            holds pickled objects or NaN/Inf, or timm has no Hub weights for ``backbone``.
        RuntimeError: Not cached and not downloadable (``weights=True``, ``HF_HUB_OFFLINE``, no
            network); the message names the fixes.
    """
    common = dict(features_only=True, in_chans=in_chans, **timm_kwargs)
    if weights is None or weights is False:
        return timm.create_model(backbone, pretrained=False, **common)
    if weights is True or weights == IMAGENET:
        return _from_file(backbone, _hub_file(backbone, download=weights == IMAGENET), common)
    if not isinstance(weights, str | os.PathLike):
        raise TypeError(
            f"weights: expected None, {IMAGENET!r}, True or a path to a local weights file, "
            f"got {type(weights).__name__}"
        )
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights: no such file {str(path)!r}")
    if path.suffix not in _WEIGHT_SUFFIXES:
        raise ValueError(
            f"weights: expected {IMAGENET!r} or a {'/'.join(_WEIGHT_SUFFIXES)} file, "
            f"got {path.name!r}"
        )
    return _from_file(backbone, path, common)


def _from_file(backbone: str, path: Path, common: dict) -> nn.Module:
    """Let timm load ``path`` (``pretrained_cfg_overlay``), then check keys and values."""
    file_keys = _file_keys(path)
    fix = f"Pass a state dict saved from timm or torchvision {backbone!r}."
    try:
        model = timm.create_model(
            backbone,
            pretrained=True,
            # a plain state dict for every family, never a model's own loader (ViT's .npz);
            # timm >= 1.0.20 resets custom_load for a file by itself, earlier 1.0 releases do not
            pretrained_cfg_overlay=dict(file=str(path), custom_load=False),
            **common,
        )
    except (RuntimeError, KeyError) as err:  # torch's shape/key errors through timm
        message = " ".join(str(err).split())
        raise ValueError(
            f"weights: {str(path)!r} does not fit backbone {backbone!r} (key names or shapes "
            f"differ: {message[:300]}). {fix}"
        ) from err
    state = model.state_dict()
    claimed = {key: _candidate_keys(key) for key in state}
    missing = [key for key, names in claimed.items() if not names & file_keys]
    if missing:
        unexpected = sorted(file_keys - set().union(*claimed.values()) - _classifier_keys(backbone))
        raise ValueError(
            f"weights: {str(path)!r} does not fit backbone {backbone!r}: {len(missing)} of "
            f"{len(state)} tensors are missing from the file (e.g. {missing[:3]}); "
            f"{len(unexpected)} of the file's {len(file_keys)} tensors are unexpected, classifier "
            f"aside (e.g. {unexpected[:3]}). {fix}"
        )
    bad = [k for k, t in state.items() if t.is_floating_point() and not bool(t.isfinite().all())]
    if bad:
        raise ValueError(
            f"weights: {str(path)!r} holds NaN/Inf values in {len(bad)} tensor(s) (first: "
            f"{', '.join(bad[:3])}); the model they were saved from diverged during training"
        )
    return model


def _file_keys(path: Path) -> set[str]:
    """Tensor names in a weights file (as timm cleans them): the safetensors header alone, else
    timm's loader with ``weights_only=True``.

    Raises:
        ValueError: The file holds pickled objects or cannot be read as weights.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return {k.removeprefix("module.") for k in f.keys()}
        return set(timm.models.load_state_dict(str(path)).keys())
    except Exception as err:
        message = " ".join(str(err).split())
        if "weights_only" in message or "pickle" in message.lower():
            raise ValueError(
                f"weights: {str(path)!r} holds pickled Python objects, which mmfusion never "
                "unpickles (weights_only=True); save a plain state dict instead, e.g. "
                "torch.save(model.state_dict(), path) or safetensors"
            ) from err
        raise ValueError(
            f"weights: cannot read {str(path)!r} as a weights file ({type(err).__name__}: "
            f"{message[:200]}); expected a safetensors file or a plain state dict"
        ) from err


def _classifier_keys(backbone: str) -> set[str]:
    """``<classifier>.weight`` / ``.bias`` of timm's ``pretrained_cfg``: in the file, never in a
    ``features_only`` model."""
    cfg = timm.models.get_pretrained_cfg(backbone)
    heads = cfg.classifier if cfg is not None and cfg.classifier else ()
    heads = (heads,) if isinstance(heads, str) else heads
    return {f"{head}.{kind}" for head in heads for kind in ("weight", "bias")}


def _candidate_keys(key: str) -> set[str]:
    """Names a features-only tensor may have in a full-model state dict.

    timm's sequential feature wrappers flatten one level of names (``stages.0`` becomes
    ``stages_0``, ``features.denseblock1`` becomes ``features_denseblock1``), and the getter
    and hook wrappers hold the model as ``model`` or ``body``; every such spelling is accepted.
    """
    keys = {key, key.removeprefix("model."), key.removeprefix("body.")}
    head, dot, rest = key.partition(".")
    for i, char in enumerate(head):
        if char == "_":
            keys.add(f"{head[:i]}.{head[i + 1:]}{dot}{rest}")
    return keys


def _hub_env() -> tuple[Path, bool]:
    """The Hub cache folder and offline flag as the environment says now (``HF_HUB_CACHE``, else
    ``HF_HOME``/hub; ``HF_HUB_OFFLINE``), falling back to huggingface_hub's values at import."""
    env = os.environ
    if env.get("HF_HUB_CACHE"):
        cache = Path(env["HF_HUB_CACHE"]).expanduser()
    elif env.get("HF_HOME"):
        cache = Path(env["HF_HOME"]).expanduser() / "hub"
    else:
        cache = Path(constants.HF_HUB_CACHE)
    flag = env.get("HF_HUB_OFFLINE")
    if flag is None:
        return cache, bool(constants.HF_HUB_OFFLINE)
    return cache, flag.strip().upper() in constants.ENV_VARS_TRUE_VALUES


def _hub_file(backbone: str, *, download: bool) -> Path:
    """The cached file of timm's pretrained weights for ``backbone``; download it if allowed.

    Raises:
        ValueError: An unknown tag, or timm has no Hugging Face weights for ``backbone``.
        RuntimeError: Not cached, and downloads are off (``weights=True`` or ``HF_HUB_OFFLINE``)
            or the Hub cannot be reached; the message names the fix.
    """
    from huggingface_hub import try_to_load_from_cache

    label = f"weights={IMAGENET!r}" if download else "weights=True"
    try:
        cfg = timm.models.get_pretrained_cfg(backbone)
    except RuntimeError as err:  # an unknown tag, e.g. "resnet50.foo"
        tags = timm.list_pretrained(f"{backbone.split('.')[0]}.*")[:8]
        raise ValueError(f"backbone: {err} Tags with weights: {tags}") from err
    if cfg is None or not cfg.hf_hub_id:
        raise ValueError(
            f"{label}: timm has no Hugging Face weights for {backbone!r}; pass a local weights "
            "file instead"
        )
    repo_id, revision = hf_split(cfg.hf_hub_id)
    # timm's order on the Hub: its configured file, else safetensors before the pickle
    filenames = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else (
        HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME)
    cache_dir, offline = _hub_env()
    for filename in filenames:
        hit = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
        if isinstance(hit, str):
            return Path(hit)
    where = (
        f"{label}: timm's weights for {backbone!r} ({repo_id}) are not in the Hugging Face cache "
        f"{str(cache_dir)!r}"
    )
    fix = (
        "run once with network access, or pass a local weights file "
        f"(weights='{backbone.split('.')[0]}.safetensors'), or set HF_HOME (or HF_HUB_CACHE) to a "
        f"cache that holds {repo_id}"
    )
    if not download:
        raise RuntimeError(
            f"{where}, and weights=True never downloads. Pass weights={IMAGENET!r} to download "
            f"them, or {fix}."
        )
    if offline:
        raise RuntimeError(
            f"{where}, and HF_HUB_OFFLINE is set, so nothing is downloaded. To fix: {fix}."
        )
    return _download(repo_id, revision, filenames, cache_dir, where, fix)


def _download(
    repo_id: str,
    revision: str | None,
    filenames: tuple[str, ...],
    cache_dir: Path,
    context: str,
    fix: str,
) -> Path:
    """Download the first of ``filenames`` that the repo holds into the cache.

    One metadata request without retries comes first, so that a machine without network fails in
    seconds (``hf_hub_download`` retries for about 47 s before giving up).
    """
    import huggingface_hub
    from huggingface_hub.utils import EntryNotFoundError  # also in huggingface_hub < 0.23

    endpoint = os.environ.get("HF_ENDPOINT") or None
    for filename in filenames:
        url = huggingface_hub.hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
        try:
            huggingface_hub.get_hf_file_metadata(url, timeout=_HUB_PROBE_TIMEOUT_S)
        except EntryNotFoundError:
            continue
        except Exception as err:
            raise RuntimeError(
                f"{context}, and the Hugging Face Hub cannot be reached ({type(err).__name__}: "
                f"{' '.join(str(err).split())[:160]}). To fix: {fix}."
            ) from err
        return Path(
            huggingface_hub.hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=cache_dir, endpoint=endpoint,
                library_name="timm",
            )
        )
    raise RuntimeError(f"{context}, and {repo_id} on the Hub holds none of {list(filenames)}.")
