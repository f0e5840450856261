"""Run folders: what one training run writes, kept safe from a second run, a kill and a failed rerun.

A :class:`RunFolder` is used as a ``with`` block around a run. Entering it takes the folder's lock
(:func:`mmfusion.files.lock_folder`), deletes the temporary files a killed writer left
(:func:`mmfusion.files.stale_temporary_files`), refuses a folder that holds a trained run unless
the run resumes or overwrites it, deletes the leftovers of a run that stopped before it trained,
moves the previous run aside (``.previous-<pid>/``) when overwriting, and writes the run's settings.
Leaving after success deletes the run moved aside; after an error it deletes the new outputs and
puts the previous run back; after Ctrl-C (or ``SystemExit``) both stay, so the new run can resume.

:func:`resolve_device`, :func:`cuda_device_count`, :func:`launch_world` and :func:`global_rank` read
where a run runs; :func:`summarise_runs` sums up the runs of a K-fold or leave-one-site-out split.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmfusion import files

if TYPE_CHECKING:
    import torch

__all__ = [
    "PREVIOUS",
    "RunFolder",
    "RunFolderError",
    "cuda_device_count",
    "global_rank",
    "launch_world",
    "remove_outputs",
    "resolve_device",
    "summarise_runs",
    "trained_outputs",
]

#: Prefix of the folder where an overwrite keeps the previous run until the new one completes.
PREVIOUS = ".previous-"


class RunFolderError(ValueError):
    """The folder holds a trained run, and the run neither resumes nor overwrites it."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def trained_outputs(folder: str | Path, evidence: Iterable[str], parts: Iterable[str] = ()) -> list[str]:
    """The top-level names in ``folder`` that show a run trained there, sorted.

    Args:
        folder: The run folder (missing: nothing found).
        evidence: Glob patterns relative to ``folder`` (e.g. ``"model.safetensors"``,
            ``"checkpoints/*.ckpt*"``); a match reports its first path component. A run an
            interrupted overwrite moved aside (:data:`PREVIOUS`) always counts.
        parts: Glob patterns of sub-folders that are runs of their own (e.g. ``"fold-*"``): one
            counts when it holds any evidence.
    """
    folder, evidence, parts = Path(folder), (*evidence, f"{PREVIOUS}*"), tuple(parts)
    if not folder.is_dir():
        return []
    found = {p.relative_to(folder).parts[0] for name in evidence for p in folder.glob(name)}
    found.update(p.name for name in parts for p in folder.glob(name)
                 if p.is_dir() and trained_outputs(p, evidence, parts))
    return sorted(found)


def remove_outputs(folder: str | Path, names: Iterable[str]) -> None:
    """Delete the named files or folders of ``folder`` (missing ones are skipped)."""
    for name in names:
        target = Path(folder) / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


