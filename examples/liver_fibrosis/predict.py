"""``predict``: the stage of one US + SWE pair, or of a patient from several views."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from examples.liver_fibrosis.cli import CliError, run, say
from examples.liver_fibrosis.options import RunConfig, command_parser, flag, load_run, normalise
from mmfusion.elastography import SWE_SCALE_COLUMN, parse_swe_scale_kpa, swe_scale_kpa
from mmfusion.liver.stages import METAVIR, STAGE_NAMES
from mmfusion.onnx_predictor import image_frame, prepare_image

if TYPE_CHECKING:
    import torch

OUTPUTS = ("prediction.json", "overlay.png", "overlays")


def _positive_kpa(text: Any) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of kPa, got {str(text)!r}")
    return value


def _frame_number(text: Any) -> int:
    if not str(text).isdigit():
        raise argparse.ArgumentTypeError(f"expected a frame number 0, 1, ..., got {str(text)!r}")
    return int(text)


def build_parser() -> Any:
    """The ``predict`` command line."""
    p = command_parser("python -m examples.liver_fibrosis.predict",
                       "Stage probabilities and attention maps for US + SWE images.")
    p.add_argument("--checkpoint", required=True, help="folder of a training run")
    p.add_argument("--us", type=str | None, default=None, help="B-mode image (PNG, JPEG or DICOM)")
    p.add_argument("--swe", type=str | None, default=None, help="shear-wave elastography image")
    p.add_argument("--views", type=str | None, default=None,
                   help="several views of one patient: a folder of <view>_us.<ext>, <view>_swe.<ext>")
    p.add_argument("--manifest", type=str | None, default=None, help="several views from a manifest (with --patient)")
    p.add_argument("--patient", type=str | None, default=None, help="with --manifest: the patient to predict")
    p.add_argument("--swe_scale_kpa", type=_positive_kpa, default=None,
                   help="top of the SWE colour scale in kPa, for a model trained with --swe_input "
                        "box_kpa (a --manifest row's swe_scale_kpa column comes first)")
    p.add_argument("--frame", type=_frame_number, default=None,
                   help="frame of multi-frame (cine) DICOM files, 0-based (default: the middle one; "
                        "a --manifest row's frame column comes first)")
    p.add_argument("--aggregate", choices=["mean", "geometric_mean", "max_stage"], default="mean",
                   help="how a patient's views are combined")
    p.add_argument("--out", default="prediction", help="output folder")
    flag(p, "explain", False, "add Grad-CAM maps (needs captum)")
    p.add_argument("--onnx", type=str | None, default=None,
                   help="compute the probabilities with this exported model (ONNX Runtime)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    flag(p, "overwrite", False, "replace a previous prediction in --out")
    return p


def frames_of(paths: dict[str, str], asked: dict[str, int | None], frame: int | None) -> dict[str, dict[str, Any]]:
    """modality -> ``{"frame", "n_frames", "why"}``: the manifest's frame, ``--frame``, or the middle one."""
    out: dict[str, dict[str, Any]] = {}
    for m, path in paths.items():
        if not Path(path).is_file():
            raise CliError(f"--{m}: no such image file {path}")
        try:
            used, n_frames = image_frame(path)
            if asked.get(m) is not None:
                used, why = image_frame(path, asked[m])[0], "the manifest's frame column"
            elif frame is not None and n_frames > 1:
                used, why = image_frame(path, frame)[0], "--frame"
            else:
                why = "the middle one, the default"
        except ValueError as err:
            where = "--frame" if frame is not None and asked.get(m) is None else f"--{m}"
            raise CliError(f"{where}: {' '.join(str(err).split()).removeprefix('frame: ')}") from err
        out[m] = {"frame": used, "n_frames": n_frames, "why": why}
    return out


def load_pair(cfg: RunConfig, paths: dict[str, str], scale: float | None, frames: dict[str, dict[str, Any]]
              ) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, Any]]]:
    """The model inputs (modality -> ``[1, 3, H, W]``) and how each file was cropped."""
    import torch

    from examples.liver_fibrosis import runs

    crops = {m: c.name for m, c in (runs.swe_crop(cfg) or {}).items()}
    if crops.get("swe") == "swe_box_kpa" and "swe" in paths and scale is None:
        raise CliError("--swe-scale-kpa: this model reads the SWE colour box on the reference "
                       "scale (trained with --swe-input box_kpa); give the top of the SWE "
                       "image's colour scale in kPa")
    inputs, records = {}, {}
    for m, path in paths.items():
        try:
            image = prepare_image(path, cfg.model.image_size, crop=crops.get(m, "sector"), mean=runs.MEAN_STD[0],
                                  std=runs.MEAN_STD[1], frame=frames[m]["frame"], swe_scale_kpa=scale)
        except ValueError as err:
            raise CliError(f"--{m}: {' '.join(str(err).split())}") from err
        inputs[m] = torch.from_numpy(image.image)[None]
        records[m] = {"crop": image.crop, "source": image.roi_source, "region": image.region,
                      "tissue_regions": image.tissue_regions}
    return inputs, records


