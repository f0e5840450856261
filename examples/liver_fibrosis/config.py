"""Training configuration: the ``paper`` and ``quick`` presets, command-line overrides, JSON.

A run is fully described by one :class:`TrainConfig`, written to ``config.json`` in the run folder;
``python -m examples.liver_fibrosis.train --config runs/x/config.json`` reruns it. Presets fill in
every field; an option given on the command line wins over the preset.

* ``paper`` (III.E, IV.B): ResNet-50, 224 px, Adam lr 7e-5, weight decay 1e-3, batch 4, 40 epochs,
  stem and stages 1-3 frozen, the paper's offline augmentation (flip and shifts, balanced stages).
* ``quick``: a configuration that trains on a 2-core CPU in a few minutes on the default phantom and
  still learns: a small timm ResNet trained from scratch (no ImageNet weights, so nothing is frozen),
  small images, big batches, a cosine schedule and pooled single-modal heads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from examples.liver_fibrosis.cli import CliError

PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(
        backbone="resnet50",
        image_size=224,
        epochs=40,
        batch_size=4,
        lr=7e-5,
        weight_decay=1e-3,
        schedule="constant",
        frozen_stages=3,
        augment="paper",
        hidden=[384, 128],
        head_pool="flatten",
        embed_dim=256,
    ),
    "quick": dict(
        backbone="resnet10t",
        image_size=96,
        epochs=8,
        batch_size=32,
        lr=1e-3,
        weight_decay=1e-4,
        schedule="cosine",
        frozen_stages=0,
        augment="online",
        hidden=[64],
        head_pool="avg",
        embed_dim=64,
    ),
}
"""Preset name -> field values. Fields not named here take the :class:`TrainConfig` defaults."""

#: Fields that may differ between a run and its ``--resume`` without changing its results.
RESUME_FREE = frozenset({"out", "resume", "overwrite", "workers", "progress", "eval_every"})


@dataclass
class TrainConfig:
    """Everything needed to rerun one training run (written to ``config.json``).

    Attributes:
        preset: ``"paper"`` or ``"quick"`` (the values the overrides were applied to).
        data: Manifest CSV; ``None`` generates the phantom into ``phantom_dir`` and uses it.
        out: Run folder.
        modalities: Modalities of the model (Table I: ``["us"]``, ``["swe"]``, ``["us", "swe"]``).
        fusion: ``"attention"`` (paper) or ``"late"``.
        loss: ``"multi"`` (ensemble, ``L_total``) or ``"single"`` (``L_joint`` only).
        backbone: timm model name of every encoder.
        image_size: Input side in pixels.
        epochs: Training epochs.
        batch_size: Pairs per step (per process under torchrun).
        lr: Adam learning rate.
        weight_decay: Adam (L2) weight decay.
        schedule: ``"constant"`` or ``"cosine"`` (per epoch, to 1 % of ``lr``).
        frozen_stages: Encoder stages frozen (stem included when > 0).
        weights: Modality -> local ImageNet weights file or ``None``.
        hidden: Hidden widths of the single-modal classifiers.
        head_pool: ``"flatten"`` (paper) or ``"avg"`` single-modal heads.
        embed_dim: Size of each modality vector ``f_m``.
        alpha: Consistency-loss weight.
        modality_dropout: Per-sample probability of hiding a modality during training.
        augment: ``"paper"`` (offline balanced expansion + online flips/shifts), ``"online"``
            (random flips/shifts only) or ``"none"``.
        split: ``"patient"`` (default, no leakage) or ``"image"`` (the paper's, leaks; warned).
        test_size: Held-out fraction.
        folds: ``0`` for one split, ``K >= 2`` for patient K-fold cross-validation.
        fold: With ``folds``, train only this fold (0-based); ``None`` trains all of them.
        seed: Seed of the split, initialisation, sampling and augmentation.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        amp: ``"bf16"``, ``"fp16"`` or ``"off"`` (autocast dtype; CUDA only for fp16).
        channels_last: Use the channels-last memory format.
        compile: Wrap the model with :func:`torch.compile`.
        workers: DataLoader worker processes.
        eval_every: Evaluate on the test split every N epochs for the log only (never used for
            model selection); 0 = only at the end.
        n_bootstrap: Bootstrap resamples for the confidence intervals.
        phantom_patients: Patients of the generated phantom.
        phantom_seed: Seed of the generated phantom.
        phantom_dir: Cache folder of the generated phantom.
        resume: Continue the run in ``out`` from its last completed epoch.
        overwrite: Replace a previous run in ``out``.
        progress: Show progress bars (``None``: only when stderr is a terminal).
    """

    preset: str = "quick"
    data: str | None = None
    out: str = "runs/liver_fibrosis"
    modalities: list[str] = field(default_factory=lambda: ["us", "swe"])
    fusion: str = "attention"
    loss: str = "multi"
    backbone: str = "resnet10t"
    image_size: int = 96
    epochs: int = 8
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    frozen_stages: int = 0
    weights: dict[str, str | None] = field(default_factory=dict)
    hidden: list[int] = field(default_factory=lambda: [64])
    head_pool: str = "avg"
    embed_dim: int = 64
    alpha: float = 0.2
    modality_dropout: float = 0.0
    augment: str = "online"
    split: str = "patient"
    test_size: float = 0.2
    folds: int = 0
    fold: int | None = None
    seed: int = 0
    device: str = "auto"
    amp: str = "off"
    channels_last: bool = False
    compile: bool = False
    workers: int = 0
    eval_every: int = 0
    n_bootstrap: int = 1000
    phantom_patients: int = 250
    phantom_seed: int = 0
    phantom_dir: str = "data/phantom"
    resume: bool = False
    overwrite: bool = False
    progress: bool | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from :meth:`to_json` output; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CliError(f"{source}: unknown field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`examples.liver_fibrosis.model.build_model`."""
        return dict(
            modalities=tuple(self.modalities),
            fusion=self.fusion,
            loss=self.loss,
            backbone=self.backbone,
            image_size=self.image_size,
            frozen_stages=self.frozen_stages,
            weights={m: self.weights.get(m) for m in self.modalities},
            hidden=tuple(self.hidden),
            head_pool=self.head_pool,
            embed_dim=self.embed_dim,
            alpha=self.alpha,
            modality_dropout=self.modality_dropout,
        )


def load_config(path: str | Path) -> TrainConfig:
    """Read a ``config.json`` written by a run.

    Raises:
        CliError: The file is missing or is not a run configuration.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise CliError(
            f"{path}: no such file; pass the folder of a finished run (it holds config.json)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CliError(f"{path}: not a readable JSON run configuration ({err})") from err
    if not isinstance(data, dict):
        raise CliError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return TrainConfig.from_json(data, source=str(path))


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write ``cfg`` as indented JSON (atomically)."""
    from examples.liver_fibrosis.checkpoint import atomic_write_text

    atomic_write_text(Path(path), json.dumps(cfg.to_json(), indent=2) + "\n")


def parse_modalities(text: str) -> list[str]:
    """``--modalities``: distinct comma-separated names."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"expected distinct comma-separated names such as us,swe; got {text!r}"
        )
    return names


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``ablation`` (all default to ``None``: take the preset's)."""
    p = parser
    p.add_argument("--data", metavar="MANIFEST.csv",
                   help="manifest of image pairs (patient_id,us_path,swe_path,stage); omitted: "
                        "generate the phantom into --phantom-dir and use it")
    p.add_argument("--preset", metavar="{" + ",".join(sorted(PRESETS)) + "}",
                   help="base configuration (default: paper where CUDA is available, else quick)")
    p.add_argument("--backbone", help="timm model name of the encoders")
    p.add_argument("--image-size", type=int, help="input side in pixels")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="pairs per step (per process)")
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=["constant", "cosine"])
    p.add_argument("--weights", metavar="PATH",
                   help="local ImageNet weights file for every encoder (.safetensors/.pth)")
    p.add_argument("--weights-us", metavar="PATH", help="weights file for the US encoder only")
    p.add_argument("--weights-swe", metavar="PATH", help="weights file for the SWE encoder only")
    p.add_argument("--frozen-stages", type=int, help="encoder stages frozen (paper: 3)")
    p.add_argument("--hidden", type=_ints, help="hidden widths of the single-modal heads, e.g. 384,128")
    p.add_argument("--head-pool", choices=["flatten", "avg"])
    p.add_argument("--embed-dim", type=int)
    p.add_argument("--alpha", type=float, help="consistency-loss weight (paper: 0.2)")
    p.add_argument("--modality-dropout", type=float, metavar="P",
                   help="probability of hiding a modality per training sample (default 0)")
    p.add_argument("--augment", choices=["paper", "online", "none"])
    p.add_argument("--split", choices=["patient", "image"],
                   help="patient (default) or image (the paper's leaky split; warned)")
    p.add_argument("--test-size", type=float)
    p.add_argument("--folds", type=int, metavar="K", help="patient K-fold cross-validation")
    p.add_argument("--fold", type=int, metavar="I", help="with --folds, run only fold I (0-based)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--amp", choices=["bf16", "fp16", "off"],
                   help="autocast dtype (default: bf16 on CUDA, off on CPU)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory format (default: on for CUDA)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model")
    p.add_argument("--workers", type=int, help="DataLoader workers (default: 0 on CPU)")
    p.add_argument("--eval-every", type=int, metavar="N",
                   help="log test metrics every N epochs (never used for model selection)")
    p.add_argument("--n-bootstrap", type=int)
    p.add_argument("--phantom-patients", type=int)
    p.add_argument("--phantom-seed", type=int)
    p.add_argument("--phantom-dir", help="cache folder of the generated phantom (data/phantom)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: only on a terminal)")


