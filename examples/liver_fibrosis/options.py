"""A run's settings: the registry preset's model and training configs, plus the run's own settings.

One source of truth per fact: the architecture and training values are
:class:`mmfusion.models.ModelConfig` / :class:`mmfusion.models.TrainingConfig` (the paper's values
are their defaults; ``--preset`` picks a registered instance); what only a run needs (data, split,
device, precision...) is :class:`RunSettings` below. The command-line options are generated from
these dataclasses' fields and their docstrings, so a field is written once.

``config.json`` in a run folder holds all three (``{"model": ..., "training": ..., "run": ...}``)
and is also what :func:`mmfusion.models.from_pretrained` reads.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from examples.liver_fibrosis.cli import CliError
from mmfusion.models import ModelConfig, TrainingConfig, config_from_dict, get_preset, list_models

PRESET_ALIASES = {"paper": "liver_fibrosis_paper", "quick": "liver_fibrosis_quick",
                  "texture": "liver_fibrosis_texture"}
"""Short ``--preset`` names -> registry names (any registered name works too)."""

#: Settings that may differ between a run and its ``--resume`` without changing its results.
RESUME_FREE = frozenset({"out", "resume", "overwrite", "workers", "progress", "eval_every"})


@dataclass(frozen=True)
class RunSettings:
    """What a run needs beyond the model and its training recipe.

    Attributes:
        data: Manifest CSV (patient_id,us_path,swe_path,stage); omitted: generate the phantom into
            phantom_dir and use it.
        out: Run folder.
        weights: Modality -> encoder initialisation: a local weights file, "imagenet" or none.
        split: patient (default, no leakage); image (pairs split at random before augmentation:
            patients leak, warned); paper (the paper's protocol as stated: every pair augmented
            first, then the augmented images split at random; near-copies of test images leak
            into training, warned); site (leave-one-site-out: one model per site of the
            manifest's site column, trained on the other sites and tested on it, each in
            <out>/site-<name>).
        swe_input: What the SWE encoder sees: frame (the sector crop, as the paper), box (only the
            elastography colour box: no B-mode texture around it), box_mask (the sector crop,
            zero outside the box) or box_kpa (the colour box re-drawn on one reference colour
            scale through the frame's legend and the manifest's swe_scale_kpa column, so that
            scanners with other colour scales give the same input).
        test_size: Held-out fraction of patients (or images).
        folds: 0 for one split, K >= 2 for patient K-fold cross-validation.
        fold: With folds, run only this fold (0-based); with --split site, only this site (its
            0-based index in sorted order).
        seed: Seed of the split, initialisation, sampling and augmentation.
        val_size: Fraction of the training patients held out to fit temperature scaling (ECE
            before and after in metrics.json); 0: no calibration, every training patient trains.
        device: auto, cpu, cuda or cuda:N.
        devices: Processes (GPUs) per node; default: the torchrun/SLURM launch's, else 1.
        num_nodes: Nodes; default: the torchrun/SLURM launch's, else 1.
        amp: Autocast dtype: bf16, fp16 (CUDA, with loss scaling) or off (fp32; TF32 off on CUDA).
        channels_last: Channels-last memory format (default on CUDA).
        compile: torch.compile the model.
        workers: DataLoader worker processes (default 0 on CPU, 4 on CUDA).
        eval_every: Log the validation split's metrics every N epochs (needs --val-size; log
            only; never used for model selection; the test patients are evaluated once, at the
            end); 0: never.
        n_bootstrap: Bootstrap resamples (over patients) of the metric intervals.
        phantom_patients: Patients of the generated phantom.
        phantom_seed: Seed of the generated phantom.
        phantom_dir: Cache folder of the generated phantom.
        progress: Progress bars (default: only on a terminal).
        resume: Continue the run in --out from its last completed epoch.
        overwrite: Replace a previous run in --out.
    """

    data: str | None = None
    out: str = "runs/liver_fibrosis"
    weights: dict[str, str] = field(default_factory=dict)
    split: Literal["patient", "image", "paper", "site"] = "patient"
    swe_input: Literal["frame", "box", "box_mask", "box_kpa"] = "frame"
    test_size: float = 0.2
    folds: int = 0
    fold: int | None = None
    seed: int = 0
    val_size: float = 0.0
    device: str = "auto"
    devices: int | None = None
    num_nodes: int | None = None
    amp: Literal["bf16", "fp16", "off"] = "off"
    channels_last: bool = False
    compile: bool = False
    workers: int = 0
    eval_every: int = 0
    n_bootstrap: int = 1000
    phantom_patients: int = 250
    phantom_seed: int = 0
    phantom_dir: str = "data/phantom"
    progress: bool | None = None
    resume: bool = False
    overwrite: bool = False

    def replace(self, **changes: Any) -> RunSettings:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run: the preset it started from and the three sections."""

    preset: str
    model: ModelConfig
    training: TrainingConfig
    run: RunSettings

    def to_json(self) -> dict[str, Any]:
        """The ``config.json`` sections (``save_pretrained`` adds the format and ``model``)."""
        return {"preset": self.preset, "training": self.training.to_dict(),
                "run": dataclasses.asdict(self.run), "model": self.model.to_dict()}

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "config") -> RunConfig:
        """Read :meth:`to_json`'s form (unknown fields are an error naming them)."""
        try:
            known = {f.name for f in fields(RunSettings)}
            run = data.get("run", {})
            unknown = sorted(set(run) - known)
            if unknown:
                raise ValueError(f"{source}: unknown run setting(s) {unknown}")
            return cls(
                preset=str(data.get("preset", "")),
                model=config_from_dict(ModelConfig, data.get("model", {}), source),
                training=config_from_dict(TrainingConfig, data.get("training", {}), source),
                run=RunSettings(**run),
            )
        except (ValueError, TypeError) as err:
            raise CliError(f"{source}: not a run configuration of this example ({err})") from err

    def replace(self, **changes: Any) -> RunConfig:
        """Apply flat field changes, each to the section that owns the field."""
        sections: dict[str, dict[str, Any]] = {"model": {}, "training": {}, "run": {}}
        for key, value in changes.items():
            sections[section_of(key)][key] = value
        try:
            return RunConfig(
                self.preset,
                self.model.replace(**sections["model"]) if sections["model"] else self.model,
                self.training.replace(**sections["training"]) if sections["training"] else self.training,
                self.run.replace(**sections["run"]),
            )
        except ValueError as err:
            raise CliError(f"--{_flag_of(str(err))}") from err


