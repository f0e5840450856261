"""Batched flip/shift augmentation: exact mirror, exact shift with fill, same draw per pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfusion.data.gpu_augment import (
    FlipShift,
    apply_flip_shift,
    draw_flip_shift,
    random_flip_shift,
)


def _reference(images: torch.Tensor, draw: FlipShift, fill: float = 0.0) -> torch.Tensor:
    """Per-sample loop version of the documented semantics."""
    out = torch.full_like(images, fill)
    w = images.shape[-1]
    for b in range(images.shape[0]):
        src = images[b].flip(-1) if bool(draw.flip[b]) else images[b]
        s = int(draw.shift[b])
        if abs(s) >= w:
            continue
        if s >= 0:
            out[b, ..., s:] = src[..., : w - s]
        else:
            out[b, ..., : w + s] = src[..., -s:]
    return out


def _draw(flip: list[bool], shift: list[int]) -> FlipShift:
    return FlipShift(torch.tensor(flip), torch.tensor(shift, dtype=torch.int64))


def test_flip_is_exact_mirror() -> None:
    x = torch.rand(3, 3, 5, 7)
    out = apply_flip_shift(x, _draw([True] * 3, [0] * 3))
    assert torch.equal(out, x.flip(-1))


def test_no_flip_no_shift_is_identity() -> None:
    x = torch.randint(0, 256, (2, 3, 4, 6), dtype=torch.uint8)
    assert torch.equal(apply_flip_shift(x, _draw([False, False], [0, 0])), x)


@pytest.mark.parametrize("shift", [1, 3, -2, -5])
def test_shift_moves_content_with_zero_fill(shift: int) -> None:
    x = torch.rand(1, 3, 4, 8) + 1.0  # strictly positive, so the zero fill is visible
    out = apply_flip_shift(x, _draw([False], [shift]))
    if shift > 0:
        assert torch.equal(out[..., shift:], x[..., :-shift])
        assert torch.all(out[..., :shift] == 0)
    else:
        assert torch.equal(out[..., :shift], x[..., -shift:])
        assert torch.all(out[..., shift:] == 0)


def test_shift_beyond_width_fills_everything() -> None:
    x = torch.ones(1, 1, 2, 4)
    assert torch.all(apply_flip_shift(x, _draw([True], [9])) == 0)


def test_flip_then_shift_order() -> None:
    x = torch.arange(5.0).view(1, 1, 1, 5)
    out = apply_flip_shift(x, _draw([True], [-1]))
    assert out.flatten().tolist() == [3.0, 2.0, 1.0, 0.0, 0.0]


def test_per_channel_fill_and_dtype() -> None:
    x = torch.zeros(2, 3, 2, 4, dtype=torch.uint8)
    out = apply_flip_shift(x, _draw([False, True], [2, -1]), fill=(10, 20, 30))
    assert out.dtype == torch.uint8
    assert out[0, :, 0, 0].tolist() == [10, 20, 30]
    assert out[1, :, 0, 3].tolist() == [10, 20, 30]
    assert out[0, :, 0, 3].tolist() == [0, 0, 0]
    for number in (7, 7.0, np.int64(7), torch.tensor(7)):  # any scalar is a number
        assert apply_flip_shift(x, _draw([False, False], [1, 1]), fill=number)[:, :, :, 0].eq(7).all()
    with pytest.raises(ValueError, match=r"fill: expected a number or 3 per-channel values, got \[1, 2\]"):
        apply_flip_shift(x, _draw([False, True], [1, 1]), fill=(1, 2))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), max_shift=st.integers(0, 12))
def test_same_draw_for_every_modality(seed: int, max_shift: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    us = torch.rand(6, 3, 5, 10, generator=gen)
    swe = us.clone()
    out, draw = random_flip_shift(
        {"us": us, "swe": swe}, max_shift=max_shift, generator=torch.Generator().manual_seed(seed)
    )
    assert torch.equal(out["us"], out["swe"])
    assert torch.equal(out["us"], _reference(us, draw))
    assert int(draw.shift.abs().max()) <= max_shift


def test_channels_last_input_matches_reference() -> None:
    x = torch.rand(4, 3, 6, 9).contiguous(memory_format=torch.channels_last)
    draw = draw_flip_shift(4, max_shift=4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(apply_flip_shift(x, draw), _reference(x.contiguous(), draw))


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="B, C, H, W"):
        apply_flip_shift(torch.rand(3, 4, 4), _draw([False], [0]))
    with pytest.raises(ValueError, match="draw"):
        apply_flip_shift(torch.rand(2, 1, 4, 4), _draw([False], [0]))
    with pytest.raises(ValueError, match="same batch size"):
        random_flip_shift({"us": torch.rand(2, 3, 4, 4), "swe": torch.rand(3, 3, 4, 4)})
    with pytest.raises(ValueError, match="max_shift"):
        draw_flip_shift(2, max_shift=-1)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu_reference() -> None:
    x = torch.randint(0, 256, (16, 3, 32, 40), dtype=torch.uint8)
    gen = torch.Generator(device="cuda").manual_seed(0)
    out, draw = random_flip_shift({"us": x.cuda(), "swe": x.cuda()}, generator=gen)
    cpu_draw = FlipShift(draw.flip.cpu(), draw.shift.cpu())
    assert out["us"].device.type == "cuda"
    assert torch.equal(out["us"].cpu(), _reference(x, cpu_draw))
    assert torch.equal(out["us"], out["swe"])
