"""Paired transforms: one geometric transform for all modalities of a pair (paper II.B, Fig. 2).

Built on torchvision ``transforms.v2``: a sample is a dict whose modalities are
``tv_tensors.Image``; v2 draws the random parameters once per call and applies them to every Image
in the dict. (Plain tensors are a known pitfall: v2 transforms only the first plain tensor and passes
later ones through untouched, so the SWE image would silently miss the flip. :class:`AsImages`
therefore wraps plain ``[C, H, W]`` tensors first.)

- :func:`train_transforms`: (ROI crop) -> resize -> per-modality intensity -> random horizontal
  flip -> random horizontal shift of up to ``max_shift`` pixels -> normalise.
- :func:`eval_transforms`: (ROI crop) -> resize -> normalise.
- :class:`PerModality`: intensity transforms for one modality only. Never colour-jitter the SWE
  image: its colour is the stiffness measurement. :func:`default_intensity_transforms` touches
  only ``"us"``.

The ROI crop is usually done (and cached) by :class:`~mmfusion.data.dataset.PairedImageDataset`;
``roi_crop=True`` adds it to the pipeline for data sets that return full frames.

Missing modalities: a sample may carry ``"available": {modality: bool}``; an unavailable
modality's image is a zero placeholder of the pair's shape. The paired transforms treat it like
any image (so shapes stay equal and one geometry is drawn per pair), except :class:`SectorCrop`,
which leaves it as it is (a blank frame has no scan sector); the data sets then reset it to zeros
with :func:`zero_unavailable`, since normalisation turns zeros into a constant.

Tabular modalities: a sample's 1-D tensors (``[F]`` values of a tabular modality, NaN where
missing) are not images. :func:`train_transforms` and :func:`eval_transforms` pass them through
untouched (no flip, shift, resize or normalisation), :class:`AsImages` does not wrap them,
:class:`PerModality` touches only the modalities it names, and :func:`zero_unavailable` sets an
unavailable one to NaN (missing values), not to zeros (which would read as measured zeros).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from mmfusion._checks import check_size
from mmfusion.data.roi import detect_sector

__all__ = [
    "AVAILABLE_KEY",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AsImages",
    "PerModality",
    "SectorCrop",
    "default_intensity_transforms",
    "eval_transforms",
    "train_transforms",
    "zero_unavailable",
]

AVAILABLE_KEY = "available"
"""Sample key of the availability flags: ``sample["available"] = {modality: bool}``."""

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

Sample = dict[str, Any]


def _unavailable(sample: Any) -> list[str]:
    """Keys of the images that ``sample["available"]`` flags as missing (none if no flags)."""
    if not isinstance(sample, Mapping):
        return []
    flags = sample.get(AVAILABLE_KEY)
    if flags is None:
        return []
    if not isinstance(flags, Mapping):
        raise TypeError(
            f"sample[{AVAILABLE_KEY!r}]: expected a mapping modality -> bool, "
            f"got {type(flags).__name__}"
        )
    missing = [key for key, ok in flags.items() if not bool(ok)]
    absent = [key for key in missing if key not in sample]
    if absent:
        raise ValueError(
            f"sample[{AVAILABLE_KEY!r}]: flags {absent} as missing, but the sample has no such "
            f"image (keys {list(sample)}); expected a zero placeholder for each"
        )
    return missing


def _is_vector(value: Any) -> bool:
    """Whether ``value`` is a tabular modality's ``[F]`` values (a plain 1-D tensor)."""
    return (
        isinstance(value, torch.Tensor)
        and not isinstance(value, tv_tensors.TVTensor)
        and value.ndim == 1
    )


def zero_unavailable(sample: Mapping[str, Any]) -> Sample:
    """Reset the images of unavailable modalities to zeros (same shape, dtype and type), and
    the values of unavailable tabular modalities to NaN.

    Transforms change a zero placeholder (normalisation makes it ``-mean / std``); the data sets
    call this after their transform, so a missing modality's image is always exactly zero. The
    model ignores it anyway where ``available`` is ``False``. A tabular modality's ``[F]``
    (floating-point) values become NaN, the tabular encoders' "missing": a zero would be a
    measured value.

    Args:
        sample: One sample dict: modality -> ``[C, H, W]`` image or ``[F]`` tabular values, and
            optionally ``"available": {modality: bool}``. Without flags it is returned unchanged.

    Returns:
        A new dict (or ``sample`` itself when nothing is missing).

    Example:
        >>> s = zero_unavailable({"us": torch.ones(3, 2, 2), "swe": torch.ones(3, 2, 2),
        ...                       "available": {"us": True, "swe": False}})
        >>> s["us"].sum().item(), s["swe"].sum().item()
        (12.0, 0.0)
    """
    missing = _unavailable(sample)
    if not missing and isinstance(sample, dict):
        return sample
    out = dict(sample)
    for key in missing:
        image = out[key]
        if _is_vector(image) and image.is_floating_point():
            out[key] = torch.full_like(image, float("nan"))
            continue
        zeros = torch.zeros_like(image.as_subclass(torch.Tensor))
        is_tv = isinstance(image, tv_tensors.TVTensor)
        out[key] = tv_tensors.wrap(zeros, like=image) if is_tv else zeros
    return out


