"""A run's settings and the commands' options (jsonargparse, no torch: ``--help`` is fast)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from examples.liver_fibrosis.cli import EXTRA, CliError
from mmfusion.models import ModelConfig, TrainingConfig, config_from_dict, get_preset, list_models

PRESET_ALIASES = {"paper": "liver_fibrosis_paper", "quick": "liver_fibrosis_quick",
                  "texture": "liver_fibrosis_texture"}
#: Settings that may differ between a run and its ``--resume`` without changing its results.
RESUME_FREE = frozenset({"out", "resume", "overwrite", "workers", "progress", "eval_every", "config"})


@dataclass(frozen=True)
class RunSettings:
    """What a run needs beyond the model and its training recipe.

    Attributes:
        data: Manifest CSV (patient_id,us_path,swe_path,stage); none: the phantom in phantom_dir.
        out: Run folder.
        weights: Encoder initialisation, a local weights file, "imagenet" or none: one for every
            encoder, or modality -> one (--weights_us, --weights_swe set one).
        split: patient (no leakage); image (pairs split at random before augmentation: patients
            leak, warned); paper (every pair augmented first, then the images split at random, as
            the paper states: near-copies of test images leak, warned); site (leave-one-site-out
            over the manifest's site column: one model per site, in <out>/site-<name>).
        swe_input: What the SWE encoder sees: frame (the sector crop, as the paper), box (the
            colour box), box_mask (the sector, zero outside the box) or box_kpa (the colour box
            re-drawn on one reference scale through the legend and the swe_scale_kpa column).
        test_size: Held-out fraction of patients (or images).
        folds: 0 for one split, K >= 2 for patient K-fold cross-validation.
        fold: With folds, run only this fold (0-based); with --split site, only this site (its
            index in sorted order).
        seed: Seed of the split, initialisation, sampling and augmentation.
        val_size: Fraction of the training patients held out to fit temperature scaling (ECE
            before and after in metrics.json); 0: none.
        device: auto, cpu, cuda or cuda:N.
        devices: Processes (GPUs) per node; default: the torchrun/SLURM launch's, else 1.
        num_nodes: Nodes; default: the torchrun/SLURM launch's, else 1.
        amp: Autocast dtype: bf16, fp16 (CUDA, loss scaling) or off (fp32; TF32 off on CUDA).
        channels_last: Channels-last memory format.
        compile: torch.compile the model.
        workers: DataLoader worker processes.
        eval_every: Log the validation split's metrics every N epochs (needs --val_size; never
            used to select a model); 0: never.
        n_bootstrap: Bootstrap resamples (over patients) of the metric intervals.
        phantom_patients: Patients of the generated phantom.
        phantom_seed: Seed of the generated phantom.
        phantom_dir: Cache folder of the generated phantom.
        progress: Progress bars (default: only on a terminal).
        resume: Continue the run in --out from its last completed epoch (its settings are the
            defaults).
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


_SECTIONS = {"model": ModelConfig, "training": TrainingConfig, "run": RunSettings}
_OWNER = {f.name: name for name, cls in _SECTIONS.items() for f in fields(cls)}
_FLAGS = {f.name for cls in _SECTIONS.values() for f in fields(cls) if f.type in ("bool", "bool | None")}


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

    def to_yaml(self) -> str:
        """``config.yaml``: every setting, flat, as ``--config`` reads it (a rerun starts afresh)."""
        import yaml

        flat = {"preset": self.preset, **self.flat(), "resume": False, "overwrite": False}
        return yaml.safe_dump(flat, sort_keys=False)

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "config") -> RunConfig:
        """Read :meth:`to_json`'s form (unknown fields are an error naming them)."""
        try:
            return cls(str(data.get("preset", "")), config_from_dict(ModelConfig, data.get("model", {}), source),
                       config_from_dict(TrainingConfig, data.get("training", {}), source),
                       RunSettings(**data.get("run", {})))
        except (ValueError, TypeError) as err:
            raise CliError(f"{source}: not a run configuration of this example ({err})") from err

    def replace(self, **changes: Any) -> RunConfig:
        """Apply flat field changes, each to the section that owns the field."""
        parts = {name: {k: v for k, v in changes.items() if _OWNER[k] == name} for name in _SECTIONS}
        try:
            return RunConfig(self.preset, *(getattr(self, name).replace(**part) if part else getattr(self, name)
                                            for name, part in parts.items()))
        except ValueError as err:
            name, _, rest = str(err).partition(":")
            raise CliError(f"--{name.replace('_', '-')}:{rest}" if rest else f"--{err}") from err

    def flat(self) -> dict[str, Any]:
        """Every setting by its option name."""
        return {**self.model.to_dict(), **self.training.to_dict(), **dataclasses.asdict(self.run)}


