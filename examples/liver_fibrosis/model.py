"""The paper's liver fibrosis model and its Table I variants, assembled from mmfusion's public modules.

``build_model(modalities=("us", "swe"), fusion="attention", loss="multi")`` is the paper's model
(Fig. 3): two ResNet-50 encoders with stages 1-3 frozen, single-modal heads of three FC layers on
the flattened stage-4 maps, attention fusion to a 512-d vector and one FC layer, the ensemble of the
three branches, and ``L_total = CE_us + CE_swe + CE_joint + 0.2 L_C``. Table I's variants:
one modality (flattened 3-FC classifier only), ``fusion="late"`` (GAP -> FC, no attention),
``loss="single"`` (only ``CE_joint``, predict with the joint branch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from mmfusion import (
    AttentionFusion,
    ClassifierHead,
    ConcatFusion,
    EnsembleHead,
    EnsembleLoss,
    ModalityEncoder,
    MultiModalClassifier,
)

PAPER_HIDDEN = (384, 128)
"""Hidden widths of the single-modal 3-FC classifier. The paper gives none; these put the full
model at about 128 M parameters, close to the paper's "approximately 516M" (read as MB)."""


def build_model(
    modalities: Sequence[str] = ("us", "swe"),
    fusion: Literal["attention", "late"] = "attention",
    loss: Literal["multi", "single"] = "multi",
    *,
    backbone: str = "resnet50",
    image_size: int = 224,
    frozen_stages: int = 3,
    weights: Mapping[str, str | None] | None = None,
    hidden: Sequence[int] = PAPER_HIDDEN,
    embed_dim: int = 256,
    num_classes: int = 5,
    alpha: float = 0.2,
    modality_dropout: float = 0.0,
    head_pool: Literal["flatten", "avg"] = "flatten",
) -> tuple[MultiModalClassifier, EnsembleLoss]:
    """Build one Table I configuration and its loss.

    Args:
        modalities: ``("us",)``, ``("swe",)`` or ``("us", "swe")`` (any names work).
        fusion: ``"attention"`` (the paper's) or ``"late"``; ignored for one modality.
        loss: ``"multi"`` (ensemble, ``L_total``) or ``"single"`` (``L_joint`` only).
        backbone: timm model name for every encoder.
        image_size: input side in pixels (the flattened heads depend on it).
        frozen_stages: stages frozen in every encoder (3 in the paper).
        weights: modality -> local weights file (or ``None``) for its encoder.
        hidden: hidden widths of the single-modal classifiers.
        embed_dim: size of each modality vector ``f_m`` (256: a 512-d fused vector).
        num_classes: number of stages.
        alpha: consistency-loss weight (eq. (3)).
        modality_dropout: per-modality dropout probability during training.
        head_pool: single-modal heads on the ``"flatten"``-ed stage-4 map (paper) or on its
            global ``"avg"`` pool (a small head for quick CPU runs).

    Returns:
        ``(model, loss_fn)``.
    """
    modalities = tuple(modalities)
    weights = dict(weights or {})
    encoders = {
        m: ModalityEncoder(backbone, weights=weights.get(m), frozen_stages=frozen_stages)
        for m in modalities
    }
    c, h, w = encoders[modalities[0]].feature_shape(image_size)
    flat = c * h * w if head_pool == "flatten" else c

    def branch_head() -> ClassifierHead:
        return ClassifierHead(flat, num_classes, hidden, pool=head_pool)

    if len(modalities) == 1 or fusion is None:
        heads = {m: branch_head() for m in modalities}
        model = MultiModalClassifier(encoders, None, EnsembleHead(heads))
        return model, EnsembleLoss(alpha=0.0)
    if fusion == "attention":
        fuser = AttentionFusion(c, modalities, embed_dim=embed_dim, reduced_channels=(c // 4, c // 8))
    elif fusion == "late":
        fuser = ConcatFusion(c, modalities, embed_dim=embed_dim)
    else:
        raise ValueError(f"fusion: expected 'attention' or 'late', got {fusion!r}")
    joint = ClassifierHead(fuser.out_features, num_classes)
    if loss == "single":
        head, loss_fn = EnsembleHead({}, joint), EnsembleLoss(alpha=0.0, branches=("joint",))
    elif loss == "multi":
        branch = {m: branch_head() for m in modalities}
        head, loss_fn = EnsembleHead(branch, joint), EnsembleLoss(alpha=alpha)
    else:
        raise ValueError(f"loss: expected 'multi' or 'single', got {loss!r}")
    model = MultiModalClassifier(encoders, fuser, head, modality_dropout=modality_dropout)
    return model, loss_fn
