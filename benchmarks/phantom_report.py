"""Measure the data side on the CPU: ROI accuracy and speed, phantom generation, Bayes ceiling.

Run from the repository root::

    python -m benchmarks.phantom_report            # full run (generates 250 patients, ~1 min)
    python -m benchmarks.phantom_report --frames 20 --patients 20   # quick check

Writes ``benchmarks/results/phantom_cpu.json`` and ``.md`` (naming the machine) and the example
pictures ``docs/images/phantom_us.png`` and ``docs/images/phantom_swe.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from benchmarks.results_io import cpu_model
from mmfusion.data import detect_sector, read_manifest
from mmfusion.liver import LiverPhantom, PhantomConfig, bayes_ceiling, make_phantom_dataset

ROOT = Path(__file__).resolve().parents[1]


def measure_roi(n_frames: int, seed: int) -> dict[str, float]:
    """IoU with the true sector and single-core speed of detect_sector on 800 x 600 frames."""
    phantom = LiverPhantom(PhantomConfig(), seed=seed)
    pairs = [phantom.sample(index=i) for i in range(n_frames)]
    ious: dict[str, list[float]] = {"us": [], "swe": []}
    touching = 0
    for pair in pairs:
        truth = pair.truth.sector_mask()
        touching += bool(truth[-1].any())
        for key, frame in (("us", pair.us), ("swe", pair.swe)):
            mask = detect_sector(frame).mask
            ious[key].append(float((mask & truth).sum() / (mask | truth).sum()))
    frames = [p.us for p in pairs] + [p.swe for p in pairs]
    detect_sector(frames[0])  # warm-up
    best = float("inf")
    for _ in range(3):  # best of 3 passes: least disturbed by other processes
        start = time.perf_counter()
        for frame in frames:
            detect_sector(frame)
        best = min(best, time.perf_counter() - start)
    every = ious["us"] + ious["swe"]
    return {
        "frames": len(frames),
        "frames_touching_border": 2 * touching,
        "iou_mean": statistics.fmean(every),
        "iou_min": min(every),
        "iou_mean_us": statistics.fmean(ious["us"]),
        "iou_mean_swe": statistics.fmean(ious["swe"]),
        "fps_one_core": len(frames) / best,
        "ms_per_frame": 1000 * best / len(frames),
    }


def measure_generation(n_patients: int, workers: int, seed: int) -> dict[str, float]:
    """Wall and CPU time of make_phantom_dataset, and the data set's counts."""
    load_before = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        csv = make_phantom_dataset(Path(tmp) / "phantom", n_patients, seed, workers=workers)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        manifest = read_manifest(csv)
        verify = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in csv.parent.rglob("*") if p.is_file()) / 2**20
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "patients": n_patients,
        "pairs": len(manifest),
        "pairs_per_stage": manifest.stage_counts(),
        "patients_per_stage": {
            k: len({r.patient_id for r in manifest if r.stage == i})
            for i, k in enumerate(manifest.stage_counts())
        },
        "workers": workers,
        "seconds_wall": wall,
        "cpu_seconds_workers": cpu,
        "cpu_ms_per_pair": 1000 * cpu / len(manifest),
        "load_average_before": load_before,
        "read_manifest_decode_seconds": verify,
        "size_mb": size_mb,
    }


def _panel(image: np.ndarray, caption: str, width: int = 400) -> np.ndarray:
    rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
    height = round(rgb.shape[0] * width / rgb.shape[1])
    small = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    strip = np.zeros((26, width, 3), dtype=np.uint8)
    cv2.putText(
        strip, caption, (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA
    )
    return np.vstack([small, strip])


def write_example_images(out_dir: Path, seed: int = 0) -> list[Path]:
    """Side-by-side F1 and F4 pairs, downscaled: phantom_us.png and phantom_swe.png."""
    phantom = LiverPhantom(PhantomConfig(), seed=seed)
    pairs = [phantom.sample(stage=1, index=1), phantom.sample(stage=4, index=4)]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for key in ("us", "swe"):
        panels = [
            _panel(
                getattr(p, key),
                f"F{p.truth.stage}  stiffness {p.truth.stiffness_kpa:.1f} kPa  "
                f"texture {p.truth.texture:.2f}",
            )
            for p in pairs
        ]
        sheet = np.hstack([panels[0], np.zeros((panels[0].shape[0], 4, 3), np.uint8), panels[1]])
        path = out_dir / f"phantom_{key}.png"
        cv2.imwrite(
            str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]
        )
        paths.append(path)
    return paths