_SECTIONS = {"model": ModelConfig, "training": TrainingConfig, "run": RunSettings}
_OWNER = {f.name: name for name, cls in _SECTIONS.items() for f in fields(cls)}
_SPECIAL = {"weights"}  # --weights, --weights-us, --weights-swe


def section_of(name: str) -> str:
    """``"model"``, ``"training"`` or ``"run"``: the section that owns setting ``name``."""
    return _OWNER[name]


def _flag_of(message: str) -> str:
    """Turn ``"image_size: expected ..."`` into ``"image-size: expected ..."``."""
    name, _, rest = message.partition(":")
    return f"{name.replace('_', '-')}:{rest}" if rest else message


def resolve_preset(name: str | None) -> str:
    """Registry name of ``--preset`` (short aliases accepted)."""
    full = PRESET_ALIASES.get(name or "", name or "")
    if full not in list_models():
        raise CliError(f"--preset: unknown preset {name!r}; choose paper, quick, texture or one of "
                       f"{', '.join(list_models('liver_fibrosis_*'))}")
    return full


def preset_config(preset: str, overrides: dict[str, Any]) -> RunConfig:
    """The registered preset with ``overrides`` (flat setting names) applied."""
    full = resolve_preset(preset)
    base = get_preset(full)
    return RunConfig(full, base.model, base.training, RunSettings()).replace(**overrides)


# --------------------------------------------------------------------------- command line


def _docs(cls: type) -> dict[str, str]:
    """Field -> help text from the class docstring's ``Attributes:`` section."""
    doc = inspect.getdoc(cls) or ""
    section = doc.split("Attributes:", 1)[-1]
    section = re.split(r"^\S", section, maxsplit=1, flags=re.M)[0]  # up to the next section
    helps: dict[str, str] = {}
    for match in re.finditer(r"^    (\w+): (.*?)(?=^    \w+: |\Z)", section, flags=re.M | re.S):
        helps[match.group(1)] = " ".join(match.group(2).split()).replace("%", "%%")  # argparse
    return helps


