"""mmfusion: composable multimodal image-fusion layers for PyTorch.

The layers implement the liver fibrosis fusion network of Jiang et al. (attention-weighted fusion
of B-mode ultrasound and shear-wave elastography, with a model ensemble and a consistency loss) as
reusable modules for any number of modalities. Data utilities live in :mod:`mmfusion.data`,
evaluation metrics in :mod:`mmfusion.metrics`.

The names below load on first use (PEP 562), so ``import mmfusion.liver.phantom`` or
``import mmfusion.data.manifest`` does not import torch, timm or scikit-learn: the phantom's
worker processes start in a fraction of a second. ``from mmfusion import SpatialAttention`` works
as usual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmfusion._lazy import attach

__version__ = "0.1.0"

#: Submodule -> the public names loaded from it on first use.
_SUBMODULES = {
    "mmfusion.labels": ["LabelSpec"],
    "mmfusion.losses": ["ConsistencyLoss", "EnsembleLoss", "LossOutput"],
    "mmfusion.nn": [
        "JOINT",
        "AttentionEmbedding",
        "AttentionFusion",
        "ChannelAttentionBlock",
        "ChannelGroupPool",
        "ClassifierHead",
        "ClassifierOutput",
        "ConcatFusion",
        "EnsembleHead",
        "EnsembleOutput",
        "FeatureFusion",
        "FeatureSpec",
        "FusionOutput",
        "ModalityEncoder",
        "MultiModalClassifier",
        "PooledEmbedding",
        "SpatialAttention",
        "TabularEncoder",
        "VectorEmbedding",
        "create_encoder",
        "create_fusion",
        "list_encoders",
        "list_fusions",
        "register_encoder",
        "register_fusion",
    ],
}
__getattr__, __dir__ = attach(__name__, _SUBMODULES)

__all__ = [*(name for names in _SUBMODULES.values() for name in names), "__version__"]

if TYPE_CHECKING:  # what static analysers and IDEs see
    from mmfusion.labels import LabelSpec
    from mmfusion.losses import ConsistencyLoss, EnsembleLoss, LossOutput
    from mmfusion.nn import (
        JOINT,
        AttentionEmbedding,
        AttentionFusion,
        ChannelAttentionBlock,
        ChannelGroupPool,
        ClassifierHead,
        ClassifierOutput,
        ConcatFusion,
        EnsembleHead,
        EnsembleOutput,
        FeatureFusion,
        FeatureSpec,
        FusionOutput,
        ModalityEncoder,
        MultiModalClassifier,
        PooledEmbedding,
        SpatialAttention,
        TabularEncoder,
        VectorEmbedding,
        create_encoder,
        create_fusion,
        list_encoders,
        list_fusions,
        register_encoder,
        register_fusion,
    )