class AsImages(torch.nn.Module):
    """Wrap every plain ``[C, H, W]`` tensor of a sample dict as ``tv_tensors.Image``.

    Tensors of other ranks (a tabular modality's ``[F]`` values) and non-tensor values (label,
    patient id) are left as they are.
    """

    def forward(self, sample: Sample) -> Sample:
        if not isinstance(sample, dict):
            raise TypeError(
                f"sample: expected a dict of modality -> image, got {type(sample).__name__}"
            )
        return {
            k: tv_tensors.Image(v)
            if isinstance(v, torch.Tensor)
            and not isinstance(v, tv_tensors.TVTensor)
            and v.ndim == 3
            else v
            for k, v in sample.items()
        }


class SectorCrop(v2.Transform):
    """Crop every image to its own detected scan sector (:func:`~mmfusion.data.roi.detect_sector`).

    Outputs of different modalities may differ in size; follow with ``v2.Resize``. The zero
    placeholder of a modality flagged missing in ``sample["available"]`` is left as it is.

    Args:
        fallback: Use the full frame (with a warning) when no sector is found.
    """

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, fallback: bool = False) -> None:
        super().__init__()
        self.fallback = fallback

    def forward(self, *inputs: Any) -> Any:
        missing = _unavailable(inputs[0]) if len(inputs) == 1 else []
        if not missing:
            return super().forward(*inputs)
        sample = inputs[0]
        cropped = super().forward({k: v for k, v in sample.items() if k not in missing})
        return {k: sample[k] if k in missing else cropped[k] for k in sample}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        plain = inpt.as_subclass(torch.Tensor)
        roi = detect_sector(plain, fallback=self.fallback)
        return tv_tensors.wrap(roi.crop(plain), like=inpt)


class PerModality(torch.nn.Module):
    """Apply a transform to one modality of a sample dict only (intensity augmentation).

    Args:
        transforms: Modality key -> transform of one ``[C, H, W]`` image, e.g.
            ``{"us": v2.ColorJitter(brightness=0.2, contrast=0.2)}``. Keep colour transforms off
            the SWE image: its colour encodes stiffness.
    """

    def __init__(self, transforms: Mapping[str, Callable[[Any], Any]]) -> None:
        super().__init__()
        if not isinstance(transforms, Mapping):
            raise TypeError(
                f"transforms: expected a mapping of modality -> transform, got {type(transforms).__name__}"
            )
        for key, t in transforms.items():
            if not callable(t):
                raise TypeError(f"transforms[{key!r}]: expected a callable, got {type(t).__name__}")
        self.transforms = dict(transforms)

    def forward(self, sample: Sample) -> Sample:
        missing = [k for k in self.transforms if k not in sample]
        if missing:
            raise ValueError(
                f"sample: expected modalities {missing} for the intensity transforms, "
                f"got keys {list(sample)}"
            )
        out = dict(sample)
        for key, transform in self.transforms.items():
            out[key] = transform(sample[key])
        return out

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.transforms.items())


def default_intensity_transforms() -> dict[str, Callable[[Any], Any]]:
    """Default intensity augmentation: B-mode gain/contrast jitter and slight blur, US only.

    Returns:
        ``{"us": v2.Compose([...])}``; the SWE colour map is never touched.
    """
    return {
        "us": v2.Compose(
            [
                v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.2)], p=0.8),
                v2.RandomApply([v2.GaussianBlur(kernel_size=3, sigma=(0.1, 1.0))], p=0.2),
            ]
        )
    }


