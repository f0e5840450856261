"""Export a trained run to ONNX (images -> stage probabilities) and check it against PyTorch.

    python -m examples.liver_fibrosis.export --checkpoint runs/liver_fibrosis --out model.onnx
    python -m examples.liver_fibrosis.export --checkpoint runs/liver_fibrosis --out us_only.onnx \\
        --modalities us                  # a graph for clinics without SWE (SWE treated as absent)

The graph has one input per modality (``[batch, 3, H, W]`` float32, normalised as in training) and
one output ``probs`` (``[batch, 5]``, the ensemble prediction); see :func:`mmfusion.export.to_onnx`.
``--availability-input`` adds an input ``available`` (``[batch, M]`` bool), so one graph serves
pairs with and without SWE.
The file carries the preprocessing facts (modalities in input order, image size, normalisation,
stage names, the crop of each modality, the availability input) in its metadata, so that
:class:`mmfusion.onnx_predictor.OnnxPredictor` predicts image files without PyTorch.
The model is exported to a temporary file next to ``--out``, run once with ONNX Runtime on random
images and compared with PyTorch, and only then renamed to ``--out``: a failed or killed export
(or one whose probabilities are not finite: a diverged model) leaves the previous file as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from examples.liver_fibrosis.cli import CliError, run, say
from examples.liver_fibrosis.options import RunConfig
from examples.liver_fibrosis.report import MEAN_STD
from examples.liver_fibrosis.runs import load_run, swe_crop, unwritable
from mmfusion.liver.stages import STAGE_NAMES

#: Largest accepted difference between ONNX Runtime's and PyTorch's probabilities.
TOLERANCE = 1e-3


def build_parser() -> argparse.ArgumentParser:
    """The ``export`` command line."""
    p = argparse.ArgumentParser(
        prog="python -m examples.liver_fibrosis.export",
        description="Export a trained liver fibrosis run to ONNX.",
    )
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="folder of a training run")
    p.add_argument("--out", required=True, metavar="MODEL.onnx", help="ONNX file to write")
    p.add_argument("--modalities", metavar="M[,M]",
                   help="graph inputs (default: all of the model's modalities)")
    p.add_argument("--availability-input", action="store_true",
                   help="add an input 'available' [batch, M] bool: one graph for pairs with and "
                        "without a modality (e.g. visits without SWE)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return p


def parity(model: torch.nn.Module, predictor: object, modalities: list[str], size: int,
           availability_input: bool) -> float:
    """Largest ``|p_onnx - p_torch|`` on two random image pairs (and, with the availability
    input, with the last modality missing from the second pair).

    Raises:
        CliError: Either side's probabilities are not finite (NaN or inf), or they differ by more
            than :data:`TOLERANCE` (a NaN difference counts as a failure).
    """
    x = {m: torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(i))
         for i, m in enumerate(modalities)}
    with torch.no_grad():
        expected = model(x).probs.numpy()
    got = predictor({m: v.numpy() for m, v in x.items()})  # type: ignore[operator]
    if availability_input:  # and with the last modality missing for the second sample
        present = {m: torch.tensor([True, i < len(modalities) - 1]) for i, m in enumerate(modalities)}
        with torch.no_grad():
            expected = np.concatenate([expected, model(x, present).probs.numpy()])
        got = np.concatenate([got, predictor({m: v.numpy() for m, v in x.items()},  # type: ignore[operator]
                                             {m: v.numpy() for m, v in present.items()})])
    if not np.isfinite(expected).all():
        raise CliError("--checkpoint: the model's probabilities are not finite (NaN or inf): the "
                       "model diverged? train it again (e.g. with a lower --lr)")
    diff = float(np.abs(expected - got).max())
    if not np.isfinite(got).all():
        raise CliError(f"export: ONNX Runtime disagrees with PyTorch: its probabilities are not "
                       f"finite (max |delta p| = {diff:.2e})")
    if not diff <= TOLERANCE:  # also False for NaN
        raise CliError(f"export: ONNX Runtime disagrees with PyTorch (max |delta p| = {diff:.2e} "
                       f"> {TOLERANCE:g})")
    return diff


def export_facts(cfg: RunConfig, modalities: list[str]) -> dict[str, object]:
    """``to_onnx``'s metadata arguments for a run: normalisation, stage names, crop per input."""
    crop = {m: c.key for m, c in (swe_crop(cfg) or {}).items() if m in modalities}
    return {"mean": MEAN_STD[0], "std": MEAN_STD[1], "class_names": list(STAGE_NAMES), "crop": crop}


def remove_stale_candidates(out: Path) -> list[Path]:
    """Delete the temporary files (``.<name>.*.tmp`` beside ``out``) of exports that were killed
    before renaming them; a live export holds a lock on its own candidate, which is kept.

    Returns:
        The files deleted.
    """
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
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if out.suffix != ".onnx":
        raise CliError(f"--out: expected a file name ending in .onnx, got {out}")
    if out.exists() and not args.overwrite:
        raise CliError(f"--out: {out} exists; pass --overwrite to replace it")
    if out.is_dir():
        raise CliError(f"--out: {out} is a folder; give a file name ending in .onnx")
    cfg, model = load_run(args.checkpoint, torch.device("cpu"))
    modalities = (
        [m.strip() for m in args.modalities.split(",") if m.strip()]
        if args.modalities else list(cfg.model.modalities)
    )
    unknown = [m for m in modalities if m not in cfg.model.modalities]
    if unknown or not modalities:
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
    with contextlib.suppress(OSError):  # make the rename durable
        folder = os.open(out.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    say(f"wrote {out} (inputs {modalities}, {cfg.model.image_size} px); ONNX Runtime vs PyTorch: "
        f"max |delta p| = {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
