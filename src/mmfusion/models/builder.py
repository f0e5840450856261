"""Build a :class:`~mmfusion.models.FusionClassifier` and its loss from a :class:`ModelConfig`.

The paper's network (Fig. 3) for the default configuration: one encoder per modality (ResNet-50,
stem and stages 1-3 frozen), single-modal heads of three FC layers on the flattened stage-4 maps,
attention fusion (2048 -> 512 -> 256, spatial and channel attention) to a 512-d vector and one FC
layer, the ensemble of the three branches, and ``L_total = CE_us + CE_swe + CE_joint + 0.2 L_C``.
Table I's variants: one modality (its single-modal classifier only), ``fusion="late"`` (global
average pooling and one FC layer, no attention), ``loss="single"`` (``CE_joint`` only, predicting
with the joint branch).
"""

from __future__ import annotations

from collections.abc import Mapping

from mmfusion.losses import EnsembleLoss
from mmfusion.models.classifier import FusionClassifier
from mmfusion.models.config import ModelConfig
from mmfusion.nn import AttentionFusion, ClassifierHead, ConcatFusion, EnsembleHead, ModalityEncoder
from mmfusion.nn.encoder import WeightsSpec

__all__ = ["build_loss", "build_model"]

Weights = WeightsSpec | Mapping[str, WeightsSpec]


def _per_modality(weights: Weights, modalities: tuple[str, ...]) -> dict[str, WeightsSpec]:
    if isinstance(weights, Mapping):
        unknown = sorted(set(weights) - set(modalities))
        if unknown:
            raise ValueError(f"weights: modalities {unknown} are not in the model's {list(modalities)}")
        return {m: weights.get(m) for m in modalities}
    return {m: weights for m in modalities}


def build_model(config: ModelConfig, weights: Weights = None) -> FusionClassifier:
    """Build the model of ``config`` (random initialisation where no weights are given).

    Args:
        config: The architecture.
        weights: Encoder initialisation: ``None`` (random), a local weights file, ``"imagenet"``
            (timm's pretrained weights through the Hugging Face cache), or a mapping modality ->
            one of those.

    Returns:
        A :class:`FusionClassifier` that carries ``config``.
    """
    mods = config.modalities
    per_modality = _per_modality(weights, mods)
    encoders = {
        m: ModalityEncoder(config.backbone, weights=per_modality[m], frozen_stages=config.frozen_stages)
        for m in mods
    }
    c, h, w = encoders[mods[0]].feature_shape(config.image_size)
    flat = c * h * w if config.head_pool == "flatten" else c

    def branch_head() -> ClassifierHead:
        return ClassifierHead(flat, config.num_classes, config.hidden, pool=config.head_pool)

    if not config.is_fused:
        head = EnsembleHead({m: branch_head() for m in mods})
        return FusionClassifier(config, encoders, None, head)
    if config.fusion == "attention":
        fusion = AttentionFusion(c, mods, embed_dim=config.embed_dim, reduced_channels=(c // 4, c // 8))
    else:
        fusion = ConcatFusion(c, mods, embed_dim=config.embed_dim)
    joint = ClassifierHead(fusion.out_features, config.num_classes)
    branches = {m: branch_head() for m in mods} if config.loss == "multi" else {}
    head = EnsembleHead(branches, joint)
    return FusionClassifier(config, encoders, fusion, head, modality_dropout=config.modality_dropout)


def build_loss(config: ModelConfig) -> EnsembleLoss:
    """The training loss of ``config``: eq. (1)-(3) for ``loss="multi"``, ``CE_joint`` alone for
    ``"single"``, the branch's cross-entropy alone for one modality."""
    if not config.is_fused:
        return EnsembleLoss(alpha=0.0)
    if config.loss == "single":
        return EnsembleLoss(alpha=0.0, branches=("joint",))
    return EnsembleLoss(alpha=config.alpha)
