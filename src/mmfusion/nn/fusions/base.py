"""The base of the fusion catalogue: one interface, inputs checked once, presence as a mask.

Every fusion of :mod:`mmfusion.nn.fusions` derives from :class:`BaseFusion`. It is built from the
:class:`~mmfusion.nn.FeatureSpec` of each modality (what :func:`~mmfusion.nn.create_fusion`
passes) and called as ``fusion(features, available, return_attention)``:

* ``features``: modality -> ``[B, C, H, W]`` map or ``[B, D]`` vector, any non-empty subset of
  :attr:`BaseFusion.modalities` (all of them when ``allow_missing=False``);
* ``available``: ``None`` or modality -> bool ``[B]``, per-sample presence of a given modality.

A modality left out of ``features`` and a modality flagged ``False`` in ``available`` are the same
thing to every method of the catalogue ("masked == absent", tested per method): each method
declares in its docstring what it does for such a sample (a key-padding mask, renormalised
weights, a learned placeholder, dropped evidence).

Subclasses implement :meth:`BaseFusion.fuse`, which receives checked inputs and the per-sample
presence mask of every modality (:meth:`BaseFusion.presence`), and set ``out_features``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmfusion._checks import batch_size_of, check_availability, check_modality_keys, check_tensor
from mmfusion.nn._validation import checking, validated
from mmfusion.nn.fusion import FusionOutput
from mmfusion.nn.registry import FeatureSpec

__all__ = ["BaseFusion", "check_embed_dim"]


def check_embed_dim(value: object, name: str = "embed_dim") -> int:
    """``value`` if it is a positive int.

    Raises:
        ValueError: Naming ``name``, with the value that came.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


