"""mmfusion.models: networks by name and by configuration, the registries, whole-model save / load.

>>> from mmfusion.models import ModelConfig, create_model, list_fusions
>>> cfg = ModelConfig(backbone="test_resnet", image_size=64, hidden=(16,), head_pool="avg",
...                   embed_dim=16)
>>> create_model(cfg).config.fusion in list_fusions()
True

- :func:`create_model` / :func:`list_models` / :func:`register_model`: the model registry
  (named presets; domain packages register theirs, found through the ``mmfusion.plugins``
  entry points).
- :func:`register_fusion` / :func:`register_encoder` (and ``create_*`` / ``list_*``): the fusion and
  encoder registries of :mod:`mmfusion.nn.registry`, re-exported here.
- :class:`ModelConfig` / :class:`TrainingConfig`: the single source of truth for the paper's values.
- :func:`build_model` / :func:`build_loss`: a model and its loss from a configuration.
- :class:`FusionClassifier`: a :class:`~mmfusion.nn.MultiModalClassifier` that knows its
  configuration; ``model.save_pretrained(dir)`` and :func:`from_pretrained` round-trip it exactly;
  :func:`read_trained_with` says what saved weights were trained with (modalities, image size,
  classes, normalisation).

The names load on first use (PEP 562): registering a preset (:mod:`mmfusion.models.registry`,
:mod:`mmfusion.models.config`) imports no torch. Inside the package, imports run one way:
``config <- registry``, ``config <- checkpoint <- classifier <- builder <- pretrained``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmfusion._lazy import attach

#: Submodule -> the public names loaded from it on first use.
_SUBMODULES = {
    "mmfusion.models.builder": ["build_loss", "build_model", "create_model"],
    "mmfusion.models.checkpoint": ["TrainedWith"],
    "mmfusion.models.classifier": ["FusionClassifier"],
    "mmfusion.models.config": [
        "MAX_IMAGE_SIZE",
        "MAX_NUM_CLASSES",
        "MAX_WIDTH",
        "ModelConfig",
        "TrainingConfig",
        "config_from_dict",
    ],
    "mmfusion.models.pretrained": [
        "from_pretrained",
        "load_weights",
        "read_model_config",
        "read_trained_with",
        "save_pretrained",
    ],
    "mmfusion.models.registry": ["Preset", "get_preset", "list_models", "register_model"],
    "mmfusion.nn.registry": [
        "FeatureSpec",
        "create_encoder",
        "create_fusion",
        "list_encoders",
        "list_fusions",
        "register_encoder",
        "register_fusion",
    ],
}
__getattr__, __dir__ = attach(__name__, _SUBMODULES)

__all__ = [
    "MAX_IMAGE_SIZE",
    "MAX_NUM_CLASSES",
    "MAX_WIDTH",
    "FeatureSpec",
    "FusionClassifier",
    "ModelConfig",
    "Preset",
    "TrainedWith",
    "TrainingConfig",
    "build_loss",
    "build_model",
    "config_from_dict",
    "create_encoder",
    "create_fusion",
    "create_model",
    "from_pretrained",
    "get_preset",
    "list_encoders",
    "list_fusions",
    "list_models",
    "load_weights",
    "read_model_config",
    "read_trained_with",
    "register_encoder",
    "register_fusion",
    "register_model",
    "save_pretrained",
]

if TYPE_CHECKING:  # what static analysers and IDEs see
    from mmfusion.models.builder import build_loss, build_model, create_model
    from mmfusion.models.checkpoint import TrainedWith
    from mmfusion.models.classifier import FusionClassifier
    from mmfusion.models.config import (
        MAX_IMAGE_SIZE,
        MAX_NUM_CLASSES,
        MAX_WIDTH,
        ModelConfig,
        TrainingConfig,
        config_from_dict,
    )
    from mmfusion.models.pretrained import (
        from_pretrained,
        load_weights,
        read_model_config,
        read_trained_with,
        save_pretrained,
    )
    from mmfusion.models.registry import Preset, get_preset, list_models, register_model
    from mmfusion.nn.registry import (
        FeatureSpec,
        create_encoder,
        create_fusion,
        list_encoders,
        list_fusions,
        register_encoder,
        register_fusion,
    )