def _csv(kind: type) -> Any:
    def parse(text: str) -> tuple[Any, ...]:
        try:
            values = tuple(kind(v.strip()) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None
        if not values or len(set(values)) != len(values) and kind is str:
            raise argparse.ArgumentTypeError(f"expected distinct comma-separated values, got {text!r}")
        return values
    return parse


def _json_object(text: str) -> dict[str, Any]:
    """A JSON object given on the command line (``--encoders '{"swe": {"name": "timm"}}'``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({err})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object {{...}}, got {text!r}")
    return value


def _add_field(parser: argparse.ArgumentParser, name: str, hint: Any, helps: dict[str, str]) -> None:
    flag = "--" + name.replace("_", "-")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):  # X | None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    kw: dict[str, Any] = {"help": helps.get(name), "default": None, "dest": name}
    if origin is Literal:
        kw["choices"] = list(args)
    elif hint is bool:
        kw["action"] = argparse.BooleanOptionalAction
    elif origin is tuple:
        kw["type"], kw["metavar"] = _csv(args[0]), "A,B"
    elif origin is dict:  # fusion_kwargs, encoders
        kw["type"], kw["metavar"] = _json_object, "JSON"
    elif hint in (int, float, str):
        kw["type"] = hint
    else:
        return
    parser.add_argument(flag, **kw)


def add_settings_arguments(parser: argparse.ArgumentParser, skip: frozenset[str] = frozenset()) -> None:
    """One option per field of ModelConfig, TrainingConfig and RunSettings (all default to
    ``None``: take the preset's value), plus ``--preset`` and the per-modality weights."""
    parser.add_argument("--preset", help="base configuration: paper, quick or texture (default: paper where "
                        "CUDA is available and weights are given, else quick), or a registry name")
    for cls in _SECTIONS.values():
        helps = _docs(cls)
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if f.name not in skip and f.name not in _SPECIAL:
                _add_field(parser, f.name, hints[f.name], helps)
    parser.add_argument("--weights", metavar="PATH|imagenet",
                        help="encoder initialisation for every encoder: a local weights file "
                             "(.safetensors/.pth) or imagenet (timm's, via the Hugging Face cache)")
    parser.add_argument("--weights-us", metavar="PATH|imagenet", help="the US encoder's only")
    parser.add_argument("--weights-swe", metavar="PATH|imagenet", help="the SWE encoder's only")


def explicit_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (options left at ``None`` are not)."""
    values = {k: getattr(args, k) for k in _OWNER if k not in _SPECIAL and getattr(args, k, None) is not None}
    weights: dict[str, str] = {}
    if getattr(args, "weights", None):
        weights = {m: args.weights for m in ("us", "swe")}
    for m in ("us", "swe"):
        if getattr(args, f"weights_{m}", None):
            weights[m] = getattr(args, f"weights_{m}")
    if weights:
        values["weights"] = weights
    return values


def validate(cfg: RunConfig) -> None:
    """Check what the dataclasses cannot: combinations and the backbone name."""
    r, m = cfg.run, cfg.model
    checks = [
        (0.0 < r.test_size < 1.0, "--test-size: expected a fraction in (0, 1), e.g. 0.2"),
        (r.folds == 0 or r.folds >= 2, "--folds: expected 0 (one split) or K >= 2"),
        (r.fold is None or r.split == "site" or 0 <= r.fold < r.folds,
         "--fold: expected 0 <= I < K (--folds K), or a site's index with --split site"),
        (r.fold is None or r.split != "site" or r.fold >= 0,
         "--fold: expected I >= 0 (the held-out site's index in sorted order)"),
        (r.workers >= 0, "--workers: expected >= 0"),
        (r.amp != "fp16" or r.device.startswith("cuda"),
         "--amp fp16: float16 autocast needs CUDA; use --amp bf16 or --amp off on CPU"),
        (r.n_bootstrap >= 0, "--n-bootstrap: expected >= 0"),
        (0.0 <= r.val_size <= 0.5,
         f"--val-size: expected a fraction in [0, 0.5] of the training patients (those that "
         f"--test-size {r.test_size} leaves), e.g. 0.1; got {r.val_size}"),
        (0 <= r.seed < 2**32, f"--seed: expected an int in [0, 2**32), got {r.seed}"),
        (r.devices is None or r.devices >= 1, f"--devices: expected an int >= 1, got {r.devices}"),
        (r.num_nodes is None or r.num_nodes >= 1,
         f"--num-nodes: expected an int >= 1, got {r.num_nodes}"),
        (r.eval_every >= 0, f"--eval-every: expected an int >= 0 (0: never), got {r.eval_every}"),
        (not (r.eval_every and not r.val_size),
         "--eval-every: logs the validation split's metrics, and there is none; pass --val-size "
         "(e.g. 0.1) or drop --eval-every (the test patients are evaluated once, at the end)"),
        (not (r.val_size and r.split == "paper"), "--val-size: not with --split paper (it splits images)"),
        (r.phantom_patients >= 5, "--phantom-patients: expected >= 5 (one per stage)"),
        (set(m.modalities) <= {"us", "swe"}, "--modalities: expected us, swe or us,swe"),
        (not (r.split != "patient" and r.folds),
         f"--folds: K-fold runs split by patient; drop --split {r.split}"),
        (set(r.weights) <= {"us", "swe"}, "--weights: modalities us and swe only"),
    ]
    for ok, message in checks:
        if not ok:
            raise CliError(message)
    _check_devices(r)
    import timm

    if not timm.is_model(m.backbone.split(".")[0]):
        from mmfusion.nn.encoder import similar_backbones

        close = similar_backbones(m.backbone)
        raise CliError(f"--backbone: unknown timm model {m.backbone!r}"
                       + (f"; similar names: {', '.join(close)}" if close else "")
                       + " (e.g. resnet50, resnet18, resnet10t)")


def available_devices(device: str) -> tuple[str, int]:
    """``(kind, count)`` the machine offers for ``--device``: CUDA GPUs, or usable CPU cores."""
    import os

    import torch

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        return "CUDA GPU(s)", torch.cuda.device_count()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return "CPU core(s)", int(cores or 1)


def _check_devices(r: RunSettings) -> None:
    """``--devices`` (processes per node) must not exceed what this machine has."""
    if r.devices is None or r.devices <= 1:
        return
    kind, count = available_devices(r.device)
    if r.devices > count:
        raise CliError(f"--devices: this machine has {count} {kind}, got --devices {r.devices} "
                       f"(one process each); use --devices {max(1, count)} or fewer")
