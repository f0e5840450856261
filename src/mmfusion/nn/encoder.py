"""Per-modality image encoder: a timm backbone that returns its last stage's feature map.

Implements the feature extraction network of the paper's section III.B: one ImageNet ResNet-50 per
modality, independent weights, stage-4 (``layer4``) feature map as output, and the transfer-learning
strategy of section III.E (stem and stages 1-3 frozen, stage 4 fine-tuned).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import timm
import torch
from timm.models import FeatureDictNet, FeatureInfo
from torch import Tensor, nn

from mmfusion._checks import check_tensor

WeightsSpec = str | os.PathLike | bool | None

_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


class ModalityEncoder(nn.Module):
    """A timm backbone in ``features_only`` mode that returns the last stage's feature map.

    Stage ``i`` (1-based) is the ``i``-th feature level of the backbone with a stride of at least 4
    (``layer1`` .. ``layer4`` for a ResNet); the *stem* is everything before stage 1. With
    ``frozen_stages=k`` the stem and stages ``1..k`` are frozen: their parameters get no gradient,
    their BatchNorm layers stay in eval mode even when the encoder is put in train mode (so their
    running statistics never change), and, by default, they run under :func:`torch.no_grad`, so a
    training step keeps no activations for them (paper section III.E).

    Args:
        backbone: Any timm model name that supports ``features_only`` (``"resnet50"`` in the paper;
            ``"resnet10t"`` or ``"test_resnet"`` for quick runs).
        weights: ``None`` for random initialisation; a local file (``.safetensors``, ``.pth``,
            ``.pt``; timm or torchvision ResNet key names; loaded with ``weights_only=True``, never
            unpickling arbitrary objects); or ``True`` for timm's hub weights, which work only where
            they are already in the local Hugging Face cache (nothing is downloaded offline).
        in_chans: Number of input channels. Pretrained first-layer weights are adapted by timm.
        frozen_stages: Number of stages to freeze (0 trains everything, 3 is the paper's setting).
        frozen_no_grad: Run the frozen prefix under ``torch.no_grad()``. Turn off only to measure
            the cost of keeping frozen layers in the autograd graph, or when gradients with respect
            to the input image are needed.
        **timm_kwargs: Passed to :func:`timm.create_model` (e.g. ``drop_path_rate``).

    Attributes:
        out_channels: Channels ``C`` of the returned map (2048 for ResNet-50).
        reduction: Total stride of the returned map (32 for ResNet-50: 224 px -> 7 x 7).
        num_stages: Number of stages that ``frozen_stages`` can count.

    Shape:
        - Input: ``[B, in_chans, H, W]`` floating point, normalised.
        - Output: ``[B, out_channels, H / reduction, W / reduction]``.

    Example:
        >>> enc = ModalityEncoder("test_resnet", frozen_stages=2)
        >>> enc(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 96, 2, 2])
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        *,
        weights: WeightsSpec = None,
        in_chans: int = 3,
        frozen_stages: int = 3,
        frozen_no_grad: bool = True,
        **timm_kwargs: object,
    ) -> None:
        super().__init__()
        if not isinstance(backbone, str) or not backbone:
            raise TypeError(f"backbone: expected a timm model name, got {backbone!r}")
        if not timm.is_model(backbone.split(".")[0]):
            close = timm.list_models(f"*{backbone.split('.')[0][:6]}*")[:8]
            raise ValueError(
                f"backbone: unknown timm model {backbone!r}"
                + (f"; similar names: {close}" if close else "")
            )
        if not isinstance(in_chans, int) or in_chans < 1:
            raise ValueError(f"in_chans: expected a positive int, got {in_chans!r}")
        self.backbone_name = backbone
        self.in_chans = in_chans
        self.body = _create_features_model(backbone, weights, in_chans, dict(timm_kwargs))

        info = cast(FeatureInfo, self.body.feature_info)
        levels = [d for d in info.get_dicts() if d["reduction"] >= 4]
        self.num_stages = len(levels)
        self.out_channels: int = int(info.channels()[-1])
        self.reduction: int = int(info.reduction()[-1])
        self._stage_modules = [d["module"] for d in levels]

        if not isinstance(frozen_stages, int) or not 0 <= frozen_stages <= self.num_stages:
            raise ValueError(
                f"frozen_stages: expected an int in [0, {self.num_stages}] for {backbone!r}, "
                f"got {frozen_stages!r}"
            )
        if frozen_stages and not isinstance(self.body, FeatureDictNet):
            raise ValueError(
                f"frozen_stages: {backbone!r} has no sequential features_only wrapper, so stages "
                "cannot be frozen by position; use frozen_stages=0"
            )
        self.frozen_stages = frozen_stages
        self.frozen_no_grad = frozen_no_grad
        self._num_frozen_modules = self._count_frozen_modules(frozen_stages)
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self.train(self.training)

    def _count_frozen_modules(self, frozen_stages: int) -> int:
        """Number of leading children of the sequential body that belong to stem + stages 1..k."""
        if frozen_stages == 0:
            return 0
        names = list(cast(FeatureDictNet, self.body).keys())
        target = self._stage_modules[frozen_stages - 1].replace(".", "_")
        if target not in names:
            raise ValueError(
                f"frozen_stages: cannot find stage module {target!r} of {self.backbone_name!r} "
                f"among {names}"
            )
        return names.index(target) + 1

    def frozen_modules(self) -> Iterator[nn.Module]:
        """Yield the frozen children (stem and stages ``1..frozen_stages``) in forward order."""
        if self._num_frozen_modules:
            yield from list(cast(FeatureDictNet, self.body).values())[: self._num_frozen_modules]

    def train(self, mode: bool = True) -> ModalityEncoder:
        """Set train/eval mode; the frozen prefix always stays in eval mode (BatchNorm frozen)."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def feature_shape(self, image_size: int | tuple[int, int]) -> tuple[int, int, int]:
        """Shape ``(C, H', W')`` of the output map for an input of ``image_size`` pixels.

        Computed by one dry run on a zero image (no gradients; the training mode is restored).
        """
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        param = next(self.parameters())
        was_training = self.training
        self.eval()
        with torch.no_grad():
            out = self(torch.zeros(1, self.in_chans, h, w, device=param.device, dtype=param.dtype))
        self.train(was_training)
        return int(out.shape[1]), int(out.shape[2]), int(out.shape[3])

    def forward(self, x: Tensor) -> Tensor:
        """Encode a batch of images.

        Args:
            x: ``[B, in_chans, H, W]`` floating-point images.

        Returns:
            ``[B, out_channels, H', W']`` feature map of the last stage.
        """
        check_tensor(x, "x", ndim=4)
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"x: expected {self.in_chans} channels ([B, {self.in_chans}, H, W]), "
                f"got shape {tuple(x.shape)}"
            )
        if not isinstance(self.body, FeatureDictNet):
            return self.body(x)[-1]
        modules = list(self.body.values())
        frozen, trainable = modules[: self._num_frozen_modules], modules[self._num_frozen_modules :]
        guard = torch.no_grad() if (frozen and self.frozen_no_grad) else contextlib.nullcontext()
        with guard:
            for module in frozen:
                x = module(x)
        for module in trainable:
            x = module(x)
        return x


def _file_keys(path: Path) -> set[str]:
    """Tensor names in a weights file: from the header alone for safetensors (no second read of
    the tensors), else from timm's loader (``weights_only=True``)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:  # names as timm cleans them
            return {k.removeprefix("module.") for k in f.keys()}
    return set(timm.models.load_state_dict(str(path)).keys())


