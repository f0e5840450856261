"""Attention layers of the paper's fusion branch (section III.C, Fig. 4).

* :class:`SpatialAttention` - CBAM-style spatial attention: channel-wise mean and max, one
  convolution, sigmoid; multiplies the map it was computed from.
* :class:`ChannelAttentionBlock` - the "attention block" of Fig. 4: global average pooling of a
  context map, two fully connected layers, sigmoid, channel weights that multiply a *target* map
  (which may have more channels than the context). With ``target=None`` it is a squeeze-and-excitation
  block.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmfusion._checks import check_tensor
from mmfusion.nn._validation import checking


class SpatialAttention(nn.Module):
    """Spatial attention: ``x * sigmoid(conv([mean_c(x), max_c(x)]))`` (paper section III.C).

    The channel-wise mean ``M_avg`` and maximum ``M_max`` are concatenated in that order into a
    2-channel map, convolved by a single ``Conv2d(2, 1, kernel_size, padding=kernel_size // 2)`` and
    passed through a sigmoid. There is no normalisation layer.

    Args:
        kernel_size: Odd size of the convolution kernel (7 in the paper's reading, docs/paper_map.rst).

    Shape:
        - Input: ``[B, C, H, W]``.
        - Output: ``[B, C, H, W]``; :meth:`attention_map` returns ``[B, 1, H, W]`` in ``(0, 1)``.

    Example:
        >>> att = SpatialAttention()
        >>> att(torch.randn(2, 256, 7, 7)).shape
        torch.Size([2, 256, 7, 7])
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected an odd positive int, got {kernel_size!r}")
        self.kernel_size = kernel_size
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def attention_map(self, x: Tensor) -> Tensor:
        """Return the spatial attention map ``sigmoid(conv([mean_c(x), max_c(x)]))``.

        Args:
            x: ``[B, C, H, W]`` feature map.

        Returns:
            ``[B, 1, H, W]`` weights in ``(0, 1)``.
        """
        if checking():  # not again inside a fusion module that has checked its maps
            check_tensor(x, "x", ndim=4)
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, x: Tensor) -> Tensor:
        """Weight every position of ``x`` by its attention value.

        Args:
            x: ``[B, C, H, W]`` feature map.

        Returns:
            ``[B, C, H, W]``: ``x * attention_map(x)``.
        """
        return x * self.attention_map(x)


class ChannelAttentionBlock(nn.Module):
    """Channel weights from a context map that re-weight a target map (paper Fig. 4).

    ``weights = sigmoid(W2 relu(W1 gap(x)))`` with ``W1: in -> hidden`` and ``W2: hidden -> out``
    fully connected layers; ``forward(x, target)`` returns ``target * weights`` broadcast over the
    spatial positions. In the paper the context is the spatially weighted 256-channel map and the
    target is the ORIGINAL 2048-channel stage-4 map (``in_channels=256, out_channels=2048``,
    hidden 512, docs/paper_map.rst). With ``target=None`` the block re-weights its own input: a
    squeeze-and-excitation block.

    Args:
        in_channels: Channels of the context map ``x``.
        out_channels: Channels of the target map (defaults to ``in_channels``).
        hidden_channels: Width of the hidden layer (defaults to ``out_channels // 4``, which is 512
            for the paper's 2048-channel target).

    Shape:
        - ``x``: ``[B, in_channels, H, W]``.
        - ``target``: ``[B, out_channels, H2, W2]`` (any spatial size).
        - Output: the shape of ``target``; :meth:`channel_weights` returns ``[B, out_channels]``.

    Example:
        >>> block = ChannelAttentionBlock(256, out_channels=2048)
        >>> block(torch.randn(2, 256, 7, 7), target=torch.randn(2, 2048, 7, 7)).shape
        torch.Size([2, 2048, 7, 7])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        hidden_channels: int | None = None,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        hidden_channels = max(1, out_channels // 4) if hidden_channels is None else hidden_channels
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("hidden_channels", hidden_channels),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.hidden_channels = hidden_channels
        self.fc1 = nn.Linear(in_channels, hidden_channels)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden_channels, out_channels)

    def channel_weights(self, x: Tensor) -> Tensor:
        """Return the channel weights computed from the context map.

        Args:
            x: ``[B, in_channels, H, W]`` context map.

        Returns:
            ``[B, out_channels]`` weights in ``(0, 1)``.
        """
        if checking():
            check_tensor(x, "x", ndim=4)
            if x.shape[1] != self.in_channels:
                raise ValueError(
                    f"x: expected {self.in_channels} channels, got shape {tuple(x.shape)}"
                )
        return torch.sigmoid(self.fc2(self.act(self.fc1(x.mean(dim=(2, 3))))))

    def forward(self, x: Tensor, target: Tensor | None = None) -> Tensor:
        """Re-weight the channels of ``target`` (or of ``x``) by weights computed from ``x``.

        Args:
            x: ``[B, in_channels, H, W]`` context map.
            target: ``[B, out_channels, H2, W2]`` map to re-weight; ``None`` means ``x``.

        Returns:
            ``target * channel_weights(x)[:, :, None, None]``, shaped like ``target``.
        """
        target = x if target is None else target
        if checking():
            check_tensor(target, "target", ndim=4)
            if target.shape[1] != self.out_channels:
                raise ValueError(
                    f"target: expected {self.out_channels} channels, got shape {tuple(target.shape)}"
                )
            if target.shape[0] != x.shape[0]:
                raise ValueError(
                    f"target: batch size {target.shape[0]} differs from x's batch size {x.shape[0]}"
                )
        weights = self.channel_weights(x)
        return target * weights[:, :, None, None].to(target.dtype)
