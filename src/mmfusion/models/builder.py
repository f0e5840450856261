"""Build a :class:`~mmfusion.models.FusionClassifier` and its loss from a :class:`ModelConfig`.

The paper's network (Fig. 3) for the default configuration: one encoder per modality (ResNet-50,
stem and stages 1-3 frozen), single-modal heads of three FC layers on the flattened stage-4 maps,
attention fusion (2048 -> 512 -> 256, spatial and channel attention) to a 512-d vector and one FC
layer, the ensemble of the three branches, and ``L_total = CE_us + CE_swe + CE_joint + 0.2 L_C``.
Table I's variants: one modality (its single-modal classifier only), ``fusion="late"`` (global
average pooling and one FC layer, no attention), ``loss="single"`` (``CE_joint`` only, predicting
with the joint branch).

Encoders and the fusion come from the registries (:mod:`mmfusion.nn.registry`) by the names the
configuration gives, so a fusion or encoder of your own builds the same way as the built-in ones;
:func:`create_model` builds a registered preset (or a configuration) by name.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from typing import Any

from torch import nn

from mmfusion.losses import EnsembleLoss
from mmfusion.models.classifier import FusionClassifier
from mmfusion.models.config import ModelConfig, config_from_dict
from mmfusion.models.registry import get_preset
from mmfusion.nn.encoder import WeightsSpec
from mmfusion.nn.heads import ClassifierHead, EnsembleHead
from mmfusion.nn.registry import FeatureSpec, create_fusion, get_encoder, get_fusion

__all__ = ["build_loss", "build_model", "create_model"]

Weights = WeightsSpec | Mapping[str, WeightsSpec]


def _per_modality(weights: Weights, modalities: tuple[str, ...]) -> dict[str, WeightsSpec]:
    if isinstance(weights, Mapping):
        unknown = sorted(set(weights) - set(modalities))
        if unknown:
            raise ValueError(f"weights: modalities {unknown} are not in the model's {list(modalities)}")
        return {m: weights.get(m) for m in modalities}
    return {m: weights for m in modalities}


def _takes(factory: Any, argument: str) -> bool:
    """Whether ``factory`` has a parameter named ``argument``."""
    try:
        return argument in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False


def _build_encoder(config: ModelConfig, modality: str, weights: WeightsSpec, explicit: bool) -> Any:
    """The encoder of ``modality``, from the registry, with ``weights`` if it takes them."""
    entry = config.encoder(modality)
    name = entry.pop("name")
    factory = get_encoder(name)
    if weights is not None and weights is not False:
        if _takes(factory, "weights"):
            entry["weights"] = weights
        elif explicit:
            raise ValueError(f"weights[{modality!r}]: the {name!r} encoder of {modality!r} takes no "
                             "weights")
    try:
        inspect.signature(factory).bind(**entry)
    except TypeError as err:
        raise TypeError(f"encoders[{modality!r}]: the {name!r} encoder does not take the arguments "
                        f"{sorted(entry)}: {err}") from None
    except ValueError:  # no signature to check against
        pass
    return factory(**entry)


def _feature_spec(encoder: Any, modality: str, image_size: int) -> FeatureSpec:
    spec_of = getattr(encoder, "feature_spec", None)
    if not callable(spec_of):
        raise TypeError(f"encoders[{modality!r}]: {type(encoder).__name__} has no "
                        "feature_spec(image_size) method, which build_model needs to size the "
                        "heads and the fusion")
    spec = spec_of(image_size)
    if not isinstance(spec, FeatureSpec):
        raise TypeError(f"encoders[{modality!r}]: feature_spec returned {type(spec).__name__}, "
                        "expected a FeatureSpec")
    return spec


def _head_features(spec: FeatureSpec, pool: str, modality: str) -> int:
    """Input size of a single-modal head on ``spec`` (a flattened or pooled map, or a vector)."""
    if spec.kind == "vector" or pool == "avg":
        return spec.channels
    if spec.spatial is None:
        raise ValueError(f"head_pool: 'flatten' needs the spatial size of {modality!r}'s map, which "
                         "its encoder's feature_spec does not give; use head_pool='avg'")
    return spec.channels * spec.spatial[0] * spec.spatial[1]


def build_model(config: ModelConfig, weights: Weights = None) -> FusionClassifier:
    """Build the model of ``config`` (random initialisation where no weights are given).

    Each modality's encoder is ``create_encoder(**config.encoder(m))`` (the ``"timm"`` backbone
    of ``config.backbone`` unless :attr:`ModelConfig.encoders` says otherwise); the fusion is
    ``create_fusion(config.fusion, features, embed_dim=config.embed_dim, **config.fusion_kwargs)``
    over what the encoders give for ``config.image_size`` inputs (their
    :class:`~mmfusion.nn.FeatureSpec`); single-modal heads take a flattened or pooled map, or a
    vector.

    Args:
        config: The architecture.
        weights: Encoder initialisation: ``None`` (random), a local weights file, ``"imagenet"``
            (timm's pretrained weights through the Hugging Face cache), or a mapping modality ->
            one of those. Given for every modality, it goes to the encoders that take weights
            (a tabular encoder takes none); named for a modality whose encoder takes none, it is
            an error.

    Returns:
        A :class:`FusionClassifier` that carries ``config``.

    Raises:
        ValueError: ``weights`` names unknown modalities, or a modality whose encoder takes no
            weights; a fusion without a positive int ``out_features``.
        TypeError: An encoder that does not take its configured arguments or has no
            ``feature_spec``.
    """
    mods = config.modalities
    per_modality = _per_modality(weights, mods)
    explicit = isinstance(weights, Mapping)
    encoders = {m: _build_encoder(config, m, per_modality[m], explicit) for m in mods}
    specs: dict[str, FeatureSpec] = {}
    by_entry: dict[str, FeatureSpec] = {}  # one dry run per distinct encoder entry
    for m in mods:
        key = json.dumps(config.encoder(m), sort_keys=True)
        if key not in by_entry:
            by_entry[key] = _feature_spec(encoders[m], m, config.image_size)
        specs[m] = by_entry[key]

    def branch_head(m: str) -> ClassifierHead:
        flat = _head_features(specs[m], config.head_pool, m)
        return ClassifierHead(flat, config.num_classes, config.hidden, pool=config.head_pool)

    if not config.is_fused:
        head = EnsembleHead({m: branch_head(m) for m in mods})
        return FusionClassifier(config, encoders, None, head)
    extra: dict[str, Any] = {}
    factory = get_fusion(config.fusion)
    if _takes(factory, "num_classes"):  # decision-level fusions (evidential)
        extra["num_classes"] = config.num_classes
    if _takes(factory, "encoders"):  # fusions acting inside the encoders (film at a stage)
        extra["encoders"] = encoders
    fusion = create_fusion(config.fusion, specs, embed_dim=config.embed_dim, **extra,
                           **(config.fusion_kwargs or {}))
    out = getattr(fusion, "out_features", None)
    if isinstance(out, bool) or not isinstance(out, int) or out < 1:
        raise ValueError(f"fusion: the {config.fusion!r} fusion has no positive int out_features "
                         f"(the size of its fused vector), got {out!r}")
    if getattr(fusion, "decision_level", False):  # its fused vector is the joint logits
        if out != config.num_classes:
            raise ValueError(f"fusion: the decision-level {config.fusion!r} fusion gives {out} "
                             f"class scores, the model has num_classes={config.num_classes}")
        joint: nn.Module = nn.Identity()
    else:
        joint = ClassifierHead(out, config.num_classes)
    branches = {m: branch_head(m) for m in mods} if config.loss == "multi" else {}
    head = EnsembleHead(branches, joint)
    return FusionClassifier(config, encoders, fusion, head, modality_dropout=config.modality_dropout)


def build_loss(config: ModelConfig) -> EnsembleLoss:
    """The training loss of ``config``: eq. (1)-(3) for ``loss="multi"``, ``CE_joint`` alone for
    ``"single"``, the branch's cross-entropy alone for one modality."""
    if not config.is_fused:
        return EnsembleLoss(alpha=0.0)
    if config.loss == "single":
        return EnsembleLoss(alpha=0.0, branches=("joint",))
    return EnsembleLoss(alpha=config.alpha)


def create_model(
    name: str | ModelConfig, *, weights: Weights = None, **overrides: Any
) -> FusionClassifier:
    """Build the registered model ``name`` (or the configuration ``name``), with
    :class:`ModelConfig` fields replaced by ``overrides``.

    Args:
        name: A registered name (:func:`~mmfusion.models.list_models`), or a
            :class:`ModelConfig`.
        weights: Encoder initialisation: ``None`` (random; nothing is downloaded), a local weights
            file, ``"imagenet"`` (timm's pretrained weights via the Hugging Face cache, downloaded
            only then), or a mapping modality -> one of those.
        **overrides: :class:`ModelConfig` fields, e.g. ``backbone="resnet18"``, ``image_size=128``
            (timm's ``pretrained=True`` is ``weights="imagenet"`` here; an unknown name is an
            error with a hint).

    Returns:
        The :class:`FusionClassifier` (train mode), which carries its configuration.

    Raises:
        ValueError: An unknown model name (the registered ones are listed), unknown or invalid
            fields.

    Example:
        >>> from mmfusion.models import ModelConfig, create_model
        >>> cfg = ModelConfig(backbone="test_resnet", image_size=64, hidden=(16,), head_pool="avg",
        ...                   embed_dim=16)
        >>> model = create_model(cfg, fusion="late")
        >>> model.config.modalities, model.config.fusion
        (('us', 'swe'), 'late')
    """
    if isinstance(name, ModelConfig):
        base, source = name, "create_model(config)"
    else:
        base, source = get_preset(name).model, f"create_model({name!r})"
    config = config_from_dict(ModelConfig, {**base.to_dict(), **overrides}, source)
    return build_model(config, weights=weights)
