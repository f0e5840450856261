"""SpatialAttention, ChannelAttentionBlock and ChannelGroupPool against their formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfusion import ChannelAttentionBlock, ChannelGroupPool, SpatialAttention

shapes = st.tuples(
    st.integers(1, 3), st.integers(1, 9), st.integers(1, 6), st.integers(1, 6)
)


@settings(max_examples=25, deadline=None)
@given(shape=shapes, kernel=st.sampled_from([1, 3, 7]), seed=st.integers(0, 2**16))
def test_spatial_attention_equals_formula(shape, kernel, seed):
    torch.manual_seed(seed)
    att = SpatialAttention(kernel)
    x = torch.randn(*shape)
    mean, mx = x.mean(1, keepdim=True), x.max(1, keepdim=True).values
    expected_map = torch.sigmoid(
        F.conv2d(torch.cat([mean, mx], 1), att.conv.weight, att.conv.bias, padding=kernel // 2)
    )
    torch.testing.assert_close(att.attention_map(x), expected_map)
    torch.testing.assert_close(att(x), x * expected_map)
    assert att.attention_map(x).shape == (shape[0], 1, shape[2], shape[3])


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


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 3),
    cin=st.integers(1, 8),
    cout=st.integers(1, 12),
    hw=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_channel_attention_equals_formula(b, cin, cout, hw, seed):
    torch.manual_seed(seed)
    block = ChannelAttentionBlock(cin, cout)
    x, target = torch.randn(b, cin, hw, hw), torch.randn(b, cout, hw + 1, hw)
    z = x.mean(dim=(2, 3))
    w = torch.sigmoid(block.fc2.weight @ torch.relu(block.fc1.weight @ z.T + block.fc1.bias[:, None])
                      + block.fc2.bias[:, None]).T
    torch.testing.assert_close(block.channel_weights(x), w)
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
