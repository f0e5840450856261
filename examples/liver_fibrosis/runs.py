"""The run folder, shared by every entry point: its lifecycle, data and loading (no Lightning).

:class:`RunFolder` locks the folder (``.lock``), removes what a killed run left, writes the run's
settings (``config.json``, ``config.yaml``) when it starts, and with ``--overwrite`` moves the
previous run aside (``.previous-<pid>/``), restoring it if the new run fails and deleting it only
once the new run is complete. Nothing is overwritten without ``--overwrite``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from examples.liver_fibrosis.cli import EXTRA, CliError, say, warn
from examples.liver_fibrosis.options import RunConfig, load_config
from mmfusion import files
from mmfusion.data import Manifest, read_manifest
from mmfusion.elastography import SWE_SCALE_COLUMN, parse_swe_scale_kpa
from mmfusion.liver import METAVIR
from mmfusion.models import FusionClassifier, from_pretrained, save_pretrained

#: What a training run writes (``evaluate`` adds ``eval-*``); ``--overwrite`` replaces exactly these.
RUN_OUTPUTS = ("config.json", "config.yaml", "metrics.json", "log.jsonl", "confusion_matrix.png", "roc.png",
               "reliability", "model.safetensors", "checkpoints", "logs", "attention",
               "missing_modality.md", "missing_modality.json", "fold-*", "site-*", "eval-*")
#: Where ``--overwrite`` keeps the run it replaces until the new one is complete.
PREVIOUS = ".previous-"


def resolve_device(requested: str) -> torch.device:
    """``auto``/``cpu``/``cuda``/``cuda:N`` -> a device; a clear error where CUDA is missing."""
    if requested == "auto":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as err:
        raise CliError(f"--device: unknown device {requested!r}; use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CliError(f"--device {requested}: CUDA is not available on this machine (torch "
                       f"{torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise CliError(f"--device: unsupported device type {device.type!r}; use cpu or cuda")
    return device


def launch_world() -> tuple[int, int]:
    """``(processes per node, nodes)`` of a torchrun or SLURM launch; ``(1, 1)`` otherwise."""
    if "LOCAL_WORLD_SIZE" in os.environ:
        per_node = int(os.environ["LOCAL_WORLD_SIZE"])
        return per_node, max(1, int(os.environ.get("WORLD_SIZE", per_node)) // per_node)
    if "SLURM_NTASKS_PER_NODE" in os.environ:
        return int(os.environ["SLURM_NTASKS_PER_NODE"]), int(os.environ.get("SLURM_NNODES", "1"))
    return 1, 1


def global_rank() -> int:
    """This process's rank in a torchrun or SLURM launch (0 otherwise)."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


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
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):  # a package blocked or half-installed
            return True

    absent = [name for name in packages if missing(name)]
    if absent:
        raise CliError(f"missing package(s) {absent}, needed by the example: {EXTRA}")


def write_json(path: Path, data: Any) -> None:
    """Indented JSON, written atomically."""
    files.atomic_write_text(Path(path), json.dumps(data, indent=2) + "\n")


def trained_outputs(folder: Path) -> list[str]:
    """What shows that a run trained in ``folder`` (a model, metrics, an evaluation, a checkpoint,
    a run an interrupted ``--overwrite`` replaced, a fold/site part holding any); the rest a run
    writes are leftovers of a run that stopped before its first epoch."""
    if not folder.is_dir():
        return []
    found = set(files.occupied(folder, ("model.safetensors", "metrics.json", "eval-*", f"{PREVIOUS}*")))
    if any((folder / "checkpoints").glob("*.ckpt*")):
        found.add("checkpoints")
    found.update(p.name for p in [*folder.glob("fold-*"), *folder.glob("site-*")] if p.is_dir() and trained_outputs(p))
    return sorted(found)


def has_training_state(folder: Path) -> bool:
    """Whether ``folder`` (or a fold/site part) holds a checkpoint or a model: what ``--resume``
    continues, and what its saved settings must then match."""
    return any(any(folder.glob(f"{part}{name}")) for part in ("", "fold-*/", "site-*/")
               for name in ("model.safetensors", "checkpoints/*.ckpt"))