def load_config(folder: str | Path) -> RunConfig:
    """The :class:`RunConfig` of a run folder."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise CliError(f"--checkpoint: {path.parent} holds no config.json; pass the --out folder of a training run")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, RecursionError, UnicodeDecodeError) as err:
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise CliError(f"{path}: not a readable JSON run configuration ({reason})") from err
    return RunConfig.from_json(data, source=str(path))


def load_run(checkpoint: str, device: Any) -> Any:
    """A finished run's configuration and model (:func:`examples.liver_fibrosis.runs.load_run`, which imports torch)."""
    from examples.liver_fibrosis.runs import load_run as load

    return load(checkpoint, device)


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


def normalise(argv: Sequence[str] | None) -> list[str]:
    """``--image-size`` -> ``--image_size`` (the option names are the settings' names)."""
    import sys

    parts = [a[2:].partition("=") if a.startswith("--") else None for a in (sys.argv[1:] if argv is None else argv)]
    return [a if p is None else "--" + p[0].replace("-", "_") + p[1] + p[2]
            for a, p in zip(sys.argv[1:] if argv is None else argv, parts, strict=True)]


def command_parser(prog: str, description: str) -> Any:
    """A jsonargparse parser with ``--config FILE.yaml`` and ``--print_config``."""
    try:
        from jsonargparse import ActionConfigFile, ArgumentParser
    except ImportError as err:
        raise CliError(f"missing package(s) ['jsonargparse'], needed by the example: {EXTRA}") from err
    parser = ArgumentParser(prog=prog, description=description, default_env=False)
    parser.add_argument("--config", action=ActionConfigFile,
                        help="YAML (or JSON) file of options, e.g. a run's config.yaml; options after it win")
    return parser


def flag(parser: Any, name: str, default: bool | None, help: str) -> None:
    """``--name`` / ``--no_name``."""
    from jsonargparse import ActionYesNo

    parser.add_argument(f"--{name}", action=ActionYesNo, default=default, help=help)


class Items:
    """An option type for a tuple: ``a,b`` on the command line, a list in a config file."""

    def __init__(self, kind: type) -> None:
        self.kind = kind

    def __call__(self, value: Any) -> tuple[Any, ...]:
        values = tuple(self.kind(v) for v in (value.split(",") if isinstance(value, str) else value) if str(v).strip())
        if not values or (self.kind is str and len(set(values)) != len(values)):
            raise argparse.ArgumentTypeError(f"expected distinct comma-separated values, got {value!r}")
        return values

    def __repr__(self) -> str:
        return f"{self.kind.__name__},{self.kind.__name__},..."


def _docs(cls: type) -> dict[str, str]:
    """Field -> help text from the class docstring's ``Attributes:`` section (Sphinx roles dropped)."""
    import inspect

    section = re.split(r"^\S", inspect.cleandoc(cls.__doc__ or "").split("Attributes:", 1)[-1], maxsplit=1, flags=re.M)[0]
    return {m.group(1): re.sub(r":\w+:`~?([^`]+)`", r"\1", " ".join(m.group(2).split())).replace("``", "")
            for m in re.finditer(r"^    (\w+): (.*?)(?=^    \w+: |\Z)", section, flags=re.M | re.S)}


def add_settings(parser: Any, base: RunConfig, skip: frozenset[str] = frozenset(), preset_help: str = "") -> None:
    """One option per setting (default: ``base``'s), plus ``--preset`` and the per-modality weights."""
    parser.add_argument("--preset", default=base.preset.removeprefix("liver_fibrosis_"),
                        help="base configuration: paper, quick, texture or a registry name" + preset_help)
    values = base.flat()
    for cls in _SECTIONS.values():
        helps, hints = _docs(cls), typing.get_type_hints(cls)
        for f in (f for f in fields(cls) if f.name not in skip):
            hint, default = hints[f.name], values[f.name]
            if f.name in _FLAGS:
                flag(parser, f.name, default, helps.get(f.name, ""))
                continue
            if typing.get_origin(hint) is tuple:
                hint, default = Items(typing.get_args(hint)[0]), tuple(default)
            parser.add_argument(f"--{f.name}", type=str | dict[str, str] | None if f.name == "weights" else hint,
                                default=default, help=helps.get(f.name))
    for m in () if "weights" in skip else ("us", "swe"):
        parser.add_argument(f"--weights_{m}", type=str | None, default=None, help=f"the {m.upper()} encoder's only")


