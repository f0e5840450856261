"""Predict the fibrosis stage of one US + SWE image pair, or of a patient from several views.

    python -m examples.liver_fibrosis.predict --checkpoint runs/liver_fibrosis --us a.png --swe b.png
    python -m examples.liver_fibrosis.predict --checkpoint runs/liver_fibrosis --us a.png   # no SWE
    python -m examples.liver_fibrosis.predict --checkpoint runs/liver_fibrosis --us a.png \\
        --swe b.png --explain                                 # + Grad-CAM (Captum)
    python -m examples.liver_fibrosis.predict --checkpoint runs/liver_fibrosis --us a.png \\
        --swe b.png --onnx model.onnx                         # probabilities from ONNX Runtime

    python -m examples.liver_fibrosis.predict --checkpoint runs/liver_fibrosis --views P001/
    python -m examples.liver_fibrosis.predict --checkpoint runs/liver_fibrosis \
        --manifest visits.csv --patient P001 --aggregate max_stage

Prints the stage probabilities as JSON on stdout and writes ``prediction.json`` and
``overlay.png`` (both inputs and their spatial attention maps; Grad-CAM rows with ``--explain``)
into ``--out``. The images (PNG, JPEG or DICOM) go through the training pipeline: sector ROI crop
(from the DICOM tissue region where tagged), or for the SWE image the crop of the run's
``--swe-input`` (its colour box; with ``box_kpa`` the box re-drawn on the reference colour scale,
which needs the top of the image's colour scale in kPa: ``--swe-scale-kpa``, or the manifest's
``swe_scale_kpa`` column), resize, normalise.

Several views of one patient (``--views DIR`` with files ``<view>_us.<ext>`` and
``<view>_swe.<ext>``, a view may lack one of them; or ``--manifest CSV`` with ``--patient ID``)
give one prediction per view and the patient's stage, combined by
:func:`mmfusion.metrics.aggregate_patients` (``--aggregate mean`` by default; ``max_stage`` reports
the most advanced stage seen; ``geometric_mean``); overlays go to ``overlays/<view>.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from examples.liver_fibrosis.cli import CliError, run, say
from examples.liver_fibrosis.options import RunConfig
from examples.liver_fibrosis.report import MEAN_STD, explain_batch, pair_figure, to_display
from examples.liver_fibrosis.runner import resolve_device, swe_crop
from examples.liver_fibrosis.runs import check_free, load_run, require, write_json
from mmfusion.data import SWE_SCALE_COLUMN, Manifest, ManifestRow
from mmfusion.data.pipeline import eval_dataset
from mmfusion.liver.stages import STAGE_NAMES
from mmfusion.metrics import AGGREGATION_METHODS, aggregate_patients

OUTPUTS = ("prediction.json", "overlay.png", "overlays")


def build_parser() -> argparse.ArgumentParser:
    """The ``predict`` command line."""
    p = argparse.ArgumentParser(
        prog="python -m examples.liver_fibrosis.predict",
        description="Stage probabilities and attention maps for one US + SWE image pair.",
    )
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="folder of a training run")
    p.add_argument("--us", metavar="IMAGE", help="B-mode ultrasound image (PNG, JPEG or DICOM)")
    p.add_argument("--swe", metavar="IMAGE", help="shear-wave elastography image")
    p.add_argument("--views", metavar="DIR",
                   help="several views of one patient: <view>_us.<ext> and <view>_swe.<ext> files")
    p.add_argument("--manifest", metavar="CSV", help="several views from a manifest (with --patient)")
    p.add_argument("--patient", metavar="ID", help="with --manifest: the patient to predict")
    p.add_argument("--swe-scale-kpa", metavar="KPA", type=_positive_kpa,
                   help="top of the SWE images' colour scale in kPa, for a model trained with "
                        "--swe-input box_kpa (a --manifest row's swe_scale_kpa column comes first)")
    p.add_argument("--aggregate", choices=list(AGGREGATION_METHODS), default="mean",
                   help="how a patient's views are combined (default mean of probabilities)")
    p.add_argument("--out", metavar="DIR", default="prediction",
                   help="output folder (default ./prediction)")
    p.add_argument("--explain", action="store_true", help="add Grad-CAM maps (needs captum)")
    p.add_argument("--onnx", metavar="MODEL.onnx",
                   help="compute the probabilities with this exported model (ONNX Runtime)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--overwrite", action="store_true", help="replace a previous prediction in --out")
    return p


def _positive_kpa(text: str) -> float:
    """``--swe-scale-kpa``'s value: a positive number of kPa."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of kPa, got {text!r}")
    return value


