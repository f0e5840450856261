"""Per-modality image encoder: a timm backbone that returns its last stage's feature map.

Implements the feature extraction network of the paper's section III.B: one ImageNet ResNet-50 per
modality, independent weights, stage-4 (``layer4``) feature map as output, and the transfer-learning
strategy of section III.E (stem and stages 1-3 frozen, stage 4 fine-tuned). Any timm model with a
``features_only`` mode works the same way: CNNs, and transformers (ViT, DeiT, Swin, hybrids), whose
maps come out as ``[B, C, H, W]`` too. Stages are found by name from timm's ``feature_info``, never
by position. Registered as the encoder ``"timm"`` (:func:`~mmfusion.nn.create_encoder`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Mapping
from typing import cast

import timm
import torch
from timm.models import FeatureInfo
from timm.models._features import FeatureDictNet, FeatureGetterNet, FeatureHookNet
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mmfusion._checks import check_tensor
from mmfusion.nn._validation import checking
from mmfusion.nn.registry import FeatureSpec, register_encoder
from mmfusion.nn.weights import WeightsSpec, create_features_model

_LOOKALIKES = str.maketrans({"o": "0", "l": "1", "i": "1"})
"""Letters typed for digits (``resnet5O``, ``resnetl8``), compared as the digit."""


def _normalised(name: str) -> str:
    return name.lower().translate(_LOOKALIKES)


def _family(name: str) -> str:
    """The leading letters of a model name (``"resnet"`` for ``resnet50d``)."""
    match = re.match(r"[a-z]+", name.lower())
    return match.group(0) if match else ""


def similar_backbones(name: str, limit: int = 5) -> list[str]:
    """timm model names close to ``name``, the likeliest first (for "did you mean" hints).

    Names are compared in lower case with the letters ``O``, ``l`` and ``I`` read as the digits
    they resemble, so ``"resnet5O"`` and ``"ResNet50"`` give ``"resnet50"`` first; the others rank
    by :class:`difflib.SequenceMatcher` similarity, those of the same family (the leading letters,
    ``"resnet"``) ahead of equally similar names of another. A pretrained tag (``".a1_in1k"``) is
    ignored.

    Args:
        name: The unknown model name.
        limit: How many names to return at most.

    Returns:
        Up to ``limit`` names from :func:`timm.list_models`, possibly none.

    Example:
        >>> similar_backbones("resnet5O")[0]
        'resnet50'
    """
    base = name.split(".")[0]
    query, family = _normalised(base), _family(base)
    matcher = difflib.SequenceMatcher(b=query, autojunk=False)
    scored: list[tuple[float, int, str]] = []
    for candidate in timm.list_models():
        normalised = _normalised(candidate)
        if normalised == query:
            score = 2.0
        else:
            matcher.set_seq1(normalised)
            if matcher.real_quick_ratio() < 0.6 or matcher.quick_ratio() < 0.6:
                continue
            score = matcher.ratio()
            if score < 0.6:
                continue
            score += 0.1 if _family(candidate) == family else 0.0
        scored.append((-score, len(candidate), candidate))
    return [candidate for *_, candidate in sorted(scored)[:limit]]


@register_encoder("timm")
class ModalityEncoder(nn.Module):
    """A timm backbone in ``features_only`` mode that returns the last stage's feature map.

    Stage ``i`` (1-based) is the ``i``-th feature level of the backbone with a stride of at least 4,
    as timm's ``feature_info`` lists them: ``layer1`` .. ``layer4`` for a ResNet, ``blocks.1``,
    ``blocks.2``, ``blocks.4``, ``blocks.6`` for EfficientNet-B0, ``layers.0`` .. ``layers.3`` for
    Swin, the last three blocks (``blocks.9`` .. ``blocks.11``) for a 12-block ViT (pass
    ``out_indices=12`` to make every block a stage). The *stem* is everything before stage 1.

    With ``frozen_stages=k`` the stem and every module up to and including the module that closes
    stage ``k`` are frozen (for a ViT also its class token and position embedding): their
    parameters get no gradient, they stay in eval mode when the encoder is put in train mode (so
    BatchNorm running statistics never change and dropout is off), and, by default, the input is
    detached from autograd, so with their parameters frozen nothing of the frozen part is
    recorded and a training step keeps no activations for it - the effect of running it under
    :func:`torch.no_grad` (paper section III.E).

    Args:
        backbone: Any timm model name that supports ``features_only`` (``"resnet50"`` in the paper;
            ``"resnet10t"``, ``"test_resnet"``, ``"test_vit"`` for quick runs).
        weights: ``None`` for random initialisation; ``"imagenet"`` for timm's pretrained weights
            of ``backbone`` (its default tag, or the tag in the name such as
            ``"resnet50.tv_in1k"``), read from the Hugging Face cache and downloaded into it when
            missing, unless ``HF_HUB_OFFLINE=1`` or the Hub cannot be reached, which fails within
            seconds and names the fix; ``True`` for the same weights only from the cache (never
            downloads); or a local file (``.safetensors``, ``.pth``, ``.pt``, ``.bin``; timm or
            torchvision key names; loaded with ``weights_only=True``, never unpickling arbitrary
            objects). timm loads them (:mod:`mmfusion.nn.weights`); every tensor of the feature
            extractor must come from the weights, and none may hold NaN or Inf.
        in_chans: Number of input channels. Pretrained first-layer weights are adapted by timm.
        frozen_stages: Number of stages to freeze (0 trains everything, 3 is the paper's setting).
        frozen_no_grad: Detach the input of a frozen encoder, so the frozen part records no graph.
            Turn off only to measure the cost of keeping frozen layers in the autograd graph, or
            when gradients with respect to the input image are needed.
        **timm_kwargs: Passed to :func:`timm.create_model` (e.g. ``drop_path_rate``,
            ``img_size=160`` for a ViT, ``out_indices``).

    Attributes:
        out_channels: Channels ``C`` of the returned map (2048 for ResNet-50, 192 for ViT-Ti/16).
        reduction: Total stride of the returned map (32 for ResNet-50: 224 px -> 7 x 7; 16 for a
            ViT with 16-pixel patches).
        num_stages: Number of stages that ``frozen_stages`` can count.
        stage_modules: timm's name of the module that closes each stage, in order.
        stage_channels: Channels of each stage's output map, in order (timm's ``feature_info``;
            the last is :attr:`out_channels`).

    Shape:
        - Input: ``[B, in_chans, H, W]`` floating point, normalised (a ViT without
          ``dynamic_img_size=True`` needs its ``img_size``).
        - Output: ``[B, out_channels, H / reduction, W / reduction]`` (channels first for every
          family; channels-last maps such as Swin's are permuted).

    Example:
        >>> enc = ModalityEncoder("test_resnet", frozen_stages=2)
        >>> enc(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 96, 2, 2])
        >>> vit = ModalityEncoder("test_vit", frozen_stages=2, img_size=64)
        >>> vit.stage_modules, vit.feature_shape(64)
        (('blocks.3', 'blocks.4', 'blocks.5'), (64, 4, 4))
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
            close = similar_backbones(backbone)
            raise ValueError(
                f"backbone: unknown timm model {backbone!r}"
                + (f"; did you mean {', '.join(repr(c) for c in close)}?" if close else
                   " (timm.list_models() lists them)")
            )
        if not isinstance(in_chans, int) or in_chans < 1:
            raise ValueError(f"in_chans: expected a positive int, got {in_chans!r}")
        self.backbone_name = backbone
        self.in_chans = in_chans
        self.body = create_features_model(backbone, weights, in_chans, dict(timm_kwargs))

        info = cast(FeatureInfo, self.body.feature_info)
        levels = [d for d in info.get_dicts() if d["reduction"] >= 4]
        self.num_stages = len(levels)
        self.out_channels: int = int(info.channels()[-1])
        self.reduction: int = int(info.reduction()[-1])
        self.stage_modules: tuple[str, ...] = tuple(str(d["module"]) for d in levels)
        self.stage_channels: tuple[int, ...] = tuple(int(d["num_chs"]) for d in levels)
        self._channels_last = getattr(self.body, "output_fmt", "NCHW") == "NHWC"

        if not isinstance(frozen_stages, int) or not 0 <= frozen_stages <= self.num_stages:
            raise ValueError(
                f"frozen_stages: expected an int in [0, {self.num_stages}] for {backbone!r}, "
                f"got {frozen_stages!r}"
            )
        self.frozen_stages = frozen_stages
        self.frozen_no_grad = frozen_no_grad
        self._frozen_module_names: tuple[str, ...] = ()
        self._frozen_param_names: tuple[str, ...] = ()
        if frozen_stages:
            paths = [_stage_path(self.body, name, backbone) for name in self.stage_modules]
            _check_stage_chain(self.body, paths, self.stage_modules, backbone)
            modules, params = _prefix_up_to(
                self.body, paths[frozen_stages - 1], frozen_stages,
                self.stage_modules[frozen_stages - 1], backbone,
            )
            self._frozen_module_names, self._frozen_param_names = tuple(modules), tuple(params)
        for module in self.frozen_modules():
            module.requires_grad_(False)
        for name in self._frozen_param_names:
            self.body.get_parameter(name).requires_grad_(False)
        self.train(self.training)

    def stage(self, index: int) -> nn.Module:
        """The module that closes stage ``index`` (1-based; ``layer4`` of a ResNet for 4)."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"index: expected an int in [1, {self.num_stages}], got {index!r}")
        if not 1 <= index <= self.num_stages:
            raise ValueError(f"index: expected an int in [1, {self.num_stages}], got {index}")
        path = _stage_path(self.body, self.stage_modules[index - 1], self.backbone_name, "index")
        return _root(self.body)[0].get_submodule(".".join(path))

    def modulation_point(self, stage: int, arg: str = "stage") -> str:
        """The name, in the features model, of the module after which :meth:`forward_modulated`
        modulates stage ``stage`` (1-based): ``"layer2"`` of a ResNet for 2.

        Raises:
            TypeError, ValueError: ``stage`` is not an int in ``[1, num_stages]``; or the backbone's
                stages cannot be run one by one: its ``features_only`` model is not timm's
                sequential feature wrapper (a ViT/DeiT's ``forward_intermediates``, an
                EfficientNet's own feature model, a hooked model), or the stage ends inside a
                module of it. The message names ``arg``.
        """
        if isinstance(stage, bool) or not isinstance(stage, int):
            raise TypeError(f"{arg}: expected an int in [1, {self.num_stages}], got {stage!r}")
        if not 1 <= stage <= self.num_stages:
            raise ValueError(
                f"{arg}: expected an int in [1, {self.num_stages}] for {self.backbone_name!r}, "
                f"got {stage}"
            )
        if not isinstance(self.body, FeatureDictNet):
            raise ValueError(
                f"{arg}: the stages of {self.backbone_name!r} cannot be run one by one (its "
                f"features_only model, timm's {type(self.body).__name__}, runs them inside one "
                "forward), so no modulation can be applied after stage "
                f"{stage}; use a backbone whose features model is timm's FeatureListNet (ResNet, "
                "ConvNeXt, RegNet, ...) or modulate the final map"
            )
        path = _stage_path(self.body, self.stage_modules[stage - 1], self.backbone_name, arg)
        if len(path) != 1 or path[0] not in self.body.return_layers:
            raise ValueError(
                f"{arg}: stage {stage} of {self.backbone_name!r} ends inside the module "
                f"{path[0]!r} of its features model ({self.stage_modules[stage - 1]!r}), so the "
                "stages cannot be run one by one up to there; choose another stage"
            )
        return path[0]

    def forward_modulated(
        self, x: Tensor, stage: int, modulate: Callable[[Tensor], Tensor]
    ) -> Tensor:
        """Encode a batch of images with ``modulate`` applied to the output map of stage ``stage``.

        Runs the ``features_only`` model module by module, as its own forward does (frozen
        stages in eval mode and, with ``frozen_no_grad``, the input detached), replacing stage
        ``stage``'s output map ``F`` by ``modulate(F)`` before the next stage reads it. With
        ``modulate`` the identity it returns exactly what :meth:`forward` returns.

        Args:
            x: ``[B, in_chans, H, W]`` floating-point images.
            stage: The stage (1-based, as in :meth:`stage`) whose output is modulated.
            modulate: ``[B, C_k, H_k, W_k] -> [B, C_k, H_k, W_k]`` (channels first, whatever the
                backbone's own layout; ``C_k`` is ``stage_channels[stage - 1]``).

        Returns:
            ``[B, out_channels, H', W']`` feature map of the last stage.

        Raises:
            TypeError, ValueError: See :meth:`modulation_point` (a transformer or another family
                whose stages cannot be run one by one).
        """
        key = self.modulation_point(stage)
        if checking():
            self.check_input(x, "x")
        if self._frozen_module_names and self.frozen_no_grad:
            x = x.detach()
        return self._run_from(x, None, key, modulate)

    def resume(self, fmap: Tensor, stage: int) -> Tensor:
        """Run the stages after ``stage`` from a map of stage ``stage``'s output.

        ``resume(modulate(F_k), stage)`` is ``forward_modulated(x, stage, modulate)`` where
        ``F_k`` is the output of stage ``stage`` for ``x`` (e.g. recorded by an earlier
        :meth:`forward_modulated` whose ``modulate`` kept it): a second, modulated pass that
        does not run the stem and stages ``1..stage`` again.

        Args:
            fmap: ``[B, C_k, H_k, W_k]`` channels first (``C_k`` is ``stage_channels[stage - 1]``).
            stage: The stage whose output ``fmap`` is (1-based).

        Returns:
            ``[B, out_channels, H', W']`` feature map of the last stage.

        Raises:
            TypeError, ValueError: See :meth:`modulation_point`.
        """
        key = self.modulation_point(stage)
        if self._channels_last:
            fmap = fmap.permute(0, 2, 3, 1)
        return self._run_from(fmap, key, None, None)

    def _run_from(
        self,
        x: Tensor,
        start: str | None,
        key: str | None,
        modulate: Callable[[Tensor], Tensor] | None,
    ) -> Tensor:
        """Run the features model's modules after ``start`` (all if None), modulating after
        ``key``; the last feature level's map, channels first."""
        body = cast(FeatureDictNet, self.body)
        last = len(body) - 1
        out = x
        running = start is None
        for i, (name, module) in enumerate(body.items()):
            if not running:
                running = name == start
                continue
            if body.grad_checkpointing and 0 < i < last and not getattr(module, "inplace", False):
                x = checkpoint(module, x, use_reentrant=False)  # as timm's own forward does
            else:
                x = module(x)
            if not isinstance(x, Tensor):
                raise RuntimeError(
                    f"{self.backbone_name!r}: module {name!r} of its features model returned a "
                    f"{type(x).__name__}, not a tensor, so its stages cannot be run one by one"
                )
            if name == key and modulate is not None:
                if self._channels_last:
                    x = modulate(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
                else:
                    x = modulate(x)
            if name in body.return_layers:
                out = x
        if self._channels_last:
            out = out.permute(0, 3, 1, 2)
        if out.ndim != 4 or out.shape[1] != self.out_channels:
            raise RuntimeError(
                f"{self.backbone_name!r} returned a map of shape {tuple(out.shape)}, expected "
                f"[B, {self.out_channels}, H, W] (timm's feature_info)"
            )
        return out

    def frozen_modules(self) -> Iterator[nn.Module]:
        """Yield the frozen modules (stem and stages ``1..frozen_stages``) in forward order.

        Parameters held directly by the model rather than by a module (a ViT's class token and
        position embedding) are frozen too; :meth:`frozen_parameters` lists them all.
        """
        for name in self._frozen_module_names:
            yield self.body.get_submodule(name)

    def frozen_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Yield ``(name, parameter)`` for every frozen parameter (names relative to ``body``)."""
        for prefix in self._frozen_module_names:
            for name, param in self.body.get_submodule(prefix).named_parameters():
                yield f"{prefix}.{name}", param
        for name in self._frozen_param_names:
            yield name, self.body.get_parameter(name)

    def train(self, mode: bool = True) -> ModalityEncoder:
        """Set train/eval mode; the frozen modules always stay in eval mode (BatchNorm frozen)."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def feature_spec(self, image_size: int | tuple[int, int]) -> FeatureSpec:
        """What the encoder gives for ``image_size`` inputs: a map (``C``, ``(H', W')``).

        Computed by one dry run (:meth:`feature_shape`).
        """
        c, h, w = self.feature_shape(image_size)
        return FeatureSpec("map", c, (h, w))

    def input_shape(self, image_size: int | tuple[int, int]) -> tuple[int, int, int]:
        """One sample's input shape ``(in_chans, H, W)`` for ``image_size`` (an int or (H, W))."""
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        return self.in_chans, int(h), int(w)

    def check_input(self, x: object, name: str = "x") -> None:
        """Check one batch of input images (what :meth:`forward` checks when called directly).

        Raises:
            TypeError: ``x`` is not a floating-point tensor.
            ValueError: ``x`` is not ``[B, in_chans, H, W]``; the message names ``name``.
        """
        check_tensor(x, name, ndim=4)
        if x.shape[1] != self.in_chans:  # type: ignore[union-attr]
            raise ValueError(
                f"{name}: expected {self.in_chans} channels ([B, {self.in_chans}, H, W]), "
                f"got shape {tuple(x.shape)}"  # type: ignore[union-attr]
            )

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
        if checking():  # not again inside MultiModalClassifier, which has checked its inputs
            self.check_input(x, "x")
        if self._frozen_module_names and self.frozen_no_grad:
            x = x.detach()  # with the frozen parameters, autograd records nothing before stage k+1
        features = self.body(x)
        out = list(features.values())[-1] if isinstance(features, Mapping) else features[-1]
        if self._channels_last:
            out = out.permute(0, 3, 1, 2)
        if out.ndim != 4 or out.shape[1] != self.out_channels:
            raise RuntimeError(
                f"{self.backbone_name!r} returned a map of shape {tuple(out.shape)}, expected "
                f"[B, {self.out_channels}, H, W] (timm's feature_info)"
            )
        return out


# ---------------------------------------------------------------------------------------------
# Stages: timm's feature_info names -> paths in the features model -> the frozen prefix
# ---------------------------------------------------------------------------------------------


def _root(body: nn.Module) -> tuple[nn.Module, str]:
    """The module in which timm's feature module names resolve, and its name inside ``body``."""
    if isinstance(body, FeatureGetterNet):  # ViT, DeiT, ...: forward_intermediates of the model
        return body.model, "model"
    if isinstance(body, FeatureHookNet) and isinstance(getattr(body, "body", None), nn.Module):
        return body.body, "body"  # hooks on the unflattened model (PiT, NASNet, ...)
    return body, ""


def _stage_path(
    body: nn.Module, name: str, backbone: str, arg: str = "frozen_stages"
) -> list[str]:
    """Child names from the root to timm's feature module ``name`` (e.g. ``["blocks", "4"]``).

    timm's sequential feature wrappers flatten one level (``stages.0`` becomes ``stages_0``);
    both spellings are tried.
    """
    root, _ = _root(body)
    parts = name.split(".")
    candidates = [parts]
    if len(parts) > 1:
        candidates.append([f"{parts[0]}_{parts[1]}", *parts[2:]])
    for path in candidates:
        try:
            root.get_submodule(".".join(path))
        except AttributeError:
            continue
        return path
    raise ValueError(
        f"{arg}: timm's feature_info of {backbone!r} names the stage module {name!r}, which "
        "its features_only model does not have, so its stages cannot be found"
        + ("; use frozen_stages=0" if arg == "frozen_stages" else "")
    )


def _child_index(node: nn.Module, path: list[str]) -> tuple[int, ...]:
    """Definition-order position of each child along ``path`` (to compare two paths)."""
    positions = []
    for part in path:
        names = [n for n, _ in node.named_children()]
        positions.append(names.index(part))
        node = node.get_submodule(part)
    return tuple(positions)


def _check_stage_chain(
    body: nn.Module, paths: list[list[str]], names: tuple[str, ...], backbone: str
) -> None:
    """Stages can be frozen as a prefix only if they are distinct modules in forward order."""
    root, _ = _root(body)
    order = [_child_index(root, p) for p in paths]
    chained = all(
        a < b and b[: len(a)] != a for a, b in zip(order, order[1:], strict=False)
    )
    if not chained:
        raise ValueError(
            f"frozen_stages: the stages of {backbone!r} are not one chain of distinct modules "
            f"(timm's feature modules: {list(names)}), so they cannot be frozen by stage; use "
            "frozen_stages=0"
        )


def _prefix_up_to(
    body: nn.Module, path: list[str], stage: int, name: str, backbone: str
) -> tuple[list[str], list[str]]:
    """Names (inside ``body``) of the modules and direct parameters up to the end of ``path``.

    At every level of the path, the children defined before the path's child are frozen whole,
    and so are the level's own parameters (a ViT's ``cls_token`` and ``pos_embed``, used before
    its blocks); the module at the end of the path is frozen whole. Definition order is forward
    order in a model's top level (timm's convention, checked for the families in the tests) and in
    sequential containers; inside any other block (a residual block whose shortcut is defined
    before its main branch) it is not, so a stage that ends inside such a block is refused.
    """
    root, prefix = _root(body)
    prefix = f"{prefix}." if prefix else ""
    node = root
    modules: list[str] = []
    params: list[str] = []
    for part in path:
        before = []
        for child, _ in node.named_children():
            if child == part:
                break
            before.append(prefix + child)
        own = [prefix + n for n, _ in node.named_parameters(recurse=False)]
        ordered = node is root or isinstance(node, nn.Sequential | nn.ModuleList)
        if not ordered and (before or own):
            raise ValueError(
                f"frozen_stages: stage {stage} of {backbone!r} ends inside a block "
                f"({name!r}, a feature tap of {type(node).__name__}) whose modules do "
                "not run in the order they are defined, so it cannot be frozen up to there; "
                "freeze another number of stages or use frozen_stages=0"
            )
        modules += before
        params += own
        node = node.get_submodule(part)
        prefix = f"{prefix}{part}."
    modules.append(prefix[:-1])
    return modules, params
