"""SpatialAttention, ChannelAttentionBlock and ChannelGroupPool against their formulas."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfusion import ChannelAttentionBlock, ChannelGroupPool, SpatialAttention

shapes = st.tuples(
    st.integers(1, 3), st.integers(1, 9), st.integers(1, 6), st.integers(1, 6)
)


def test_spatial_attention_hand_computed():
    """Weights chosen by hand, the map worked out on paper (not with the module's conv).

    Kernel 3: weight 1 on the centre of the mean channel, 0.5 on the left neighbour of the max
    channel, bias -1. Input [1, 2, 1, 3]: channel 0 = (1, 2, 6), channel 1 = (3, 0, -2), so
    mean = (2, 1, 2) and max = (3, 2, 6). Logit at column j = mean[j] + 0.5 * max[j - 1] - 1,
    zero-padded on the left: (2 + 0 - 1, 1 + 1.5 - 1, 2 + 1 - 1) = (1, 1.5, 2).
    """
    att = SpatialAttention(3)
    with torch.no_grad():
        att.conv.weight.zero_()
        att.conv.weight[0, 0, 1, 1] = 1.0
        att.conv.weight[0, 1, 1, 0] = 0.5
        att.conv.bias.fill_(-1.0)
    x = torch.tensor([[[[1.0, 2.0, 6.0]], [[3.0, 0.0, -2.0]]]])
    expected = torch.sigmoid(torch.tensor([1.0, 1.5, 2.0])).view(1, 1, 1, 3)
    torch.testing.assert_close(att.attention_map(x), expected)
    torch.testing.assert_close(att(x), x * expected)


@settings(max_examples=25, deadline=None)
@given(shape=shapes, kernel=st.sampled_from([1, 3, 7]), seed=st.integers(0, 2**16))
def test_spatial_attention_map_properties(shape, kernel, seed):
    """Any weights: a map in (0, 1) of shape [B, 1, H, W], applied by multiplication, and blind
    to the channel order (mean and max do not depend on it)."""
    torch.manual_seed(seed)
    att = SpatialAttention(kernel)
    x = torch.randn(*shape)
    m = att.attention_map(x)
    assert m.shape == (shape[0], 1, shape[2], shape[3])
    assert torch.all((m > 0) & (m < 1))
    torch.testing.assert_close(att(x), x * m)
    torch.testing.assert_close(att.attention_map(x.flip(1)), m)


def test_spatial_attention_has_one_conv_and_no_norm():
    att = SpatialAttention(7)
    convs = [m for m in att.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 and convs[0].in_channels == 2 and convs[0].out_channels == 1
    assert convs[0].padding == (3, 3)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in att.modules())


def test_spatial_attention_mean_before_max():
    """Channel 0 of the convolution sees the mean, channel 1 the max (NOTES.md order)."""
    att = SpatialAttention(1)
    with torch.no_grad():
        att.conv.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))
        att.conv.bias.zero_()
    x = torch.tensor([0.0, 4.0]).view(1, 2, 1, 1)
    assert att.attention_map(x).item() == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())


@pytest.mark.parametrize("kernel", [0, 2, -3, 4.0])
def test_spatial_attention_rejects_bad_kernel(kernel):
    with pytest.raises(ValueError, match="kernel_size"):
        SpatialAttention(kernel)


def test_channel_attention_hand_computed():
    """Weights chosen by hand: fc1 = [e0; e1; -e0; -e1] (no bias), so relu gives
    (z0+, z1+, (-z0)+, (-z1)+); fc2 picks z0+, (-z0)+ and z1+ + (-z1)+ - 1 = |z1| - 1.
    x: channel means z = (2, -0.5) -> weights sigmoid(2, 0, -0.5)."""
    block = ChannelAttentionBlock(2, 3, hidden_channels=4)
    with torch.no_grad():
        block.fc1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))
        block.fc1.bias.zero_()
        block.fc2.weight.copy_(
            torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]])
        )
        block.fc2.bias.copy_(torch.tensor([0.0, 0.0, -1.0]))
    x = torch.tensor([[[[1.0, 3.0]], [[-1.0, 0.0]]]])  # [1, 2, 1, 2]: means 2 and -0.5
    expected = torch.sigmoid(torch.tensor([[2.0, 0.0, -0.5]]))
    torch.testing.assert_close(block.channel_weights(x), expected)
    target = torch.arange(6.0).view(1, 3, 1, 2)
    torch.testing.assert_close(block(x, target), target * expected[:, :, None, None])


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 3),
    cin=st.integers(1, 8),
    cout=st.integers(1, 12),
    hw=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_channel_attention_properties(b, cin, cout, hw, seed):
    """Any weights: one weight in (0, 1) per target channel, from the global average only (so
    a spatial permutation of x changes nothing), multiplied into a target of any size."""
    torch.manual_seed(seed)
    block = ChannelAttentionBlock(cin, cout)
    x, target = torch.randn(b, cin, hw, hw), torch.randn(b, cout, hw + 1, hw)
    w = block.channel_weights(x)
    assert w.shape == (b, cout) and torch.all((w > 0) & (w < 1))
    torch.testing.assert_close(block.channel_weights(x.flip(2, 3).transpose(2, 3)), w)
    torch.testing.assert_close(block(x, target), target * w[:, :, None, None])


def test_channel_attention_defaults_are_the_papers_block():
    block = ChannelAttentionBlock(256, out_channels=2048)
    assert (block.fc1.in_features, block.fc1.out_features) == (256, 512)
    assert (block.fc2.in_features, block.fc2.out_features) == (512, 2048)


def test_channel_attention_without_target_is_squeeze_excitation():
    block = ChannelAttentionBlock(8)
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(block(x), x * block.channel_weights(x)[:, :, None, None])


def test_channel_attention_errors_name_the_argument():
    block = ChannelAttentionBlock(4, 6)
    with pytest.raises(ValueError, match="target: expected 6 channels"):
        block(torch.randn(1, 4, 2, 2), torch.randn(1, 5, 2, 2))
    with pytest.raises(ValueError, match="x: expected 4 channels"):
        block(torch.randn(1, 3, 2, 2), torch.randn(1, 6, 2, 2))
    with pytest.raises(ValueError, match="batch size"):
        block(torch.randn(2, 4, 2, 2), torch.randn(3, 6, 2, 2))
    with pytest.raises(TypeError, match="floating-point"):
        block(torch.ones(1, 4, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="in_channels"):
        ChannelAttentionBlock(0)


def test_channel_group_pool_averages_adjacent_channels():
    x = torch.arange(8.0).view(1, 8, 1, 1)
    out = ChannelGroupPool(8, 2)(x)
    assert out.flatten().tolist() == [1.5, 5.5]  # mean(0..3), mean(4..7)


def test_channel_group_pool_errors():
    with pytest.raises(ValueError, match="in_channels: expected a positive multiple"):
        ChannelGroupPool(10, 4)
    with pytest.raises(ValueError, match="x: expected 8 channels"):
        ChannelGroupPool(8, 2)(torch.randn(1, 4, 2, 2))