class _PairedCompose(v2.Compose):
    """``v2.Compose`` whose steps see a sample dict without its tabular entries (1-D tensors),
    which come back untouched, in their place (a sample without any image comes back as is).

    (torchvision would treat a plain tensor as an image where a sample holds no
    ``tv_tensors.Image``, e.g. a tabular-only sample.)
    """

    def forward(self, *inputs: Any) -> Any:
        if len(inputs) != 1 or not isinstance(inputs[0], Mapping):
            return super().forward(*inputs)
        sample = inputs[0]
        aside = {k: v for k, v in sample.items() if _is_vector(v)}
        if not aside:
            return super().forward(*inputs)
        rest = {k: v for k, v in sample.items() if k not in aside}
        if not any(isinstance(v, torch.Tensor) for v in rest.values()):
            return dict(sample)  # no image to transform
        out = super().forward(rest)
        merged = {k: aside[k] if k in aside else out[k] for k in sample if k in aside or k in out}
        merged.update({k: v for k, v in out.items() if k not in merged})
        return merged


def _head(size: tuple[int, int], roi_crop: bool, roi_fallback: bool) -> list[Any]:
    steps: list[Any] = [AsImages()]
    if roi_crop:
        steps.append(SectorCrop(fallback=roi_fallback))
    steps.append(v2.Resize(size, antialias=True))
    return steps


def _tail(mean: Sequence[float], std: Sequence[float]) -> list[Any]:
    return [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
        v2.ToPureTensor(),
    ]


def train_transforms(
    size: int | Sequence[int] = 224,
    max_shift: int = 5,
    flip_p: float = 0.5,
    intensity: Mapping[str, Callable[[Any], Any]] | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    roi_crop: bool = False,
    roi_fallback: bool = False,
) -> v2.Compose:
    """Online training augmentation for a sample dict (paper II.B: flips and small shifts).

    Pipeline: (ROI crop) -> resize to ``size`` -> per-modality intensity -> random horizontal
    flip -> random horizontal shift by an integer in ``[-max_shift, max_shift]`` pixels (at the
    resized resolution, black fill) -> float in [0, 1] -> normalise. Flip and shift are drawn once
    per sample and applied to every image modality; tabular ``[F]`` values pass through
    untouched.

    Args:
        size: Output ``(H, W)`` (or ``size x size``).
        max_shift: Largest horizontal shift in output pixels (0 disables it).
        flip_p: Probability of a horizontal flip.
        intensity: Modality -> intensity transform; None uses
            :func:`default_intensity_transforms`, ``{}`` disables intensity augmentation.
        mean: Per-channel normalisation mean (RGB), default ImageNet.
        std: Per-channel normalisation std (RGB), default ImageNet.
        roi_crop: Detect and crop the scan sector of each image first.
        roi_fallback: With ``roi_crop``, use the full frame when no sector is found.

    Returns:
        A ``v2.Compose``; output modalities are float32 ``[3, H, W]`` plain tensors.
    """
    out_size = check_size(size, "size")
    if not isinstance(max_shift, int) or not 0 <= max_shift < out_size[1]:
        raise ValueError(f"max_shift: expected an int in [0, {out_size[1]}), got {max_shift!r}")
    if not 0.0 <= flip_p <= 1.0:
        raise ValueError(f"flip_p: expected a probability in [0, 1], got {flip_p}")
    steps = _head(out_size, roi_crop, roi_fallback)
    intensity = default_intensity_transforms() if intensity is None else intensity
    if intensity:
        steps.append(PerModality(intensity))
    steps.append(v2.RandomHorizontalFlip(p=flip_p))
    if max_shift > 0:
        # RandomAffine draws tx = round(U(-f * W, f * W)) pixels: f * W = max_shift exactly.
        steps.append(v2.RandomAffine(degrees=0.0, translate=(max_shift / out_size[1], 0.0), fill=0))
    return _PairedCompose(steps + _tail(mean, std))


def eval_transforms(
    size: int | Sequence[int] = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    roi_crop: bool = False,
    roi_fallback: bool = False,
) -> v2.Compose:
    """Deterministic evaluation pipeline: (ROI crop) -> resize -> normalise (images only;
    tabular ``[F]`` values pass through untouched).

    Args:
        size: Output ``(H, W)`` (or ``size x size``).
        mean: Per-channel normalisation mean (RGB), default ImageNet.
        std: Per-channel normalisation std (RGB), default ImageNet.
        roi_crop: Detect and crop the scan sector of each image first.
        roi_fallback: With ``roi_crop``, use the full frame when no sector is found.

    Returns:
        A ``v2.Compose``; output modalities are float32 ``[3, H, W]`` plain tensors.
    """
    steps = _head(check_size(size, "size"), roi_crop, roi_fallback) + _tail(mean, std)
    return _PairedCompose(steps)