def load_pair(cfg: RunConfig, paths: dict[str, str], swe_scale_kpa: float | None = None
              ) -> dict[str, torch.Tensor]:
    """Preprocess the given images like the evaluation data: modality -> ``[1, 3, H, W]``.

    The SWE image gets the run's ``--swe-input`` crop; ``swe_scale_kpa`` is the top of its colour
    scale in kPa, needed by ``box_kpa`` only.
    """
    for m, path in paths.items():
        if not Path(path).is_file():
            raise CliError(f"--{m}: no such image file {path}")
    crop = {m: mode for m, mode in (swe_crop(cfg) or {}).items() if m in paths} or None
    if crop and "swe_box_kpa" in crop.values() and swe_scale_kpa is None:
        raise CliError("--swe-scale-kpa: this model reads the SWE colour box on the reference "
                       "scale (trained with --swe-input box_kpa); give the top of the SWE "
                       "image's colour scale in kPa")
    row = ManifestRow(line=0, patient_id="input", stage=0,
                      paths={m: Path(p) for m, p in paths.items()},
                      extra={} if swe_scale_kpa is None else {SWE_SCALE_COLUMN: repr(swe_scale_kpa)})
    try:
        manifest = Manifest((row,), tuple(paths), "command line")
        sample = eval_dataset(manifest, tuple(paths), cfg.model.image_size, crop=crop)[0]
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
    images = {m: x.cpu().numpy() for m, x in inputs.items()}
    available = None
    missing = [m for m in predictor.modalities if m not in inputs]
    if missing and predictor.availability_input:  # one graph serves pairs with and without SWE
        shape = next(iter(images.values())).shape
        images.update({m: np.zeros(shape, np.float32) for m in missing})
        available = {m: np.array([m in inputs]) for m in predictor.modalities}
    elif set(predictor.modalities) != set(inputs):
        raise CliError(f"--onnx: {path} takes {list(predictor.modalities)} images, got "
                       f"{list(inputs)}; give exactly those, or export with --availability-input "
                       "(or --modalities)")
    probs = predictor(images, available)
    return np.asarray(probs, dtype=np.float64)[0]


