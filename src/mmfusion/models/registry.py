"""The model registry, in timm's manner: named presets of :class:`ModelConfig` + :class:`TrainingConfig`.

``create_model("liver_fibrosis_paper")`` builds the paper's network (127.9 M parameters);
``list_models()`` lists every name. Registered here:

* ``liver_fibrosis_paper``: the paper's model and training protocol (ResNet-50, 224 px, stages 1-3
  frozen, attention fusion, ensemble loss; Adam 7e-5, batch 4, 40 epochs, offline augmentation).
* ``liver_fibrosis_quick``: a small network that trains on a 2-core CPU in minutes and still learns
  (resnet10t from scratch, 96 px, pooled single-modal heads; Adam 1e-3 with a cosine schedule).
* ``liver_fibrosis_texture``: the quick network at 128 px, which resolves the B-mode texture
  better (picked by measuring the B-mode branch on the phantom; ``examples/liver_fibrosis/RESULTS.md``).
* The Table I variants of each: ``<base>_us``, ``<base>_swe``, ``<base>_late_single``,
  ``<base>_late_multi``, ``<base>_att_single`` (``<base>`` itself is "att + multi").

Register your own with :func:`register_model`.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from mmfusion.models.builder import Weights, build_model
from mmfusion.models.classifier import FusionClassifier
from mmfusion.models.config import ModelConfig, TrainingConfig, config_from_dict

__all__ = ["TABLE_I", "TABLE_I_ROWS", "Preset", "create_model", "get_preset", "list_models", "register_model"]


@dataclass(frozen=True)
class Preset:
    """A registered name: an architecture, its training recipe and one line saying what it is."""

    model: ModelConfig
    training: TrainingConfig = field(default_factory=TrainingConfig)
    description: str = ""


TABLE_I: dict[str, dict[str, Any]] = {
    "us": dict(modalities=("us",)),
    "swe": dict(modalities=("swe",)),
    "late_single": dict(fusion="late", loss="single"),
    "late_multi": dict(fusion="late", loss="multi"),
    "att_single": dict(fusion="attention", loss="single"),
}
"""Table I's variants as :class:`ModelConfig` changes (the base itself is att + multi)."""

TABLE_I_ROWS: dict[str, str] = {
    "us": "US", "swe": "SWE", "late_single": "US+SWE+late+single", "late_multi": "US+SWE+late+multi",
    "att_single": "US+SWE+att+single", "": "US+SWE+att+multi",
}
"""Registry suffix -> the row name of the paper's Table I (``""``: the base model)."""

_REGISTRY: dict[str, Preset] = {}


def register_model(name: str, preset: Preset, *, table_i: bool = False) -> None:
    """Register ``preset`` as ``name`` (and, with ``table_i``, its Table I variants).

    Raises:
        ValueError: The name is taken.
    """
    names = [name] + ([f"{name}_{suffix}" for suffix in TABLE_I] if table_i else [])
    taken = [n for n in names if n in _REGISTRY]
    if taken:
        raise ValueError(f"name: {taken} already registered")
    _REGISTRY[name] = preset
    if table_i:
        for suffix, changes in TABLE_I.items():
            row = TABLE_I_ROWS[suffix]
            _REGISTRY[f"{name}_{suffix}"] = Preset(
                preset.model.replace(**changes), preset.training, f"{preset.description} - Table I: {row}"
            )


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching the shell-style ``pattern``, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_preset(name: str) -> Preset:
    """The :class:`Preset` registered as ``name``.

    Raises:
        ValueError: Unknown name (the message lists the registered ones).
    """
    if name not in _REGISTRY:
        raise ValueError(f"name: unknown model {name!r}; registered: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, *, weights: Weights = None, **overrides: Any) -> FusionClassifier:
    """Build the registered model ``name``, with :class:`ModelConfig` fields replaced by ``overrides``.

    Args:
        name: A registered name (:func:`list_models`), e.g. ``"liver_fibrosis_paper"``.
        weights: Encoder initialisation: ``None`` (random; nothing is downloaded), a local weights
            file, ``"imagenet"`` (timm's pretrained weights via the Hugging Face cache, downloaded
            only then), or a mapping modality -> one of those.
        **overrides: :class:`ModelConfig` fields, e.g. ``backbone="resnet18"``, ``image_size=128``
            (timm's ``pretrained=True`` is ``weights="imagenet"`` here; an unknown name is an
            error with a hint).

    Returns:
        The :class:`FusionClassifier` (train mode), which carries its configuration.

    Example:
        >>> from mmfusion.models import create_model
        >>> model = create_model("liver_fibrosis_quick", backbone="test_resnet", image_size=64)
        >>> model.config.modalities
        ('us', 'swe')
    """
    base = get_preset(name).model
    config = config_from_dict(ModelConfig, {**base.to_dict(), **overrides}, f"create_model({name!r})")
    return build_model(config, weights=weights)


register_model(
    "liver_fibrosis_paper",
    Preset(ModelConfig(), TrainingConfig(), "the paper's network and training protocol (Jiang et al.)"),
    table_i=True,
)
_QUICK = Preset(
    ModelConfig(backbone="resnet10t", image_size=96, frozen_stages=0, hidden=(64,),
                head_pool="avg", embed_dim=64),
    TrainingConfig(epochs=8, batch_size=32, lr=1e-3, weight_decay=1e-4, schedule="cosine",
                   augment="online"),
    "a small network that trains on a 2-core CPU in minutes (resnet10t from scratch, 96 px)",
)
register_model("liver_fibrosis_quick", _QUICK, table_i=True)
register_model(
    "liver_fibrosis_texture",
    Preset(
        _QUICK.model.replace(image_size=128),
        _QUICK.training,
        "the quick network at 128 px, which resolves the B-mode speckle texture better "
        "(picked by measurement on the phantom; under 10 min per run on a 2-core CPU)",
    ),
    table_i=True,
)
