"""mmfusion: composable multimodal image-fusion layers for PyTorch.

The layers implement the liver fibrosis fusion network of Jiang et al. (attention-weighted fusion
of B-mode ultrasound and shear-wave elastography, with a model ensemble and a consistency loss) as
reusable modules for any number of modalities. Data utilities live in :mod:`mmfusion.data`,
evaluation metrics in :mod:`mmfusion.metrics`.
"""

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
    FusionOutput,
    ModalityEncoder,
    MultiModalClassifier,
    PooledEmbedding,
    SpatialAttention,
)

__version__ = "0.1.0"

__all__ = [
    "JOINT",
    "AttentionEmbedding",
    "AttentionFusion",
    "ChannelAttentionBlock",
    "ChannelGroupPool",
    "ClassifierHead",
    "ClassifierOutput",
    "ConcatFusion",
    "ConsistencyLoss",
    "EnsembleHead",
    "EnsembleLoss",
    "EnsembleOutput",
    "FeatureFusion",
    "FusionOutput",
    "LossOutput",
    "ModalityEncoder",
    "MultiModalClassifier",
    "PooledEmbedding",
    "SpatialAttention",
    "__version__",
]
