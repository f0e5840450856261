"""The liver fibrosis presets of the model registry, registered when :mod:`mmfusion.liver` is imported.

``create_model("liver_fibrosis_paper")`` builds the paper's network (127.9 M parameters); the
generic registry finds these names without the user importing the liver package, through the
``mmfusion.plugins`` entry point ``liver = "mmfusion.liver"`` (``pyproject.toml``). Registered:

* ``liver_fibrosis_paper``: the paper's model and training protocol (ResNet-50, 224 px, stages 1-3
  frozen, attention fusion, ensemble loss; Adam 7e-5, batch 4, 40 epochs, offline augmentation).
* ``liver_fibrosis_quick``: a small network that trains on a 2-core CPU in minutes and still learns
  (resnet10t from scratch, 96 px, pooled single-modal heads; Adam 1e-3 with a cosine schedule).
* ``liver_fibrosis_texture``: the quick network at 128 px, which resolves the B-mode texture
  better (picked by measuring the B-mode branch on the phantom; ``examples/liver_fibrosis/RESULTS.md``).
* The Table I variants of each (:data:`TABLE_I`): ``<base>_us``, ``<base>_swe``,
  ``<base>_late_single``, ``<base>_late_multi``, ``<base>_att_single`` (``<base>`` itself is
  "att + multi").

Imports no torch (the registry and the configurations do not need it).
"""

from __future__ import annotations

from typing import Any

from mmfusion.models.config import ModelConfig, TrainingConfig
from mmfusion.models.registry import Preset, list_models, register_model

__all__ = ["TABLE_I", "TABLE_I_ROWS", "register_with_table_i"]

TABLE_I: dict[str, dict[str, Any]] = {
    "us": dict(modalities=("us",)),
    "swe": dict(modalities=("swe",)),
    "late_single": dict(fusion="late", loss="single"),
    "late_multi": dict(fusion="late", loss="multi"),
    "att_single": dict(fusion="attention", loss="single"),
}
"""Table I's variants as :class:`~mmfusion.models.ModelConfig` changes (the base itself is att +
multi)."""

TABLE_I_ROWS: dict[str, str] = {
    "us": "US", "swe": "SWE", "late_single": "US+SWE+late+single", "late_multi": "US+SWE+late+multi",
    "att_single": "US+SWE+att+single", "": "US+SWE+att+multi",
}
"""Registry suffix -> the row name of the paper's Table I (``""``: the base model)."""


def register_with_table_i(name: str, preset: Preset) -> None:
    """Register ``preset`` as ``name`` and its Table I variants as ``<name>_<suffix>``.

    Raises:
        ValueError: One of the names is taken (nothing is registered then).
    """
    names = [name, *(f"{name}_{suffix}" for suffix in TABLE_I)]
    taken = [n for n in names if n in list_models()]
    if taken:
        raise ValueError(f"name: {taken} already registered")
    register_model(name, preset)
    for suffix, changes in TABLE_I.items():
        row = TABLE_I_ROWS[suffix]
        register_model(f"{name}_{suffix}", Preset(
            preset.model.replace(**changes), preset.training, f"{preset.description} - Table I: {row}"
        ))


register_with_table_i(
    "liver_fibrosis_paper",
    Preset(ModelConfig(), TrainingConfig(), "the paper's network and training protocol (Jiang et al.)"),
)
_QUICK = Preset(
    ModelConfig(backbone="resnet10t", image_size=96, frozen_stages=0, hidden=(64,),
                head_pool="avg", embed_dim=64),
    TrainingConfig(epochs=8, batch_size=32, lr=1e-3, weight_decay=1e-4, schedule="cosine",
                   augment="online"),
    "a small network that trains on a 2-core CPU in minutes (resnet10t from scratch, 96 px)",
)
register_with_table_i("liver_fibrosis_quick", _QUICK)
register_with_table_i(
    "liver_fibrosis_texture",
    Preset(
        _QUICK.model.replace(image_size=128),
        _QUICK.training,
        "the quick network at 128 px, which resolves the B-mode speckle texture better "
        "(picked by measurement on the phantom; under 10 min per run on a 2-core CPU)",
    ),
)
