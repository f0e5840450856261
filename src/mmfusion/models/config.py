"""The configuration of a fusion model and of its training: one frozen dataclass each.

:class:`ModelConfig` and :class:`TrainingConfig` hold the paper's values as their defaults (sections
III.B-III.E and docs/paper_map.rst); they are the single source of truth for them. Presets
(:mod:`mmfusion.models.registry`) are named instances with some fields replaced, and a run's
``config.json`` stores both as plain JSON. A configuration names its fusion and its encoders by
their registry names (:mod:`mmfusion.nn.registry`), with JSON keyword arguments, so a fusion or an
encoder of your own is configured, saved and loaded like the built-in ones.

This module imports no torch (the registries know the built-in names without it).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

from mmfusion._values import (
    check_choice,
    check_int,
    check_number,
    check_sequence,
    is_int,
    short_repr,
)
from mmfusion.nn.registry import check_encoder_name, check_fusion_name

__all__ = ["MAX_IMAGE_SIZE", "MAX_NUM_CLASSES", "MAX_WIDTH", "ModelConfig", "TrainingConfig",
           "config_from_dict"]

MAX_IMAGE_SIZE = 4096
"""Largest ``image_size`` (pixels): 16 x the paper's 224 px; a flattened ResNet-50 head at this
size already holds billions of parameters."""
MAX_NUM_CLASSES = 100_000
"""Largest ``num_classes`` (100 x ImageNet-1k's classes)."""
MAX_WIDTH = 65_536
"""Largest ``embed_dim`` and ``hidden`` width."""

_C = TypeVar("_C", "ModelConfig", "TrainingConfig")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a :class:`~mmfusion.nn.MultiModalClassifier` built by
    :func:`~mmfusion.models.build_model`; the defaults are the paper's network (Fig. 3).

    Attributes:
        modalities: Modality names in fusion order (``("us", "swe")``: B-mode, then SWE). One name
            gives a single-modal model (Table I rows "US" and "SWE").
        fusion: A registered fusion (:func:`~mmfusion.nn.list_fusions`): ``"attention"`` (the
            paper's branch, III.C), ``"late"`` (global average pooling and one FC layer, Table I),
            or one of your own (:func:`~mmfusion.nn.register_fusion`); ignored for one modality.
        loss: ``"multi"``: ``L_total = CE_us + CE_swe + CE_joint + alpha L_C``, predicting with the
            ensemble (III.D); ``"single"``: ``CE_joint`` only, predicting with the joint branch.
        backbone: timm model name of every encoder that :attr:`encoders` does not set otherwise
            (ResNet-50 in the paper).
        image_size: Input side in pixels, 32 to :data:`MAX_IMAGE_SIZE` (4096) (the flattened
            heads depend on it; 224 in the paper).
        frozen_stages: Encoder stages frozen, stem included (3 in the paper, III.E), for every
            ``"timm"`` encoder that does not set its own.
        hidden: Hidden widths of the single-modal classifiers (three FC layers in the paper; the
            widths are not given there, these put the model at 127.9 M parameters); each 1 to
            :data:`MAX_WIDTH` (65536).
        head_pool: Single-modal heads on the ``"flatten"``-ed stage-4 map (the paper) or on its
            global ``"avg"`` pool (a small head for CPU runs).
        embed_dim: Size of each modality vector ``f_m`` (256: a 512-d fused vector), 1 to
            :data:`MAX_WIDTH`.
        num_classes: Number of classes (5 fibrosis stages), 2 to :data:`MAX_NUM_CLASSES`
            (100000).
        alpha: Consistency-loss weight (eq. (3): 0.2).
        modality_dropout: Per-sample probability of hiding a modality while training (0: the
            paper's model never sees a missing modality).
        fusion_kwargs: More keyword arguments of the fusion (JSON values; ``None``: none), e.g.
            ``{"reduced_channels": [64, 32]}`` for ``"attention"``; ``embed_dim`` is the field
            above.
        encoders: Modality -> the encoder of that modality (``None``: none listed):
            ``{"name": <registered encoder>, **keyword arguments}`` (JSON values), e.g.
            ``{"labs": {"name": "tabular", "columns": ["age", "ast"]}}`` or
            ``{"swe": {"name": "timm", "backbone": "resnet18"}}``. A modality not listed gets ``{"name": "timm", "backbone": backbone, "frozen_stages":
            frozen_stages}``, and a ``"timm"`` entry takes those two from the fields above unless
            it sets them; :meth:`encoder` gives the resolved entry. Weights are not part of the
            configuration (``weights=`` of :func:`~mmfusion.models.build_model`).

    Example:
        >>> cfg = ModelConfig(modalities=("us", "labs"), backbone="test_resnet",
        ...                   encoders={"labs": {"name": "tabular", "columns": ["age", "ast"]}})
        >>> cfg.encoder("us"), cfg.encoder("labs")["name"]
        ({'name': 'timm', 'backbone': 'test_resnet', 'frozen_stages': 3}, 'tabular')
        >>> ModelConfig(**cfg.to_dict()) == cfg
        True
    """

    modalities: tuple[str, ...] = ("us", "swe")
    fusion: str = "attention"
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
    fusion_kwargs: dict[str, object] | None = field(default=None, hash=False)
    encoders: dict[str, dict[str, object]] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        """Check every field's type and range (a bool is not an int, a string is not a sequence).

        Raises:
            ValueError: A field of the wrong type or out of range; the message names the field.
        """
        names = "a sequence of distinct non-empty names"
        mods = check_sequence(self.modalities, "modalities", names)
        if not (mods and all(isinstance(m, str) and m for m in mods) and len(set(mods)) == len(mods)):
            raise ValueError(f"modalities: expected {names}, got {short_repr(self.modalities)}")
        widths = f"a sequence of ints >= 1 and <= {MAX_WIDTH}"
        hidden = check_sequence(self.hidden, "hidden", widths)
        if not all(is_int(h) and 1 <= h <= MAX_WIDTH for h in hidden):
            raise ValueError(f"hidden: expected {widths}, got {short_repr(self.hidden)}")
        check_fusion_name(self.fusion, "fusion")
        check_choice(self.loss, "loss", ("multi", "single"))
        if not (isinstance(self.backbone, str) and self.backbone):
            raise ValueError(f"backbone: expected a timm model name, got {short_repr(self.backbone)}")
        check_choice(self.head_pool, "head_pool", ("flatten", "avg"))
        values = {
            "modalities": mods,
            "hidden": tuple(int(h) for h in hidden),
            "image_size": check_int(self.image_size, "image_size", 32, MAX_IMAGE_SIZE),
            "frozen_stages": check_int(self.frozen_stages, "frozen_stages", 0),
            "embed_dim": check_int(self.embed_dim, "embed_dim", 1, MAX_WIDTH),
            "num_classes": check_int(self.num_classes, "num_classes", 2, MAX_NUM_CLASSES),
            "alpha": check_number(self.alpha, "alpha", 0),
            "modality_dropout": check_number(self.modality_dropout, "modality_dropout", 0, 1,
                                             high_open=True),
            "fusion_kwargs": _fusion_kwargs({} if self.fusion_kwargs is None else self.fusion_kwargs),
            "encoders": _encoders({} if self.encoders is None else self.encoders, mods),
        }
        if len(mods) < 2 and values["modality_dropout"] != 0.0:
            raise ValueError(f"modality_dropout: needs two or more modalities, got {mods!r}")
        for name, value in values.items():  # plain Python types (JSON-ready, hash-stable)
            object.__setattr__(self, name, value)

    @property
    def is_fused(self) -> bool:
        """True when the model has a fusion branch (two or more modalities)."""
        return len(self.modalities) > 1

    def encoder(self, modality: str) -> dict[str, Any]:
        """The encoder entry of ``modality`` (a copy): ``{"name": ..., **keyword arguments}``.

        Raises:
            ValueError: ``modality`` is not one of :attr:`modalities`.
        """
        if modality not in self.modalities:
            raise ValueError(f"modality: expected one of {list(self.modalities)}, got {modality!r}")
        entries = self.encoders or {}
        entry = copy.deepcopy(entries.get(modality, {"name": "timm"}))
        if entry["name"] == "timm":
            entry.setdefault("backbone", self.backbone)
            entry.setdefault("frozen_stages", self.frozen_stages)
        return entry

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
        """Check every field's type and range (a bool is not an int).

        Raises:
            ValueError: A field of the wrong type or out of range; the message names the field.
        """
        values = {
            "epochs": check_int(self.epochs, "epochs", 1),
            "batch_size": check_int(self.batch_size, "batch_size", 1),
            "lr": check_number(self.lr, "lr", 0, low_open=True),
            "weight_decay": check_number(self.weight_decay, "weight_decay", 0),
        }
        check_choice(self.schedule, "schedule", ("constant", "cosine"))
        check_choice(self.augment, "augment", ("paper", "online", "none"))
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def replace(self, **changes: Any) -> TrainingConfig:
        """A copy with ``changes`` applied (validated; unknown names are an error)."""
        return config_from_dict(TrainingConfig, {**self.to_dict(), **changes}, "TrainingConfig.replace")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return _plain(dataclasses.asdict(self))


def _json_mapping(value: object, name: str) -> dict[str, Any]:
    """``value`` as plain JSON data (a dict with str keys; tuples become lists), or a ValueError."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{name}: expected a mapping with str keys, got {short_repr(value)}")
    try:
        return json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError, RecursionError) as err:
        raise ValueError(
            f"{name}: expected JSON values (str, numbers, bools, None, lists, mappings), got "
            f"{short_repr(value)} ({type(err).__name__}: {err})"
        ) from None


def _fusion_kwargs(value: object) -> dict[str, Any]:
    kwargs = _json_mapping(value, "fusion_kwargs")
    if "embed_dim" in kwargs:
        raise ValueError("fusion_kwargs: 'embed_dim' is set by the embed_dim field; remove it here")
    return kwargs


def _encoders(value: object, modalities: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    entries = _json_mapping(value, "encoders")
    unknown = [m for m in entries if m not in modalities]
    if unknown:
        raise ValueError(f"encoders: unknown modality name(s) {unknown}; modalities are "
                         f"{list(modalities)}")
    out = {}
    for modality in modalities:  # in modality order
        if modality not in entries:
            continue
        name = f"encoders[{modality!r}]"
        entry = _json_mapping(entries[modality], name)
        if "name" not in entry:
            raise ValueError(f"{name}: expected a 'name' key (a registered encoder, e.g. 'timm' "
                             f"or 'tabular'), got {short_repr(entry)}")
        check_encoder_name(entry["name"], f"{name}['name']")
        if "weights" in entry:
            raise ValueError(f"{name}: weights are not part of the architecture; pass weights= to "
                             "create_model / build_model instead")
        out[modality] = entry
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


_HINTS: dict[str, str] = {
    "pretrained": "for timm's pretrained=True pass weights='imagenet' (or weights='path/to/"
                  "file.safetensors') to create_model / build_model",
    "checkpoint_path": "pass the file as weights='path/to/file.safetensors' to create_model / "
                       "build_model; a whole saved model loads with from_pretrained(folder)",
    "pretrained_cfg": "pass weights='imagenet' or weights='path/to/file.safetensors' to "
                      "create_model / build_model",
    "img_size": "the input side is image_size=",
    "input_size": "the input side is image_size=",
    "model_name": "the timm model of the encoders is backbone=",
    "arch": "the timm model of the encoders is backbone=",
    "global_pool": "the single-modal heads pool with head_pool='avg' (or 'flatten')",
    "in_chans": "the encoders take 3-channel images (grey images are repeated to 3 channels)",
    "drop_rate": "dropout is not a ModelConfig option (modality_dropout hides whole modalities)",
}
"""Unknown field -> what to use instead (timm's ``create_model`` keyword arguments, mostly)."""


def _unknown_fields_hint(unknown: list[str], known: set[str]) -> str:
    """"; <hint>" for each unknown name: a known replacement, or the closest field names."""
    hints = []
    for name in unknown:
        if name in _HINTS:
            hints.append(f"{name}: {_HINTS[name]}")
            continue
        close = difflib.get_close_matches(name, sorted(known), n=2, cutoff=0.6)
        if close:
            hints.append(f"{name}: did you mean {' or '.join(close)}?")
    return "".join(f"; {hint}" for hint in hints)


def config_from_dict(cls: type[_C], data: Mapping[str, Any], source: str = "config") -> _C:
    """Build ``cls`` from a plain mapping (e.g. read from JSON).

    Args:
        cls: :class:`ModelConfig` or :class:`TrainingConfig`.
        data: Field name -> value; lists are accepted where the field is a tuple.
        source: Where ``data`` came from, for error messages.

    Raises:
        ValueError: Unknown field names (listed with the known ones, with a hint for timm's
            keyword arguments such as ``pretrained`` and for near misses), or values of the wrong
            type or out of range.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a mapping of {cls.__name__} fields, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{source}: unknown {cls.__name__} field(s) {unknown}"
                         f"{_unknown_fields_hint(unknown, known)}; known: {sorted(known)}")
    return cls(**dict(data))
