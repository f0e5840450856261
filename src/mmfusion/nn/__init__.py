"""Neural-network building blocks of mmfusion (paper sections III.B-III.D)."""

from mmfusion.nn.attention import ChannelAttentionBlock, SpatialAttention
from mmfusion.nn.encoder import ModalityEncoder
from mmfusion.nn.fusion import (
    AttentionEmbedding,
    AttentionFusion,
    ConcatFusion,
    FeatureFusion,
    FusionOutput,
    PooledEmbedding,
)
from mmfusion.nn.heads import JOINT, ClassifierHead, EnsembleHead, EnsembleOutput
from mmfusion.nn.model import ClassifierOutput, MultiModalClassifier
from mmfusion.nn.pooling import ChannelGroupPool

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
    "FusionOutput",
    "ModalityEncoder",
    "MultiModalClassifier",
    "PooledEmbedding",
    "SpatialAttention",
]
