"""Predict the fibrosis stage of one US + SWE image pair with a trained run.

    python -m examples.liver_fibrosis.predict --checkpoint runs/liver_fibrosis --us a.png --swe b.png
    python -m examples.liver_fibrosis.predict --checkpoint runs/liver_fibrosis --us a.png   # no SWE
    python -m examples.liver_fibrosis.predict --checkpoint runs/liver_fibrosis --us a.png \\
        --swe b.png --explain                                 # + Grad-CAM (Captum)
    python -m examples.liver_fibrosis.predict --checkpoint runs/liver_fibrosis --us a.png \\
        --swe b.png --onnx model.onnx                         # probabilities from ONNX Runtime

Prints the stage probabilities as JSON on stdout and writes ``prediction.json`` and
``overlay.png`` (both inputs and their spatial attention maps; Grad-CAM rows with ``--explain``)
into ``--out``. The images go through the training pipeline: sector ROI crop, resize, normalise.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from examples.liver_fibrosis.cli import CliError, run, say
from examples.liver_fibrosis.options import RunConfig
from examples.liver_fibrosis.report import MEAN_STD, explain_batch, pair_figure, to_display
from examples.liver_fibrosis.runner import resolve_device
from examples.liver_fibrosis.runs import check_free, load_run, write_json
from mmfusion.data import Manifest, ManifestRow
from mmfusion.data.pipeline import eval_dataset
from mmfusion.liver.stages import STAGE_NAMES

OUTPUTS = ("prediction.json", "overlay.png")


def build_parser() -> argparse.ArgumentParser:
    """The ``predict`` command line."""
    p = argparse.ArgumentParser(
        prog="python -m examples.liver_fibrosis.predict",
        description="Stage probabilities and attention maps for one US + SWE image pair.",
    )
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="folder of a training run")
    p.add_argument("--us", metavar="PNG", help="B-mode ultrasound image")
    p.add_argument("--swe", metavar="PNG", help="shear-wave elastography image")
    p.add_argument("--out", metavar="DIR", default="prediction",
                   help="output folder (default ./prediction)")
    p.add_argument("--explain", action="store_true", help="add Grad-CAM maps (needs captum)")
    p.add_argument("--onnx", metavar="MODEL.onnx",
                   help="compute the probabilities with this exported model (ONNX Runtime)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--overwrite", action="store_true", help="replace a previous prediction in --out")
    return p


def load_pair(cfg: RunConfig, paths: dict[str, str]) -> dict[str, torch.Tensor]:
    """Preprocess the given images like the evaluation data: modality -> ``[1, 3, H, W]``."""
    for m, path in paths.items():
        if not Path(path).is_file():
            raise CliError(f"--{m}: no such image file {path}")
    row = ManifestRow(line=0, patient_id="input", stage=0,
                      paths={m: Path(p) for m, p in paths.items()})
    try:
        manifest = Manifest((row,), tuple(paths), "command line")
        sample = eval_dataset(manifest, tuple(paths), cfg.model.image_size)[0]
    except ValueError as err:
        flag = next((f"--{m}" for m, p in paths.items() if str(p) in str(err)), "--us/--swe")
        raise CliError(f"{flag}: {' '.join(str(err).split())}") from err
    return {m: sample[m][None] for m in paths}


def onnx_probs(path: str, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    """Class probabilities ``[K]`` of the exported model, run by ONNX Runtime (no autograd)."""
    try:
        from mmfusion.export import OnnxPredictor
    except ImportError as err:
        raise CliError(f"--onnx: {err}") from err
    if not Path(path).is_file():
        raise CliError(f"--onnx: no such file {path}; export one with python -m "
                       "examples.liver_fibrosis.export --checkpoint DIR --out model.onnx")
    try:
        predictor = OnnxPredictor(path)
    except ImportError as err:
        raise CliError(f"--onnx: {err}") from err
    except Exception as err:  # onnxruntime raises its own exception types for bad files
        raise CliError(f"--onnx: cannot load {path} ({type(err).__name__}: {err})") from err
    if set(predictor.modalities) != set(inputs):
        raise CliError(f"--onnx: {path} takes {list(predictor.modalities)} images, got "
                       f"{list(inputs)}; give exactly those (or export with --modalities)")
    with torch.no_grad():
        probs = predictor({m: x.cpu().numpy() for m, x in inputs.items()})
    return np.asarray(probs, dtype=np.float64)[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m examples.liver_fibrosis.predict``."""
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    cfg, model = load_run(args.checkpoint, device)
    mods = cfg.model.modalities
    paths = {m: getattr(args, m) for m in mods if getattr(args, m, None)}
    extra = [m for m in ("us", "swe") if getattr(args, m) and m not in mods]
    if extra:
        raise CliError(f"--{extra[0]}: this model was trained on {list(mods)} only; drop --{extra[0]}")
    if not paths:
        raise CliError(f"--us/--swe: give the image(s) of {', '.join(mods)}")
    out = Path(args.out)
    check_free(out, OUTPUTS, args.overwrite, "a prediction")

    inputs = load_pair(cfg, paths)
    if args.onnx:
        probs = onnx_probs(args.onnx, inputs)
        branches: dict[str, list[float]] = {}
    else:
        with torch.no_grad():
            result = model({m: x.to(device) for m, x in inputs.items()})
        probs = result.probs[0].float().cpu().numpy().astype(np.float64)
        branches = {b: torch.softmax(z[0].float(), 0).cpu().tolist() for b, z in result.logits.items()}
    stage = STAGE_NAMES[int(probs.argmax())]
    maps = explain_batch(model, {m: x.to(device) for m, x in inputs.items()}, grad_cam=args.explain)
    images = {m: to_display(inputs[m][0], *MEAN_STD) for m in paths}
    per_kind = {kind: {m: v[0] for m, v in per_m.items()} for kind, per_m in maps.items()}
    out.mkdir(parents=True, exist_ok=True)
    overlay = pair_figure(images, per_kind, out / "overlay.png",
                          f"predicted {stage} (p = {probs.max():.2f})")
    report: dict[str, Any] = {
        "predicted_stage": stage,
        "probabilities": {s: round(float(p), 6) for s, p in zip(STAGE_NAMES, probs, strict=True)},
        "branches": {b: {s: round(float(p), 6) for s, p in zip(STAGE_NAMES, v, strict=True)}
                     for b, v in branches.items()},
        "modalities_present": list(paths),
        "inputs": {m: str(Path(p).resolve()) for m, p in paths.items()},
        "engine": "onnxruntime" if args.onnx else "torch",
        "checkpoint": str(Path(args.checkpoint).resolve()),
        "overlay": str(overlay),
        "maps": sorted(maps),
    }
    write_json(out / "prediction.json", report)
    print(json.dumps(report, indent=2))
    say(f"wrote {out / 'prediction.json'} and {overlay}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