def _create_features_model(
    backbone: str, weights: WeightsSpec, in_chans: int, kwargs: dict
) -> nn.Module:
    """Create the timm ``features_only`` model and load the requested weights."""
    common = dict(features_only=True, in_chans=in_chans, **kwargs)
    if weights is None or weights is False:
        return timm.create_model(backbone, pretrained=False, **common)
    if weights is True:
        _require_cached_hub_weights(backbone)
        return timm.create_model(backbone, pretrained=True, **common)
    if not isinstance(weights, str | os.PathLike):
        raise TypeError(
            f"weights: expected None, True or a path to a local weights file, "
            f"got {type(weights).__name__}"
        )
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights: no such file {str(path)!r}")
    if path.suffix not in _WEIGHT_SUFFIXES:
        raise ValueError(
            f"weights: expected a {'/'.join(_WEIGHT_SUFFIXES)} file, got {path.name!r}"
        )
    try:
        model = timm.create_model(
            backbone,
            pretrained=True,
            pretrained_cfg_overlay=dict(file=str(path)),
            **common,
        )
        file_keys = _file_keys(path)
    except Exception as err:
        message = " ".join(str(err).split())
        if "weights_only" in message or "pickle" in message.lower():
            raise ValueError(
                f"weights: {str(path)!r} holds pickled Python objects, which mmfusion never "
                "unpickles (weights_only=True); save a plain state dict instead, e.g. "
                "torch.save(model.state_dict(), path) or safetensors"
            ) from err
        if isinstance(err, RuntimeError | KeyError):
            raise ValueError(
                f"weights: {str(path)!r} does not fit backbone {backbone!r} (key names or shapes "
                f"differ: {message[:300]}). Pass a state dict saved from timm or torchvision "
                f"{backbone!r}."
            ) from err
        raise ValueError(
            f"weights: cannot read {str(path)!r} as a weights file ({type(err).__name__}: "
            f"{message[:200]}); expected a safetensors file or a plain state dict"
        ) from err
    # timm loads features_only weights non-strictly (it drops the classifier), so check ourselves
    # that every tensor of the feature extractor came from the file.
    missing = [k for k in model.state_dict() if not _candidate_keys(k) & file_keys]
    if missing:
        raise ValueError(
            f"weights: {str(path)!r} does not fit backbone {backbone!r}: {len(missing)} of "
            f"{len(model.state_dict())} tensors are missing from the file (e.g. {missing[:3]}). "
            f"Pass a state dict saved from timm or torchvision {backbone!r}."
        )
    return model


def _candidate_keys(key: str) -> set[str]:
    """Names a features-only tensor may have in a full-model state dict.

    timm's features wrapper renames ``stages.0`` to ``stages_0`` when it flattens sequential
    containers; both spellings are accepted.
    """
    return {key, re.sub(r"^([A-Za-z]+)_(\d+)\.", r"\1.\2.", key)}


def _require_cached_hub_weights(backbone: str) -> None:
    """Fail fast, without touching the network, when hub weights are not in the local cache."""
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(backbone)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    cached = False
    if hub_id:
        for filename in ("model.safetensors", "pytorch_model.bin"):
            hit = try_to_load_from_cache(hub_id, filename)
            if isinstance(hit, str):
                cached = True
                break
    if not cached:
        raise RuntimeError(
            f"weights=True: timm's pretrained weights for {backbone!r} are not in the local cache "
            "and mmfusion never downloads at run time. Download them once elsewhere and pass the "
            f"file instead, e.g. ModalityEncoder({backbone!r}, weights='resnet50.safetensors' "
            "or a torchvision '*.pth' state dict)."
        )