def to_markdown(report: dict) -> str:
    roi, gen, ceiling = report["roi"], report["generation"], report["bayes_ceiling"]
    machine = report["machine"]
    return "\n".join(
        [
            "# Phantom and ROI benchmark (CPU)",
            "",
            f"Machine: {machine['cpu_model']}, {machine['cpu_count']} cores, "
            f"Python {machine['python']}, torch {machine['torch']}, OpenCV {machine['opencv']}. "
            f"Load average before generation: {gen['load_average_before']:.1f}"
            + (
                " (other processes were sharing the cores)."
                if gen["load_average_before"] > 1
                else "."
            ),
            "",
            "| Measure | Value |",
            "|---|---|",
            f"| ROI IoU vs true sector, mean ({roi['frames']} frames, 800x600, grey + colour) "
            f"| {roi['iou_mean']:.4f} |",
            f"| ROI IoU, min | {roi['iou_min']:.4f} |",
            f"| Frames whose fan touches the bottom border | {roi['frames_touching_border']} |",
            f"| ROI speed, one core (cv2/torch 1 thread) | {roi['fps_one_core']:.0f} frames/s "
            f"({roi['ms_per_frame']:.2f} ms/frame) |",
            f"| Phantom generation, {gen['patients']} patients, {gen['workers']} workers | "
            f"{gen['seconds_wall']:.1f} s wall |",
            f"| ... CPU time in the workers | {gen['cpu_seconds_workers']:.1f} s "
            f"({gen['cpu_ms_per_pair']:.0f} ms/pair) |",
            f"| Pairs | {gen['pairs']} ({', '.join(f'{k} {v}' for k, v in gen['pairs_per_stage'].items())}) |",
            f"| Patients per stage | {', '.join(f'{k} {v}' for k, v in gen['patients_per_stage'].items())} |",
            f"| Size on disk | {gen['size_mb']:.0f} MiB |",
            f"| read_manifest with full decode of all images | {gen['read_manifest_decode_seconds']:.1f} s |",
            f"| Bayes ceiling (latent stiffness + texture, per patient) | {ceiling['per_patient']:.3f} |",
            f"| Bayes ceiling (one view's stiffness + texture) | {ceiling['per_view']:.3f} |",
            f"| Stiffness alone (per view) | {ceiling['stiffness_only_per_view']:.3f} |",
            "",
            "The Bayes ceiling is the accuracy of the optimal classifier that sees the true latents "
            f"(Monte Carlo, {ceiling['n_samples']:,} samples); a model's accuracy should be judged "
            "against it, not against 100%.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100, help="phantom pairs for the ROI test")
    parser.add_argument("--patients", type=int, default=250, help="patients to generate")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ceiling-samples", type=int, default=400_000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--images", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args(argv)

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    report = {
        "machine": {
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "opencv": cv2.__version__,
            "numpy": np.__version__,
        },
        "roi": measure_roi(args.frames, args.seed + 100),
    }
    print("roi", report["roi"], flush=True)
    report["generation"] = measure_generation(args.patients, args.workers, args.seed)
    print("generation", report["generation"], flush=True)
    flat = PhantomConfig(texture_mean=(0.0,) * 5)
    report["bayes_ceiling"] = {
        "n_samples": args.ceiling_samples,
        "per_patient": bayes_ceiling(args.ceiling_samples, args.seed),
        "per_view": bayes_ceiling(args.ceiling_samples, args.seed, per_view=True),
        "stiffness_only_per_view": bayes_ceiling(args.ceiling_samples, args.seed, flat, True),
    }
    print("ceiling", report["bayes_ceiling"], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "phantom_cpu.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "phantom_cpu.md").write_text(to_markdown(report))
    report["images"] = [str(p) for p in write_example_images(args.images, args.seed)]
    return report


if __name__ == "__main__":
    main()
