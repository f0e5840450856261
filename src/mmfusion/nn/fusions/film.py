"""FiLM / DAFT conditioning of an image encoder's feature maps on the other modalities.

FiLM (Perez et al. 2018, "FiLM: Visual Reasoning with a General Conditioning Layer", eq. (1)-(2))
modulates each channel ``c`` of a feature map ``F`` with a scale and a shift predicted from a
conditioning input ``z``: ``FiLM(F | z)_c = gamma_c(z) * F_c + beta_c(z)``. DAFT (Pölsterl et al.
2021, "Combining 3D Image and Tabular Data via the Dynamic Affine Feature Map Transform")
builds ``z`` from the image's own globally average-pooled feature map concatenated with the
tabular vector and predicts ``(gamma, beta)`` with a bottleneck MLP. :class:`FiLMFusion` does the
same for any modalities: each *target* map modality is conditioned on its *sources* (by default
every other modality); the fused vector then pools the conditioned maps.

Where the modulation acts (``stage``):

* the final map (``stage=None``, ``-1`` or the encoder's last stage; the default): the fusion
  receives the encoders' maps and modulates them in :meth:`FiLMFusion.fuse`; it works on its own,
  on any map;
* an earlier stage ``k``: :meth:`FiLMFusion.encode_inputs` (which
  :class:`~mmfusion.nn.MultiModalClassifier` calls instead of running the encoders itself) runs
  the sources' encoders, predicts ``(gamma, beta)``, then runs each target's encoder with the
  modulation applied to the output of its stage ``k``
  (:meth:`~mmfusion.nn.ModalityEncoder.forward_modulated`), so stages ``k+1..`` see the
  conditioned map; the maps given to the fusion (and to the single-modal heads) are then the
  conditioned ones. This needs the encoders (a timm CNN whose stages run one by one) at
  construction, for the stage's channels: :func:`~mmfusion.models.build_model` passes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mmfusion.nn.fusion import FusionOutput
from mmfusion.nn.fusions.base import BaseFusion, check_embed_dim
from mmfusion.nn.registry import FeatureSpec, register_fusion

__all__ = ["FiLMFusion", "film"]


def film(x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
    """Feature-wise linear modulation (Perez et al. 2018, eq. (2)): ``gamma * x + beta`` per channel.

    Args:
        x: ``[B, C, H, W]`` map.
        gamma, beta: ``[B, C]`` scale and shift.

    Returns:
        ``[B, C, H, W]``.

    Example:
        >>> film(torch.ones(1, 2, 1, 1), torch.tensor([[2.0, 3.0]]), torch.tensor([[1.0, 0.0]]))
        tensor([[[[3.]],
        <BLANKLINE>
                 [[3.]]]])
    """
    return gamma[:, :, None, None] * x + beta[:, :, None, None]


def _check_condition(
    condition: object, specs: Mapping[str, FeatureSpec]
) -> dict[str, tuple[str, ...]]:
    """The target -> sources mapping: ``condition`` checked, or the default (every map on all
    the other modalities)."""
    if condition is None:
        return {
            t: tuple(s for s in specs if s != t)
            for t, spec in specs.items() if spec.kind == "map" and len(specs) > 1
        }
    if not isinstance(condition, Mapping):
        raise TypeError(
            "condition: expected None or a mapping target map modality -> source modalities, got "
            f"{type(condition).__name__}"
        )
    targets: dict[str, tuple[str, ...]] = {}
    for target, sources in condition.items():
        if target not in specs:
            raise ValueError(
                f"condition: the target {target!r} is not one of the modalities {list(specs)}"
            )
        if specs[target].kind != "map":
            raise ValueError(
                f"condition[{target!r}]: a target must be a map modality (FiLM modulates maps), "
                f"got a {specs[target].kind}"
            )
        if isinstance(sources, str) or not isinstance(sources, Sequence) or not sources:
            raise ValueError(
                f"condition[{target!r}]: expected a non-empty sequence of source modalities, "
                f"got {sources!r}"
            )
        for source in sources:
            if source not in specs or source == target:
                raise ValueError(
                    f"condition[{target!r}]: expected sources among {[s for s in specs if s != target]}, "
                    f"got {source!r}"
                )
        if len(set(sources)) != len(sources):
            raise ValueError(f"condition[{target!r}]: a source is named twice in {list(sources)}")
        targets[target] = tuple(s for s in specs if s in sources)  # in fusion order
    return {t: targets[t] for t in specs if t in targets}


def _recorder(store: dict[str, Tensor], name: str) -> Callable[[Tensor], Tensor]:
    """An identity modulation that keeps the map it sees in ``store[name]``."""

    def record(fmap: Tensor) -> Tensor:
        store[name] = fmap
        return fmap

    return record


@register_fusion("film")
class FiLMFusion(BaseFusion):
    """FiLM / DAFT: per-channel scale and shift of each target map, predicted from its sources.

    For a target map modality ``t`` with sources ``S_t`` the conditioning vector is (DAFT, with
    the image's own pooled features when ``self_condition``)::

        z_t = [GAP(F_t), v_s1, v_s2, ...]     v_s = x_s (a vector modality), GAP(F_s) (a map)
        (dgamma_t, beta_t) = W2 ReLU(W1 z_t + b1) + b2      (W2, b2 zero at initialisation)
        F_t' = (1 + dgamma_t) * F_t + beta_t               per channel, eq. (2) of FiLM

    ``F_t`` is the target's map where it is modulated (the final map, or the output of encoder
    stage ``stage``); ``F_s`` is a source map modality's own, unconditioned final map. The fused
    vector is ``[e_1, ..., e_M]`` with ``e_m = Linear(GAP(F_m'))`` for a map modality (``F_m``
    when it is no target) and ``e_m = Linear(x_m)`` for a vector: ``out_features = M *
    embed_dim``.

    Initialisation: ``W2`` and ``b2`` are zero, so ``gamma = 1``, ``beta = 0`` and an untrained
    FiLM is the identity.

    Missing modalities, per sample (masked == absent): an absent source's ``v_s`` is replaced by
    a learned placeholder in ``z_t``; when all of ``t``'s sources are absent, ``gamma = 1`` and
    ``beta = 0`` exactly (``torch.where``): the target stays unconditioned. An absent modality's
    ``e_m`` in the fused vector is a learned placeholder. An absent input's values never reach
    the outputs (``torch.where`` selects the placeholder or the identity instead).

    A modality that is both a source and a target at a stage before the last (the two images of
    the liver example) runs its encoder's stages after ``stage`` twice: unconditioned, for the
    others' ``z``, then modulated (in train mode its BatchNorm statistics there are updated by
    both passes). With no map modality nothing is conditioned and the fusion is the
    concatenation of the ``e_m``.

    Args:
        features: modality -> :class:`~mmfusion.nn.FeatureSpec` (maps and vectors; >= 2).
        embed_dim: Size of each ``e_m``.
        stage: Where targets are modulated: ``None`` or ``-1`` (default): the final map the
            fusion receives; ``k >= 1``: the output of encoder stage ``k`` (1-based, as
            :meth:`~mmfusion.nn.ModalityEncoder.stage`), through :meth:`encode_inputs`; needs
            ``encoders``. ``k`` equal to a target encoder's last stage is the final map.
        condition: target map modality -> its source modalities; ``None``: every map modality
            is conditioned on all the other modalities.
        self_condition: Include the target's own pooled map in ``z_t`` (DAFT); ``False``: the
            sources alone (FiLM).
        hidden_dim: Width of the MLP's bottleneck (``None``: ``embed_dim``).
        encoders: modality -> encoder (what :func:`~mmfusion.models.build_model` passes); read
            at construction for the channels of stage ``stage`` of each target (no reference is
            kept). Needed only when ``stage`` is not the final map.
        stage_channels: target -> channels at stage ``stage``, instead of ``encoders``.
        allow_missing: Accept absent modalities.

    Attributes:
        targets: target -> its sources, in fusion order.
        encoder_stage: target -> the encoder stage it is modulated after (targets modulated in
            :meth:`encode_inputs`); the other targets are modulated in :meth:`fuse`.
        generators: target -> the MLP ``z_t -> (dgamma_t, beta_t)``.

    Raises:
        ValueError, TypeError: Invalid ``stage``, ``condition``, ``embed_dim``, ``hidden_dim``,
            or a stage before the last without ``encoders``/``stage_channels`` (or with an
            encoder whose stages cannot be run one by one).

    Example:
        >>> specs = {"us": FeatureSpec("map", 8, (3, 3)), "labs": FeatureSpec("vector", 5)}
        >>> fusion = FiLMFusion(specs, embed_dim=4)
        >>> fusion.targets, fusion.out_features
        ({'us': ('labs',)}, 8)
    """

    kinds = ("map", "vector")
    min_modalities = 2
    max_modalities = None
    same_spatial = False
    reference = (
        "Perez et al. 2018, FiLM: Visual Reasoning with a General Conditioning Layer; "
        "Pölsterl et al. 2021, Combining 3D Image and Tabular Data via the Dynamic Affine "
        "Feature Map Transform (DAFT)"
    )
    missing = (
        "absent source: learned placeholder in the conditioning vector; all sources absent: "
        "identity (gamma=1, beta=0); absent modality: learned placeholder in the fused vector"
    )
    compiles = True

    def __init__(
        self,
        features: Mapping[str, FeatureSpec],
        *,
        embed_dim: int = 64,
        stage: int | None = None,
        condition: Mapping[str, Sequence[str]] | None = None,
        self_condition: bool = True,
        hidden_dim: int | None = None,
        encoders: Mapping[str, nn.Module] | None = None,
        stage_channels: Mapping[str, int] | None = None,
        allow_missing: bool = True,
    ) -> None:
        super().__init__(features, allow_missing=allow_missing)
        self.embed_dim = check_embed_dim(embed_dim)
        hidden = embed_dim if hidden_dim is None else check_embed_dim(hidden_dim, "hidden_dim")
        if stage is not None and (isinstance(stage, bool) or not isinstance(stage, int)
                                  or (stage < 1 and stage != -1)):
            raise ValueError(f"stage: expected None, -1 or an encoder stage >= 1, got {stage!r}")
        if not isinstance(self_condition, bool):
            raise TypeError(f"self_condition: expected a bool, got {self_condition!r}")
        self.stage = None if stage == -1 else stage
        self.self_condition = self_condition
        self.targets = _check_condition(condition, self.specs)
        self.encoder_stage, channels_at = self._placement(encoders, stage_channels)

        self.sources = tuple(m for m in self.modalities if any(m in s for s in self.targets.values()))
        self.source_placeholders = nn.ParameterDict(
            {s: nn.Parameter(torch.zeros(self.specs[s].channels)) for s in self.sources}
        )
        self.generators = nn.ModuleDict()
        for target, sources in self.targets.items():
            width = channels_at[target]
            z_dim = (width if self_condition else 0) + sum(self.specs[s].channels for s in sources)
            last = nn.Linear(hidden, 2 * width)
            nn.init.zeros_(last.weight)  # gamma = 1, beta = 0: the identity at initialisation
            nn.init.zeros_(last.bias)
            self.generators[target] = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), last)
        self.projections = nn.ModuleDict(
            {m: nn.Linear(spec.channels, embed_dim) for m, spec in self.specs.items()}
        )
        self.placeholders = self.make_placeholders(embed_dim)
        self.out_features = len(self.modalities) * embed_dim

    def _placement(
        self, encoders: Mapping[str, nn.Module] | None, stage_channels: Mapping[str, int] | None
    ) -> tuple[dict[str, int], dict[str, int]]:
        """Targets modulated inside their encoder (-> stage) and every target's channels there."""
        channels = {t: self.specs[t].channels for t in self.targets}
        if self.stage is None:
            return {}, channels
        inside: dict[str, int] = {}
        for target in self.targets:
            if stage_channels is not None and target in stage_channels:
                width = stage_channels[target]
                if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                    raise ValueError(
                        f"stage_channels[{target!r}]: expected a positive int, got {width!r}"
                    )
                inside[target], channels[target] = self.stage, width
                continue
            encoder: Any = encoders[target] if encoders is not None and target in encoders else None
            point = getattr(encoder, "modulation_point", None)
            if encoder is None or not callable(point):
                raise ValueError(
                    f"stage: FiLM after encoder stage {self.stage} needs that stage's channels of "
                    f"the target {target!r}: pass encoders= (build_model does; a timm "
                    "ModalityEncoder) or stage_channels=; stage=None modulates the final map"
                )
            if self.stage == encoder.num_stages:  # its last stage: the final map
                continue
            point(self.stage, "stage")  # raises for encoders whose stages cannot run one by one
            inside[target], channels[target] = self.stage, int(encoder.stage_channels[self.stage - 1])
        return inside, channels

    # -----------------------------------------------------------------------------------------

    def _conditioning(
        self, target: Tensor | None, name: str, vectors: Mapping[str, Tensor], presence: Tensor,
        batch: int,
    ) -> tuple[Tensor, Tensor]:
        """``z_t`` ``[B, Z]`` and whether any source of ``name`` is present, ``[B]`` bool.

        Args:
            target: the target's pooled map ``[B, C_t]`` (used when ``self_condition``).
            vectors: source -> its ``v_s`` ``[B, d_s]`` (given modalities only).
            presence: ``[B, M]`` bool in ``modalities`` order.
        """
        parts = [target] if self.self_condition and target is not None else []
        active = torch.zeros_like(presence[:, 0])
        for source in self.targets[name]:
            j = self.modalities.index(source)
            placeholder = self.source_placeholders[source]
            if source in vectors:
                value = vectors[source]
                parts.append(torch.where(presence[:, j, None], value,
                                         placeholder.to(value.dtype)))
            else:
                parts.append(placeholder.expand(batch, -1))
            active = active | presence[:, j]
        return torch.cat(parts, dim=1), active

    def modulation(self, name: str, fmap: Tensor, z: Tensor, active: Tensor) -> Tensor:
        """FiLM of target ``name``'s map ``fmap`` ``[B, C, H, W]`` by the conditioning ``z``.

        ``gamma = 1 + dgamma`` and ``beta`` come from :attr:`generators` where ``active``
        (``[B]`` bool: some source present); ``gamma = 1``, ``beta = 0`` elsewhere.
        """
        dgamma, beta = self.generators[name](z.to(fmap.dtype)).chunk(2, dim=1)
        on = active[:, None]
        gamma = torch.where(on, 1.0 + dgamma, torch.ones_like(dgamma))
        beta = torch.where(on, beta, torch.zeros_like(beta))
        return film(fmap, gamma, beta)

    @staticmethod
    def _vector(x: Tensor) -> Tensor:
        """``v_m``: a vector as it is, a map's global average pool."""
        return x.mean(dim=(2, 3)) if x.ndim == 4 else x

    def encode_inputs(
        self,
        encoders: nn.ModuleDict,
        inputs: dict[str, Tensor],
        available: dict[str, Tensor] | None,
    ) -> dict[str, Tensor]:
        """Run the encoders, modulating targets after their stage ``stage`` (FiLM inside).

        Sources' encoders run first, unconditioned; then each target placed inside its encoder
        (:attr:`encoder_stage`) runs with :meth:`modulation` applied to its stage output
        (:meth:`~mmfusion.nn.ModalityEncoder.forward_modulated`), ``z_t`` holding the pooled
        stage map of the target itself. A target that is also a source resumes from the stage
        map its unconditioned pass recorded (:meth:`~mmfusion.nn.ModalityEncoder.resume`), so
        only its stages after ``stage`` run twice. Targets modulated on the final map are
        returned unconditioned (:meth:`fuse` modulates them).

        Args:
            encoders: modality -> encoder.
            inputs: modality -> input batch (the given modalities).
            available: ``None`` or modality -> bool ``[B]``.

        Returns:
            modality -> encoder output (conditioned for the targets placed inside encoders).
        """
        inside = [t for t in self.encoder_stage if t in inputs]
        if not inside:
            return {m: encoders[m](x) for m, x in inputs.items()}
        needed = {s for t in inside for s in self.targets[t]}
        plain: dict[str, Tensor] = {}
        recorded: dict[str, Tensor] = {}
        for name, x in inputs.items():
            encoder: Any = encoders[name]
            if name not in inside:
                plain[name] = encoder(x)
            elif name in needed:  # one unconditioned pass that keeps its stage map
                plain[name] = encoder.forward_modulated(
                    x, self.encoder_stage[name], _recorder(recorded, name))
        batch = next(iter(inputs.values())).shape[0]
        presence = self.presence(inputs, available, batch)
        vectors = {m: self._vector(x) for m, x in plain.items()}
        out = {m: x for m, x in plain.items() if m not in inside}
        for target in inside:
            z_sources, active = self._conditioning(None, target, vectors, presence, batch)
            modulate = self._modulator(target, z_sources, active)
            encoder = encoders[target]
            stage = self.encoder_stage[target]
            if target in recorded:
                out[target] = encoder.resume(modulate(recorded[target]), stage)
            else:
                out[target] = encoder.forward_modulated(inputs[target], stage, modulate)
        return {m: out[m] for m in inputs}

    def _modulator(self, name: str, z_sources: Tensor, active: Tensor) -> Callable[[Tensor], Tensor]:
        def modulate(fmap: Tensor) -> Tensor:
            parts = [fmap.mean(dim=(2, 3)), z_sources] if self.self_condition else [z_sources]
            return self.modulation(name, fmap, torch.cat(parts, dim=1), active)

        return modulate

    def fuse(
        self,
        features: dict[str, Tensor],
        masks: dict[str, Tensor] | None,
        batch: int,
        return_attention: bool,
    ) -> FusionOutput:
        """Modulate the final-map targets, pool, project, concatenate (placeholders if absent)."""
        presence = self.presence(features, masks, batch)
        vectors = {m: self._vector(x) for m, x in features.items()}
        embedded: dict[str, Tensor] = {}
        for name, x in features.items():
            if name in self.targets and name not in self.encoder_stage:
                z, active = self._conditioning(vectors[name], name, vectors, presence, batch)
                x = self.modulation(name, x, z, active)
            embedded[name] = self.projections[name](self._vector(x))
        fused = self.concat_with_placeholders(embedded, presence, batch)
        return FusionOutput(fused=fused, features=embedded, attention=None)
