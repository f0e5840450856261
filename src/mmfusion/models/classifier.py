"""A :class:`~mmfusion.nn.MultiModalClassifier` that knows its :class:`ModelConfig`, on the Hub mixin.

Knowing its configuration is what lets a model be saved whole (architecture + weights) and rebuilt
anywhere. :class:`FusionClassifier` is a ``huggingface_hub.PyTorchModelHubMixin``, so it has
the Hub's ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` trio; the first two are
replaced by mmfusion's checked versions (:mod:`mmfusion.models.checkpoint` writes,
:func:`mmfusion.models.from_pretrained` reads), which keep guarantees the mixin's defaults do not:
it unlinks ``config.json`` and rewrites it in place (no atomic write, no overwrite refusal), builds
the model with a random initialisation before any check, loads non-strictly by default and falls
back to a pickled ``pytorch_model.bin``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

import mmfusion.models as _package  # from_pretrained is reached through it, at call time
from mmfusion.files import atomic_write_text
from mmfusion.models.checkpoint import write_model
from mmfusion.models.config import ModelConfig
from mmfusion.nn.heads import EnsembleHead
from mmfusion.nn.model import MultiModalClassifier

__all__ = ["FusionClassifier"]


class FusionClassifier(
    MultiModalClassifier,
    PyTorchModelHubMixin,
    library_name="mmfusion",
    tags=["multimodal", "image-classification", "mmfusion"],
):
    """:class:`~mmfusion.nn.MultiModalClassifier` plus the :class:`ModelConfig` it was built from.

    Build one with :func:`mmfusion.models.create_model` or :func:`mmfusion.models.build_model`;
    the forward pass is :class:`~mmfusion.nn.MultiModalClassifier`'s (inputs modality ->
    ``[B, 3, H, W]``, optional per-sample ``available`` masks). ``push_to_hub(repo_id)`` (from
    ``huggingface_hub.PyTorchModelHubMixin``) uploads what :meth:`save_pretrained` writes,
    with a model card.

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

    def save_pretrained(  # type: ignore[override]
        self,
        save_directory: str | Path,
        *,
        overwrite: bool = False,
        normalization: tuple[Sequence[float], Sequence[float]] | None = None,
        config: Mapping[str, Any] | None = None,
        model_card_kwargs: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``save_directory`` (atomically).

        See :func:`mmfusion.models.save_pretrained`.

        Args:
            save_directory: Folder to write (created if needed).
            overwrite: Replace a model already saved there.
            normalization: ``(mean, std)`` of the training images (``None``: ImageNet's).
            config: More JSON keys for ``config.json`` (the mixin's ``push_to_hub(config=...)``).
            model_card_kwargs: Given (``push_to_hub`` gives ``{}``): also write a ``README.md``
                model card, unless the folder has one.

        Returns:
            The folder.

        Raises:
            FileExistsError: ``save_directory`` already holds a saved model and ``overwrite`` is false.
            ValueError: The parameters hold NaN or Inf (a diverged model is never saved).
        """
        folder = write_model(self, self.config, save_directory, overwrite=overwrite, extra=config,
                             normalization=normalization)
        if model_card_kwargs is not None and not (folder / "README.md").exists():
            atomic_write_text(folder / "README.md", str(self.generate_model_card(**model_card_kwargs)))
        return folder

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:  # type: ignore[override]
        """Upload the saved model (with a model card) to the Hub repository ``repo_id``.

        Takes ``huggingface_hub.ModelHubMixin.push_to_hub``'s keyword arguments.

        Returns:
            The URL of the commit.
        """
        kwargs["model_card_kwargs"] = kwargs.get("model_card_kwargs") or {}
        return super().push_to_hub(repo_id, **kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        """The mixin's hook: the checked, atomic writer (replacing an existing model)."""
        write_model(self, self.config, save_directory, overwrite=True)

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        map_location: str | torch.device = "cpu",
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        force_download: bool = False,
        token: str | bool | None = None,
    ) -> FusionClassifier:
        """A saved model, from a folder or a Hub repository id: :func:`mmfusion.models.from_pretrained`."""
        return cls._from_pretrained(model_id=pretrained_model_name_or_path, revision=revision,
                                    cache_dir=cache_dir, force_download=force_download,
                                    local_files_only=local_files_only, token=token,
                                    map_location=map_location)

    @classmethod
    def _from_pretrained(  # type: ignore[override]
        cls,
        *,
        model_id: str | Path,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str | torch.device = "cpu",
    ) -> FusionClassifier:
        """The mixin's hook: the checked loader, for a folder and a Hub repository id alike."""
        model: FusionClassifier = _package.from_pretrained(
            model_id, map_location=map_location, revision=revision, cache_dir=cache_dir,
            local_files_only=local_files_only, force_download=force_download, token=token)
        return model