def settings_of(namespace: Any, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The settings of a parsed command line (flat names), the weights merged into one mapping."""
    values = {k: namespace[k] for k in _OWNER if k not in skip and k in namespace}
    if "weights" in values:
        weights = values["weights"] or {}
        values["weights"] = {**({m: weights for m in ("us", "swe")} if isinstance(weights, str) else weights),
                             **{m: namespace[f"weights_{m}"] for m in ("us", "swe") if namespace[f"weights_{m}"]}}
    return values


def named(argv: list[str]) -> dict[str, Any]:
    """Settings named on a (normalised) command line or in its ``--config`` files -> raw values."""
    import yaml

    found: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        token, i = argv[i], i + 1
        key, eq, value = token[2:].partition("=")
        if not token.startswith("--"):
            continue
        if key.removeprefix("no_") in _FLAGS:
            found[key.removeprefix("no_")] = (value == "true") if eq else not key.startswith("no_")
            continue
        if not eq and i < len(argv):
            value, i = argv[i], i + 1
        try:  # a --config is a file or YAML text
            found.update(yaml.safe_load(value if "\n" in value else Path(value).read_text()) or {}
                         if key == "config" else {key: value})
        except (OSError, yaml.YAMLError, TypeError, ValueError):
            pass  # jsonargparse names the problem
    return found


def cuda_count(device: str, cheap: bool) -> int:
    """CUDA devices ``--device`` can use; ``cheap`` asks the driver (no torch import)."""
    from mmfusion.runs import cuda_device_count

    return 0 if device == "cpu" else cuda_device_count(use_torch=not cheap)


def default_preset(cuda: bool, has_weights: bool) -> tuple[str, str]:
    """``(preset, reason)`` for a run whose ``--preset`` was not given."""
    if not cuda:
        return "quick", "CUDA is not available, so the paper's ResNet-50 would take hours"
    if not has_weights:
        return "quick", ("CUDA is available but no --weights were given, and the paper preset "
                         "freezes stages 1-3 of pretrained encoders; pass --weights imagenet for it")
    return "paper", "CUDA is available and weights are given"


def validate(cfg: RunConfig) -> None:
    """Check what the dataclasses cannot: combinations, the devices here, the backbone name."""
    r, m = cfg.run, cfg.model
    for ok, message in [
        (0.0 < r.test_size < 1.0, "--test-size: expected a fraction in (0, 1), e.g. 0.2"),
        (r.folds == 0 or r.folds >= 2, "--folds: expected 0 (one split) or K >= 2"),
        (r.fold is None or r.split == "site" or 0 <= r.fold < r.folds,
         "--fold: expected 0 <= I < K (--folds K), or a site's index with --split site"),
        (r.fold is None or r.split != "site" or r.fold >= 0, "--fold: expected I >= 0 (the held-out site's index in sorted order)"),
        (r.workers >= 0, "--workers: expected >= 0"),
        (r.amp != "fp16" or r.device.startswith("cuda"),
         "--amp fp16: float16 autocast needs CUDA; use --amp bf16 or --amp off on CPU"),
        (r.n_bootstrap >= 0, "--n-bootstrap: expected >= 0"),
        (0.0 <= r.val_size <= 0.5, f"--val-size: expected a fraction in [0, 0.5] of the training patients (those "
                                   f"that --test-size {r.test_size} leaves), e.g. 0.1; got {r.val_size}"),
        (0 <= r.seed < 2**32, f"--seed: expected an int in [0, 2**32), got {r.seed}"),
        (r.devices is None or r.devices >= 1, f"--devices: expected an int >= 1, got {r.devices}"),
        (r.num_nodes is None or r.num_nodes >= 1, f"--num-nodes: expected an int >= 1, got {r.num_nodes}"),
        (r.eval_every >= 0, f"--eval-every: expected an int >= 0 (0: never), got {r.eval_every}"),
        (not (r.eval_every and not r.val_size), "--eval-every: logs the validation split's metrics, and there is "
         "none; pass --val-size (e.g. 0.1) or drop --eval-every (the test patients are evaluated once, at the end)"),
        (not (r.val_size and r.split == "paper"), "--val-size: not with --split paper (it splits images)"),
        (r.phantom_patients >= 5, "--phantom-patients: expected >= 5 (one per stage)"),
        (set(m.modalities) <= {"us", "swe"}, "--modalities: expected us, swe or us,swe"),
        (not (r.split != "patient" and r.folds), f"--folds: K-fold runs split by patient; drop --split {r.split}"),
        (set(r.weights) <= {"us", "swe"}, "--weights: modalities us and swe only"),
    ]:
        if not ok:
            raise CliError(message)
    if r.devices is not None and r.devices > 1:
        gpus = 0 if r.device == "cpu" else cuda_count("auto", False)
        kind, count = ("CUDA GPU(s)", gpus) if gpus or r.device.startswith("cuda") else ("CPU core(s)", len(os.sched_getaffinity(0)))
        if r.devices > count:
            raise CliError(f"--devices: this machine has {count} {kind}, got --devices {r.devices} "
                           f"(one process each); use --devices {max(1, count)} or fewer")
    import timm

    if not timm.is_model(m.backbone.split(".")[0]):
        from mmfusion.nn.encoder import similar_backbones

        close = similar_backbones(m.backbone)
        raise CliError(f"--backbone: unknown timm model {m.backbone!r}" + (f"; similar names: {', '.join(close)}"
                       if close else "") + " (e.g. resnet50, resnet18, resnet10t)")
