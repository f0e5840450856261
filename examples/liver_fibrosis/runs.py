"""The run folder's checks, data and loading (its lifecycle: :class:`mmfusion.runs.RunFolder`)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from examples.liver_fibrosis.cli import EXTRA, CliError, say, warn
from examples.liver_fibrosis.options import RunConfig, load_config
from mmfusion import files, runs
from mmfusion.data import IMAGENET_MEAN, IMAGENET_STD, Manifest, read_manifest
from mmfusion.elastography import SWE_SCALE_COLUMN, parse_swe_scale_kpa
from mmfusion.liver import METAVIR
from mmfusion.models import FusionClassifier, from_pretrained, save_pretrained
from mmfusion.runs import global_rank, launch_world  # noqa: F401 - the example's names

#: What a training run writes (``evaluate`` adds ``eval-*``); ``--overwrite`` replaces exactly these.
RUN_OUTPUTS = ("config.json", "config.yaml", "metrics.json", "log.jsonl", "confusion_matrix.png", "roc.png",
               "reliability", "model.safetensors", "checkpoints", "logs", "attention",
               "missing_modality.md", "missing_modality.json", "fold-*", "site-*", "eval-*")
#: Normalisation of the model inputs (undone for display).
MEAN_STD = (IMAGENET_MEAN, IMAGENET_STD)
#: What shows that a run trained (a run an interrupted ``--overwrite`` moved aside also counts).
TRAINED = ("model.safetensors", "metrics.json", "eval-*", "checkpoints/*.ckpt*")


def resolve_device(requested: str) -> torch.device:
    """``--device`` -> a device (:func:`mmfusion.runs.resolve_device`), with one-line errors."""
    try:
        return runs.resolve_device(requested)
    except ValueError as err:
        raise CliError(f"--{err}") from err


def swe_crop(cfg: RunConfig) -> dict[str, Any] | None:
    """``--swe_input``'s crop of the SWE images (:mod:`mmfusion.elastography`), or None (sector)."""
    from mmfusion.elastography import swe_crop as elastography_crop

    if cfg.run.swe_input == "frame" or "swe" not in cfg.model.modalities:
        return None
    return {"swe": elastography_crop(cfg.run.swe_input)}


def require(*packages: str) -> None:
    """Fail before any work, naming the extra, when an optional package is missing."""
    import importlib.util

    def missing(name: str) -> bool:
        with contextlib.suppress(ImportError, ValueError):  # a package blocked or half-installed
            return importlib.util.find_spec(name) is None
        return True

    absent = [name for name in packages if missing(name)]
    if absent:
        raise CliError(f"missing package(s) {absent}, needed by the example: {EXTRA}")


def write_json(path: Path, data: Any) -> None:
    """Indented JSON, written atomically."""
    files.atomic_write_text(Path(path), json.dumps(data, indent=2) + "\n")


def trained_outputs(folder: Path) -> list[str]:
    """What shows that a run trained in ``folder`` (the rest a run writes are leftovers)."""
    return runs.trained_outputs(folder, TRAINED, ("fold-*", "site-*"))


def has_training_state(folder: Path) -> bool:
    """Whether ``folder`` (or a fold/site part) holds a checkpoint or a model (what ``--resume`` continues)."""
    return any(any(folder.glob(f"{part}{name}")) for part in ("", "fold-*/", "site-*/")
               for name in ("model.safetensors", "checkpoints/*.ckpt"))


def check_free(out: Path, names: tuple[str, ...], flag_ok: bool, what: str = "a run") -> list[str]:
    """Refuse to write over ``names`` in ``out`` unless allowed; returns the names found."""
    if out.exists() and not out.is_dir():
        raise CliError(f"--out: {out} exists and is not a folder; choose another --out")
    taken = files.occupied(out, names)
    blocking = trained_outputs(out) if names == RUN_OUTPUTS else taken
    if blocking and not flag_ok:
        raise CliError(f"--out: {out} already holds {what} ({', '.join(blocking[:4])}); pass "
                       "--overwrite to replace it (or --resume for a training run), or choose another --out")
    return taken


def unwritable(out: Path, err: OSError) -> CliError | None:
    """A one-line error for a folder that cannot be written (read-only, no permission, full)."""
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT):
        where = f" ({err.filename})" if err.filename else ""
        return CliError(f"--out: cannot write into {out}{where}: {os.strerror(err.errno)}; choose a writable --out")
    return None


