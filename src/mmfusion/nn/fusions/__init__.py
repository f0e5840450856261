"""The fusion catalogue: one module per method, each registered by name on import.

=============================  ==========================================================
name                           module
=============================  ==========================================================
``cross_spatial_attention``    :mod:`mmfusion.nn.fusions.cross_spatial_attention`
``gated``                      :mod:`mmfusion.nn.fusions.gated`
``low_rank_tensor``            :mod:`mmfusion.nn.fusions.low_rank_tensor`
``film``                       :mod:`mmfusion.nn.fusions.film`
``cross_attention``            :mod:`mmfusion.nn.fusions.cross_attention`
``bottleneck``                 :mod:`mmfusion.nn.fusions.bottleneck`
``perceiver``                  :mod:`mmfusion.nn.fusions.perceiver`
``evidential``                 :mod:`mmfusion.nn.fusions.evidential`
=============================  ==========================================================

``"attention"`` and ``"late"`` (the paper's fusion and its baseline) live in
:mod:`mmfusion.nn.fusion`. :func:`~mmfusion.nn.create_fusion` imports a method's module the first
time its name is used; importing this package imports none of them (its names load on first use:
``from mmfusion.nn.fusions import GatedFusion``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmfusion._lazy import attach

#: Submodule -> the public names loaded from it on first use.
_SUBMODULES = {
    "mmfusion.nn.fusions.base": ["BaseFusion"],
    "mmfusion.nn.fusions.cross_spatial_attention": ["CrossSpatialAttentionFusion"],
    "mmfusion.nn.fusions.gated": ["GatedFusion"],
    "mmfusion.nn.fusions.low_rank_tensor": ["LowRankTensorFusion"],
    "mmfusion.nn.fusions.film": ["FiLMFusion"],
    "mmfusion.nn.fusions.cross_attention": ["CrossAttentionFusion"],
    "mmfusion.nn.fusions.bottleneck": ["BottleneckFusion"],
    "mmfusion.nn.fusions.perceiver": ["PerceiverFusion"],
    "mmfusion.nn.fusions.evidential": ["EvidentialFusion"],
}
__getattr__, __dir__ = attach(__name__, _SUBMODULES)

__all__ = [
    "BaseFusion",
    "BottleneckFusion",
    "CrossAttentionFusion",
    "CrossSpatialAttentionFusion",
    "EvidentialFusion",
    "FiLMFusion",
    "GatedFusion",
    "LowRankTensorFusion",
    "PerceiverFusion",
]

if TYPE_CHECKING:  # what static analysers and IDEs see
    from mmfusion.nn.fusions.base import BaseFusion
    from mmfusion.nn.fusions.bottleneck import BottleneckFusion
    from mmfusion.nn.fusions.cross_attention import CrossAttentionFusion
    from mmfusion.nn.fusions.cross_spatial_attention import CrossSpatialAttentionFusion
    from mmfusion.nn.fusions.evidential import EvidentialFusion
    from mmfusion.nn.fusions.film import FiLMFusion
    from mmfusion.nn.fusions.gated import GatedFusion
    from mmfusion.nn.fusions.low_rank_tensor import LowRankTensorFusion
    from mmfusion.nn.fusions.perceiver import PerceiverFusion
