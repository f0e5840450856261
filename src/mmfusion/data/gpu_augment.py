"""Batched on-device flip and shift augmentation for paired images (paper section II).

The paper augments every pair with a horizontal flip and horizontal shifts (5 px left/right, then
0-10 px for the smaller stages). Done per sample in the data loader, this costs CPU time; done here
it is one gather per modality on a whole ``[B, C, H, W]`` batch, on the GPU (or the CPU), with no
per-sample Python loop. Every modality of a pair gets the SAME draw, so the B-mode and SWE images
stay registered.

Semantics for sample ``b`` with ``flip[b]`` and ``shift[b]``: the image is mirrored left-right
first (if ``flip[b]``), then its content moves ``shift[b]`` pixels to the right (to the left when
negative); columns that come from outside the image are filled with ``fill``::

    out[b, :, :, x] = src[b, :, :, x - shift[b]]   if 0 <= x - shift[b] < W else fill
    src[b] = image[b] mirrored if flip[b] else image[b]

Works for any dtype (``uint8`` before normalisation, where ``fill=0`` is black, or float). A
tabular modality's ``[B, F]`` values are no image: :func:`random_flip_shift` passes them through.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class FlipShift:
    """One draw of flips and shifts for a batch.

    Attributes:
        flip: bool ``[B]``: mirror sample ``b`` left-right.
        shift: int64 ``[B]``: move sample ``b``'s content this many pixels right (left if < 0).
    """

    flip: Tensor
    shift: Tensor


def draw_flip_shift(
    batch_size: int,
    *,
    flip_p: float = 0.5,
    max_shift: int = 5,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> FlipShift:
    """Draw per-sample flips (probability ``flip_p``) and shifts uniform in ``[-max_shift, max_shift]``.

    Args:
        batch_size: Number of samples ``B``.
        flip_p: Probability of a horizontal flip.
        max_shift: Largest shift in pixels (0 disables shifting).
        device: Where to draw; defaults to the generator's device, else the CPU.
        generator: Optional generator for reproducible draws (on ``device``).

    Returns:
        :class:`FlipShift` with ``[B]`` tensors on ``device``.

    Example:
        >>> d = draw_flip_shift(4, generator=torch.Generator().manual_seed(0))
        >>> d.flip.shape, d.shift.dtype
        (torch.Size([4]), torch.int64)
    """
    if not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"batch_size: expected a non-negative int, got {batch_size!r}")
    if not 0.0 <= float(flip_p) <= 1.0:
        raise ValueError(f"flip_p: expected a probability in [0, 1], got {flip_p!r}")
    if not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"max_shift: expected a non-negative int, got {max_shift!r}")
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    flip = torch.rand(batch_size, generator=generator, device=device) < flip_p
    shift = torch.randint(
        -max_shift, max_shift + 1, (batch_size,), generator=generator, device=device
    )
    return FlipShift(flip=flip, shift=shift)


def _check_images(images: object, name: str) -> Tensor:
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{name}: expected a [B, C, H, W] tensor, got {shape}")
    return images


def apply_flip_shift(
    images: Tensor, draw: FlipShift, fill: float | Sequence[float] = 0.0
) -> Tensor:
    """Apply a :class:`FlipShift` draw to a batch (one gather along the width, no Python loop).

    Args:
        images: ``[B, C, H, W]`` batch (any dtype, any memory format, on any device).
        draw: Flips and shifts with ``B`` entries, on the same device as ``images``.
        fill: Value of the columns shifted in: a number, or one value per channel.

    Returns:
        A new ``[B, C, H, W]`` tensor of the same dtype.

    Example:
        >>> x = torch.arange(4.0).view(1, 1, 1, 4)
        >>> apply_flip_shift(x, FlipShift(torch.tensor([True]), torch.tensor([1])))
        tensor([[[[0., 3., 2., 1.]]]])
    """
    _check_images(images, "images")
    b, c, h, w = images.shape
    if tuple(draw.flip.shape) != (b,) or tuple(draw.shift.shape) != (b,):
        raise ValueError(
            f"draw: expected flip and shift of shape [{b}], got {tuple(draw.flip.shape)} and "
            f"{tuple(draw.shift.shape)}"
        )
    cols = torch.arange(w, device=images.device)
    source = cols[None, :] - draw.shift.to(images.device)[:, None]  # [B, W]
    inside = (source >= 0) & (source < w)
    source = source.clamp(0, w - 1)
    source = torch.where(draw.flip.to(images.device)[:, None], w - 1 - source, source)
    index = source[:, None, None, :].expand(b, c, h, w)
    out = torch.gather(images, 3, index)
    outside = ~inside[:, None, None, :]
    values = torch.as_tensor(fill, dtype=images.dtype, device=images.device)
    if values.ndim == 0:  # a Python, NumPy or 0-d tensor number
        return out.masked_fill(outside, values)
    if values.shape != (c,):
        raise ValueError(
            f"fill: expected a number or {c} per-channel values, got {values.tolist()}"
        )
    return torch.where(outside, values[None, :, None, None], out)


def random_flip_shift(
    batch: Mapping[str, Tensor],
    *,
    flip_p: float = 0.5,
    max_shift: int = 5,
    fill: float | Sequence[float] = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[dict[str, Tensor], FlipShift]:
    """Flip and shift every sample of a paired batch, with the same draw for all its images.

    Args:
        batch: modality -> ``[B, C, H, W]`` images (same ``B``, ``W`` and device for all), or
            ``[B, F]`` values of a tabular modality, returned untouched (the same object).
        flip_p: Probability of a horizontal flip per sample.
        max_shift: Largest horizontal shift in pixels, drawn uniformly in ``[-max_shift, max_shift]``.
        fill: Value shifted in (0: black for ``uint8`` images before normalisation).
        generator: Optional generator on the batch's device.

    Returns:
        ``(augmented, draw)``: modality -> augmented images (tabular values as given), and the
        :class:`FlipShift` used.

    Example:
        >>> pair = {"us": torch.rand(8, 3, 16, 16), "labs": torch.rand(8, 4)}
        >>> out, draw = random_flip_shift(pair, generator=torch.Generator().manual_seed(0))
        >>> out["us"].shape, draw.shift.shape, out["labs"] is pair["labs"]
        (torch.Size([8, 3, 16, 16]), torch.Size([8]), True)
    """
    if not isinstance(batch, Mapping) or not batch:
        raise ValueError(
            f"batch: expected a non-empty mapping modality -> [B, C, H, W], got {batch!r}"
        )
    vectors = {name: x for name, x in batch.items() if isinstance(x, Tensor) and x.ndim == 2}
    images = {
        name: _check_images(x, f"batch[{name!r}]") for name, x in batch.items()
        if name not in vectors
    }  # fmt: skip
    first = next(iter(images.values()), None)
    size = int(next(iter(batch.values())).shape[0])
    for name, x in {**images, **vectors}.items():
        if x.shape[0] != size:
            raise ValueError(
                f"batch[{name!r}]: every modality needs the same batch size; got "
                f"{tuple(x.shape)}, expected {size} samples"
            )
    for name, x in images.items():
        assert first is not None
        if x.shape[3] != first.shape[3] or x.device != first.device:
            raise ValueError(
                f"batch[{name!r}]: every image modality needs the same batch size, width and "
                f"device; got {tuple(x.shape)} on {x.device} vs {tuple(first.shape)} on "
                f"{first.device}"
            )
    device = first.device if first is not None else next(iter(batch.values())).device
    draw = draw_flip_shift(
        size,
        flip_p=flip_p,
        max_shift=max_shift,
        device=device,
        generator=generator,
    )
    out = {name: apply_flip_shift(x, draw, fill) if name in images else x
           for name, x in batch.items()}  # fmt: skip
    return out, draw
