"""Paired transforms: identical geometry for every modality, intensity for one modality only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision import tv_tensors
from torchvision.transforms import v2

from mmfusion.data import (
    PerModality,
    default_intensity_transforms,
    eval_transforms,
    train_transforms,
)
from mmfusion.liver import LiverPhantom, PhantomConfig

H, W = 24, 32
IDENTITY = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def _flip_shift(x: torch.Tensor, flip: bool, shift: int) -> torch.Tensor:
    """Reference: horizontal flip, then integer shift to the right with zero fill."""
    out = x.flip(-1) if flip else x.clone()
    shifted = torch.zeros_like(out)
    if shift >= 0:
        shifted[..., shift:] = out[..., : out.shape[-1] - shift]
    else:
        shifted[..., :shift] = out[..., -shift:]
    return shifted


def _which(out: torch.Tensor, x: torch.Tensor, max_shift: int) -> list[tuple[bool, int]]:
    ref = x.float() / 255
    return [
        (flip, shift)
        for flip in (False, True)
        for shift in range(-max_shift, max_shift + 1)
        if torch.allclose(out, _flip_shift(ref, flip, shift), atol=1e-6)
    ]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), max_shift=st.integers(0, 10))
def test_pair_gets_identical_geometric_transform(seed: int, max_shift: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    us = torch.randint(1, 256, (3, H, W), dtype=torch.uint8, generator=gen)
    swe = torch.randint(1, 256, (3, H, W), dtype=torch.uint8, generator=gen)
    pipeline = train_transforms((H, W), max_shift=max_shift, intensity={}, **IDENTITY)
    torch.manual_seed(seed)
    out = pipeline({"us": tv_tensors.Image(us), "swe": tv_tensors.Image(swe), "label": 3})
    assert out["label"] == 3
    assert type(out["us"]) is torch.Tensor and type(out["swe"]) is torch.Tensor
    found_us = _which(out["us"], us, max_shift)
    found_swe = _which(out["swe"], swe, max_shift)
    assert len(found_us) == 1, "output is not a flip/shift of the input within max_shift"
    assert found_us == found_swe


def test_plain_tensors_are_wrapped_so_the_second_image_is_transformed_too() -> None:
    us = torch.randint(1, 256, (3, H, W), dtype=torch.uint8)
    pipeline = train_transforms((H, W), max_shift=0, flip_p=1.0, intensity={}, **IDENTITY)
    out = pipeline({"us": us, "swe": us.clone()})
    assert torch.equal(out["us"], out["swe"])
    assert torch.allclose(out["swe"], us.flip(-1).float() / 255)


def test_random_choices_vary_across_calls() -> None:
    x = torch.randint(1, 256, (3, H, W), dtype=torch.uint8)
    pipeline = train_transforms((H, W), max_shift=5, intensity={}, **IDENTITY)
    torch.manual_seed(0)
    seen = {tuple(_which(pipeline({"us": x})["us"], x, 5)) for _ in range(30)}
    assert len(seen) > 5


def test_intensity_transform_touches_one_modality_only() -> None:
    gen = torch.Generator().manual_seed(1)
    us = torch.randint(20, 150, (3, H, W), dtype=torch.uint8, generator=gen)
    swe = torch.randint(20, 150, (3, H, W), dtype=torch.uint8, generator=gen)
    brighten = PerModality({"us": v2.ColorJitter(brightness=(1.5, 1.5))})
    pipeline = train_transforms((H, W), max_shift=0, flip_p=0.0, intensity=brighten.transforms)
    out = pipeline({"us": us, "swe": swe})
    ref = eval_transforms((H, W))({"us": us, "swe": swe})
    assert torch.equal(out["swe"], ref["swe"])
    assert (out["us"] > ref["us"]).float().mean() > 0.9


def test_default_intensity_never_touches_swe() -> None:
    assert set(default_intensity_transforms()) == {"us"}
    swe = torch.randint(0, 256, (3, H, W), dtype=torch.uint8)
    pipeline = train_transforms((H, W), max_shift=0, flip_p=0.0)
    torch.manual_seed(0)
    outs = [pipeline({"us": swe.clone(), "swe": swe})["swe"] for _ in range(5)]
    assert all(torch.equal(o, outs[0]) for o in outs)


def test_per_modality_missing_key_is_reported() -> None:
    with pytest.raises(ValueError, match="doppler"):
        PerModality({"doppler": v2.ColorJitter(brightness=0.1)})({"us": torch.zeros(3, 4, 4)})
    with pytest.raises(TypeError, match="transforms\\['us'\\]"):
        PerModality({"us": 3})  # type: ignore[dict-item]


def test_eval_output_is_normalised_float() -> None:
    x = torch.full((3, 40, 60), 255, dtype=torch.uint8)
    out = eval_transforms(16)({"us": x, "swe": x})
    assert out["us"].shape == (3, 16, 16) and out["us"].dtype == torch.float32
    expected = (1.0 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(out["us"][:, 8, 8], expected, atol=1e-5)


def test_roi_crop_in_pipeline_on_phantom_frames() -> None:
    pair = LiverPhantom(PhantomConfig(width=200, height=150), seed=2).sample(stage=1)
    us = torch.from_numpy(np.repeat(pair.us[None], 3, axis=0))
    swe = torch.from_numpy(pair.swe).permute(2, 0, 1).contiguous()
    out = eval_transforms((32, 48), roi_crop=True)({"us": us, "swe": swe})
    assert out["us"].shape == (3, 32, 48) and out["swe"].shape == (3, 32, 48)
    # The crop is the fan's bounding box: its top corners lie outside the fan, black (the frame
    # is black there already; that masking blacks out what is not, test_data_roi checks).
    black = (0.0 - torch.tensor(0.485)) / 0.229
    assert torch.allclose(out["us"][0, 0, 0], black, atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"max_shift": -1}, "max_shift"), ({"size": 0}, "size"), ({"flip_p": 2.0}, "flip_p")],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        train_transforms(**kwargs)
