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

A cine (multi-frame) DICOM file is read at one frame: the middle one unless ``--frame N``
(0-based) or a ``--manifest`` row's frame column says otherwise; a status line names the frame
used, and ``prediction.json`` records it (``frames``: per modality the frame and the file's frame
count). For a DICOM file with tagged ultrasound regions, ``roi`` records the region used (its
index, box and kind) and how many tissue regions the file has (2 on a dual-view screen; a status
line says which view was used). A model whose probabilities are not finite (a diverged training)
is an error, never a prediction.
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
from examples.liver_fibrosis.runs import (
    check_free,
    load_run,
    require,
    resolve_device,
    swe_crop,
    write_json,
)
from mmfusion.data import Manifest, ManifestRow
from mmfusion.data.pipeline import cached_crops, eval_dataset
from mmfusion.elastography import SWE_SCALE_COLUMN, parse_swe_scale_kpa, swe_scale_kpa
from mmfusion.liver.stages import METAVIR, STAGE_NAMES
from mmfusion.metrics import AGGREGATION_METHODS, aggregate_patients
from mmfusion.onnx_predictor import image_frame

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
    p.add_argument("--frame", metavar="N", type=_frame_number,
                   help="frame of multi-frame (cine) DICOM files, 0-based (default: the middle "
                        "one; a --manifest row's frame column comes first)")
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


def _frame_number(text: str) -> int:
    """``--frame``'s value: a frame index, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a frame number 0, 1, ..., got {text!r}")
    return value


def frames_of(paths: dict[str, str], asked: dict[str, int | None], frame: int | None
              ) -> dict[str, dict[str, Any]]:
    """The frame each file is read at: modality -> ``{"frame", "n_frames", "why"}``.

    ``asked`` (a manifest row's frame columns) comes first, then ``frame`` (``--frame``, for
    multi-frame files only), then the middle frame. Reads only the DICOM headers.
    """
    out: dict[str, dict[str, Any]] = {}
    for m, path in paths.items():
        if not Path(path).is_file():
            raise CliError(f"--{m}: no such image file {path}")
        try:
            _, n_frames = image_frame(path)
            if asked.get(m) is not None:
                used, why = image_frame(path, asked[m])[0], "the manifest's frame column"
            elif frame is not None and n_frames > 1:
                used, why = image_frame(path, frame)[0], "--frame"
            else:
                used, why = n_frames // 2, "the middle one, the default"
        except ValueError as err:
            flag = "--frame" if frame is not None and asked.get(m) is None else f"--{m}"
            raise CliError(f"{flag}: {' '.join(str(err).split()).removeprefix('frame: ')}") from err
        out[m] = {"frame": used, "n_frames": n_frames, "why": why}
    return out


def roi_record(path: str, crop: str, source: str | None, frame: int) -> dict[str, Any]:
    """How an image was cropped: crop mode, ROI source, the DICOM region used (index, box, kind;
    None unless the source is ``"dicom_region"``) and the file's number of tissue regions."""
    from mmfusion.data import dicom_regions, image_roi, is_dicom, load_image

    regions = dicom_regions(path) if is_dicom(path) else []
    record: dict[str, Any] = {"crop": crop, "source": source, "region": None,
                              "tissue_regions": sum(r.is_tissue and r.area > 0 for r in regions)}
    if source == "dicom_region":
        region = image_roi(path, image=load_image(path, frame=frame)).region
        if region is not None:
            record["region"] = {"index": region.index, "box": list(region.box), "kind": region.kind}
    return record


