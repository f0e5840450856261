"""mmfusion.models: the paper's network and its variants by name, and whole-model save / load.

>>> from mmfusion.models import create_model, list_models
>>> "liver_fibrosis_paper" in list_models()
True

- :func:`create_model` / :func:`list_models` / :func:`register_model`: the registry.
- :class:`ModelConfig` / :class:`TrainingConfig`: the single source of truth for the paper's values.
- :func:`build_model` / :func:`build_loss`: a model and its loss from a configuration.
- :class:`FusionClassifier`: a :class:`~mmfusion.nn.MultiModalClassifier` that knows its
  configuration; ``model.save_pretrained(dir)`` and :func:`from_pretrained` round-trip it exactly;
  :func:`read_trained_with` says what saved weights were trained with (modalities, image size,
  classes, normalisation).
"""

from mmfusion.models.builder import build_loss, build_model
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
    TrainedWith,
    from_pretrained,
    load_weights,
    read_model_config,
    read_trained_with,
    save_pretrained,
)
from mmfusion.models.registry import (
    TABLE_I,
    TABLE_I_ROWS,
    Preset,
    create_model,
    get_preset,
    list_models,
    register_model,
)

__all__ = [
    "MAX_IMAGE_SIZE",
    "MAX_NUM_CLASSES",
    "MAX_WIDTH",
    "TABLE_I",
    "TABLE_I_ROWS",
    "FusionClassifier",
    "ModelConfig",
    "Preset",
    "TrainedWith",
    "TrainingConfig",
    "build_loss",
    "build_model",
    "config_from_dict",
    "create_model",
    "from_pretrained",
    "get_preset",
    "list_models",
    "load_weights",
    "read_model_config",
    "read_trained_with",
    "register_model",
    "save_pretrained",
]
