"""A LightningModule for any :class:`~mmfusion.nn.MultiModalClassifier` (paper section III.E).

:class:`FusionModule` wraps a model with its :class:`~mmfusion.EnsembleLoss` (eq. (1)-(3)), the
optimizer and schedule of a :class:`~mmfusion.models.TrainingConfig` (Adam; constant or cosine per
epoch), modality dropout (the model's own, active in training), and the library's metrics
(:func:`mmfusion.metrics.classification_report`, per branch, patient-bootstrap intervals) at the end
of validation and test. Lightning brings the rest: precision (``"bf16-mixed"``, ``"16-mixed"`` with
loss scaling), DDP and multi-node, checkpoints and resume, loggers and progress bars.

Batches are mappings ``{modality: [B, 3, H, W], "label": [B], "patient_id": [B] str,
"index": [B]}``, optionally with ``"available": {modality: bool [B]}``
(:class:`mmfusion.lightning.FusionDataModule` yields them).

Checkpoints carry the module's hyperparameters as plain JSON types (the model's
:class:`~mmfusion.models.ModelConfig` as a dict, the training config, seed, the label spec as a
dict...), so ``FusionModule.load_from_checkpoint(path)`` rebuilds the model and loads its weights
without unpickling any object (``weights_only=True``).

A non-finite training loss stops training at once (:class:`FloatingPointError`, before the step
is applied), and non-finite evaluation probabilities are an error (:class:`Predictions`).

Lightning does the bookkeeping: the epoch's mean losses (``loss`` and each component) and
``pairs`` go through ``self.log(..., on_epoch=True, sync_dist=True)`` (reduced over every
process), and ``FusionModule.history`` is built from those epoch values; evaluation outputs
are gathered with ``self.all_gather`` (:func:`~mmfusion.lightning.predictions.gather_predictions`).

Reproducibility: at the start of every training epoch the torch, NumPy and Python generators are
reseeded from ``(seed, epoch, rank)``, so the model's own randomness (modality dropout) is the
same after a resume; together with per-sample augmentation seeds, a run resumed from an epoch
checkpoint ends with the same weights as an uninterrupted one (bit-exact on CPU).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from mmfusion.data.seeded import sample_seed
from mmfusion.labels import LabelSpec
from mmfusion.lightning.predictions import Predictions, gather_predictions
from mmfusion.losses import EnsembleLoss
from mmfusion.metrics import (
    apply_temperature,
    classification_report,
    expected_calibration_error,
    fit_temperature,
    patient_report,
)
from mmfusion.models.config import ModelConfig, TrainingConfig, config_from_dict
from mmfusion.nn import FeatureFusion, MultiModalClassifier

__all__ = ["FusionModule"]


class FusionModule(pl.LightningModule):
    """Train and evaluate a multimodal classifier with Lightning.

    Args:
        model: The classifier (e.g. :func:`mmfusion.models.create_model`'s); ``None``: built
            (randomly initialised) from ``model_config``.
        loss: The training loss; ``None`` takes :func:`mmfusion.models.build_loss` of the model's
            configuration (a :class:`~mmfusion.models.FusionClassifier`), else ``EnsembleLoss()``.
            A custom loss is not saved in checkpoints: pass it to ``load_from_checkpoint`` again.
        training: Optimizer and schedule (``lr``, ``weight_decay``, ``schedule``; a mapping is
            read as a :class:`~mmfusion.models.TrainingConfig`). The cosine schedule spans the
            Trainer's ``max_epochs`` (``training.epochs`` only when the Trainer sets none).
        model_config: The :class:`~mmfusion.models.ModelConfig` (or its dict) to build the model
            from when ``model`` is ``None`` (``load_from_checkpoint`` passes it); with a
            ``model``, it must be the model's own.
        seed: Seed of the per-epoch generator reseeding (use the run's seed).
        labels: The classes' :class:`~mmfusion.labels.LabelSpec` (or its
            :meth:`~mmfusion.labels.LabelSpec.to_dict`, as a checkpoint holds it): the reports
            name the classes by it, give the kappa and cut-off AUROCs only for ordered classes,
            and the spec's named cut-offs (e.g. the liver's METAVIR spec: ``auc_f2plus``, ...).
            ``None``: classes ``"0"``, ``"1"``, ... (or ``class_names``) taken as ordered.
        class_names: Names of the classes in reports, without a ``labels`` spec (default
            ``"0"``, ``"1"``, ...); not with ``labels``.
        n_bootstrap: Bootstrap resamples of the metric intervals (0: none).
        channels_last: Feed images in channels-last memory format (faster convolutions on GPUs).

    Attributes:
        predictions: The last validation/test run's :class:`Predictions` (on every rank).
        temperatures: Branch -> temperature fitted by :meth:`calibrate` (``None`` before).
        metrics: Its report: ``{"ensemble": report, "branches": {name: report}, "n_pairs",
            "n_patients"}``.
        history: One entry per training epoch: ``{"epoch", "lr", "loss", <loss components>,
            "pairs", "seconds", "pairs_per_s"}``; the losses and ``pairs`` are the epoch values
            Lightning reduced over every process (kept in checkpoints).

    Raises:
        TypeError: ``model`` is not a :class:`~mmfusion.nn.MultiModalClassifier`.
        ValueError: Neither ``model`` nor ``model_config``, a ``model_config`` other than the
            model's, ``labels`` with ``class_names`` or with a class count other than the
            model's, or an argument out of range.

    Example:
        >>> import lightning.pytorch as pl
        >>> from mmfusion.lightning import FusionModule
        >>> from mmfusion.models import create_model, get_preset
        >>> preset = get_preset("liver_fibrosis_quick")
        >>> module = FusionModule(create_model("liver_fibrosis_quick", backbone="test_resnet",
        ...                                    image_size=64), training=preset.training)
        >>> module.training_config.lr, module.loss_fn.alpha  # the preset's lr; eq. (3)'s alpha
        (0.001, 0.2)
    """

    def __init__(
        self,
        model: MultiModalClassifier | None = None,
        loss: EnsembleLoss | None = None,
        training: TrainingConfig | Mapping[str, Any] | None = None,
        *,
        model_config: ModelConfig | Mapping[str, Any] | None = None,
        seed: int = 0,
        class_names: Sequence[str] | None = None,
        n_bootstrap: int = 1000,
        channels_last: bool = False,
        labels: LabelSpec | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        model = _resolve_model(model, model_config)
        if isinstance(training, Mapping):
            training = config_from_dict(TrainingConfig, training, "training")
        if loss is None:
            config = getattr(model, "config", None)
            if config is not None:
                from mmfusion.models.builder import build_loss

                loss = build_loss(config)
            else:
                loss = EnsembleLoss()
        if n_bootstrap < 0:
            raise ValueError(f"n_bootstrap: expected >= 0, got {n_bootstrap}")
        labels = _resolve_labels(labels, class_names, model)
        self.model = model
        self.loss_fn = loss
        self.training_config = training or TrainingConfig()
        self.seed = int(seed)
        self.labels = labels
        self.class_names = (list(labels.names) if labels is not None
                            else list(class_names) if class_names is not None else None)
        self.n_bootstrap = int(n_bootstrap)
        self.channels_last = bool(channels_last)
        self.predictions: Predictions | None = None
        self.metrics: dict[str, Any] | None = None
        self.temperatures: dict[str, float] | None = None
        self.history: list[dict[str, float]] = []
        self._outputs: list[dict[str, Any]] = []
        self._groups: list[str] = []
        self._train_names: tuple[str, ...] = ()
        self._epoch_start = 0.0
        self._epoch_lr = float("nan")
        config = getattr(model, "config", None)
        self.save_hyperparameters({  # plain JSON types: checkpoints load with weights_only=True
            "model_config": config.to_dict() if isinstance(config, ModelConfig) else None,
            "training": self.training_config.to_dict(),
            "seed": self.seed,
            "class_names": self.class_names,
            "labels": None if labels is None else labels.to_dict(),
            "n_bootstrap": self.n_bootstrap,
            "channels_last": self.channels_last,
        })

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | Path | IO[bytes],
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool = True,
        **kwargs: Any,
    ) -> FusionModule:
        """The module saved in a Lightning checkpoint: the model rebuilt from its saved
        configuration, its weights loaded, without unpickling objects (``weights_only=True``).

        ``kwargs`` override the saved arguments, e.g. ``model=`` for a hand-assembled model (one
        without a :class:`~mmfusion.models.ModelConfig`, whose checkpoint cannot rebuild it) or
        ``loss=`` for a custom loss. Otherwise Lightning's
        :meth:`~lightning.pytorch.core.LightningModule.load_from_checkpoint`.
        """
        return super().load_from_checkpoint(checkpoint_path, map_location, hparams_file, strict,
                                            weights_only=weights_only, **kwargs)

    # ------------------------------------------------------------------ setup and optimisation

    def setup(self, stage: str) -> None:
        """Under DDP, let every fusion placeholder take part in each step, so DDP needs no
        ``find_unused_parameters`` (see :class:`~mmfusion.nn.FeatureFusion`)."""
        if self.trainer is not None and self.trainer.world_size > 1:
            for fusion in self.model.modules():
                if isinstance(fusion, FeatureFusion):
                    fusion.placeholders_in_graph = True
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def configure_optimizers(self) -> Any:
        """Adam (fused on CUDA) over the trainable parameters, and the per-epoch schedule.

        The cosine schedule reaches ``lr / 100`` after the Trainer's last epoch (its
        ``max_epochs``; ``training.epochs``, with a warning, when the Trainer has no epoch
        limit)."""
        cfg = self.training_config
        params = [p for p in self.model.parameters() if p.requires_grad]
        fused = next(iter(params)).device.type == "cuda" if params else False
        optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
        if cfg.schedule == "constant":
            return optimizer
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=self._schedule_epochs(), eta_min=cfg.lr * 0.01
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def _schedule_epochs(self) -> int:
        """The cosine schedule's length: the Trainer's ``max_epochs`` if it has one."""
        epochs = self.training_config.epochs
        trainer = self._trainer  # None outside a Trainer (no error, unlike self.trainer)
        limit = getattr(trainer, "max_epochs", None) if trainer is not None else None
        if limit is not None and limit > 0:
            return int(limit)
        if trainer is not None:
            rank_zero_warn(f"training.epochs: the Trainer has no epoch limit (max_epochs="
                           f"{limit}); the cosine schedule spans training.epochs={epochs} epochs")
        return epochs

    # ------------------------------------------------------------------ steps

    def _unpack(self, batch: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Tensor] | None, Tensor]:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        inputs = {m: batch[m].contiguous(memory_format=fmt) for m in self.model.modalities if m in batch}
        available = batch.get("available")
        if available is not None:
            available = {m: v.to(torch.bool) for m, v in available.items() if m in inputs}
        return inputs, available, torch.as_tensor(batch["label"], device=self.device)

    def forward(self, inputs: Mapping[str, Tensor], available: Mapping[str, Tensor] | None = None) -> Any:
        """The model's forward pass (a :class:`~mmfusion.nn.ClassifierOutput`)."""
        return self.model(inputs, available)

    def on_train_epoch_start(self) -> None:
        """Reseed the generators from ``(seed, epoch, rank)``; start the epoch's clock.

        By hand, not Lightning's ``seed_everything``: that seeds once per run (``workers=True``
        only adds a DataLoader ``worker_init_fn``, and :class:`~mmfusion.data.SeededSampler`
        seeds each sample anyway), and Lightning's checkpoints do not keep the generators'
        states, so only a reseed per epoch gives a run resumed at epoch ``k`` the generators
        (modality dropout) of an uninterrupted run. Calling ``seed_everything`` each epoch would
        also rewrite ``PL_GLOBAL_SEED`` / ``PL_SEED_WORKERS`` of the process under the user."""
        derived = sample_seed(self.seed, self.current_epoch, 1_000_000 + self.global_rank)
        random.seed(derived)
        np.random.seed(derived % 2**32)  # noqa: NPY002 - third-party users of the global RNG
        torch.manual_seed(derived)
        self._epoch_start = time.perf_counter()
        optimizers = self.trainer.optimizers
        self._epoch_lr = optimizers[0].param_groups[0]["lr"] if optimizers else float("nan")

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        """One step of ``L_total``; logs the total and each component per epoch.

        Raises:
            FloatingPointError: The loss is NaN or infinite (on any process): training stops
                before the step is applied (the weights are those of the last finite step).
        """
        inputs, available, labels = self._unpack(batch)
        out = self.model(inputs, available)
        losses = self.loss_fn(out.logits, labels, out.features, out.available)
        self._check_finite(losses.total.detach(), batch_idx)
        n = int(labels.shape[0])
        # Lightning sums value * n over the epoch on the device and divides by the summed n, both
        # all-reduced under DDP (sync_dist): the epoch mean over every process's pairs.
        terms = {"loss": losses.total, **losses.components}
        for name, value in terms.items():
            self.log(name, value.detach().float(), on_step=False, on_epoch=True, sync_dist=True,
                     batch_size=n)
        self.log("pairs", float(n), on_step=False, on_epoch=True, sync_dist=True, reduce_fx="sum",
                 batch_size=n)
        self._train_names = tuple(sorted(terms))
        return losses.total

    def _check_finite(self, loss: Tensor, batch_idx: int) -> None:
        """Raise on a non-finite loss; under DDP every process decides alike (the strategy's
        ``reduce_boolean_decision``), so all of them stop together."""
        value = loss.float().reshape(1)
        if self.trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(value).all()), all=True):
            return
        kind = "nan" if torch.isnan(value).any() else ("inf" if torch.isinf(value).any() else
                                                        "non-finite on another process")
        raise FloatingPointError(
            f"non-finite loss ({kind}) at epoch {self.current_epoch + 1}, step {self.global_step} "
            f"(batch {batch_idx}): the model diverged (or its weights or inputs are not finite); "
            f"lower the learning rate (training.lr={self.training_config.lr:g}) and check the "
            "inputs; training stopped before applying this step")

    def on_train_epoch_end(self) -> None:
        """Append the epoch's mean losses (Lightning's reduced epoch values, over every process's
        pairs), learning rate and throughput to :attr:`history` and the loggers. Under DDP, copy
        rank 0's buffers (BatchNorm statistics) to every rank, since DDP only broadcasts them at
        the start of a forward (Lightning has no hook for it)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - self._epoch_start
        if _distributed():
            for buffer in self.model.buffers():
                dist.broadcast(buffer, src=0)
        logged = self.trainer.callback_metrics  # the epoch values logged in training_step
        pairs = float(logged["pairs"]) if "pairs" in logged else 0.0
        entry = {"epoch": self.current_epoch + 1, "lr": self._epoch_lr,
                 **{k: float(logged[k]) for k in self._train_names if k in logged},
                 "pairs": int(pairs), "seconds": seconds, "pairs_per_s": pairs / max(seconds, 1e-9)}
        self.history.append(entry)
        self.log_dict({k: float(entry[k]) for k in ("lr", "seconds", "pairs_per_s")},
                      rank_zero_only=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep :attr:`history` in the checkpoint (plain floats: loads with ``weights_only``)."""
        checkpoint["mmfusion_history"] = [dict(e) for e in self.history]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = [dict(e) for e in checkpoint.get("mmfusion_history", [])]

    def _eval_step(self, batch: Mapping[str, Any]) -> None:
        inputs, available, labels = self._unpack(batch)
        out = self.model(inputs, available)
        probs = {"ensemble": out.probs.float()}
        probs.update({name: torch.softmax(z.float(), 1) for name, z in out.logits.items()})
        self._outputs.append({  # kept on the device until the gather: no host sync per step
            "probs": probs, "labels": labels,
            "indices": torch.as_tensor(batch["index"], device=self.device),
            "available": {m: v.to(torch.uint8) for m, v in out.available.items()},
        })
        self._groups.extend(str(g) for g in batch["patient_id"])

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_start(self) -> None:
        self._outputs, self._groups = [], []

    def on_test_epoch_start(self) -> None:
        self._outputs, self._groups = [], []

    def on_validation_epoch_end(self) -> None:
        self._finish_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation("test")

    # ------------------------------------------------------------------ evaluation

    def _finish_evaluation(self, prefix: str) -> None:
        outputs, groups = self._outputs, self._groups
        self._outputs, self._groups = [], []
        if self.trainer.sanity_checking:  # on every process alike: no collective is left waiting
            return
        # Checked after the gather, on every process alike (a NaN on one rank raises everywhere).
        predictions = gather_predictions(self, _concat(outputs), groups)
        if predictions is None:
            return
        self.predictions = predictions
        self.metrics = self.report(self.predictions)
        e = self.metrics["ensemble"]
        scalars = {f"{prefix}_{k}": float(e[k]) for k in ("accuracy", "auc_macro", "qwk") if e.get(k) is not None}
        self.log_dict(scalars, rank_zero_only=True)

    def calibrate(self, predictions: Predictions) -> dict[str, float]:
        """Fit one temperature per branch (and for the ensemble) on held-out ``predictions``.

        Fit on a validation split of *training* patients (never on the test patients); later
        reports then give each branch's ECE before and after scaling. The temperature acts on
        log-probabilities (for a branch these are its logits up to a constant; for the ensemble,
        the log of the averaged probabilities), so no prediction changes.

        Returns:
            Branch -> temperature (also kept in :attr:`temperatures`).
        """
        self.temperatures = {
            b: fit_temperature(np.log(np.clip(p, 1e-12, 1.0)), predictions.labels)
            for b, p in predictions.probs.items()
        }
        return self.temperatures

    def _calibration(self, probs: np.ndarray, labels: np.ndarray, branch: str) -> dict[str, float]:
        result = {"ece": expected_calibration_error(probs, labels)}
        if self.temperatures and branch in self.temperatures:
            t = self.temperatures[branch]
            scaled = apply_temperature(np.log(np.clip(probs, 1e-12, 1.0)), t)
            result.update(temperature=t, ece_scaled=expected_calibration_error(scaled, labels))
        return result

    def report(self, predictions: Predictions) -> dict[str, Any]:
        """The metrics of ``predictions``.

        Returns:
            ``{"ensemble": report, "branches": {name: report}, "patients": report,
            "calibration": {branch: ECE}, "by_availability": {pattern: report}, "n_pairs",
            "n_patients"}``: per-pair reports of the ensemble and every branch
            (:func:`~mmfusion.metrics.classification_report`, intervals resampling patients); the
            ensemble per patient (:func:`~mmfusion.metrics.patient_report`, the mean of a
            patient's view probabilities); the top-label expected calibration error of each
            branch; and, when some samples lack a modality, the ensemble per availability
            pattern (e.g. ``"us"`` for the pairs without SWE). After :meth:`calibrate`, each
            calibration entry also has ``temperature`` and ``ece_scaled``.
        """
        k = predictions.probs["ensemble"].shape[1]
        names = {"label_spec": self.labels} if self.labels is not None else {
            "class_names": self.class_names}
        options = dict(num_classes=k, **names, n_bootstrap=self.n_bootstrap, seed=self.seed)

        def one(probs: np.ndarray, rows: np.ndarray | slice = slice(None)) -> dict[str, Any]:
            return classification_report(probs[rows], predictions.labels[rows],
                                         groups=predictions.groups[rows], **options)

        ensemble = predictions.probs["ensemble"]
        result: dict[str, Any] = {
            "ensemble": one(ensemble),
            "branches": {b: one(p) for b, p in predictions.probs.items() if b != "ensemble"},
            "patients": patient_report(ensemble, predictions.labels, predictions.groups, **options),
            "calibration": {b: self._calibration(p, predictions.labels, b)
                            for b, p in predictions.probs.items()},
            "n_pairs": len(predictions),
            "n_patients": len(set(predictions.groups.tolist())),
        }
        patterns = _patterns(predictions.available)
        if len(set(patterns.tolist())) > 1:
            result["by_availability"] = {
                pattern: {"n_pairs": int((patterns == pattern).sum()), **one(ensemble, patterns == pattern)}
                for pattern in sorted(set(patterns.tolist()), key=lambda p: (-p.count("+"), p))
            }
        return result


