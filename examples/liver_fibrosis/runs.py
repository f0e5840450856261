"""The run folder, shared by every entry point: outputs, its lifecycle, data, loading.

A run folder holds ``config.json`` (the run's settings and the model configuration, readable by
:func:`mmfusion.models.from_pretrained`), ``model.safetensors``, ``metrics.json``, ``log.jsonl``,
plots, ``attention/`` overlays, ``checkpoints/`` (Lightning's resume state), ``logs/`` (CSV,
and TensorBoard where installed) and the ``eval-*`` folders of ``evaluate``.

Its lifecycle (:class:`RunFolder`): a run locks the folder (``.lock``; a second run into it is
refused), removes what a killed run left (temporary files, the empty leftovers of a run that
stopped before its first epoch), writes its settings (``config.json``) when it starts, so that
``--resume`` can check them, and with ``--overwrite`` moves the previous run aside
(``.previous-<pid>/``), restoring it if the new run fails and deleting it only once the new run
is complete. Nothing is overwritten without ``--overwrite``.

This module imports neither Lightning nor matplotlib (``--help`` works without the extras).
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
from types import TracebackType
from typing import TYPE_CHECKING, Any

import torch

from examples.liver_fibrosis.cli import CliError, say, warn
from examples.liver_fibrosis.options import RunConfig
from mmfusion.data import Manifest, read_manifest
from mmfusion.elastography import SWE_SCALE_COLUMN, parse_swe_scale_kpa
from mmfusion.files import (
    FolderLocked,
    atomic_write_text,
    lock_folder,
    occupied,
    stale_temporary_files,
)
from mmfusion.liver import METAVIR
from mmfusion.models import FusionClassifier, from_pretrained, save_pretrained

if TYPE_CHECKING:
    from mmfusion.data.crops import Crop

#: Files and folders a training run writes (and ``evaluate`` adds: ``eval-*``); ``--overwrite``
#: replaces exactly these.
RUN_OUTPUTS = ("config.json", "metrics.json", "log.jsonl", "confusion_matrix.png", "roc.png",
               "reliability", "model.safetensors", "checkpoints", "logs", "attention",
               "missing_modality.md", "missing_modality.json", "fold-*", "site-*", "eval-*")
#: Where ``--overwrite`` keeps the run it replaces until the new one is complete.
PREVIOUS = ".previous-"
#: The outputs that only exist once a run trained (a model, a checkpoint, metrics, an evaluation):
#: a folder holding none of them holds leftovers of a run that stopped before its first epoch.
_TRAINED = ("model.safetensors", "metrics.json", "eval-*")
#: The extra that provides what the example needs beyond the library.
EXTRA = 'pip install "mmfusion[example]"'


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


def swe_crop(cfg: RunConfig) -> dict[str, Crop] | None:
    """``--swe-input``'s crop for the SWE images, ``{"swe": crop}`` (a crop of
    :mod:`mmfusion.elastography`; ``None``: every image cropped to its sector)."""
    from mmfusion.elastography import swe_crop as elastography_crop

    if cfg.run.swe_input == "frame" or "swe" not in cfg.model.modalities:
        return None
    return {"swe": elastography_crop(cfg.run.swe_input)}


def require(*packages: str) -> None:
    """Fail before any work when an optional package the command needs is missing.

    Raises:
        CliError: Naming the missing packages and the install command.
    """
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
    atomic_write_text(Path(path), json.dumps(data, indent=2) + "\n")


def trained_outputs(folder: Path) -> list[str]:
    """The names in ``folder`` that show a run trained there: a model, metrics, an evaluation, a
    checkpoint, a run replaced by an interrupted ``--overwrite``, or a fold/site part holding any
    of them. Everything else a run writes (``config.json``, empty ``logs/``...) is a leftover."""
    if not folder.is_dir():
        return []
    found = set(occupied(folder, (*_TRAINED, f"{PREVIOUS}*")))
    if any((folder / "checkpoints").glob("*.ckpt*")):
        found.add("checkpoints")
    for part in [*folder.glob("fold-*"), *folder.glob("site-*")]:
        if part.is_dir() and trained_outputs(part):
            found.add(part.name)
    return sorted(found)


def has_training_state(folder: Path) -> bool:
    """True when ``folder`` (or one of its fold/site parts) holds a checkpoint or a model: what
    ``--resume`` continues, and what its saved settings must then match."""
    return any(folder.glob("model.safetensors")) or any(folder.glob("checkpoints/*.ckpt")) or any(
        folder.glob(f"{part}/{name}") for part in ("fold-*", "site-*")
        for name in ("model.safetensors", "checkpoints/*.ckpt"))


def check_free(out: Path, names: tuple[str, ...], flag_ok: bool, what: str = "a run") -> list[str]:
    """The one rule for output folders: refuse to write over ``names`` unless allowed.

    For a training run (``names`` is :data:`RUN_OUTPUTS`) only what shows that a run trained counts
    (:func:`trained_outputs`); the leftovers of a run that stopped before its first epoch do not.

    Returns:
        The names found (to replace when overwriting).

    Raises:
        CliError: ``out`` is a file, or holds outputs and ``flag_ok`` is false.
    """
    if out.exists() and not out.is_dir():
        raise CliError(f"--out: {out} exists and is not a folder; choose another --out")
    taken = occupied(out, names)
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
    """A one-line error for an output folder that cannot be written (read-only filesystem, no
    permission, full disk), or ``None`` for other errors."""
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT):
        where = f" ({err.filename})" if err.filename else ""
        return CliError(f"--out: cannot write into {out}{where}: {os.strerror(err.errno)}; "
                        "choose a writable --out")
    return None


@contextlib.contextmanager
def holding_lock(out: Path) -> Iterator[Path]:
    """Hold ``out``'s lock (:func:`mmfusion.files.lock_folder`; the folder is created) for the
    block, with one-line errors: another process holds it, or the folder cannot be written."""
    try:
        lock = lock_folder(out)
        lock.__enter__()
    except FolderLocked as err:
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
    """The lifecycle of a training run's folder, as a context manager (rank 0 does the work).

    On entering: take the folder's lock (another run holding it -> one line naming its pid),
    remove temporary files a killed run left, remove the leftovers of a run that stopped before
    its first epoch, move the previous run aside when overwriting, and write ``config.json`` (the
    run's settings; the model's ``save_pretrained`` rewrites it at the end). On leaving: after
    success, delete the run moved aside; after an error, delete the new run's outputs and put the
    previous run back (after Ctrl-C both are kept: the new run can be resumed).

    Args:
        cfg: The run's configuration (``cfg.run.out`` is the folder).
        main: Whether this process is rank 0 (other ranks only wait for it through Lightning).
    """

    def __init__(self, cfg: RunConfig, main: bool = True) -> None:
        self.cfg, self.main = cfg, main
        self.out = Path(cfg.run.out)
        self.aside: Path | None = None
        self._lock: Any = None

    def __enter__(self) -> RunFolder:
        if not self.main:
            return self
        started = time.time()
        lock = holding_lock(self.out)
        lock.__enter__()
        self._lock = lock
        try:
            self._prepare(started)
        except BaseException:
            self._release()
            raise
        return self

    def _prepare(self, started: float) -> None:
        r, out = self.cfg.run, self.out
        stale = stale_temporary_files(out, started)
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
        leftovers = [] if trained else occupied(out, RUN_OUTPUTS)
        if leftovers and not r.resume:
            remove(out, leftovers)
            say(f"{out}: removed the leftovers of a run that stopped before its first epoch "
                f"({', '.join(leftovers)})")
        if r.overwrite and not r.resume:
            replaced = sorted(set(occupied(out, RUN_OUTPUTS)))
            if replaced:
                self.aside = out / f"{PREVIOUS}{os.getpid()}"
                self.aside.mkdir()
                for name in replaced:
                    (out / name).rename(self.aside / name)
        write_json(out / "config.json", self.cfg.to_json())

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        try:
            if self.main:
                self._finish(kind)
        finally:
            self._release()

    def _finish(self, kind: type[BaseException] | None) -> None:
        out = self.out
        if kind is None:
            for folder in sorted(out.glob(f"{PREVIOUS}*")):
                shutil.rmtree(folder, ignore_errors=True)
            if self.aside is not None:
                say(f"{out}: the previous run is replaced")
        elif self.aside is not None and not issubclass(kind, (KeyboardInterrupt, SystemExit)):
            remove(out, occupied(out, RUN_OUTPUTS))
            for path in sorted(self.aside.iterdir()):
                path.rename(out / path.name)
            self.aside.rmdir()
            warn(f"{out}: this run failed; the previous run is put back as it was")
        elif self.aside is not None:
            warn(f"{out}: the replaced run is kept in {self.aside} until this run completes "
                 "(--resume)")

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None


def check_finite(model: torch.nn.Module, cfg: RunConfig) -> None:
    """Refuse a diverged model: every floating-point parameter and buffer must be finite.

    Raises:
        CliError: Naming the first non-finite tensors and the learning rate.
    """
    bad = [name for name, tensor in model.state_dict().items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise CliError(f"training diverged: {len(bad)} tensor(s) of the model hold NaN or inf "
                       f"values ({', '.join(bad[:3])}); no model was saved; lower --lr (now "
                       f"{cfg.training.lr:g}) or check the data")


def save_run_model(model: FusionClassifier, cfg: RunConfig, out: Path) -> None:
    """``config.json`` + ``model.safetensors`` of a run (the model config plus the run's settings).

    Raises:
        CliError: A parameter or buffer is not finite (a diverged run): nothing is saved.
    """
    check_finite(model, cfg)
    save_pretrained(model, out, overwrite=True, extra=cfg.to_json())


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


#: Manifests read by :func:`load_manifest`, keyed by the file's identity and content stamp.
_MANIFESTS: dict[tuple[str, int, int, int, str], Manifest] = {}


def load_manifest(cfg: RunConfig, verify: str = "header") -> Manifest:
    """Read and check the run's manifest (the phantom's is only checked for existing files).

    ``verify="header"`` (the default) reads each image's header only: training decodes every
    image once when it builds its data sets (and names the line of one that fails there), so the
    manifest check does not decode them again. A manifest read before in this process (same file,
    same size and modification time, same check) is not read again.
    """
    path = manifest_path(cfg)
    verify = verify if cfg.run.data else "exists"
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_ino, stat.st_mtime_ns, stat.st_size, verify)
        manifest = _MANIFESTS.get(key)
        if manifest is None:
            manifest = _MANIFESTS[key] = read_manifest(
                path, labels=METAVIR, verify=verify, columns={SWE_SCALE_COLUMN: parse_swe_scale_kpa}
            )
    except ValueError as err:
        raise CliError(f"--data: {' '.join(str(err).split())}") from err
    missing = [m for m in cfg.model.modalities if m not in manifest.modalities]
    if missing:
        raise CliError(f"--data: the model needs {missing} images, the manifest has "
                       f"{list(manifest.modalities)} columns (<name>_path); add them or "
                       "choose --modalities among those")
    return manifest
