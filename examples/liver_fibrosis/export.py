"""Export a trained run to ONNX (images -> stage probabilities) and check it against PyTorch.

    python -m examples.liver_fibrosis.export --checkpoint runs/liver_fibrosis --out model.onnx
    python -m examples.liver_fibrosis.export --checkpoint runs/liver_fibrosis --out us_only.onnx \\
        --modalities us                  # a graph for clinics without SWE (SWE treated as absent)

The graph has one input per modality (``[batch, 3, H, W]`` float32, normalised as in training) and
one output ``probs`` (``[batch, 5]``, the ensemble prediction); see :func:`mmfusion.export.to_onnx`.
``--availability-input`` adds an input ``available`` (``[batch, M]`` bool), so one graph serves
pairs with and without SWE.
After writing, the file is run once with ONNX Runtime on random images and compared with PyTorch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from examples.liver_fibrosis.cli import CliError, run, say
from examples.liver_fibrosis.runs import load_run


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m examples.liver_fibrosis.export``."""
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if out.suffix != ".onnx":
        raise CliError(f"--out: expected a file name ending in .onnx, got {out}")
    if out.exists() and not args.overwrite:
        raise CliError(f"--out: {out} exists; pass --overwrite to replace it")
    cfg, model = load_run(args.checkpoint, torch.device("cpu"))
    modalities = (
        [m.strip() for m in args.modalities.split(",") if m.strip()]
        if args.modalities else list(cfg.model.modalities)
    )
    unknown = [m for m in modalities if m not in cfg.model.modalities]
    if unknown or not modalities:
        raise CliError(f"--modalities: the model knows {list(cfg.model.modalities)}, got {modalities}")
    from mmfusion.export import OnnxPredictor, to_onnx

    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        to_onnx(model, out, modalities=modalities, image_size=cfg.model.image_size,
                availability_input=args.availability_input)
        predictor = OnnxPredictor(out)
    except ImportError as err:
        raise CliError(f"export: {err}") from err
    x = {m: torch.randn(2, 3, cfg.model.image_size, cfg.model.image_size, generator=torch.Generator().manual_seed(i))
         for i, m in enumerate(modalities)}
    with torch.no_grad():
        expected = model(x).probs.numpy()
    got = predictor({m: v.numpy() for m, v in x.items()})
    if args.availability_input:  # and with the last modality missing for the second sample
        present = {m: torch.tensor([True, i < len(modalities) - 1]) for i, m in enumerate(modalities)}
        with torch.no_grad():
            expected = np.concatenate([expected, model(x, present).probs.numpy()])
        got = np.concatenate([got, predictor({m: v.numpy() for m, v in x.items()},
                                             {m: v.numpy() for m, v in present.items()})])
    diff = float(np.abs(expected - got).max())
    say(f"wrote {out} (inputs {modalities}, {cfg.model.image_size} px); ONNX Runtime vs PyTorch: "
        f"max |delta p| = {diff:.2e}")
    if diff > 1e-3:
        raise CliError(f"export: ONNX Runtime disagrees with PyTorch (max |delta p| = {diff:.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
