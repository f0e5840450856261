"""``export``: a run to ONNX, checked against PyTorch before it replaces ``--out``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from examples.liver_fibrosis.cli import CliError, run, say
from examples.liver_fibrosis.options import command_parser, flag, load_run, normalise
from mmfusion.files import replace_checked
from mmfusion.liver.stages import STAGE_NAMES


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

    from examples.liver_fibrosis.runs import MEAN_STD, swe_crop, unwritable

    cfg, model = load_run(args.checkpoint, torch.device("cpu"))
    modalities = ([m.strip() for m in args.modalities.split(",") if m.strip()] if args.modalities
                  else list(cfg.model.modalities))
    if not modalities or any(m not in cfg.model.modalities for m in modalities):
        raise CliError(f"--modalities: the model knows {list(cfg.model.modalities)}, got {modalities}")
    from mmfusion.export import OnnxPredictor, check_finite_weights, check_parity, to_onnx

    check_finite_weights(model, "--checkpoint")
    try:
        with replace_checked(out) as candidate:  # checked before it replaces --out
            try:
                to_onnx(model, candidate, modalities=modalities, image_size=cfg.model.image_size,
                        availability_input=args.availability_input, mean=MEAN_STD[0], std=MEAN_STD[1],
                        class_names=list(STAGE_NAMES), crop={m: c.key for m, c in (swe_crop(cfg) or {}).items() if m in modalities})
                predictor = OnnxPredictor(candidate)
            except ImportError as err:
                raise CliError(f"export: {err}") from err
            diff = check_parity(model, predictor, cfg.model.image_size)
    except OSError as err:
        raise unwritable(out.parent, err) or err from err
    say(f"wrote {out} (inputs {modalities}, {cfg.model.image_size} px); ONNX Runtime vs PyTorch: "
        f"max |delta p| = {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