class BaseFusion(nn.Module):
    """Base class of the catalogue's fusion methods.

    A subclass describes itself in class attributes, which the constructor checks the
    ``features`` against and the catalogue's docs table and contract tests read: :attr:`kinds`,
    :attr:`min_modalities`, :attr:`max_modalities`, :attr:`same_spatial` (all maps of one size,
    registered), :attr:`reference`, :attr:`missing`, :attr:`compiles` (``torch.compile`` with
    ``fullgraph=True``).

    Args:
        features: modality -> :class:`~mmfusion.nn.FeatureSpec` of its encoder's output, in
            fusion order.
        allow_missing: Accept inputs where a modality is absent (left out or flagged absent).
            With ``False`` every modality must be given.

    Attributes:
        modalities: The modality names in fusion order.
        specs: modality -> its :class:`~mmfusion.nn.FeatureSpec`.
        out_features: Size ``D`` of the fused vector (set by the subclass).
        decision_level: ``True`` when ``fused`` holds class log-probabilities ``[B, K]`` that are
            the joint branch's logits as they are (the model then gives the joint branch no
            layer of its own); ``False`` for a fused feature vector.

    Raises:
        TypeError: ``features`` is not a non-empty mapping of FeatureSpec.
        ValueError: A modality of a kind the method does not take, or too few / too many
            modalities.
    """

    decision_level: bool = False
    kinds: tuple[str, ...] = ("map", "vector")
    """The feature kinds the method takes (``"map"``, ``"vector"``)."""
    min_modalities: int = 1
    """The fewest modalities the method fuses."""
    max_modalities: int | None = None
    """The most modalities the method fuses (``None``: any number)."""
    same_spatial: bool = False
    """Whether all map modalities must have one spatial size (registered maps)."""
    reference: str = ""
    """The paper the method implements (authors, year, title), for the catalogue's table."""
    missing: str = ""
    """What the method does for a sample whose modality is absent, in a few words."""
    compiles: bool = True
    """Whether ``torch.compile(fullgraph=True)`` traces it without a graph break."""

    def __init__(
        self,
        features: Mapping[str, FeatureSpec],
        *,
        allow_missing: bool = True,
    ) -> None:
        super().__init__()
        kinds, min_modalities, max_modalities = self.kinds, self.min_modalities, self.max_modalities
        if not isinstance(features, Mapping) or not features:
            raise TypeError(
                "features: expected a non-empty mapping modality -> FeatureSpec, got "
                f"{type(features).__name__}"
            )
        for name, spec in features.items():
            if not isinstance(spec, FeatureSpec):
                raise TypeError(f"features[{name!r}]: expected a FeatureSpec, got {type(spec).__name__}")
            if spec.kind not in kinds:
                raise ValueError(
                    f"features[{name!r}]: {type(self).__name__} takes {' or '.join(kinds)} "
                    f"features, got a {spec.kind}"
                )
        count = len(features)
        if count < min_modalities or (max_modalities is not None and count > max_modalities):
            most = "any number of" if max_modalities is None else str(max_modalities)
            raise ValueError(
                f"features: {type(self).__name__} fuses {min_modalities} to {most} modalities, "
                f"got {count} ({', '.join(features)})"
            )
        sizes = {m: spec.spatial for m, spec in features.items() if spec.kind == "map"}
        if self.same_spatial and len(set(sizes.values())) > 1:
            raise ValueError(
                f"features: {type(self).__name__} needs registered maps of one spatial size, "
                f"got {sizes}"
            )
        if not isinstance(allow_missing, bool):
            raise TypeError(f"allow_missing: expected a bool, got {allow_missing!r}")
        self.specs: dict[str, FeatureSpec] = dict(features)
        self.modalities: tuple[str, ...] = tuple(features)
        self.allow_missing = allow_missing
        self.out_features = 0

    def forward(
        self,
        features: Mapping[str, Tensor],
        available: Mapping[str, Tensor] | None = None,
        return_attention: bool = False,
    ) -> FusionOutput:
        """Fuse the given modalities.

        Args:
            features: modality -> ``[B, C, H, W]`` map or ``[B, D]`` vector (as its
                :class:`~mmfusion.nn.FeatureSpec` says).
            available: optional modality -> bool ``[B]``: per-sample presence.
            return_attention: Also return attention maps, for methods that have them.

        Returns:
            A :class:`~mmfusion.nn.FusionOutput` with ``fused`` ``[B, out_features]``.
        """
        if checking():
            batch, masks = self.check_inputs(features, available)
        else:  # checked by the caller (MultiModalClassifier)
            batch = next(iter(features.values())).shape[0]
            masks = dict(available) if available is not None else None
        with validated():
            return self.fuse(dict(features), masks, batch, return_attention)

    def check_inputs(
        self, features: object, available: Mapping[str, Tensor] | None
    ) -> tuple[int, dict[str, Tensor] | None]:
        """Check a call's inputs: the batch size and the availability masks.

        Raises:
            TypeError, ValueError: Naming the input (``features['us']``, ``available``), what was
                expected and what came.
        """
        if not isinstance(features, Mapping):
            raise TypeError(
                f"features: expected a mapping modality -> tensor, got {type(features).__name__}"
            )
        check_modality_keys(
            features.keys(), self.modalities, "features", require_all=not self.allow_missing
        )
        for name, x in features.items():
            spec = self.specs[name]
            check_tensor(x, f"features[{name!r}]", ndim=spec.ndim)
            if x.shape[1] != spec.channels:
                raise ValueError(
                    f"features[{name!r}]: expected {spec.channels} channels, got shape "
                    f"{tuple(x.shape)}"
                )
        batch = batch_size_of(features, "features")
        return batch, check_availability(available, self.modalities, batch)

    def presence(
        self, features: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None, batch: int
    ) -> Tensor:
        """Per-sample presence of every modality, ``[B, M]`` bool in ``modalities`` order.

        A modality left out of ``features`` is ``False`` for every sample; a given one is its
        ``masks`` entry, or ``True``.
        """
        ref = next(iter(features.values()))
        columns = []
        for name in self.modalities:
            if name not in features:
                columns.append(torch.zeros(batch, dtype=torch.bool, device=ref.device))
            elif masks is not None and name in masks:
                columns.append(masks[name].to(torch.bool))
            else:
                columns.append(torch.ones(batch, dtype=torch.bool, device=ref.device))
        return torch.stack(columns, dim=1)

    def make_placeholders(self, size: int) -> nn.ParameterDict:
        """One learned placeholder vector ``[size]`` per modality (zeros at first), for
        :meth:`concat_with_placeholders`; assign it to ``self.placeholders``."""
        return nn.ParameterDict({m: nn.Parameter(torch.zeros(size)) for m in self.modalities})

    def concat_with_placeholders(
        self, vectors: Mapping[str, Tensor], present: Tensor, batch: int
    ) -> Tensor:
        """``[f_1, ..., f_M]`` in modality order, each modality's learned placeholder
        (``self.placeholders[m]``) standing in where it is absent.

        Branch-free per sample (``torch.where``), so an absent modality's vector is never read
        and every placeholder takes part in the graph.

        Args:
            vectors: modality -> ``[B, d]``, the given modalities only.
            present: ``[B, M]`` bool (:meth:`presence`).
            batch: ``B``.

        Returns:
            ``[B, M * d]``.
        """
        ref = next(iter(vectors.values()))
        parts = []
        for j, m in enumerate(self.modalities):
            placeholder = self.placeholders[m].to(ref.dtype)
            if m in vectors:
                parts.append(torch.where(present[:, j, None], vectors[m], placeholder))
            else:
                parts.append(placeholder.expand(batch, -1))
        return torch.cat(parts, dim=1)

    def fuse(
        self,
        features: dict[str, Tensor],
        masks: dict[str, Tensor] | None,
        batch: int,
        return_attention: bool,
    ) -> FusionOutput:
        """Fuse checked inputs (implemented by each method).

        Args:
            features: modality -> tensor, the given modalities only.
            masks: ``None`` or modality -> bool ``[B]``.
            batch: ``B``.
            return_attention: Also return attention maps.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement fuse()")
