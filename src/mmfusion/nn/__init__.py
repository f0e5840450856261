"""Neural-network building blocks of mmfusion (paper sections III.B-III.D), and their registries.

The names load on first use (PEP 562), so :mod:`mmfusion.nn.registry` - the fusion and encoder
registries and :class:`FeatureSpec`, which a configuration checks names against - imports without
torch; ``from mmfusion.nn import AttentionFusion`` works as usual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmfusion._lazy import attach

#: Submodule -> the public names loaded from it on first use.
_SUBMODULES = {
    "mmfusion.nn.attention": ["ChannelAttentionBlock", "SpatialAttention"],
    "mmfusion.nn.encoder": ["ModalityEncoder"],
    "mmfusion.nn.fusion": [
        "AttentionEmbedding",
        "AttentionFusion",
        "ConcatFusion",
        "FeatureFusion",
        "FusionOutput",
        "PooledEmbedding",
        "VectorEmbedding",
    ],
    "mmfusion.nn.heads": ["JOINT", "ClassifierHead", "EnsembleHead", "EnsembleOutput"],
    "mmfusion.nn.model": ["ClassifierOutput", "MultiModalClassifier"],
    "mmfusion.nn.pooling": ["ChannelGroupPool"],
    "mmfusion.nn.registry": [
        "FeatureSpec",
        "create_encoder",
        "create_fusion",
        "list_encoders",
        "list_fusions",
        "register_encoder",
        "register_fusion",
    ],
    "mmfusion.nn.tabular": ["TabularEncoder"],
}
__getattr__, __dir__ = attach(__name__, _SUBMODULES)

__all__ = [
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
]

if TYPE_CHECKING:  # what static analysers and IDEs see
    from mmfusion.nn.attention import ChannelAttentionBlock, SpatialAttention
    from mmfusion.nn.encoder import ModalityEncoder
    from mmfusion.nn.fusion import (
        AttentionEmbedding,
        AttentionFusion,
        ConcatFusion,
        FeatureFusion,
        FusionOutput,
        PooledEmbedding,
        VectorEmbedding,
    )
    from mmfusion.nn.heads import JOINT, ClassifierHead, EnsembleHead, EnsembleOutput
    from mmfusion.nn.model import ClassifierOutput, MultiModalClassifier
    from mmfusion.nn.pooling import ChannelGroupPool
    from mmfusion.nn.registry import (
        FeatureSpec,
        create_encoder,
        create_fusion,
        list_encoders,
        list_fusions,
        register_encoder,
        register_fusion,
    )
    from mmfusion.nn.tabular import TabularEncoder
