"""Input checks shared by the public modules.

Every check raises :class:`TypeError` or :class:`ValueError` with a message that names the argument,
what was expected and what came, so that a wrong call fails at the boundary instead of deep inside
a matrix multiplication.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping

import torch
from torch import Tensor, nn

from mmfusion._values import (  # noqa: F401 - the value checks, re-exported
    check_choice,
    check_int,
    check_modality_keys,
    check_number,
    check_positive,
    check_sequence,
    check_size,
    is_int,
    is_number,
    short_repr,
)


def check_tensor(x: object, name: str, *, ndim: int | tuple[int, ...] | None = None) -> Tensor:
    """Check that ``x`` is a floating-point tensor with the expected number of dimensions.

    Args:
        x: The value to check.
        name: The argument name used in the error message.
        ndim: Allowed number of dimensions (an int or a tuple of ints), or ``None`` for any.

    Returns:
        ``x`` itself.

    Raises:
        TypeError: ``x`` is not a tensor, or not floating point.
        ValueError: ``x`` has the wrong number of dimensions.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(
            f"{name}: expected a floating-point tensor, got dtype {x.dtype} "
            "(convert images with .float() and normalise them first)"
        )
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if x.ndim not in allowed:
            shapes = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name}: expected a {shapes} tensor, got shape {tuple(x.shape)}")
    return x


def batch_size_of(tensors: Mapping[str, Tensor], name: str) -> int:
    """Return the common batch size of a name -> tensor mapping.

    The size is returned as it comes (a symbolic int under ``torch.export``), so that exported and
    compiled models keep a dynamic batch axis.

    Raises:
        ValueError: The tensors disagree on their first dimension, or the mapping is empty.
    """
    if not tensors:
        raise ValueError(f"{name}: expected at least one tensor, got an empty mapping")
    items = list(tensors.items())
    first = items[0][1].shape[0]
    for _, value in items[1:]:
        if value.shape[0] != first:
            sizes = {k: tuple(v.shape)[0] for k, v in items}
            raise ValueError(f"{name}: all modalities must have the same batch size, got {sizes}")
    return first


def check_availability(
    available: Mapping[str, Tensor] | None,
    known: Iterable[str],
    batch_size: int,
    name: str = "available",
) -> dict[str, Tensor] | None:
    """Validate a per-sample availability mask (modality name -> bool tensor ``[B]``).

    Returns:
        The mask as a plain dict of bool tensors, or ``None`` when none was given.

    Raises:
        TypeError: A mask is not a boolean tensor.
        ValueError: Unknown modality names, or a mask of the wrong shape.
    """
    if available is None:
        return None
    if not isinstance(available, Mapping):
        raise TypeError(f"{name}: expected a mapping name -> bool tensor [B], got {type(available).__name__}")
    check_modality_keys(available.keys(), known, name, require_any=False)
    out: dict[str, Tensor] = {}
    for key, mask in available.items():
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise TypeError(f"{name}[{key!r}]: expected a bool tensor of shape [{batch_size}], got {got}")
        if tuple(mask.shape) != (batch_size,):
            raise ValueError(
                f"{name}[{key!r}]: expected shape [{batch_size}] (one flag per sample), "
                f"got {tuple(mask.shape)}"
            )
        out[key] = mask
    return out


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode; restore every sub-module's own ``training`` flag afterwards.

    Setting the flags back one by one (rather than ``model.train(mode)``) keeps modules that a
    custom ``train()`` holds in eval mode, e.g. the frozen stages of
    :class:`~mmfusion.nn.ModalityEncoder`, exactly as they were.
    """
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, mode in modes:
            module.training = mode
