"""Cross-modal spatial attention on registered maps: the paper's attention, made cross-modal.

The paper's attention branch (section III.C, Fig. 3-4; :class:`~mmfusion.nn.AttentionEmbedding`)
computes the spatial attention of a modality from that modality's own map, the CBAM spatial
attention of Woo et al. 2018 (eq. (3) there): ``A(F) = sigmoid(conv([mean_c(F); max_c(F)]))``.
Where the modalities share a field of view (a B-mode image and its SWE overlay), one modality's
map can tell where to look in the other's: :class:`CrossSpatialAttentionFusion` computes the
spatial attention map applied to modality ``m`` from the reduced maps of *all* present
modalities. Registered as the fusion ``"cross_spatial_attention"``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmfusion.nn.attention import ChannelAttentionBlock
from mmfusion.nn.fusion import FusionOutput, paper_reduction
from mmfusion.nn.fusions.base import BaseFusion, check_embed_dim
from mmfusion.nn.pooling import ChannelGroupPool
from mmfusion.nn.registry import FeatureSpec, register_fusion

__all__ = ["CrossSpatialAttentionFusion"]

#: Channels of one modality's descriptor in the attention input: mean, max, presence.
DESCRIPTOR_CHANNELS = 3


def _check_reduced(value: object, specs: Mapping[str, FeatureSpec]) -> dict[str, tuple[int, int]]:
    """modality -> ``(pooled, convolved)`` channels, from ``None`` or one pair of ints."""
    if value is None:
        return {m: paper_reduction(s.channels) for m, s in specs.items()}
    pair = tuple(value) if isinstance(value, list | tuple) else ()
    if len(pair) != 2 or not all(
        isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in pair
    ):
        raise ValueError(
            f"reduced_channels: expected None or two positive ints (pooled, convolved), "
            f"got {value!r}"
        )
    for m, s in specs.items():
        if s.channels % pair[0]:
            raise ValueError(
                f"reduced_channels: the pooled width {pair[0]} must divide every map's channels, "
                f"features[{m!r}] has {s.channels}"
            )
    return {m: (int(pair[0]), int(pair[1])) for m in specs}


@register_fusion("cross_spatial_attention")
class CrossSpatialAttentionFusion(BaseFusion):
    """Spatial attention of each modality computed from every present modality's map.

    For each map modality ``m`` with map ``x_m`` ``[B, C_m, H, W]`` (all maps of one size,
    registered):

    1. Reduce as the paper does: ``r_m = conv1x1(pool(x_m))`` ``[B, r2, H, W]`` (channel-group
       average pooling ``C_m -> r1``, then a 1x1 convolution ``r1 -> r2``; paper section III.C).
    2. Describe it as CBAM does, plus its presence:
       ``d_m = [mean_c(r_m); max_c(r_m); 1]`` ``[B, 3, H, W]``. For a sample where ``m`` is
       absent, ``d_m = [0; 0; 0]`` (chosen with ``torch.where`` on the mask, so the pixels of a
       masked modality are never read: a masked modality and a modality left out give the same
       input, bit for bit).
    3. The attention map of ``m`` reads all the descriptors, in modality order:
       ``A_m = sigmoid(conv_m([d_1; ...; d_M]))`` ``[B, 1, H, W]``, ``conv_m`` a
       ``Conv2d(3 M, 1, k, padding=k // 2)`` of its own (Woo et al. 2018, eq. (3), with the
       descriptors of every modality stacked instead of one). With ``M = 1`` (or with every
       other modality absent) it is the paper's own spatial attention plus a constant bias.
    4. As in the paper: the channel attention block (Fig. 4) computes channel weights from
       ``r_m * A_m`` and re-weights the ORIGINAL map, ``x'_m = x_m * w_m``; global average
       pooling and ``Linear(C_m -> embed_dim)`` give ``f_m``.
    5. ``fused = [f_1, ..., f_M]`` in modality order, a learned placeholder (zeros at first)
       standing in for the ``f_m`` of a sample whose ``m`` is absent (as in
       :class:`~mmfusion.nn.FeatureFusion`).

    A missing modality: its descriptor channels are zeros (presence channel 0), so the other
    modalities' attention maps are computed from the present maps alone - for two modalities,
    the attention of the present one is then its paper-style self attention
    (``sigmoid(conv_m`` restricted to its own three input channels ``)``) - and its slot of
    ``fused`` holds its placeholder. Its own attention map, when it is given but masked, is
    still returned (computed from its pixels) but is used by nothing.

    Only maps are taken (``kinds = ("map",)``): a vector has no spatial layout to attend over;
    fuse image and tabular modalities with another catalogue method (``"gated"``,
    ``"cross_attention"``, ...).

    Args:
        features: modality -> :class:`~mmfusion.nn.FeatureSpec` of a map, all of one spatial
            size (``spatial`` may be ``None`` when unknown; the maps of a call must then agree).
        embed_dim: Size of each ``f_m``; ``out_features = M * embed_dim``.
        reduced_channels: ``(r1, r2)`` for every modality (``r1`` must divide every map's
            channels); ``None``: the paper's ratios for each map
            (:func:`~mmfusion.nn.fusion.paper_reduction`).
        hidden_channels: Hidden width of the channel attention block (``C_m // 4``).
        kernel_size: Odd kernel size ``k`` of the attention convolution (7, as in the paper).
        allow_missing: Accept absent modalities.

    Shape:
        - ``features[m]``: ``[B, C_m, H, W]``.
        - ``fused``: ``[B, M * embed_dim]``; ``features[m]``: ``[B, embed_dim]``;
          ``attention[m]`` (with ``return_attention``): ``[B, 1, H, W]`` in ``(0, 1)``.

    Raises:
        ValueError: A bad ``embed_dim``, ``reduced_channels``, ``hidden_channels`` or
            ``kernel_size`` (named, with the value that came); a vector modality; maps of
            different spatial sizes; fewer than two modalities.

    Example:
        >>> from mmfusion.nn import FeatureSpec, create_fusion
        >>> specs = {m: FeatureSpec("map", 16, (4, 4)) for m in ("us", "swe")}
        >>> fusion = create_fusion("cross_spatial_attention", specs, embed_dim=8)
        >>> x = {m: torch.randn(2, 16, 4, 4) for m in specs}
        >>> out = fusion(x, return_attention=True)
        >>> out.fused.shape, out.attention["us"].shape
        (torch.Size([2, 16]), torch.Size([2, 1, 4, 4]))
    """

    kinds = ("map",)
    min_modalities = 2
    max_modalities = None
    same_spatial = True
    reference = (
        "Woo et al. 2018, CBAM: Convolutional block attention module (spatial attention), "
        "made cross-modal; the liver paper's section III.C attention branch"
    )
    missing = "zero descriptors (presence 0) in the others' attention; learned placeholder slot"
    compiles = True

    def __init__(
        self,
        features: Mapping[str, FeatureSpec],
        *,
        embed_dim: int = 64,
        reduced_channels: tuple[int, int] | None = None,
        hidden_channels: int | None = None,
        kernel_size: int = 7,
        allow_missing: bool = True,
    ) -> None:
        super().__init__(features, allow_missing=allow_missing)
        embed_dim = check_embed_dim(embed_dim)
        if (
            isinstance(kernel_size, bool) or not isinstance(kernel_size, int)
            or kernel_size < 1 or kernel_size % 2 == 0
        ):
            raise ValueError(f"kernel_size: expected an odd positive int, got {kernel_size!r}")
        if hidden_channels is not None:
            check_embed_dim(hidden_channels, "hidden_channels")
        reduced = _check_reduced(reduced_channels, self.specs)
        self.embed_dim = embed_dim
        self.kernel_size = kernel_size
        self.out_features = embed_dim * len(self.modalities)
        count = len(self.modalities)
        self.pools = nn.ModuleDict()
        self.reducers = nn.ModuleDict()
        self.convs = nn.ModuleDict()
        self.channels = nn.ModuleDict()
        self.projections = nn.ModuleDict()
        for m, spec in self.specs.items():
            pooled, conv = reduced[m]
            self.pools[m] = ChannelGroupPool(spec.channels, pooled)
            self.reducers[m] = nn.Conv2d(pooled, conv, kernel_size=1)
            self.convs[m] = nn.Conv2d(
                DESCRIPTOR_CHANNELS * count, 1, kernel_size, padding=kernel_size // 2
            )
            self.channels[m] = ChannelAttentionBlock(conv, spec.channels, hidden_channels)
            self.projections[m] = nn.Linear(spec.channels, embed_dim)
        self.placeholders = self.make_placeholders(embed_dim)

    def descriptor(self, reduced: Tensor, present: Tensor) -> Tensor:
        """A modality's attention descriptor ``[mean_c; max_c; 1]``, zeros where absent.

        Args:
            reduced: ``[B, r2, H, W]`` reduced map ``r_m``.
            present: ``[B]`` bool presence of the modality.

        Returns:
            ``[B, 3, H, W]``.
        """
        ones = torch.ones_like(reduced[:, :1])
        d = torch.cat([reduced.mean(dim=1, keepdim=True), reduced.amax(dim=1, keepdim=True), ones],
                      dim=1)
        return torch.where(present[:, None, None, None], d, torch.zeros_like(d))

    def fuse(
        self,
        features: dict[str, Tensor],
        masks: dict[str, Tensor] | None,
        batch: int,
        return_attention: bool,
    ) -> FusionOutput:
        """Attention maps from every present modality, then the paper's channel attention.

        Args:
            features: modality -> ``[B, C_m, H, W]``, the given modalities.
            masks: ``None`` or modality -> bool ``[B]``.
            batch: ``B``.
            return_attention: Also return the spatial attention maps of the given modalities.

        Returns:
            ``fused`` ``[B, M * embed_dim]``, ``features`` (``f_m`` of the given modalities),
            ``attention`` (modality -> ``[B, 1, H, W]``, given modalities) or ``None``.
        """
        presence = self.presence(features, masks, batch)
        ref = next(iter(features.values()))
        height, width = ref.shape[-2], ref.shape[-1]
        reduced: dict[str, Tensor] = {}
        descriptors: list[Tensor] = []
        for i, m in enumerate(self.modalities):
            if m in features:
                reduced[m] = self.reducers[m](self.pools[m](features[m]))
                descriptors.append(self.descriptor(reduced[m], presence[:, i]))
            else:
                descriptors.append(
                    ref.new_zeros(batch, DESCRIPTOR_CHANNELS, height, width)
                )
        stacked = torch.cat(descriptors, dim=1)
        vectors: dict[str, Tensor] = {}
        attention: dict[str, Tensor] = {}
        for m in features:
            att = torch.sigmoid(self.convs[m](stacked))
            weighted = self.channels[m](reduced[m] * att, target=features[m])
            vectors[m] = self.projections[m](weighted.mean(dim=(2, 3)))
            attention[m] = att
        return FusionOutput(
            fused=self.concat_with_placeholders(vectors, presence, batch),
            features=vectors,
            attention=attention if return_attention else None,
        )
