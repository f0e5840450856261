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

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it (imported on first access).
_LAZY = {
    **dict.fromkeys(("ConsistencyLoss", "EnsembleLoss", "LossOutput"), "mmfusion.losses"),
    **dict.fromkeys(
        (
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
        ),
        "mmfusion.nn",
    ),
}

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

if TYPE_CHECKING:  # what static analysers and IDEs see
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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'mmfusion' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