def load_pair(cfg: RunConfig, paths: dict[str, str], swe_scale_kpa: float | None = None, *,
              line: int = 1, frames: dict[str, dict[str, Any]] | None = None
              ) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, Any]]]:
    """Preprocess the given images like the evaluation data: modality -> ``[1, 3, H, W]``, and
    modality -> how its image was cropped (:func:`roi_record`).

    The SWE image gets the run's ``--swe-input`` crop; ``swe_scale_kpa`` is the top of its colour
    scale in kPa, needed by ``box_kpa`` only. ``line`` numbers the view (the manifest's line for
    ``--manifest``, else 1, 2, ...); ``frames`` (from :func:`frames_of`) fixes each file's frame.
    """
    frames = frames if frames is not None else frames_of(paths, {}, None)
    crop = {m: c for m, c in (swe_crop(cfg) or {}).items() if m in paths} or None
    if crop and "swe_box_kpa" in {c.key for c in crop.values()} and swe_scale_kpa is None:
        raise CliError("--swe-scale-kpa: this model reads the SWE colour box on the reference "
                       "scale (trained with --swe-input box_kpa); give the top of the SWE "
                       "image's colour scale in kPa")
    extra = {f"{m}_frame": str(f["frame"]) for m, f in frames.items()}
    if swe_scale_kpa is not None:
        extra[SWE_SCALE_COLUMN] = repr(swe_scale_kpa)
    row = ManifestRow(line=line, patient_id="input", label=0,
                      paths={m: Path(p) for m, p in paths.items()}, extra=extra)
    try:  # the source names the files: one view's crops are never another's
        manifest = Manifest((row,), tuple(paths), "command line: " + ", ".join(paths.values()))
        sample = eval_dataset(manifest, tuple(paths), cfg.model.image_size, crop=crop)[0]
        crops = cached_crops(manifest, cfg.model.image_size, crop=crop)
    except ValueError as err:
        flag = next((f"--{m}" for m, p in paths.items() if str(p) in str(err)), "--us/--swe")
        raise CliError(f"{flag}: {' '.join(str(err).split())}") from err
    applied, sources = crops.applied_crops.get(0, {}), crops.roi_sources.get(0, {})
    records = {m: roi_record(p, applied.get(m, "sector"), sources.get(m), frames[m]["frame"])
               for m, p in paths.items()}
    return {m: sample[m][None] for m in paths}, records


def check_onnx_facts(path: str, facts: Any, cfg: RunConfig) -> None:
    """Refuse an exported model whose recorded preprocessing differs from the run's.

    ``predict --onnx`` preprocesses with the run's settings (``--checkpoint``); a file exported
    from another run (another image size, SWE input or normalisation) would silently get inputs
    it was not trained on.

    Raises:
        CliError: Naming each difference.
    """
    if facts is None:  # exported before the metadata was written: nothing to compare
        return
    crops = {m: c.key for m, c in (swe_crop(cfg) or {}).items()}
    expected = {"image_size": (cfg.model.image_size, cfg.model.image_size),
                "crop": {m: crops.get(m, "sector") for m in facts.modalities},
                "mean": tuple(MEAN_STD[0]), "std": tuple(MEAN_STD[1])}
    recorded = {"image_size": tuple(facts.image_size), "crop": dict(facts.crop),
                "mean": tuple(facts.mean), "std": tuple(facts.std)}
    differ = [f"{k} {recorded[k]} (the run: {v})" for k, v in expected.items()
              if (not np.allclose(recorded[k], v, atol=1e-6) if k in ("mean", "std")
                  else recorded[k] != v)]
    if differ:
        raise CliError(f"--onnx: {path} was exported with other preprocessing than the run in "
                       f"--checkpoint: {'; '.join(differ)}; export this run again")


def onnx_probs(path: str, inputs: dict[str, torch.Tensor], cfg: RunConfig) -> np.ndarray:
    """Class probabilities ``[K]`` of the exported model, run by ONNX Runtime (no autograd)."""
    from mmfusion.onnx_predictor import OnnxPredictor

    if not Path(path).is_file():
        raise CliError(f"--onnx: no such file {path}; export one with python -m "
                       "examples.liver_fibrosis.export --checkpoint DIR --out model.onnx")
    try:
        predictor = OnnxPredictor(path)
    except ImportError as err:
        raise CliError(f"--onnx: {err}") from err
    except Exception as err:  # onnxruntime raises its own exception types for bad files
        raise CliError(f"--onnx: cannot load {path} ({type(err).__name__}: {err})") from err
    check_onnx_facts(path, predictor.facts, cfg)
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
                        ) -> tuple[dict[str, dict[str, str]], dict[str, float | None],
                                   dict[str, dict[str, int | None]], dict[str, int]]:
    """``--manifest CSV --patient ID``: view name (``line N``) -> modality -> file; view name ->
    the top of its SWE colour scale in kPa (``None`` where the manifest has none); view name ->
    modality -> the row's frame column (``None`` where empty); view name -> manifest line."""
    from mmfusion.data import read_manifest

    manifest = read_manifest(csv, labels=METAVIR, verify="exists",
                             columns={SWE_SCALE_COLUMN: parse_swe_scale_kpa})
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
    frames = {f"line {r.line}": {m: r.frame(m) for m in modalities} for r in rows}
    lines = {f"line {r.line}": r.line for r in rows}
    return views, {f"line {r.line}": swe_scale_kpa(r) for r in rows}, frames, lines