class RunFolder:
    """A run's folder for a ``with`` block (see the module's description); ``main=False`` (a
    process other than rank 0) does nothing.

    Args:
        folder: The run folder (created if needed).
        outputs: Glob patterns of everything a run writes there: an overwrite replaces these.
        evidence: Patterns that show a run trained (:func:`trained_outputs`); the other outputs of
            an untrained run are leftovers, deleted unless ``resume``.
        parts: Sub-folder patterns that are runs of their own (:func:`trained_outputs`).
        resume: The run continues the one in the folder.
        overwrite: The run replaces the one in the folder.
        settings: File name -> text, written atomically when the run starts.
        main: Whether this process manages the folder.
        say: Prints a status line (default: to stderr).
        lock: Context manager factory that locks the folder (default
            :func:`mmfusion.files.lock_folder`).

    Raises:
        RunFolderError: On entering, the folder holds a trained run and neither ``resume`` nor
            ``overwrite`` is set.
        mmfusion.files.FolderLocked: On entering, another process holds the folder.
    """

    def __init__(self, folder: str | Path, outputs: Iterable[str], evidence: Iterable[str], *,
                 parts: Iterable[str] = (), resume: bool = False, overwrite: bool = False,
                 settings: Mapping[str, str] | None = None, main: bool = True,
                 say: Callable[[str], None] = _stderr,
                 lock: Callable[[Path], AbstractContextManager[Any]] = files.lock_folder) -> None:
        self.folder, self.outputs, self.main = Path(folder), tuple(outputs), main
        self.evidence, self.parts, self.resume, self.overwrite = tuple(evidence), tuple(parts), resume, overwrite
        self.settings, self.say, self.lock = dict(settings or {}), say, lock
        self.aside: Path | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> RunFolder:
        if self.main:
            started = time.time()
            with contextlib.ExitStack() as undo:  # the lock is released if preparing fails
                undo.enter_context(self.lock(self.folder))
                self._prepare(started)
                self._stack = undo.pop_all()
            self._stack.push(self._finish)
        return self

    def __exit__(self, *error: Any) -> None:
        self._stack.__exit__(*error)

    def _prepare(self, started: float) -> None:
        out = self.folder
        stale = files.stale_temporary_files(out, started)
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            self.say(f"{out}: removed {len(stale)} temporary file(s) a killed run left behind "
                     f"({', '.join(str(p.relative_to(out)) for p in stale[:3])})")
        trained = trained_outputs(out, self.evidence, self.parts)
        if trained and not (self.resume or self.overwrite):
            raise RunFolderError(f"{out} already holds a run ({', '.join(trained[:4])}); overwrite it, "
                                 "resume it, or choose another folder")
        previous = sorted(p.name for p in out.glob(f"{PREVIOUS}*"))
        if previous:
            self.say(f"warning: {out}: {', '.join(previous)} holds the run an interrupted overwrite "
                     "replaced; it is deleted when this run completes (move it elsewhere to keep it)")
        leftovers = [] if trained else files.occupied(out, self.outputs)
        if leftovers and not self.resume:
            remove_outputs(out, leftovers)
            self.say(f"{out}: removed the leftovers of a run that stopped before its first epoch "
                     f"({', '.join(leftovers)})")
        replaced = files.occupied(out, self.outputs) if self.overwrite and not self.resume else []
        if replaced:
            self.aside = out / f"{PREVIOUS}{os.getpid()}"
            self.aside.mkdir()
            for name in replaced:
                (out / name).rename(self.aside / name)
        for name, text in self.settings.items():
            files.atomic_write_text(out / name, text)

    def _finish(self, kind: type[BaseException] | None, *_: Any) -> None:
        out = self.folder
        if kind is None:
            for folder in sorted(out.glob(f"{PREVIOUS}*")):
                shutil.rmtree(folder, ignore_errors=True)
            if self.aside is not None:
                self.say(f"{out}: the previous run is replaced")
        elif self.aside is not None and not issubclass(kind, (KeyboardInterrupt, SystemExit)):
            remove_outputs(out, files.occupied(out, self.outputs))
            for path in sorted(self.aside.iterdir()):
                path.rename(out / path.name)
            self.aside.rmdir()
            self.say(f"warning: {out}: this run failed; the previous run is put back as it was")
        elif self.aside is not None:
            self.say(f"warning: {out}: the replaced run is kept in {self.aside} until this run "
                     "completes (resume it)")


def resolve_device(requested: str = "auto") -> torch.device:
    """``auto`` (this process's CUDA device under torchrun, else the CPU), ``cpu``, ``cuda`` or
    ``cuda:N`` -> a device.

    Raises:
        ValueError: An unknown device, or CUDA where it is not available (the message starts with
            ``device``, names the fix and the torch build).
    """
    import torch

    if requested == "auto":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as err:
        raise ValueError(f"device: unknown device {requested!r}; use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested}: CUDA is not available on this machine (torch "
                         f"{torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device: unsupported device type {device.type!r}; use cpu or cuda")
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


def cuda_device_count(use_torch: bool = True) -> int:
    """The CUDA devices this process sees: torch's count, or (``use_torch=False``, e.g. for a fast
    ``--help``) the driver's (``cuDeviceGetCount``), without importing torch; 0 without CUDA."""
    if use_torch:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    import ctypes

    try:
        cuda, count = ctypes.CDLL("libcuda.so.1"), ctypes.c_int(0)
        return count.value if cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 else 0
    except OSError:
        return 0


def summarise_runs(runs: Sequence[Mapping[str, Any]], keys: Iterable[str], section: str = "ensemble"
                   ) -> dict[str, dict[str, float]]:
    """Mean and sample sd (0 for one run) over runs (e.g. folds) of ``run[section][key]`` for each
    key, leaving out runs where it is missing or None: ``key -> {"mean", "n", "sd"}`` (keys no run
    measured are left out)."""
    import numpy as np

    summary: dict[str, dict[str, float]] = {}
    for key in keys:
        values = [r[section][key] for r in runs if r[section].get(key) is not None]
        if values:
            summary[key] = {"mean": float(np.mean(values)), "n": len(values),
                            "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
    return summary