def _patterns(available: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per sample, the given modalities joined by ``+`` (e.g. ``"us+swe"``, ``"us"``)."""
    names = list(available)
    n = len(next(iter(available.values()))) if names else 0
    return np.array(["+".join(m for m in names if available[m][i]) for i in range(n)], dtype=object)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _concat(outputs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """This process's step outputs joined along the samples (``None``: it had none)."""
    if not outputs:
        return None
    return {
        "probs": {k: torch.cat([o["probs"][k] for o in outputs]) for k in outputs[0]["probs"]},
        "labels": torch.cat([o["labels"] for o in outputs]),
        "indices": torch.cat([o["indices"] for o in outputs]),
        "available": {m: torch.cat([o["available"][m] for o in outputs]) for m in outputs[0]["available"]},
    }


def _resolve_labels(labels: LabelSpec | Mapping[str, Any] | None,
                    class_names: Sequence[str] | None,
                    model: MultiModalClassifier) -> LabelSpec | None:
    """``labels`` as a :class:`LabelSpec` (a checkpoint gives its dict), checked against
    ``class_names`` and the model's class count."""
    if labels is None:
        return None
    if isinstance(labels, Mapping):
        labels = LabelSpec.from_dict(labels)
    if not isinstance(labels, LabelSpec):
        raise ValueError(f"labels: expected a LabelSpec (mmfusion.labels), its dict or None, got "
                         f"{type(labels).__name__}")
    if class_names is not None and list(class_names) != list(labels.names):
        raise ValueError(f"class_names: not with labels= (the label spec names the classes "
                         f"{list(labels.names)}), got {list(class_names)}")
    k = getattr(getattr(model, "config", None), "num_classes", None)
    if isinstance(k, int) and k != labels.num_classes:
        raise ValueError(f"labels: the label spec has {labels.num_classes} classes "
                         f"{list(labels.names)}, the model predicts {k}")
    return labels


def _resolve_model(model: MultiModalClassifier | None,
                   config: ModelConfig | Mapping[str, Any] | None) -> MultiModalClassifier:
    """``model``, or the model built from ``config``; a ``config`` given with a model must be its
    own."""
    if config is not None and not isinstance(config, ModelConfig):
        if not isinstance(config, Mapping):
            raise ValueError(f"model_config: expected a ModelConfig or its dict, got "
                             f"{type(config).__name__}")
        config = config_from_dict(ModelConfig, config, "model_config")
    if model is None:
        if config is None:
            raise ValueError("model: expected a MultiModalClassifier or model_config (a "
                             "ModelConfig or its dict) to build one, got neither")
        from mmfusion.models.builder import build_model

        return build_model(config)
    if not isinstance(model, MultiModalClassifier):
        raise TypeError(f"model: expected a MultiModalClassifier, got {type(model).__name__}")
    own = getattr(model, "config", None)
    if config is not None and own != config:
        raise ValueError(f"model_config: {config.to_dict()} differs from the model's "
                         f"{own.to_dict() if isinstance(own, ModelConfig) else None}")
    return model