#: argparse destination -> TrainConfig field, for the options that map one to one.
_DIRECT = (
    "data", "backbone", "image_size", "epochs", "batch_size", "lr", "weight_decay", "schedule",
    "frozen_stages", "hidden", "head_pool", "embed_dim", "alpha", "modality_dropout", "augment",
    "split", "test_size", "folds", "fold", "seed", "device", "amp", "channels_last", "compile", "workers",
    "eval_every", "n_bootstrap", "phantom_patients", "phantom_seed", "phantom_dir", "progress",
    "modalities", "fusion", "loss", "out", "resume", "overwrite",
)


def explicit_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given on the command line (options left at ``None`` are not)."""
    values = {k: getattr(args, k) for k in _DIRECT if getattr(args, k, None) is not None}
    weights = {}
    if getattr(args, "weights", None):
        weights = {m: args.weights for m in ("us", "swe")}
    for m in ("us", "swe"):
        if getattr(args, f"weights_{m}", None):
            weights[m] = getattr(args, f"weights_{m}")
    if weights:
        values["weights"] = weights
    return values


def preset_config(preset: str, overrides: dict[str, Any]) -> TrainConfig:
    """Apply ``overrides`` to the preset ``preset``.

    Raises:
        CliError: Unknown preset.
    """
    if preset not in PRESETS:
        raise CliError(f"--preset: unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return TrainConfig(preset=preset, **{**PRESETS[preset], **overrides})


def validate(cfg: TrainConfig) -> None:
    """Check value ranges; raise :class:`CliError` naming the option and the fix."""
    checks = [
        (cfg.epochs >= 1, "--epochs: expected >= 1"),
        (cfg.batch_size >= 1, "--batch-size: expected >= 1"),
        (cfg.lr > 0, "--lr: expected > 0"),
        (cfg.weight_decay >= 0, "--weight-decay: expected >= 0"),
        (cfg.image_size >= 32, "--image-size: expected >= 32 pixels"),
        (0.0 < cfg.test_size < 1.0, "--test-size: expected a fraction in (0, 1), e.g. 0.2"),
        (cfg.folds == 0 or cfg.folds >= 2, "--folds: expected 0 (one split) or K >= 2"),
        (cfg.fold is None or 0 <= cfg.fold < cfg.folds, "--fold: expected 0 <= I < K (--folds K)"),
        (0.0 <= cfg.modality_dropout < 1.0, "--modality-dropout: expected a probability in [0, 1)"),
        (cfg.workers >= 0, "--workers: expected >= 0"),
        (cfg.amp != "fp16" or cfg.device.startswith("cuda"),
         "--amp fp16: float16 autocast needs CUDA; use --amp bf16 or --amp off on CPU"),
        (cfg.frozen_stages >= 0, "--frozen-stages: expected >= 0"),
        (cfg.n_bootstrap >= 0, "--n-bootstrap: expected >= 0"),
        (cfg.phantom_patients >= 5, "--phantom-patients: expected >= 5 (one per stage)"),
        (set(cfg.modalities) <= {"us", "swe"}, "--modalities: expected us, swe or us,swe"),
        (cfg.fusion in ("attention", "late"), "--fusion: expected attention or late"),
        (cfg.loss in ("multi", "single"), "--loss: expected multi or single"),
    ]
    for ok, message in checks:
        if not ok:
            raise CliError(message)
    import timm

    if not timm.is_model(cfg.backbone.split(".")[0]):
        close = timm.list_models(f"*{cfg.backbone[:5]}*")[:6]
        raise CliError(
            f"--backbone: unknown timm model {cfg.backbone!r}"
            + (f"; similar names: {', '.join(close)}" if close else "")
            + " (e.g. resnet50, resnet18, resnet10t)"
        )
    if len(cfg.modalities) == 1 and cfg.modality_dropout > 0:
        raise CliError("--modality-dropout: needs two modalities (--modalities us,swe)")
