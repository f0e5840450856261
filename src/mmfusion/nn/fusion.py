"""Fusion of per-modality feature maps into one vector (paper section III.C).

Each modality's stage-4 map is turned into a feature vector ``f_m`` of ``embed_dim`` values by its
own *embedding* module; the vectors are concatenated in the fusion module's fixed modality order
into the fused vector ``[f_m1, f_m2, ...]``. Three embeddings are provided:

* :class:`AttentionEmbedding` - the paper's attention branch: channel-group pooling 2048 -> 512,
  1x1 convolution 512 -> 256, :class:`~mmfusion.nn.SpatialAttention`,
  :class:`~mmfusion.nn.ChannelAttentionBlock` re-weighting the ORIGINAL map, global average
  pooling, fully connected 2048 -> 256.
* :class:`PooledEmbedding` - the "late" fusion baseline of Table I: global average pooling,
  fully connected 2048 -> 256.
* :class:`VectorEmbedding` - a modality whose encoder gives a vector ``[B, D]`` (e.g.
  :class:`~mmfusion.nn.TabularEncoder`): fully connected ``D -> embed_dim``, in either fusion.

:class:`AttentionFusion` and :class:`ConcatFusion` build one embedding per modality for any number
of modalities, and are registered as the fusions ``"attention"`` and ``"late"``
(:func:`~mmfusion.nn.create_fusion`). A modality that is absent (left out of the input mapping, or
flagged absent per sample) is replaced by a learned placeholder vector, so the fused vector keeps
its layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmfusion._checks import (
    batch_size_of,
    check_availability,
    check_modality_keys,
    check_tensor,
)
from mmfusion.nn._validation import checking, validated
from mmfusion.nn.attention import ChannelAttentionBlock, SpatialAttention
from mmfusion.nn.pooling import ChannelGroupPool
from mmfusion.nn.registry import FeatureSpec, register_fusion


@dataclass
class FusionOutput:
    """What a fusion module returns.

    Attributes:
        fused: ``[B, M * embed_dim]`` concatenation of the modality vectors in the module's
            modality order (a learned placeholder stands in for an absent modality).
        features: modality -> ``[B, embed_dim]`` vector ``f_m`` for every modality that was given
            (before placeholder substitution; the consistency loss, eq. (2), uses these).
        attention: modality -> ``[B, 1, H, W]`` spatial attention map, when asked for and when the
            embedding has one; otherwise ``None``.
        uncertainty: ``[B]`` per-sample uncertainty in ``[0, 1]``, from fusions that give one
            (the evidential fusion's Dempster-Shafer uncertainty mass); otherwise ``None``.
    """

    fused: Tensor
    features: dict[str, Tensor]
    attention: dict[str, Tensor] | None = None
    uncertainty: Tensor | None = None


class AttentionEmbedding(nn.Module):
    """The paper's per-modality attention branch: feature map -> feature vector ``f_m``.

    ``pool (C -> r1) -> 1x1 conv (r1 -> r2) -> SpatialAttention -> ChannelAttentionBlock(r2 -> C)``
    applied to the ORIGINAL map ``-> global average pool -> Linear(C -> embed_dim)``.

    Args:
        in_channels: Channels ``C`` of the encoder map (2048 for ResNet-50).
        embed_dim: Size of ``f_m`` (256 in the paper).
        reduced_channels: ``(r1, r2)``: channels after the group pooling and after the 1x1
            convolution ((512, 256) in the paper). ``r1`` must divide ``in_channels``. ``None``:
            the paper's ratios, :func:`~mmfusion.nn.fusion.paper_reduction` of ``in_channels``.
        hidden_channels: Hidden width of the channel attention block (``C // 4``: 512 by default).
        kernel_size: Kernel of the spatial attention convolution.

    Shape:
        - Input: ``[B, C, H, W]``.
        - Output: ``([B, embed_dim], [B, 1, H, W] or None)``.
    """

    input_ndim = 4
    """Dimensions of the input, batch included (a map)."""

    def __init__(
        self,
        in_channels: int,
        embed_dim: int = 256,
        reduced_channels: tuple[int, int] | None = (512, 256),
        hidden_channels: int | None = None,
        kernel_size: int = 7,
    ) -> None:
        super().__init__()
        if reduced_channels is None:
            reduced_channels = paper_reduction(in_channels)
        if isinstance(reduced_channels, str) or len(tuple(reduced_channels)) != 2:
            raise ValueError(
                f"reduced_channels: expected two ints (pooled, convolved), got {reduced_channels!r}"
            )
        pooled, reduced = reduced_channels
        self.in_channels = in_channels
        self.pool = ChannelGroupPool(in_channels, pooled)
        self.reduce = nn.Conv2d(pooled, reduced, kernel_size=1)
        self.spatial = SpatialAttention(kernel_size)
        self.channel = ChannelAttentionBlock(reduced, in_channels, hidden_channels)
        self.proj = nn.Linear(in_channels, embed_dim)

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        """Embed one modality's map; optionally also return its spatial attention map."""
        reduced = self.reduce(self.pool(x))
        attention = self.spatial.attention_map(reduced)
        weighted = self.channel(reduced * attention, target=x)
        vector = self.proj(weighted.mean(dim=(2, 3)))
        return vector, (attention if return_attention else None)


class PooledEmbedding(nn.Module):
    """The "late" fusion baseline's branch: global average pooling -> ``Linear(C -> embed_dim)``.

    Shape:
        - Input: ``[B, C, H, W]``.
        - Output: ``([B, embed_dim], None)`` (no attention map).
    """

    input_ndim = 4
    """Dimensions of the input, batch included (a map)."""

    def __init__(self, in_channels: int, embed_dim: int = 256) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.proj = nn.Linear(in_channels, embed_dim)

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        """Embed one modality's map (``return_attention`` is accepted and ignored)."""
        return self.proj(x.mean(dim=(2, 3))), None


class VectorEmbedding(nn.Module):
    """A vector modality's branch (e.g. a tabular encoder's output): ``Linear(D -> embed_dim)``.

    Args:
        in_channels: Size ``D`` of the encoder's vector.
        embed_dim: Size of ``f_m``.

    Shape:
        - Input: ``[B, D]``.
        - Output: ``([B, embed_dim], None)`` (no attention map).

    Example:
        >>> VectorEmbedding(12, 8)(torch.randn(2, 12))[0].shape
        torch.Size([2, 8])
    """

    input_ndim = 2
    """Dimensions of the input, batch included (a vector)."""

    def __init__(self, in_channels: int, embed_dim: int = 256) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.proj = nn.Linear(in_channels, embed_dim)

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        """Embed one modality's vector (``return_attention`` is accepted and ignored)."""
        return self.proj(x), None


def paper_reduction(channels: int) -> tuple[int, int]:
    """The attention branch's ``reduced_channels`` at the paper's ratios for ``channels`` inputs.

    The paper pools 2048 channels to 512 and convolves them to 256 (section III.C): a quarter,
    then an eighth. For other widths: the largest divisor of ``channels`` not above
    ``channels // 4`` (at least 1), then half of it (at least 1).

    Example:
        >>> paper_reduction(2048), paper_reduction(96), paper_reduction(9)
        ((512, 256), (24, 12), (1, 1))
    """
    quarter = max(1, channels // 4)
    pooled = next(d for d in range(quarter, 0, -1) if channels % d == 0)
    return pooled, max(1, pooled // 2)


class FeatureFusion(nn.Module):
    """Concatenate per-modality embeddings in a fixed order, with placeholders for absent ones.

    The generic container behind :class:`AttentionFusion` and :class:`ConcatFusion`; pass your own
    embedding modules (each maps ``[B, C, H, W]`` - or ``[B, D]`` when its ``input_ndim`` is 2 -
    to ``([B, embed_dim], attention or None)``) to build another fusion.

    Called directly, it checks its inputs; called by
    :class:`~mmfusion.nn.MultiModalClassifier`, which has checked them, it does not check them
    again, and the embeddings' layers skip their checks in both cases.

    Args:
        embedders: modality name -> embedding module; the mapping's order is the fusion order.
        embed_dim: Size of each modality vector.
        allow_missing: Accept inputs where a modality is absent (replaced by a learned
            placeholder). With ``False`` every modality must be given.
        placeholders_in_graph: Route every modality's vector through its placeholder's
            substitution even when nothing is missing, so each placeholder gets a (zero) gradient
            in every step. Needed under ``DistributedDataParallel`` without
            ``find_unused_parameters=True``, whose reducer otherwise waits for placeholder
            gradients that a batch without missing modalities never produces. Changes no value.
            Also an attribute, so it can be switched on for a model built elsewhere.

    Attributes:
        modalities: The modality names in fusion order.
        out_features: ``len(modalities) * embed_dim``.
    """

    def __init__(
        self,
        embedders: Mapping[str, nn.Module],
        embed_dim: int,
        *,
        allow_missing: bool = True,
        placeholders_in_graph: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(embedders, Mapping) or not embedders:
            raise ValueError(f"embedders: expected a non-empty mapping name -> module, got {embedders!r}")
        if not isinstance(embed_dim, int) or embed_dim < 1:
            raise ValueError(f"embed_dim: expected a positive int, got {embed_dim!r}")
        self.modalities: tuple[str, ...] = tuple(embedders)
        self.embed_dim = embed_dim
        self.out_features = embed_dim * len(self.modalities)
        self.allow_missing = allow_missing
        self.placeholders_in_graph = placeholders_in_graph
        self.embedders = nn.ModuleDict(dict(embedders))
        self.placeholders = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(embed_dim)) for m in self.modalities}
        )

    def forward(
        self,
        feature_maps: Mapping[str, Tensor],
        available: Mapping[str, Tensor] | None = None,
        return_attention: bool = False,
    ) -> FusionOutput:
        """Fuse the feature maps of the given modalities.

        Args:
            feature_maps: modality -> ``[B, C_m, H, W]`` encoder maps (``[B, D_m]`` vectors for a
                vector modality); any subset of :attr:`modalities` when ``allow_missing`` is true,
                all of them otherwise.
            available: optional modality -> bool ``[B]``: per-sample presence flags; a sample
                flagged ``False`` gets the placeholder instead of its vector.
            return_attention: Also return the spatial attention maps.

        Returns:
            A :class:`FusionOutput` with ``fused`` of shape ``[B, len(modalities) * embed_dim]``.
        """
        if checking():
            batch, masks = self._check_inputs(feature_maps, available)
        else:  # checked by the caller (MultiModalClassifier)
            batch = next(iter(feature_maps.values())).shape[0]
            masks = dict(available) if available is not None else None
        with validated():
            return self._fuse(feature_maps, masks, batch, return_attention)

    def _check_inputs(
        self, feature_maps: Mapping[str, Tensor], available: Mapping[str, Tensor] | None
    ) -> tuple[int, dict[str, Tensor] | None]:
        """The batch size and the availability masks of checked inputs."""
        if not isinstance(feature_maps, Mapping):
            raise TypeError(
                f"feature_maps: expected a mapping name -> [B, C, H, W] tensor, "
                f"got {type(feature_maps).__name__}"
            )
        check_modality_keys(
            feature_maps.keys(), self.modalities, "feature_maps", require_all=not self.allow_missing
        )
        for name, x in feature_maps.items():
            check_tensor(x, f"feature_maps[{name!r}]",
                         ndim=getattr(self.embedders[name], "input_ndim", 4))
            expected = getattr(self.embedders[name], "in_channels", x.shape[1])
            if x.shape[1] != expected:
                raise ValueError(
                    f"feature_maps[{name!r}]: expected {expected} channels, got shape {tuple(x.shape)}"
                )
        batch = batch_size_of(feature_maps, "feature_maps")
        return batch, check_availability(available, self.modalities, batch)

    def _fuse(
        self,
        feature_maps: Mapping[str, Tensor],
        masks: dict[str, Tensor] | None,
        batch: int,
        return_attention: bool,
    ) -> FusionOutput:
        features: dict[str, Tensor] = {}
        attention: dict[str, Tensor] = {}
        parts: list[Tensor] = []
        for name in self.modalities:
            if name in feature_maps:
                vector, att = self.embedders[name](feature_maps[name], return_attention)
                features[name] = vector
                if att is not None:
                    attention[name] = att
                if masks is not None and name in masks:
                    placeholder = self.placeholders[name].to(vector.dtype)
                    vector = torch.where(masks[name][:, None], vector, placeholder)
                elif self.placeholders_in_graph:  # value unchanged, placeholder gradient zero
                    placeholder = self.placeholders[name].to(vector.dtype)
                    present = torch.ones((), dtype=torch.bool, device=vector.device)
                    vector = torch.where(present, vector, placeholder)
                parts.append(vector)
            else:
                ref = next(iter(feature_maps.values()))
                placeholder = self.placeholders[name].to(ref.dtype)
                parts.append(placeholder.expand(batch, self.embed_dim))
        return FusionOutput(
            fused=torch.cat(parts, dim=1),
            features=features,
            attention=attention if return_attention else None,
        )


def _specs_by_modality(
    in_channels: Mapping[str, int | FeatureSpec] | int, modalities: Sequence[str] | None
) -> dict[str, FeatureSpec]:
    """Modality -> :class:`FeatureSpec` (an int is a map of that many channels)."""
    if isinstance(in_channels, Mapping):
        channels = dict(in_channels)
        if modalities is not None and tuple(modalities) != tuple(channels):
            raise ValueError(
                f"modalities: {tuple(modalities)} does not match the keys of in_channels "
                f"{tuple(channels)} (give one or the other, in the same order)"
            )
    elif isinstance(in_channels, int):
        if modalities is None:
            raise ValueError(
                "modalities: name the modalities in fusion order (e.g. ('us', 'swe')) when "
                f"in_channels is one int ({in_channels}); got None"
            )
        channels = {m: in_channels for m in modalities}
    else:
        raise TypeError(
            "in_channels: expected an int or a mapping name -> int or FeatureSpec, got "
            f"{type(in_channels).__name__}"
        )
    if not channels:
        raise ValueError("modalities: expected at least one modality, got none")
    if len(set(channels)) != len(channels) or not all(isinstance(m, str) for m in channels):
        raise ValueError(f"modalities: expected distinct string names, got {list(channels)}")
    specs: dict[str, FeatureSpec] = {}
    for name, c in channels.items():
        if isinstance(c, FeatureSpec):
            specs[name] = c
            continue
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ValueError(
                f"in_channels[{name!r}]: expected a positive int or a FeatureSpec, got {c!r}"
            )
        specs[name] = FeatureSpec("map", c)
    return specs


@register_fusion("attention")
class AttentionFusion(FeatureFusion):
    """The paper's attention-weighted fusion for any number of modalities (section III.C, Fig. 3-4).

    One :class:`AttentionEmbedding` per map modality, each with its own weights (a vector
    modality, such as a tabular encoder's output, gets a :class:`VectorEmbedding`); the vectors
    are concatenated in ``modalities`` order (the order of ``in_channels`` when it is a mapping)
    into the fused vector (512-d for two modalities and ``embed_dim=256``). Registered as the
    fusion ``"attention"``.

    Args:
        in_channels: What the encoders give: one int (channels of a map) for every modality, or
            modality -> channels or :class:`~mmfusion.nn.FeatureSpec` (what
            :func:`~mmfusion.nn.create_fusion` passes).
        modalities: Modality names in fusion order (the paper's are ``("us", "swe")``). Default:
            the keys of ``in_channels``, which must then be a mapping.
        embed_dim: Size of each modality vector ``f_m``.
        reduced_channels: ``(pooled, convolved)`` channels of the attention input, for every map
            modality; ``None`` (default): the paper's ratios for each map's channels
            (:func:`~mmfusion.nn.fusion.paper_reduction`: (512, 256) for ResNet-50's 2048).
        hidden_channels: Hidden width of the channel attention block (``C // 4``).
        kernel_size: Spatial attention kernel.
        allow_missing: Accept absent modalities (see :class:`FeatureFusion`).
        placeholders_in_graph: Give the placeholders a zero gradient in every step (for DDP; see
            :class:`FeatureFusion`).

    Example:
        >>> fusion = AttentionFusion(2048, modalities=("us", "swe"))
        >>> maps = {"us": torch.randn(2, 2048, 7, 7), "swe": torch.randn(2, 2048, 7, 7)}
        >>> out = fusion(maps, return_attention=True)
        >>> out.fused.shape, out.features["us"].shape, out.attention["swe"].shape
        (torch.Size([2, 512]), torch.Size([2, 256]), torch.Size([2, 1, 7, 7]))
    """

    kinds = ("map", "vector")
    min_modalities = 1
    max_modalities = None
    same_spatial = False
    reference = ("Jiang et al., Liver Fibrosis Classification Based on Multimodal Imaging "
                 "Feature Fusion (this library's paper), section III.C")
    missing = "learned placeholder vector"
    compiles = True

    def __init__(
        self,
        in_channels: Mapping[str, int | FeatureSpec] | int,
        modalities: Sequence[str] | None = None,
        *,
        embed_dim: int = 256,
        reduced_channels: tuple[int, int] | None = None,
        hidden_channels: int | None = None,
        kernel_size: int = 7,
        allow_missing: bool = True,
        placeholders_in_graph: bool = False,
    ) -> None:
        specs = _specs_by_modality(in_channels, modalities)
        embedders = {
            m: AttentionEmbedding(s.channels, embed_dim, reduced_channels, hidden_channels,
                                  kernel_size)
            if s.kind == "map" else VectorEmbedding(s.channels, embed_dim)
            for m, s in specs.items()
        }
        super().__init__(
            embedders, embed_dim, allow_missing=allow_missing,
            placeholders_in_graph=placeholders_in_graph,
        )


@register_fusion("late")
class ConcatFusion(FeatureFusion):
    """The "late" fusion baseline of Table I: per modality GAP -> Linear, then concatenation.

    Same interface as :class:`AttentionFusion`, without attention (``attention`` is always empty);
    a vector modality gets a :class:`VectorEmbedding`. Registered as the fusion ``"late"``.

    Args:
        in_channels: What the encoders give: one int (channels of a map) for every modality, or
            modality -> channels or :class:`~mmfusion.nn.FeatureSpec`.
        modalities: Modality names in fusion order (as for :class:`AttentionFusion`).
        embed_dim: Size of each modality vector.
        allow_missing: Accept absent modalities (see :class:`FeatureFusion`).
        placeholders_in_graph: Give the placeholders a zero gradient in every step (for DDP; see
            :class:`FeatureFusion`).

    Example:
        >>> fusion = ConcatFusion(512, modalities=("us", "swe"), embed_dim=64)
        >>> fusion({"us": torch.randn(2, 512, 4, 4), "swe": torch.randn(2, 512, 4, 4)}).fused.shape
        torch.Size([2, 128])
    """

    kinds = ("map", "vector")
    min_modalities = 1
    max_modalities = None
    same_spatial = False
    reference = "concatenation of pooled per-modality vectors (late fusion; Table I baseline)"
    missing = "learned placeholder vector"
    compiles = True

    def __init__(
        self,
        in_channels: Mapping[str, int | FeatureSpec] | int,
        modalities: Sequence[str] | None = None,
        *,
        embed_dim: int = 256,
        allow_missing: bool = True,
        placeholders_in_graph: bool = False,
    ) -> None:
        specs = _specs_by_modality(in_channels, modalities)
        embedders = {
            m: PooledEmbedding(s.channels, embed_dim) if s.kind == "map"
            else VectorEmbedding(s.channels, embed_dim)
            for m, s in specs.items()
        }
        super().__init__(
            embedders, embed_dim, allow_missing=allow_missing,
            placeholders_in_graph=placeholders_in_graph,
        )