def onnx_probs(path: str, inputs: dict[str, torch.Tensor], cfg: RunConfig) -> np.ndarray:
    """``[K]`` probabilities of the exported model, whose recorded preprocessing must be the run's."""
    from examples.liver_fibrosis import runs
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
    crops = {m: c.key for m, c in (runs.swe_crop(cfg) or {}).items()}
    differ = predictor.facts.differences(cfg.model.image_size, crops, *runs.MEAN_STD) if predictor.facts else []
    if differ:
        raise CliError(f"--onnx: {path} was exported with other preprocessing than the run in "
                       f"--checkpoint: {'; '.join(differ)}; export this run again")
    images = {m: x.cpu().numpy() for m, x in inputs.items()}
    available = None
    missing = [m for m in predictor.modalities if m not in inputs]
    if missing and predictor.availability_input:  # one graph serves pairs with and without SWE
        images.update({m: np.zeros(next(iter(images.values())).shape, np.float32) for m in missing})
        available = {m: np.array([m in inputs]) for m in predictor.modalities}
    elif set(predictor.modalities) != set(inputs):
        raise CliError(f"--onnx: {path} takes {list(predictor.modalities)} images, got {list(inputs)}; give "
                       "exactly those, or export with --availability-input (or --modalities)")
    return np.asarray(predictor(images, available), dtype=np.float64)[0]


def views_of(args: Any, modalities: tuple[str, ...]) -> tuple[dict[str, dict[str, str]], dict[str, Any]]:
    """view name -> modality -> file, and per view the manifest's ``scale``, ``frames`` and ``line``."""
    if sum([bool(args.us or args.swe), bool(args.views), bool(args.manifest)]) != 1:
        raise CliError("--us/--swe, --views, --manifest: give exactly one kind of input")
    if args.patient and not args.manifest:
        raise CliError("--patient: only with --manifest")
    if args.views:
        root = Path(args.views)
        if not root.is_dir():
            raise CliError(f"--views: {root} is not a folder")
        views: dict[str, dict[str, str]] = {}
        for path in sorted(root.iterdir()):
            stem, _, modality = path.stem.rpartition("_")
            if path.is_file() and stem and modality in modalities:
                views.setdefault(stem, {})[modality] = str(path)
        if not views:
            raise CliError(f"--views: {root} holds no <view>_<modality>.<ext> files for {list(modalities)}")
        return views, {}
    if args.manifest:
        from mmfusion.data import read_manifest

        manifest = read_manifest(args.manifest, labels=METAVIR, verify="exists",
                                 columns={SWE_SCALE_COLUMN: parse_swe_scale_kpa})
        patients = sorted(set(manifest.groups.tolist()))
        patient = args.patient
        if patient is None and len(patients) != 1:
            raise CliError(f"--patient: {args.manifest} holds {len(patients)} patients; name one of "
                           f"{', '.join(patients[:5])}{' ...' if len(patients) > 5 else ''}")
        rows = [r for r in manifest.rows if r.patient_id == (patient or patients[0])]
        if not rows:
            raise CliError(f"--patient: no rows for {patient!r} in {args.manifest}")
        return ({f"line {r.line}": {m: str(p) for m, p in r.paths.items() if p is not None and m in modalities}
                 for r in rows},
                {f"line {r.line}": {"scale": swe_scale_kpa(r), "line": r.line,
                                    "frames": {m: r.frame(m) for m in modalities}} for r in rows})
    extra = [m for m in ("us", "swe") if getattr(args, m) and m not in modalities]
    if extra:
        raise CliError(f"--{extra[0]}: this model was trained on {list(modalities)} only; drop --{extra[0]}")
    paths = {m: getattr(args, m) for m in modalities if getattr(args, m, None)}
    if not paths:
        raise CliError(f"--us/--swe: give the image(s) of {', '.join(modalities)}")
    return {"input": paths}, {}


