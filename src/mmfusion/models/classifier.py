"""A :class:`~mmfusion.nn.MultiModalClassifier` that knows its :class:`ModelConfig`.

Knowing its configuration is what lets a model be saved whole (architecture + weights) and rebuilt
anywhere: :meth:`FusionClassifier.save_pretrained` writes ``config.json`` and
``model.safetensors`` (:mod:`mmfusion.models.checkpoint`); :func:`mmfusion.models.from_pretrained`
reads them back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import nn

from mmfusion.models.checkpoint import write_model
from mmfusion.models.config import ModelConfig
from mmfusion.nn.heads import EnsembleHead
from mmfusion.nn.model import MultiModalClassifier

__all__ = ["FusionClassifier"]


class FusionClassifier(MultiModalClassifier):
    """:class:`~mmfusion.nn.MultiModalClassifier` plus the :class:`ModelConfig` it was built from.

    Build one with :func:`mmfusion.models.create_model` or :func:`mmfusion.models.build_model`;
    the forward pass is :class:`~mmfusion.nn.MultiModalClassifier`'s (inputs modality ->
    ``[B, 3, H, W]``, optional per-sample ``available`` masks).

    Args:
        config: The architecture the modules were built from.
        encoders: Modality -> encoder, in ``config.modalities`` order.
        fusion: The fusion module, or ``None`` for one modality.
        head: The ensemble head.
        modality_dropout: See :class:`~mmfusion.nn.MultiModalClassifier`.
    """

    def __init__(
        self,
        config: ModelConfig,
        encoders: Mapping[str, nn.Module],
        fusion: nn.Module | None,
        head: EnsembleHead,
        *,
        modality_dropout: float | Mapping[str, float] = 0.0,
    ) -> None:
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config: expected a ModelConfig, got {type(config).__name__}")
        super().__init__(encoders, fusion, head, modality_dropout=modality_dropout)
        if self.modalities != config.modalities:
            raise ValueError(
                f"encoders: modalities {self.modalities} differ from config.modalities {config.modalities}"
            )
        self.config = config

    def save_pretrained(
        self,
        directory: str | Path,
        *,
        overwrite: bool = False,
        normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (atomically).

        See :func:`mmfusion.models.save_pretrained`.

        Args:
            directory: Folder to write (created if needed).
            overwrite: Replace a model already saved there.
            normalization: ``(mean, std)`` of the training images (``None``: ImageNet's).

        Returns:
            The folder.

        Raises:
            FileExistsError: ``directory`` already holds a saved model and ``overwrite`` is false.
            ValueError: The parameters hold NaN or Inf (a diverged model is never saved).
        """
        return write_model(self, self.config, directory, overwrite=overwrite,
                           normalization=normalization)