def check_free(out: Path, names: tuple[str, ...], flag_ok: bool, what: str = "a run") -> list[str]:
    """Refuse to write over ``names`` in ``out`` unless allowed (for a training run only what shows
    that a run trained counts); returns the names found."""
    if out.exists() and not out.is_dir():
        raise CliError(f"--out: {out} exists and is not a folder; choose another --out")
    taken = files.occupied(out, names)
    blocking = trained_outputs(out) if names == RUN_OUTPUTS else taken
    if blocking and not flag_ok:
        raise CliError(f"--out: {out} already holds {what} ({', '.join(blocking[:4])}); pass "
                       "--overwrite to replace it (or --resume for a training run), or choose another --out")
    return taken


def remove(out: Path, names: list[str]) -> None:
    """Delete the listed outputs of ``out`` (files or folders)."""
    for name in names:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


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


class RunFolder:
    """A training run's folder for the block (rank 0 does the work; ``main=False`` does nothing).

    Entering takes the lock, cleans what a killed run left, moves the previous run aside when
    overwriting and writes the settings. Leaving after success deletes the run moved aside; after
    an error it deletes the new outputs and puts the previous run back (after Ctrl-C both stay:
    the new run can be resumed).
    """

    def __init__(self, cfg: RunConfig, main: bool = True) -> None:
        self.cfg, self.main, self.out = cfg, main, Path(cfg.run.out)
        self.aside: Path | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> RunFolder:
        if self.main:
            started = time.time()
            with contextlib.ExitStack() as undo:  # the lock is released if preparing fails
                undo.enter_context(holding_lock(self.out))
                self._prepare(started)
                self._stack = undo.pop_all()
            self._stack.push(self._finish)
        return self

    def __exit__(self, *error: Any) -> None:
        self._stack.__exit__(*error)

    def _prepare(self, started: float) -> None:
        r, out = self.cfg.run, self.out
        stale = files.stale_temporary_files(out, started)
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            say(f"{out}: removed {len(stale)} temporary file(s) a killed run left behind "
                f"({', '.join(str(p.relative_to(out)) for p in stale[:3])})")
        trained = trained_outputs(out)
        if trained and not (r.resume or r.overwrite):  # a run finished since check_free
            raise CliError(f"--out: {out} already holds a run ({', '.join(trained[:4])}); pass "
                           "--overwrite to replace it, --resume to continue it, or choose another --out")
        previous = sorted(p.name for p in out.glob(f"{PREVIOUS}*"))
        if previous:
            warn(f"{out}: {', '.join(previous)} holds the run an interrupted --overwrite replaced; "
                 "it is deleted when this run completes (move it elsewhere to keep it)")
        leftovers = [] if trained else files.occupied(out, RUN_OUTPUTS)
        if leftovers and not r.resume:
            remove(out, leftovers)
            say(f"{out}: removed the leftovers of a run that stopped before its first epoch ({', '.join(leftovers)})")
        replaced = sorted(set(files.occupied(out, RUN_OUTPUTS))) if r.overwrite and not r.resume else []
        if replaced:
            self.aside = out / f"{PREVIOUS}{os.getpid()}"
            self.aside.mkdir()
            for name in replaced:
                (out / name).rename(self.aside / name)
        write_json(out / "config.json", self.cfg.to_json())
        files.atomic_write_text(out / "config.yaml", self.cfg.to_yaml())

    def _finish(self, kind: type[BaseException] | None, *_: Any) -> None:
        out = self.out
        if kind is None:
            for folder in sorted(out.glob(f"{PREVIOUS}*")):
                shutil.rmtree(folder, ignore_errors=True)
            if self.aside is not None:
                say(f"{out}: the previous run is replaced")
        elif self.aside is not None and not issubclass(kind, (KeyboardInterrupt, SystemExit)):
            remove(out, files.occupied(out, RUN_OUTPUTS))
            for path in sorted(self.aside.iterdir()):
                path.rename(out / path.name)
            self.aside.rmdir()
            warn(f"{out}: this run failed; the previous run is put back as it was")
        elif self.aside is not None:
            warn(f"{out}: the replaced run is kept in {self.aside} until this run completes (--resume)")


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
    """Read and check the run's manifest (image headers only: training decodes every image once
    anyway; the phantom's only for existing files), once per process and file version."""
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
