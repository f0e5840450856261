"""The multimodal classifier container: encoders -> fusion -> ensemble head (paper Fig. 3).

Composition by constructor injection: pass one encoder per modality, a fusion module (or ``None``
for a single-branch model) and an :class:`~mmfusion.nn.EnsembleHead`. Inputs travel as a
modality name -> tensor mapping; the encoders' mapping order is the model's modality order.

Beyond the paper, the container handles a missing modality: leave it out of the input mapping, or
flag it per sample in ``available``; with ``modality_dropout`` it also learns to do so.

The container is the public entry point: it checks its inputs once (each modality's through its
encoder's ``check_input`` when the encoder has one) and runs encoders, fusion and head without
checking them again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfusion._checks import batch_size_of, check_availability, check_modality_keys, check_tensor
from mmfusion.nn._validation import checking, validated
from mmfusion.nn.heads import EnsembleHead


@dataclass
class ClassifierOutput:
    """What :class:`MultiModalClassifier` returns.

    Attributes:
        logits: branch name -> ``[B, K]`` logits (modality names and ``"joint"``).
        probs: ``[B, K]`` combined class probabilities (float32).
        features: modality -> ``[B, d]`` fusion vector ``f_m`` (empty without fusion).
        available: modality -> bool ``[B]`` availability actually used (after modality dropout);
            only the modalities that were given appear.
        attention: modality -> ``[B, 1, h, w]`` spatial attention maps when asked for, else ``None``.
        uncertainty: ``[B]`` per-sample uncertainty from a fusion that gives one (the evidential
            fusion), else ``None``.
    """

    logits: dict[str, Tensor]
    probs: Tensor
    features: dict[str, Tensor]
    available: dict[str, Tensor]
    attention: dict[str, Tensor] | None = None
    uncertainty: Tensor | None = None


class MultiModalClassifier(nn.Module):
    """Encoders per modality, an optional fusion module and an ensemble head.

    Args:
        encoders: modality name -> encoder (``[B, C_in, H, W] -> [B, C, h, w]``, e.g.
            :class:`~mmfusion.nn.ModalityEncoder`; or a vector encoder such as
            :class:`~mmfusion.nn.TabularEncoder`, ``[B, F] -> [B, D]``). Its order is the model's
            modality order. An encoder's ``check_input(x, name)``, when it has one, checks that
            modality's input; other encoders get any floating-point tensor.
        fusion: a fusion module (:class:`~mmfusion.nn.AttentionFusion`,
            :class:`~mmfusion.nn.ConcatFusion`, ...) over the same modalities, or ``None``.
        head: the :class:`~mmfusion.nn.EnsembleHead`. Its branch heads must name encoder modalities;
            a joint head needs a fusion module.
        modality_dropout: probability, per sample and modality, of hiding a modality during
            training (a float for all modalities or modality -> float). A sample never loses all of
            its modalities. ``0`` (default) disables it; it never acts in eval mode.

    Example:
        >>> from mmfusion import ModalityEncoder, AttentionFusion, ClassifierHead, EnsembleHead
        >>> enc = {m: ModalityEncoder("test_resnet", frozen_stages=0) for m in ("us", "swe")}
        >>> fusion = AttentionFusion(96, ("us", "swe"), embed_dim=32, reduced_channels=(32, 16))
        >>> head = EnsembleHead({m: ClassifierHead(96, 5, pool="avg") for m in enc},
        ...                     ClassifierHead(64, 5))
        >>> model = MultiModalClassifier(enc, fusion, head)
        >>> x = {m: torch.randn(2, 3, 64, 64) for m in enc}
        >>> model(x).probs.shape
        torch.Size([2, 5])
        >>> model({"us": x["us"]}).probs.shape  # SWE missing: still predicts
        torch.Size([2, 5])
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        fusion: nn.Module | None,
        head: EnsembleHead,
        *,
        modality_dropout: float | Mapping[str, float] = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(encoders, Mapping) or not encoders:
            raise ValueError(f"encoders: expected a non-empty mapping name -> module, got {encoders!r}")
        if not isinstance(head, EnsembleHead):
            raise TypeError(f"head: expected an EnsembleHead, got {type(head).__name__}")
        self.modalities: tuple[str, ...] = tuple(encoders)
        if fusion is not None:
            fusion_modalities = tuple(getattr(fusion, "modalities", self.modalities))
            if fusion_modalities != self.modalities:
                raise ValueError(
                    f"fusion: its modalities {fusion_modalities} differ from the encoders' "
                    f"{self.modalities} (same names, same order expected)"
                )
        check_modality_keys(head.branch_heads.keys(), self.modalities, "head.branch_heads", require_any=False)
        if head.joint_head is not None and fusion is None:
            raise ValueError("fusion: the head has a joint branch, which needs a fusion module; got None")
        self.encoders = nn.ModuleDict(dict(encoders))
        self.fusion = fusion
        self.head = head
        self.modality_dropout = self._dropout_rates(modality_dropout)

    def _dropout_rates(self, rate: float | Mapping[str, float]) -> dict[str, float]:
        rates = dict(rate) if isinstance(rate, Mapping) else {m: rate for m in self.modalities}
        check_modality_keys(rates.keys(), self.modalities, "modality_dropout", require_any=False)
        for name, p in rates.items():
            if not isinstance(p, int | float) or not 0.0 <= float(p) < 1.0:
                raise ValueError(f"modality_dropout[{name!r}]: expected a probability in [0, 1), got {p!r}")
        return {m: float(rates.get(m, 0.0)) for m in self.modalities}

    def _drop_modalities(self, available: dict[str, Tensor]) -> dict[str, Tensor]:
        """Hide modalities at random per sample, keeping at least one available modality each."""
        names = list(available)
        avail = torch.stack([available[m] for m in names], dim=1)  # [B, M]
        draw = torch.rand(avail.shape, device=avail.device)
        kept = [draw[:, i] >= self.modality_dropout[m] for i, m in enumerate(names)]
        keep = avail & torch.stack(kept, dim=1)
        # Samples left with nothing get back one of their available modalities, drawn uniformly.
        # Branch-free (no host sync, no data-dependent shapes), so it also compiles in one graph.
        empty = ~keep.any(dim=1) & avail.any(dim=1)
        pick = ((torch.rand(avail.shape, device=avail.device) + 1.0) * avail).argmax(dim=1)
        keep = keep | (F.one_hot(pick, len(names)).bool() & empty[:, None])
        return {m: keep[:, i] for i, m in enumerate(names)}

    def forward(
        self,
        inputs: Mapping[str, Tensor],
        available: Mapping[str, Tensor] | None = None,
        *,
        return_attention: bool = False,
    ) -> ClassifierOutput:
        """Classify a batch of image tuples.

        Args:
            inputs: modality -> ``[B, C_in, H, W]`` normalised float images (``[B, F]`` rows for a
                tabular modality). Any non-empty subset of :attr:`modalities`; a modality left out
                is treated as absent for every sample.
            available: optional modality -> bool ``[B]``: per-sample presence of a given modality
                (its pixels are then ignored where ``False``).
            return_attention: also return the fusion's spatial attention maps.

        Returns:
            A :class:`ClassifierOutput`.
        """
        if checking():
            batch, masks = self.check_inputs(inputs, available)
        else:  # inside another container that has checked them
            batch, masks = next(iter(inputs.values())).shape[0], dict(available or {})
        with validated():
            return self._classify(inputs, masks, batch, return_attention)

    def check_inputs(
        self, inputs: object, available: Mapping[str, Tensor] | None = None
    ) -> tuple[int, dict[str, Tensor]]:
        """Check a forward pass's inputs, as :meth:`forward` does.

        Returns:
            The batch size and the availability masks (an empty dict when none were given).

        Raises:
            TypeError, ValueError: Naming the input (``inputs['us']``, ``available``) and what
                was expected.
        """
        if not isinstance(inputs, Mapping):
            raise TypeError(
                f"inputs: expected a mapping modality name -> [B, C, H, W] tensor, got {type(inputs).__name__}"
            )
        check_modality_keys(inputs.keys(), self.modalities, "inputs")
        for name, x in inputs.items():
            check_input = getattr(self.encoders[name], "check_input", None)
            if callable(check_input):
                check_input(x, f"inputs[{name!r}]")
            else:
                check_tensor(x, f"inputs[{name!r}]")
        batch = batch_size_of(inputs, "inputs")
        return batch, check_availability(available, inputs.keys(), batch) or {}

    def _classify(
        self,
        inputs: Mapping[str, Tensor],
        masks: dict[str, Tensor],
        batch: int,
        return_attention: bool,
    ) -> ClassifierOutput:
        given = [m for m in self.modalities if m in inputs]
        device = inputs[given[0]].device
        avail = {m: masks.get(m, torch.ones(batch, dtype=torch.bool, device=device)) for m in given}
        dropping = self.training and any(self.modality_dropout[m] > 0 for m in given)
        if dropping:
            avail = self._drop_modalities(avail)
        use_masks = bool(masks) or dropping

        encode = getattr(self.fusion, "encode_inputs", None)
        if callable(encode):  # a fusion that acts inside the encoders (FiLM)
            maps = encode(self.encoders, {m: inputs[m] for m in given},
                          avail if use_masks else None)
        else:
            maps = {m: self.encoders[m](inputs[m]) for m in given}
        fused, features, attention, uncertainty = None, {}, None, None
        if self.fusion is not None:
            fusion_out = self.fusion(maps, avail if use_masks else None, return_attention)
            fused, features, attention = fusion_out.fused, fusion_out.features, fusion_out.attention
            uncertainty = getattr(fusion_out, "uncertainty", None)
        ensemble = self.head(maps, fused, avail if use_masks else None)
        return ClassifierOutput(
            logits=ensemble.logits,
            probs=ensemble.probs,
            features=features,
            available=avail,
            attention=attention,
            uncertainty=uncertainty,
        )
