"""The run folder, shared by every entry point: outputs, the occupied-folder rule, data, loading.

A run folder holds ``config.json`` (the run's settings and the model configuration, readable by
:func:`mmfusion.models.from_pretrained`), ``model.safetensors``, ``metrics.json``, ``log.jsonl``,
plots, ``attention/`` overlays, ``checkpoints/`` (Lightning's resume state) and ``logs/`` (CSV,
and TensorBoard where installed). Nothing is overwritten without ``--overwrite``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from examples.liver_fibrosis.cli import CliError, say
from examples.liver_fibrosis.options import RunConfig
from mmfusion.data import Manifest, read_manifest
from mmfusion.files import atomic_write_text, occupied
from mmfusion.models import FusionClassifier, from_pretrained, save_pretrained

#: Files and folders a training run writes; ``--overwrite`` removes exactly these.
RUN_OUTPUTS = ("config.json", "metrics.json", "log.jsonl", "confusion_matrix.png", "roc.png",
               "reliability", "model.safetensors", "checkpoints", "logs", "attention",
               "missing_modality.md", "missing_modality.json", "fold-*", "site-*")


def require(*packages: str) -> None:
    """Fail before any work when an optional package the command needs is missing.

    Raises:
        CliError: Naming the missing packages and the install command.
    """
    import importlib.util

    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise CliError(f"missing package(s) {missing}: pip install \"mmfusion[example,lightning]\"")


def write_json(path: Path, data: Any) -> None:
    """Indented JSON, written atomically."""
    atomic_write_text(Path(path), json.dumps(data, indent=2) + "\n")


def check_free(out: Path, names: tuple[str, ...], flag_ok: bool, what: str = "a run") -> list[str]:
    """The one rule for output folders: refuse to write over ``names`` unless allowed.

    Returns:
        The names found (to remove when overwriting).

    Raises:
        CliError: ``out`` is a file, or holds outputs and ``flag_ok`` is false.
    """
    if out.exists() and not out.is_dir():
        raise CliError(f"--out: {out} exists and is not a folder; choose another --out")
    taken = occupied(out, names)
    if taken and not flag_ok:
        raise CliError(f"--out: {out} already holds {what} ({', '.join(taken[:4])}); pass "
                       "--overwrite to replace it (or --resume for a training run), or choose another --out")
    return taken


def remove(out: Path, names: list[str]) -> None:
    """Delete the listed outputs of ``out`` (files or folders)."""
    for name in names:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def save_run_model(model: FusionClassifier, cfg: RunConfig, out: Path) -> None:
    """``config.json`` + ``model.safetensors`` of a run (the model config plus the run's settings)."""
    save_pretrained(model, out, overwrite=True, extra=cfg.to_json())


def load_config(folder: str | Path) -> RunConfig:
    """The :class:`RunConfig` of a run folder."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise CliError(f"--checkpoint: {path.parent} holds no config.json; pass the --out folder of a training run")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CliError(f"{path}: not a readable JSON run configuration ({err})") from err
    return RunConfig.from_json(data, source=str(path))


def load_run(checkpoint: str | Path, device: torch.device) -> tuple[RunConfig, FusionClassifier]:
    """A finished run's configuration and model (weights from the run; nothing else is loaded)."""
    folder = Path(checkpoint)
    if not folder.is_dir():
        raise CliError(f"--checkpoint: {folder} is not a folder; pass the --out folder of a training run")
    cfg = load_config(folder)
    if not (folder / "model.safetensors").is_file():
        parts = sorted([*folder.glob("fold-*"), *folder.glob("site-*")])
        hint = (f" (a K-fold or per-site run: pass one of its folders, e.g. {parts[0]})" if parts
                else " (training unfinished?)")
        raise CliError(f"--checkpoint: {folder} holds no model.safetensors{hint}")
    try:
        model = from_pretrained(folder, map_location=device)
    except ValueError as err:
        raise CliError(f"--checkpoint: {err}") from err
    return cfg, model


def is_phantom(cfg: RunConfig) -> bool:
    """True when the run uses the generated phantom (no ``--data``)."""
    return not cfg.run.data


def prepare_phantom(cfg: RunConfig) -> Path:
    """Generate the phantom into ``phantom_dir`` unless it is already there; its manifest path.

    Raises:
        CliError: The folder holds a phantom made with other parameters or another generator.
    """
    from mmfusion.liver import make_phantom_dataset

    root = Path(cfg.run.phantom_dir)
    if not (root / "manifest.csv").is_file():
        say(f"generating the liver phantom ({cfg.run.phantom_patients} patients, seed "
            f"{cfg.run.phantom_seed}) into {root} (once; about 1 min on 2 cores)")
    try:
        return make_phantom_dataset(root, cfg.run.phantom_patients, cfg.run.phantom_seed, workers=2)
    except FileExistsError as err:
        reason = str(err).split(" holds a phantom made with ", 1)[-1].split("; pass ", 1)[0]
        raise CliError(f"--phantom-dir: {root} holds a phantom made with {reason}; delete the folder "
                       "(it is regenerated) or pass another --phantom-dir") from err


def manifest_path(cfg: RunConfig) -> Path:
    """The manifest a run reads: ``--data``, or the phantom's (which must already exist)."""
    if cfg.run.data:
        path = Path(cfg.run.data)
        if not path.is_file():
            raise CliError(f"--data: manifest {path} does not exist; pass the path of a CSV with "
                           "columns patient_id,us_path,swe_path,stage (or omit --data for the phantom)")
        return path
    return Path(cfg.run.phantom_dir) / "manifest.csv"


def load_manifest(cfg: RunConfig, verify: str = "decode") -> Manifest:
    """Read and check the run's manifest (the phantom's is only checked for existing files)."""
    path = manifest_path(cfg)
    try:
        manifest = read_manifest(path, verify=verify if cfg.run.data else "exists")
    except ValueError as err:
        raise CliError(f"--data: {' '.join(str(err).split())}") from err
    missing = [m for m in cfg.model.modalities if m not in manifest.modalities]
    if missing:
        raise CliError(f"--data: the model needs {missing} images, the manifest has "
                       f"{list(manifest.modalities)} columns (<name>_path); add them or "
                       "choose --modalities among those")
    return manifest
