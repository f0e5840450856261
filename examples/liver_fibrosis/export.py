"""``export``: a run to ONNX (:func:`mmfusion.export.to_onnx`), written beside ``--out``, checked
against PyTorch with ONNX Runtime and only then renamed (a failed export leaves ``--out``)."""

from __future__ import annotations

import fcntl
import glob
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from examples.liver_fibrosis.cli import CliError, run, say
from examples.liver_fibrosis.options import RunConfig, command_parser, flag, normalise
from mmfusion.files import _fsync_folder
from mmfusion.liver.stages import STAGE_NAMES

if TYPE_CHECKING:
    import torch

#: Largest accepted difference between ONNX Runtime's and PyTorch's probabilities.
TOLERANCE = 1e-3


def load_run(checkpoint: str, device: Any) -> Any:
    """:func:`examples.liver_fibrosis.runs.load_run` (torch is imported after parsing: a fast --help)."""
    from examples.liver_fibrosis.runs import load_run as load

    return load(checkpoint, device)


def build_parser() -> Any:
    """The ``export`` command line."""
    p = command_parser("python -m examples.liver_fibrosis.export", "Export a trained liver fibrosis run to ONNX.")
    p.add_argument("--checkpoint", required=True, help="folder of a training run")
    p.add_argument("--out", required=True, help="ONNX file to write (MODEL.onnx)")
    p.add_argument("--modalities", type=str | None, default=None,
                   help="graph inputs, M[,M] (default: all of the model's modalities)")
    flag(p, "availability_input", False, "add an input 'available' [batch, M] bool: one graph for pairs "
         "with and without a modality (e.g. visits without SWE)")
    flag(p, "overwrite", False, "replace an existing --out file")
    return p


def parity(model: torch.nn.Module, predictor: Any, modalities: list[str], size: int, availability_input: bool) -> float:
    """Largest ``|p_onnx - p_torch|`` on two random pairs (and, with the availability input, with
    the last modality missing from the second); non-finite or above :data:`TOLERANCE` is an error."""
    import torch

    x = {m: torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(i)) for i, m in enumerate(modalities)}
    with torch.no_grad():
        expected = model(x).probs.numpy()
    got = predictor({m: v.numpy() for m, v in x.items()})
    if availability_input:
        present = {m: torch.tensor([True, i < len(modalities) - 1]) for i, m in enumerate(modalities)}
        with torch.no_grad():
            expected = np.concatenate([expected, model(x, present).probs.numpy()])
        got = np.concatenate([got, predictor({m: v.numpy() for m, v in x.items()},
                                             {m: v.numpy() for m, v in present.items()})])
    if not np.isfinite(expected).all():
        raise CliError("--checkpoint: the model's probabilities are not finite (NaN or inf): the "
                       "model diverged? train it again (e.g. with a lower --lr)")
    diff = float(np.abs(expected - got).max())
    if not np.isfinite(got).all():
        raise CliError(f"export: ONNX Runtime disagrees with PyTorch: its probabilities are not "
                       f"finite (max |delta p| = {diff:.2e})")
    if not diff <= TOLERANCE:  # also False for NaN
        raise CliError(f"export: ONNX Runtime disagrees with PyTorch (max |delta p| = {diff:.2e} > {TOLERANCE:g})")
    return diff


def export_facts(cfg: RunConfig, modalities: list[str]) -> dict[str, object]:
    """``to_onnx``'s metadata arguments for a run: normalisation, stage names, crop per input."""
    from examples.liver_fibrosis.report import MEAN_STD
    from examples.liver_fibrosis.runs import swe_crop

    crop = {m: c.key for m, c in (swe_crop(cfg) or {}).items() if m in modalities}
    return {"mean": MEAN_STD[0], "std": MEAN_STD[1], "class_names": list(STAGE_NAMES), "crop": crop}


def remove_stale_candidates(out: Path) -> list[Path]:
    """Delete the temporary files (``.<name>.*.tmp`` beside ``out``) of killed exports; a live
    export holds a lock on its own, which is kept. Returns the files deleted."""
    removed = []
    for path in out.parent.glob(f".{glob.escape(out.name)}.*.tmp"):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another export is writing it
            continue
        else:
            path.unlink(missing_ok=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m examples.liver_fibrosis.export``."""
    args = build_parser().parse_args(normalise(argv))
    out = Path(args.out)
    if out.suffix != ".onnx":
        raise CliError(f"--out: expected a file name ending in .onnx, got {out}")
    if out.exists() and not args.overwrite:
        raise CliError(f"--out: {out} exists; pass --overwrite to replace it")
    if out.is_dir():
        raise CliError(f"--out: {out} is a folder; give a file name ending in .onnx")
    import torch

    from examples.liver_fibrosis.runs import unwritable

    cfg, model = load_run(args.checkpoint, torch.device("cpu"))
    modalities = ([m.strip() for m in args.modalities.split(",") if m.strip()] if args.modalities
                  else list(cfg.model.modalities))
    if not modalities or any(m not in cfg.model.modalities for m in modalities):
        raise CliError(f"--modalities: the model knows {list(cfg.model.modalities)}, got {modalities}")
    from mmfusion.export import OnnxPredictor, check_finite_weights, to_onnx

    check_finite_weights(model, "--checkpoint")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_candidates(out)
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as err:
        raise unwritable(out.parent, err) or err from err
    fcntl.flock(fd, fcntl.LOCK_EX)  # held until exit: marks the candidate as in use
    candidate = Path(name)  # checked before it replaces --out
    try:
        try:
            to_onnx(model, candidate, modalities=modalities, image_size=cfg.model.image_size,
                    availability_input=args.availability_input, **export_facts(cfg, modalities))
            predictor = OnnxPredictor(candidate)
        except ImportError as err:
            raise CliError(f"export: {err}") from err
        diff = parity(model, predictor, modalities, cfg.model.image_size, args.availability_input)
        os.replace(candidate, out)
    finally:
        candidate.unlink(missing_ok=True)
        os.close(fd)
    _fsync_folder(out.parent)  # make the rename durable
    say(f"wrote {out} (inputs {modalities}, {cfg.model.image_size} px); ONNX Runtime vs PyTorch: "
        f"max |delta p| = {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
