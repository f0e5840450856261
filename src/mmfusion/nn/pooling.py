"""Channel-group average pooling: the paper's "pooling layer to reduce dimension to 512".

Section III.C reduces the 2048 stage-4 channels to 512 with a pooling layer before a 1x1
convolution. docs/paper_map.rst settles the reading: average pooling over groups of adjacent channels
(2048 / 512 = 4 channels per group).
"""

from __future__ import annotations

from torch import Tensor, nn

from mmfusion._checks import check_tensor
from mmfusion.nn._validation import checking


class ChannelGroupPool(nn.Module):
    """Average adjacent channels in groups: ``[B, C, H, W] -> [B, out_channels, H, W]``.

    Output channel ``k`` is the mean of input channels ``k*g .. k*g + g - 1`` with
    ``g = in_channels // out_channels``.

    Args:
        in_channels: Input channels ``C``.
        out_channels: Output channels; must divide ``in_channels``.

    Example:
        >>> ChannelGroupPool(2048, 512)(torch.randn(1, 2048, 7, 7)).shape
        torch.Size([1, 512, 7, 7])
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if not isinstance(out_channels, int) or out_channels < 1:
            raise ValueError(f"out_channels: expected a positive int, got {out_channels!r}")
        if not isinstance(in_channels, int) or in_channels < 1 or in_channels % out_channels:
            raise ValueError(
                f"in_channels: expected a positive multiple of out_channels={out_channels}, "
                f"got {in_channels!r}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.group_size = in_channels // out_channels

    def forward(self, x: Tensor) -> Tensor:
        """Pool ``x`` of shape ``[B, in_channels, H, W]`` to ``[B, out_channels, H, W]``."""
        if checking():  # not again inside a fusion module that has checked its maps
            check_tensor(x, "x", ndim=4)
            if x.shape[1] != self.in_channels:
                raise ValueError(
                    f"x: expected {self.in_channels} channels, got shape {tuple(x.shape)}"
                )
        b, _, h, w = x.shape
        if self.group_size == 1:
            return x
        return x.reshape(b, self.out_channels, self.group_size, h, w).mean(dim=2)

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels} (groups of {self.group_size})"
