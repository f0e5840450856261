"""Visual explanations of a :class:`~mmfusion.nn.MultiModalClassifier`, one heat map per modality.

* :func:`attention_overlays` - the fusion branch's own spatial attention maps (paper section III.C,
  the ``sigmoid(conv([mean, max]))`` weights of Fig. 4), upsampled onto the input frame.
* :func:`grad_cam` - class-activation maps (Grad-CAM, computed by Captum's ``LayerGradCam``) on each
  encoder's last-stage feature map, for the predicted stage or a given one, through the combined
  prediction or one branch of the ensemble (Fig. 3, section III.D).

Every map is returned as a ``[B, H, W]`` float tensor in ``[0, 1]`` (min-max normalised per sample)
on the frame size of its modality, ready for :func:`mmfusion.plots.plot_overlay`. Captum is an
optional dependency (the ``mmfusion[explain]`` extra); it is imported only by :func:`grad_cam`.
:func:`explain_maps` gives both kinds at once, as :func:`mmfusion.plots.plot_maps` draws them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfusion._checks import (
    batch_size_of,
    check_modality_keys,
    check_size,
    check_tensor,
    eval_mode,
)
from mmfusion.nn.encoder import ModalityEncoder
from mmfusion.nn.model import MultiModalClassifier

if TYPE_CHECKING:
    import numpy as np

__all__ = ["PROBS", "attention_overlays", "explain_maps", "grad_cam", "normalize_maps"]

PROBS = "probs"
"""Branch name of the combined (ensemble) prediction in :func:`grad_cam`."""

SizeSpec = int | tuple[int, int] | None


def normalize_maps(maps: Tensor, eps: float = 1e-12) -> Tensor:
    """Min-max normalise every map of a batch to ``[0, 1]``.

    Args:
        maps: ``[B, H, W]`` (or ``[B, ...]``) maps.
        eps: A map whose range is below ``eps`` (a constant map) becomes all zeros.

    Returns:
        Tensor shaped like ``maps``, each sample rescaled to ``[0, 1]``.

    Example:
        >>> normalize_maps(torch.tensor([[[1.0, 3.0]], [[2.0, 2.0]]])).tolist()
        [[[0.0, 1.0]], [[0.0, 0.0]]]
    """
    check_tensor(maps, "maps")
    flat = maps.flatten(1)
    low = flat.amin(dim=1, keepdim=True)
    span = flat.amax(dim=1, keepdim=True) - low
    out = torch.where(span > eps, (flat - low) / span.clamp_min(eps), torch.zeros_like(flat))
    return out.reshape(maps.shape)


def _frame_sizes(inputs: Mapping[str, Tensor], image_size: SizeSpec) -> dict[str, tuple[int, int]]:
    """Output size ``(H, W)`` per modality: its input frame, or ``image_size`` when given."""
    if image_size is None:
        return {m: (int(x.shape[-2]), int(x.shape[-1])) for m, x in inputs.items()}
    size = check_size(image_size, "image_size")
    return {m: size for m in inputs}


def _check_inputs(model: nn.Module, inputs: Mapping[str, Tensor]) -> list[str]:
    """Validate ``inputs`` against ``model.modalities``; return the given names in model order."""
    modalities = getattr(model, "modalities", None)
    if modalities is None or not isinstance(getattr(model, "encoders", None), nn.ModuleDict):
        raise TypeError(
            f"model: expected a MultiModalClassifier (with .modalities and .encoders), "
            f"got {type(model).__name__}"
        )
    if not isinstance(inputs, Mapping):
        raise TypeError(
            f"inputs: expected a mapping modality name -> [B, C, H, W] tensor, "
            f"got {type(inputs).__name__}"
        )
    check_modality_keys(inputs.keys(), modalities, "inputs")
    for name, x in inputs.items():
        check_tensor(x, f"inputs[{name!r}]", ndim=4)
    batch_size_of(inputs, "inputs")
    return [m for m in modalities if m in inputs]


@contextmanager
def _explaining(model: nn.Module) -> Iterator[None]:
    """Eval mode with gradients through every encoder layer; restores the model's state after.

    Every module's ``training`` flag and every encoder's ``frozen_no_grad`` flag are saved and put
    back exactly (the flags are set directly, so :meth:`ModalityEncoder.train`'s rule that frozen
    stages stay in eval mode is respected either way).
    """
    no_grad_flags = [
        (encoder, encoder.frozen_no_grad)
        for encoder in model.modules()
        if isinstance(encoder, ModalityEncoder)
    ]
    with eval_mode(model):
        try:
            for encoder, _ in no_grad_flags:
                encoder.frozen_no_grad = False
            yield
        finally:
            for encoder, flag in no_grad_flags:
                encoder.frozen_no_grad = flag


def attention_overlays(
    model: MultiModalClassifier,
    inputs: Mapping[str, Tensor],
    image_size: SizeSpec = None,
) -> dict[str, Tensor]:
    """The fusion's spatial attention map of every given modality, on the input frame.

    The attention maps (``[B, 1, h, w]``, stride 32 for a ResNet: 7 x 7 at 224 px; section III.C,
    Fig. 4) are computed in eval mode without gradients, upsampled bilinearly to the frame size and
    min-max normalised per sample. The model's training mode is restored afterwards.

    Args:
        model: A :class:`~mmfusion.nn.MultiModalClassifier` whose fusion returns attention maps
            (e.g. :class:`~mmfusion.nn.AttentionFusion`; not the "late" baseline).
        inputs: modality -> ``[B, C_in, H, W]`` normalised images (any non-empty subset of
            ``model.modalities``).
        image_size: Output size: ``None`` for each modality's own ``(H, W)``, an int for a square,
            or ``(H, W)``.

    Returns:
        modality -> ``[B, H, W]`` float maps in ``[0, 1]``, in ``model.modalities`` order.

    Raises:
        TypeError: ``inputs`` is not a mapping of float tensors, or ``image_size`` has a wrong type.
        ValueError: Unknown modality names, or the model's fusion gives no attention maps.

    Example:
        >>> from mmfusion import (AttentionFusion, ClassifierHead, EnsembleHead, ModalityEncoder,
        ...                       MultiModalClassifier)
        >>> enc = {m: ModalityEncoder("test_resnet") for m in ("us", "swe")}
        >>> model = MultiModalClassifier(
        ...     enc, AttentionFusion(96, tuple(enc), embed_dim=32, reduced_channels=(32, 16)),
        ...     EnsembleHead({m: ClassifierHead(96, 5, pool="avg") for m in enc},
        ...                  ClassifierHead(64, 5)))
        >>> x = {m: torch.randn(2, 3, 64, 64) for m in model.modalities}
        >>> maps = attention_overlays(model, x)
        >>> maps["swe"].shape, float(maps["swe"].max())
        (torch.Size([2, 64, 64]), 1.0)
    """
    given = _check_inputs(model, inputs)
    sizes = _frame_sizes(inputs, image_size)
    with _explaining(model), torch.no_grad():
        attention = model({m: inputs[m] for m in given}, return_attention=True).attention
    missing = [m for m in given if not attention or m not in attention]
    if missing:
        raise ValueError(
            f"model: its fusion ({type(getattr(model, 'fusion', None)).__name__}) gives no spatial "
            f"attention map for {missing}; use AttentionFusion, or grad_cam() for any fusion"
        )
    out: dict[str, Tensor] = {}
    for m in given:
        up = F.interpolate(
            attention[m].float(), size=sizes[m], mode="bilinear", align_corners=False
        )
        out[m] = normalize_maps(up[:, 0])
    return out


def _branch_forward(model: MultiModalClassifier, given: list[str], branch: str) -> Callable[..., Tensor]:
    """Forward function taking the modality tensors positionally (``given`` order) -> ``[B, K]``."""

    def forward(*images: Tensor) -> Tensor:
        out = model(dict(zip(given, images, strict=True)))
        return out.probs if branch == PROBS else out.logits[branch]

    return forward


def _check_target(target: int | Tensor | None, batch: int, num_classes: int) -> Tensor | None:
    """Validate ``target`` and broadcast it to a ``[B]`` long tensor (``None`` stays ``None``)."""
    if target is None:
        return None
    if isinstance(target, int) and not isinstance(target, bool):
        target = torch.tensor(target)
    if not isinstance(target, Tensor) or target.is_floating_point() or target.dtype == torch.bool:
        raise TypeError(f"target: expected None, an int or a [B] integer tensor, got {target!r}")
    if target.ndim == 0:
        target = target.expand(batch)
    if tuple(target.shape) != (batch,):
        raise ValueError(f"target: expected shape [{batch}], got {tuple(target.shape)}")
    if bool(((target < 0) | (target >= num_classes)).any()):
        raise ValueError(
            f"target: class indices must lie in [0, {num_classes}), got {target.tolist()}"
        )
    return target.long()


def grad_cam(
    model: MultiModalClassifier,
    inputs: Mapping[str, Tensor],
    target: int | Tensor | None = None,
    branch: str = PROBS,
    *,
    layer: str | None = None,
    image_size: SizeSpec = None,
) -> dict[str, Tensor]:
    """Grad-CAM of every given modality, computed by Captum's ``LayerGradCam``.

    For modality ``m`` the layer is the output of ``model.encoders[m]`` - the last stage's map
    (ResNet ``layer4``, 2048 x 7 x 7 at 224 px, section III.B) - unless ``layer`` names another
    sub-module of the encoder. The score differentiated is the combined probability of the target
    class (``branch="probs"``: the ensemble of section III.D) or one branch's logit (``"joint"`` for
    the fusion branch of Fig. 3, or a modality name for its single-modal branch; a modality's map
    is then zero for every other branch's modality). The forward function takes the modality
    tensors positionally in ``model.modalities`` order, so one attribution per modality sees the
    full multimodal prediction. Maps go through a ReLU on the layer's grid (Captum's
    ``relu_attributions``, as in the Grad-CAM paper), are upsampled with
    ``LayerAttribution.interpolate`` (bilinear) and min-max normalised per sample.

    The model is run in eval mode with ``frozen_no_grad`` switched off in every encoder (gradients
    must reach the frozen stages when ``layer`` points there); the training flags and
    ``frozen_no_grad`` are restored afterwards, and no parameter ``.grad`` is touched.

    Args:
        model: A :class:`~mmfusion.nn.MultiModalClassifier`.
        inputs: modality -> ``[B, C_in, H, W]`` normalised images (any non-empty subset).
        target: Class to explain: ``None`` for the class predicted by ``branch``, an int for every
            sample, or a ``[B]`` integer tensor.
        branch: ``"probs"`` (combined prediction) or a branch name of ``model.head.branches``.
        layer: Dotted sub-module path inside each encoder (e.g. ``"body.layer3"`` for a finer
            map); ``None`` uses the encoder's output.
        image_size: Output size: ``None`` for each modality's own ``(H, W)``, an int, or ``(H, W)``.

    Returns:
        modality -> ``[B, H, W]`` float maps in ``[0, 1]`` (detached), in ``model.modalities``
        order. A map with no positive evidence is all zeros.

    Raises:
        ImportError: Captum is not installed (``pip install mmfusion[explain]``).
        TypeError: ``inputs`` or ``target`` of the wrong type.
        ValueError: Bad ``inputs``, ``target``, ``branch``, ``layer`` or ``image_size``.

    Example:
        >>> from mmfusion import (AttentionFusion, ClassifierHead, EnsembleHead, ModalityEncoder,
        ...                       MultiModalClassifier)
        >>> enc = {m: ModalityEncoder("test_resnet") for m in ("us", "swe")}
        >>> model = MultiModalClassifier(
        ...     enc, AttentionFusion(96, tuple(enc), embed_dim=32, reduced_channels=(32, 16)),
        ...     EnsembleHead({m: ClassifierHead(96, 5, pool="avg") for m in enc},
        ...                  ClassifierHead(64, 5)))
        >>> x = {m: torch.randn(2, 3, 64, 64) for m in model.modalities}
        >>> cams = grad_cam(model, x, target=torch.tensor([0, 3]))
        >>> sorted(cams), cams["us"].shape
        (['swe', 'us'], torch.Size([2, 64, 64]))
    """
    captum = _import_captum()
    given = _check_inputs(model, inputs)
    sizes = _frame_sizes(inputs, image_size)
    branches = tuple(getattr(getattr(model, "head", None), "branches", ()))
    if not isinstance(branch, str) or (branch != PROBS and branch not in branches):
        raise ValueError(f"branch: expected {PROBS!r} or one of {list(branches)}, got {branch!r}")
    if branch in model.modalities and branch not in given:
        raise ValueError(f"branch: the {branch!r} branch needs inputs[{branch!r}], which is absent")
    if layer is not None and not isinstance(layer, str):
        raise TypeError(f"layer: expected None or a dotted module path, got {layer!r}")
    layers = {m: _resolve_layer(model.encoders[m], m, layer) for m in given}
    images = tuple(inputs[m].detach() for m in given)
    forward = _branch_forward(model, given, branch)

    with _explaining(model):
        with torch.no_grad():
            scores = forward(*images)
        batch, num_classes = int(scores.shape[0]), int(scores.shape[1])
        checked = _check_target(target, batch, num_classes)
        chosen = scores.argmax(dim=1) if checked is None else checked.to(scores.device)
        out: dict[str, Tensor] = {}
        for m in given:
            if branch in given and branch != m:  # another single-modal branch: no path from m
                out[m] = torch.zeros((batch, *sizes[m]), device=scores.device)
                continue
            cam = captum.LayerGradCam(forward, layers[m])
            attr = cam.attribute(images, target=chosen, relu_attributions=True)
            up = captum.LayerAttribution.interpolate(attr.detach(), sizes[m], "bilinear")
            out[m] = normalize_maps(up[:, 0].float())
    return out


def _resolve_layer(encoder: nn.Module, name: str, layer: str | None) -> nn.Module:
    if layer is None:
        return encoder
    try:
        return encoder.get_submodule(layer)
    except AttributeError as err:
        children = [n for n, _ in encoder.named_modules() if n and n.count(".") <= 1][:20]
        raise ValueError(
            f"layer: encoder {name!r} has no sub-module {layer!r}; e.g. {children}"
        ) from err


def _import_captum() -> Any:
    """Import Captum's Grad-CAM pieces, or fail with the extra to install."""
    try:
        from captum import attr as captum_attr
    except ImportError as err:
        raise ImportError(
            "grad_cam needs Captum, an optional dependency: pip install 'mmfusion[explain]'"
        ) from err
    return captum_attr


def explain_maps(model: nn.Module, inputs: Mapping[str, Tensor], with_grad_cam: bool = False
                 ) -> dict[str, dict[str, np.ndarray]]:
    """Kind -> modality -> ``[B, H, W]`` NumPy maps in ``[0, 1]``: ``"attention"`` (when the model's
    fusion has spatial attention, :func:`attention_overlays`) and, if asked, ``"Grad-CAM"``."""
    from mmfusion.nn import AttentionFusion

    out = {}
    if isinstance(getattr(model, "fusion", None), AttentionFusion):
        out["attention"] = {m: v.detach().cpu().numpy() for m, v in attention_overlays(model, inputs).items()}
    if with_grad_cam:
        out["Grad-CAM"] = {m: v.detach().cpu().numpy() for m, v in grad_cam(model, inputs).items()}
    return out