def _named(values: Any) -> dict[str, float]:
    return {s: round(float(p), 6) for s, p in zip(STAGE_NAMES, values, strict=True)}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m examples.liver_fibrosis.predict``."""
    args = build_parser().parse_args(normalise(argv))
    import torch

    from examples.liver_fibrosis import runs
    from mmfusion.explain import explain_maps
    from mmfusion.metrics import aggregate_patients
    from mmfusion.plots import plot_maps, to_display

    runs.require("matplotlib")
    device = runs.resolve_device(args.device)
    cfg, model = load_run(args.checkpoint, device)
    views, facts = views_of(args, cfg.model.modalities)
    frames = {name: frames_of(paths, facts.get(name, {}).get("frames", {}), args.frame)
              for name, paths in views.items()}
    if args.frame is not None and not any(f["n_frames"] > 1 for v in frames.values() for f in v.values()):
        raise CliError("--frame: none of the input images has several frames (only multi-frame "
                       "DICOM files, cine loops, do); drop --frame")
    out = Path(args.out)
    runs.check_free(out, OUTPUTS, args.overwrite, "a prediction")
    out.mkdir(parents=True, exist_ok=True)
    per_view: dict[str, dict[str, Any]] = {}
    all_probs, all_maps = [], set()
    for name, paths in views.items():
        inputs, records = load_pair(cfg, paths, facts.get(name, {}).get("scale") or args.swe_scale_kpa, frames[name])
        if args.onnx:
            probs, branches = onnx_probs(args.onnx, inputs, cfg), {}
        else:
            with torch.no_grad():
                result = model({m: x.to(device) for m, x in inputs.items()})
            probs = result.probs[0].float().cpu().numpy().astype(np.float64)
            branches = {b: torch.softmax(z[0].float(), 0).cpu().tolist() for b, z in result.logits.items()}
        if not np.isfinite(probs).all():
            raise CliError(f"{'--onnx' if args.onnx else '--checkpoint'}: the model's probabilities are not "
                           f"finite ({probs.tolist()}): the model diverged? train it again (e.g. with a lower --lr)")
        for m, path in paths.items():
            f, region = frames[name][m], records[m]["region"]
            if f["n_frames"] > 1:
                say(f"--{m} {path}: frame {f['frame']} of {f['n_frames']} (0-based; {f['why']}); "
                    "choose another with --frame N")
            if records[m]["tissue_regions"] > 1 and region is not None:
                say(f"--{m} {path}: a dual-view file with {records[m]['tissue_regions']} tissue regions; "
                    f"used region {region['index']} ({region['kind']}, box {tuple(region['box'])})")
        stage = STAGE_NAMES[int(probs.argmax())]
        maps = explain_maps(model, {m: x.to(device) for m, x in inputs.items()}, with_grad_cam=args.explain)
        per_kind = {kind: {m: v[0] for m, v in per_m.items()} for kind, per_m in maps.items()}
        target = out / "overlay.png" if len(views) == 1 else out / "overlays" / f"{name.replace(' ', '_')}.png"
        images = {m: to_display(inputs[m][0], *runs.MEAN_STD) for m in paths}
        overlay = plot_maps(images, per_kind, target, f"{name}: predicted {stage} (p = {probs.max():.2f})")
        per_view[name] = {
            "predicted_stage": stage, "probabilities": _named(probs),
            "branches": {b: _named(v) for b, v in branches.items()}, "modalities_present": list(paths),
            "inputs": {m: str(Path(p).resolve()) for m, p in paths.items()},
            "frames": {m: {k: f[k] for k in ("frame", "n_frames")} for m, f in frames[name].items()},
            "roi": records, "overlay": str(overlay)}
        all_probs.append(probs)
        all_maps.update(maps)
    common = {"engine": "onnxruntime" if args.onnx else "torch",
              "checkpoint": str(Path(args.checkpoint).resolve()), "maps": sorted(all_maps)}
    if len(views) == 1:
        document: dict[str, Any] = {**next(iter(per_view.values())), **common}
    else:
        _, patient, _ = aggregate_patients(np.stack(all_probs), ["patient"] * len(all_probs), method=args.aggregate)
        document = {"predicted_stage": STAGE_NAMES[int(patient[0].argmax())], "probabilities": _named(patient[0]),
                    "aggregate": args.aggregate, "n_views": len(views), "views": per_view, **common}
    runs.write_json(out / "prediction.json", document)
    print(json.dumps(document, indent=2))
    say(f"wrote {out / 'prediction.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