@contextlib.contextmanager
def holding_lock(out: Path) -> Iterator[Path]:
    """Hold ``out``'s lock (:func:`mmfusion.files.lock_folder`) for the block, with one-line errors."""
    try:
        lock = files.lock_folder(out)
        lock.__enter__()
    except files.FolderLocked as err:
        holder = f"pid {err.pid}" if err.pid else "a process"
        raise CliError(f"--out: another run ({holder}) holds {out} (its lock {out / '.lock'}); "
                       "wait for it to finish, or choose another --out") from err
    except OSError as err:
        if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP):
            raise unwritable(out, err) or err from err
        warn(f"--out: {out} cannot be locked on this filesystem ({os.strerror(err.errno)}); "
             "make sure no other run writes into it")
        yield out
        return
    try:
        yield out
    finally:
        lock.__exit__(None, None, None)


def run_folder(cfg: RunConfig, main: bool = True) -> runs.RunFolder:
    """The training run's :class:`mmfusion.runs.RunFolder` (settings: ``config.json``, ``config.yaml``)."""
    r = cfg.run
    return runs.RunFolder(r.out, RUN_OUTPUTS, TRAINED, parts=("fold-*", "site-*"), resume=r.resume,
                          overwrite=r.overwrite, main=main, say=say, lock=holding_lock, settings={
                              "config.json": json.dumps(cfg.to_json(), indent=2) + "\n",
                              "config.yaml": cfg.to_yaml()})


def check_finite(model: torch.nn.Module, cfg: RunConfig) -> None:
    """Refuse a diverged model (a floating-point parameter or buffer that is not finite)."""
    bad = [name for name, tensor in model.state_dict().items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise CliError(f"training diverged: {len(bad)} tensor(s) of the model hold NaN or inf "
                       f"values ({', '.join(bad[:3])}); no model was saved; lower --lr (now "
                       f"{cfg.training.lr:g}) or check the data")


def save_run_model(model: FusionClassifier, cfg: RunConfig, out: Path) -> None:
    """``config.json`` (the model config plus the run's settings) + ``model.safetensors``."""
    check_finite(model, cfg)
    save_pretrained(model, out, overwrite=True, extra=cfg.to_json())


def load_run(checkpoint: str | Path, device: torch.device) -> tuple[RunConfig, FusionClassifier]:
    """A finished run's configuration and model."""
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
        return cfg, from_pretrained(folder, map_location=device)
    except ValueError as err:
        raise CliError(f"--checkpoint: {err}") from err


def prepare_phantom(cfg: RunConfig) -> Path:
    """Generate the phantom into ``phantom_dir`` unless it is there; its manifest path."""
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
    if not cfg.run.data:
        return Path(cfg.run.phantom_dir) / "manifest.csv"
    path = Path(cfg.run.data)
    if not path.is_file():
        raise CliError(f"--data: manifest {path} does not exist; pass the path of a CSV with "
                       "columns patient_id,us_path,swe_path,stage (or omit --data for the phantom)")
    return path


#: Manifests read by :func:`load_manifest`, keyed by the file's identity and content stamp.
_MANIFESTS: dict[tuple[str, int, int, int, str], Manifest] = {}


def load_manifest(cfg: RunConfig, verify: str = "header") -> Manifest:
    """Read and check the run's manifest, once per process and file version."""
    path = manifest_path(cfg)
    verify = verify if cfg.run.data else "exists"
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_ino, stat.st_mtime_ns, stat.st_size, verify)
        if key not in _MANIFESTS:
            _MANIFESTS[key] = read_manifest(path, labels=METAVIR, verify=verify,
                                            columns={SWE_SCALE_COLUMN: parse_swe_scale_kpa})
        manifest = _MANIFESTS[key]
    except ValueError as err:
        raise CliError(f"--data: {' '.join(str(err).split())}") from err
    missing = [m for m in cfg.model.modalities if m not in manifest.modalities]
    if missing:
        raise CliError(f"--data: the model needs {missing} images, the manifest has "
                       f"{list(manifest.modalities)} columns (<name>_path); add them or "
                       "choose --modalities among those")
    return manifest
