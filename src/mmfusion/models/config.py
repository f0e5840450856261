"""The configuration of a fusion model and of its training: one frozen dataclass each.

:class:`ModelConfig` and :class:`TrainingConfig` hold the paper's values as their defaults (sections
III.B-III.E and NOTES.md); they are the single source of truth for them. Presets
(:mod:`mmfusion.models.registry`) are named instances with some fields replaced, and a run's
``config.json`` stores both as plain JSON.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar

__all__ = ["ModelConfig", "TrainingConfig", "config_from_dict"]

_C = TypeVar("_C", "ModelConfig", "TrainingConfig")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a :class:`~mmfusion.nn.MultiModalClassifier` built by
    :func:`~mmfusion.models.build_model`; the defaults are the paper's network (Fig. 3).

    Attributes:
        modalities: Modality names in fusion order (``("us", "swe")``: B-mode, then SWE). One name
            gives a single-modal model (Table I rows "US" and "SWE").
        fusion: ``"attention"`` (the paper's branch, III.C) or ``"late"`` (global average pooling
            and one FC layer, Table I); ignored for one modality.
        loss: ``"multi"``: ``L_total = CE_us + CE_swe + CE_joint + alpha L_C``, predicting with the
            ensemble (III.D); ``"single"``: ``CE_joint`` only, predicting with the joint branch.
        backbone: timm model name of every encoder (ResNet-50 in the paper).
        image_size: Input side in pixels (the flattened heads depend on it; 224 in the paper).
        frozen_stages: Encoder stages frozen, stem included (3 in the paper, III.E).
        hidden: Hidden widths of the single-modal classifiers (three FC layers in the paper; the
            widths are not given there, these put the model at 127.9 M parameters).
        head_pool: Single-modal heads on the ``"flatten"``-ed stage-4 map (the paper) or on its
            global ``"avg"`` pool (a small head for CPU runs).
        embed_dim: Size of each modality vector ``f_m`` (256: a 512-d fused vector).
        num_classes: Number of classes (5 fibrosis stages).
        alpha: Consistency-loss weight (eq. (3): 0.2).
        modality_dropout: Per-sample probability of hiding a modality while training (0: the
            paper's model never sees a missing modality).
    """

    modalities: tuple[str, ...] = ("us", "swe")
    fusion: Literal["attention", "late"] = "attention"
    loss: Literal["multi", "single"] = "multi"
    backbone: str = "resnet50"
    image_size: int = 224
    frozen_stages: int = 3
    hidden: tuple[int, ...] = (384, 128)
    head_pool: Literal["flatten", "avg"] = "flatten"
    embed_dim: int = 256
    num_classes: int = 5
    alpha: float = 0.2
    modality_dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        mods = self.modalities
        checks = [
            (bool(mods) and all(isinstance(m, str) and m for m in mods) and len(set(mods)) == len(mods),
             f"modalities: expected distinct non-empty names, got {mods!r}"),
            (self.fusion in ("attention", "late"),
             f"fusion: expected 'attention' or 'late', got {self.fusion!r}"),
            (self.loss in ("multi", "single"), f"loss: expected 'multi' or 'single', got {self.loss!r}"),
            (isinstance(self.backbone, str) and bool(self.backbone),
             f"backbone: expected a timm model name, got {self.backbone!r}"),
            (isinstance(self.image_size, int) and self.image_size >= 32,
             f"image_size: expected an int >= 32 pixels, got {self.image_size!r}"),
            (isinstance(self.frozen_stages, int) and self.frozen_stages >= 0,
             f"frozen_stages: expected an int >= 0, got {self.frozen_stages!r}"),
            (all(h >= 1 for h in self.hidden), f"hidden: expected positive widths, got {self.hidden!r}"),
            (self.head_pool in ("flatten", "avg"),
             f"head_pool: expected 'flatten' or 'avg', got {self.head_pool!r}"),
            (isinstance(self.embed_dim, int) and self.embed_dim >= 1,
             f"embed_dim: expected a positive int, got {self.embed_dim!r}"),
            (isinstance(self.num_classes, int) and self.num_classes >= 2,
             f"num_classes: expected an int >= 2, got {self.num_classes!r}"),
            (self.alpha >= 0, f"alpha: expected >= 0, got {self.alpha!r}"),
            (0.0 <= self.modality_dropout < 1.0,
             f"modality_dropout: expected a probability in [0, 1), got {self.modality_dropout!r}"),
            (len(mods) > 1 or self.modality_dropout == 0.0,
             f"modality_dropout: needs two or more modalities, got {mods!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def is_fused(self) -> bool:
        """True when the model has a fusion branch (two or more modalities)."""
        return len(self.modalities) > 1

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with ``changes`` applied (validated; unknown names are an error)."""
        return config_from_dict(ModelConfig, {**self.to_dict(), **changes}, "ModelConfig.replace")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (tuples become lists)."""
        return _plain(dataclasses.asdict(self))


@dataclass(frozen=True)
class TrainingConfig:
    """How a model is trained; the defaults are the paper's protocol (III.E, IV.B).

    Attributes:
        epochs: Training epochs (40; the paper reports convergence near epoch 20).
        batch_size: Pairs per optimisation step and process (4).
        lr: Adam learning rate (7e-5).
        weight_decay: Adam (L2) weight decay (1e-3).
        schedule: ``"constant"`` (the paper) or ``"cosine"`` (per epoch, down to 1 % of ``lr``).
        augment: ``"paper"``: the offline flip/shift expansion that balances the stages (II.B);
            ``"online"``: random flips, shifts and B-mode intensity jitter per sample; ``"none"``.
    """

    epochs: int = 40
    batch_size: int = 4
    lr: float = 7e-5
    weight_decay: float = 1e-3
    schedule: Literal["constant", "cosine"] = "constant"
    augment: Literal["paper", "online", "none"] = "paper"

    def __post_init__(self) -> None:
        checks = [
            (isinstance(self.epochs, int) and self.epochs >= 1, f"epochs: expected an int >= 1, got {self.epochs!r}"),
            (isinstance(self.batch_size, int) and self.batch_size >= 1,
             f"batch_size: expected an int >= 1, got {self.batch_size!r}"),
            (self.lr > 0, f"lr: expected > 0, got {self.lr!r}"),
            (self.weight_decay >= 0, f"weight_decay: expected >= 0, got {self.weight_decay!r}"),
            (self.schedule in ("constant", "cosine"),
             f"schedule: expected 'constant' or 'cosine', got {self.schedule!r}"),
            (self.augment in ("paper", "online", "none"),
             f"augment: expected 'paper', 'online' or 'none', got {self.augment!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def replace(self, **changes: Any) -> TrainingConfig:
        """A copy with ``changes`` applied (validated; unknown names are an error)."""
        return config_from_dict(TrainingConfig, {**self.to_dict(), **changes}, "TrainingConfig.replace")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def config_from_dict(cls: type[_C], data: Mapping[str, Any], source: str = "config") -> _C:
    """Build ``cls`` from a plain mapping (e.g. read from JSON).

    Args:
        cls: :class:`ModelConfig` or :class:`TrainingConfig`.
        data: Field name -> value; lists are accepted where the field is a tuple.
        source: Where ``data`` came from, for error messages.

    Raises:
        ValueError: Unknown field names (listed with the known ones) or invalid values.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a mapping of {cls.__name__} fields, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{source}: unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")
    return cls(**dict(data))