def views_from_folder(folder: str, modalities: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """``--views DIR``: view name -> modality -> file, from ``<view>_<modality>.<ext>`` names."""
    root = Path(folder)
    if not root.is_dir():
        raise CliError(f"--views: {root} is not a folder")
    views: dict[str, dict[str, str]] = {}
    for path in sorted(root.iterdir()):
        stem, _, modality = path.stem.rpartition("_")
        if path.is_file() and stem and modality in modalities:
            views.setdefault(stem, {})[modality] = str(path)
    if not views:
        raise CliError(f"--views: {root} holds no <view>_<modality>.<ext> files for {list(modalities)}")
    return views


def views_from_manifest(csv: str, patient: str | None, modalities: tuple[str, ...]
                        ) -> tuple[dict[str, dict[str, str]], dict[str, float | None]]:
    """``--manifest CSV --patient ID``: view name (``line N``) -> modality -> file, and view name
    -> the top of its SWE colour scale in kPa (``None`` where the manifest has none)."""
    from mmfusion.data import read_manifest

    manifest = read_manifest(csv, verify="exists")
    patients = sorted(set(manifest.groups.tolist()))
    if patient is None:
        if len(patients) != 1:
            raise CliError(f"--patient: {csv} holds {len(patients)} patients; name one of "
                           f"{', '.join(patients[:5])}{' ...' if len(patients) > 5 else ''}")
        patient = patients[0]
    rows = [r for r in manifest.rows if r.patient_id == patient]
    if not rows:
        raise CliError(f"--patient: no rows for {patient!r} in {csv}")
    views = {f"line {r.line}": {m: str(p) for m, p in r.paths.items() if p is not None and m in modalities}
             for r in rows}
    return views, {f"line {r.line}": r.swe_scale_kpa for r in rows}


def predict_view(model: Any, cfg: RunConfig, paths: dict[str, str], args: argparse.Namespace,
                 device: torch.device, swe_scale_kpa: float | None = None
                 ) -> tuple[dict[str, torch.Tensor], np.ndarray, dict[str, list[float]]]:
    """One view: the preprocessed inputs, the ensemble's ``[K]`` probabilities, per-branch ones."""
    inputs = load_pair(cfg, paths, swe_scale_kpa)
    if args.onnx:
        return inputs, onnx_probs(args.onnx, inputs), {}
    with torch.no_grad():
        result = model({m: x.to(device) for m, x in inputs.items()})
    probs = result.probs[0].float().cpu().numpy().astype(np.float64)
    branches = {b: torch.softmax(z[0].float(), 0).cpu().tolist() for b, z in result.logits.items()}
    return inputs, probs, branches


def _named(values: Any) -> dict[str, float]:
    return {s: round(float(p), 6) for s, p in zip(STAGE_NAMES, values, strict=True)}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m examples.liver_fibrosis.predict``."""
    args = build_parser().parse_args(argv)
    require("matplotlib")
    device = resolve_device(args.device)
    cfg, model = load_run(args.checkpoint, device)
    mods = cfg.model.modalities
    sources = [bool(args.us or args.swe), bool(args.views), bool(args.manifest)]
    if sum(sources) != 1:
        raise CliError("--us/--swe, --views, --manifest: give exactly one kind of input")
    if args.patient and not args.manifest:
        raise CliError("--patient: only with --manifest")
    scales: dict[str, float | None] = {}
    if args.views:
        views = views_from_folder(args.views, mods)
    elif args.manifest:
        views, scales = views_from_manifest(args.manifest, args.patient, mods)
    else:
        paths = {m: getattr(args, m) for m in mods if getattr(args, m, None)}
        extra = [m for m in ("us", "swe") if getattr(args, m) and m not in mods]
        if extra:
            raise CliError(f"--{extra[0]}: this model was trained on {list(mods)} only; drop --{extra[0]}")
        if not paths:
            raise CliError(f"--us/--swe: give the image(s) of {', '.join(mods)}")
        views = {"input": paths}
    out = Path(args.out)
    check_free(out, OUTPUTS, args.overwrite, "a prediction")
    out.mkdir(parents=True, exist_ok=True)

    per_view: dict[str, dict[str, Any]] = {}
    all_probs, all_maps = [], set()
    for name, paths in views.items():
        scale = scales.get(name) or args.swe_scale_kpa
        inputs, probs, branches = predict_view(model, cfg, paths, args, device, scale)
        stage = STAGE_NAMES[int(probs.argmax())]
        maps = explain_batch(model, {m: x.to(device) for m, x in inputs.items()}, grad_cam=args.explain)
        images = {m: to_display(inputs[m][0], *MEAN_STD) for m in paths}
        per_kind = {kind: {m: v[0] for m, v in per_m.items()} for kind, per_m in maps.items()}
        target = out / "overlay.png" if len(views) == 1 else out / "overlays" / f"{name.replace(' ', '_')}.png"
        overlay = pair_figure(images, per_kind, target, f"{name}: predicted {stage} (p = {probs.max():.2f})")
        per_view[name] = {
            "predicted_stage": stage, "probabilities": _named(probs),
            "branches": {b: _named(v) for b, v in branches.items()},
            "modalities_present": list(paths),
            "inputs": {m: str(Path(p).resolve()) for m, p in paths.items()},
            "overlay": str(overlay),
        }
        all_probs.append(probs)
        all_maps.update(maps)
    common = {"engine": "onnxruntime" if args.onnx else "torch",
              "checkpoint": str(Path(args.checkpoint).resolve()), "maps": sorted(all_maps)}
    if len(views) == 1:
        report: dict[str, Any] = {**next(iter(per_view.values())), **common}
    else:
        _, patient_probs, _ = aggregate_patients(np.stack(all_probs), ["patient"] * len(all_probs),
                                                 method=args.aggregate)
        report = {"predicted_stage": STAGE_NAMES[int(patient_probs[0].argmax())],
                  "probabilities": _named(patient_probs[0]), "aggregate": args.aggregate,
                  "n_views": len(views), "views": per_view, **common}
    write_json(out / "prediction.json", report)
    print(json.dumps(report, indent=2))
    say(f"wrote {out / 'prediction.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