def predict_view(model: Any, cfg: RunConfig, paths: dict[str, str], args: argparse.Namespace,
                 device: torch.device, swe_scale_kpa: float | None = None, *, line: int = 1,
                 frames: dict[str, dict[str, Any]] | None = None
                 ) -> tuple[dict[str, torch.Tensor], np.ndarray, dict[str, list[float]],
                            dict[str, dict[str, Any]]]:
    """One view: the preprocessed inputs, the ensemble's ``[K]`` probabilities, per-branch ones,
    and how each image was cropped.

    Raises:
        CliError: The probabilities are not finite (a diverged model).
    """
    inputs, records = load_pair(cfg, paths, swe_scale_kpa, line=line, frames=frames)
    if args.onnx:
        probs, branches = onnx_probs(args.onnx, inputs, cfg), {}
    else:
        with torch.no_grad():
            result = model({m: x.to(device) for m, x in inputs.items()})
        probs = result.probs[0].float().cpu().numpy().astype(np.float64)
        branches = {b: torch.softmax(z[0].float(), 0).cpu().tolist()
                    for b, z in result.logits.items()}
    if not np.isfinite(probs).all():
        flag = "--onnx" if args.onnx else "--checkpoint"
        raise CliError(f"{flag}: the model's probabilities are not finite ({probs.tolist()}): "
                       "the model diverged? train it again (e.g. with a lower --lr)")
    return inputs, probs, branches, records


def say_what_was_read(paths: dict[str, str], frames: dict[str, dict[str, Any]],
                      records: dict[str, dict[str, Any]]) -> None:
    """Status lines for a cine file (the frame used) and a dual-view file (the region used)."""
    for m, path in paths.items():
        f, roi = frames[m], records[m]
        if f["n_frames"] > 1:
            say(f"--{m} {path}: frame {f['frame']} of {f['n_frames']} (0-based; {f['why']}); "
                "choose another with --frame N")
        region = roi["region"]
        if roi["tissue_regions"] > 1 and region is not None:
            say(f"--{m} {path}: a dual-view file with {roi['tissue_regions']} tissue regions; "
                f"used region {region['index']} ({region['kind']}, box {tuple(region['box'])})")


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
    asked: dict[str, dict[str, int | None]] = {}
    lines: dict[str, int] = {}
    if args.views:
        views = views_from_folder(args.views, mods)
    elif args.manifest:
        views, scales, asked, lines = views_from_manifest(args.manifest, args.patient, mods)
    else:
        paths = {m: getattr(args, m) for m in mods if getattr(args, m, None)}
        extra = [m for m in ("us", "swe") if getattr(args, m) and m not in mods]
        if extra:
            raise CliError(f"--{extra[0]}: this model was trained on {list(mods)} only; drop --{extra[0]}")
        if not paths:
            raise CliError(f"--us/--swe: give the image(s) of {', '.join(mods)}")
        views = {"input": paths}
    frames = {name: frames_of(paths, asked.get(name, {}), args.frame) for name, paths in views.items()}
    if args.frame is not None and not any(f["n_frames"] > 1 for view in frames.values()
                                          for f in view.values()):
        raise CliError("--frame: none of the input images has several frames (only multi-frame "
                       "DICOM files, cine loops, do); drop --frame")
    out = Path(args.out)
    check_free(out, OUTPUTS, args.overwrite, "a prediction")
    out.mkdir(parents=True, exist_ok=True)

    per_view: dict[str, dict[str, Any]] = {}
    all_probs, all_maps = [], set()
    for number, (name, paths) in enumerate(views.items(), start=1):
        scale = scales.get(name) or args.swe_scale_kpa
        inputs, probs, branches, records = predict_view(
            model, cfg, paths, args, device, scale, line=lines.get(name, number), frames=frames[name])
        say_what_was_read(paths, frames[name], records)
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
            "frames": {m: {k: f[k] for k in ("frame", "n_frames")} for m, f in frames[name].items()},
            "roi": records,
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
