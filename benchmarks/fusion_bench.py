"""The fusion benchmark of issue 28: every catalogue fusion, the single-modal models and three
baselines x rho x seeds, scored against the exact ceilings on a large test cohort.

Usage::

    python -m benchmarks.fusion_bench                    # the whole table (resumable)
    python -m benchmarks.fusion_bench --rho 0,0.5,1      # with rho = 0.5 too
    python -m benchmarks.fusion_bench --summarise        # only read the runs: table and figures
    python -m benchmarks.fusion_bench --methods late,cross_spatial_attention --seeds 0 --rho 0

Per rho (share of views with a decoy) a large test cohort and, per seed, a training cohort of the
paper's size are generated once into ``--cache`` (:mod:`benchmarks.fusion_bench_data`): the
weak-texture preset of :func:`mmfusion.liver.interaction_config`, lab values on, void SWE pixels
black; the SWE input is the sector crop with zeros outside the colour box (``box_mask``: no
B-mode texture reaches the SWE encoder, and the two maps stay registered). Each run
(:mod:`benchmarks.fusion_bench_run`) writes ``<out>/rho-<rho>/<method>/seed<seed>.npz`` (its test
predictions) and then ``seed<seed>.json`` (its result), each atomically; the JSON marks the run as
finished, so a rerun skips it, and a run that dies leaves no JSON. A finished run made with other
settings is refused (pass another ``--out``). At the end (and with ``--summarise``, which runs
nothing) :mod:`benchmarks.fusion_bench_summary` writes the table ``--summary`` and the figures.

Budget (measured on the 2-core AMD EPYC, 2026-12-07, the defaults of
:class:`~benchmarks.fusion_bench_run.BenchSettings`): 45 runs (rho 1 seed 2, rho 0 seeds 1-2 and
two remade runs) took 49 min of wall time, 65 s per run; the 88 finished runs' own bodies sum to
1.75 h (part of them made on a busier machine); a 2,000-patient test cohort is generated in about
2 min, a training cohort in about 20 s, once each. The whole default table (rho 0,1 x seeds
0,1,2: 72 trained networks and 10 baseline runs) from nothing: about 2 hours.

A bad argument prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.fusion_bench_data import TEST_SEED, CohortSpec, baseline_features, load_cohort
from benchmarks.fusion_bench_run import BenchSettings, Method, methods, run_baseline, run_model
from mmfusion.files import atomic_write, atomic_write_text

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "fusion_bench"
SUMMARY = ROOT / "results" / "fusion_bench.md"
COST = ROOT / "results" / "fusion_cost_cpu.json"
SCHEMA = 1


def say(message: str) -> None:
    """One progress line on stderr."""
    print(f"[fusion_bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_paths(out: Path, rho: float, method: str, seed: int) -> tuple[Path, Path]:
    """``(result JSON, predictions NPZ)`` of one run."""
    folder = Path(out) / f"rho-{rho:g}" / method
    return folder / f"seed{seed}.json", folder / f"seed{seed}.npz"


def finished(path: Path, settings: BenchSettings, cohorts: Mapping[str, str] | None = None) -> bool:
    """Whether ``path`` holds a finished run made with ``settings`` on ``cohorts``.

    Args:
        path: The run's result JSON.
        settings: This call's settings.
        cohorts: ``{"test_cohort": folder, "train_cohort": folder}`` that this phantom generator
            gives for the run (:func:`cohort_folders`); ``None`` skips that check.

    Raises:
        ValueError: It holds a finished run made with other settings, or on cohorts that the
            phantom generator no longer makes (the generator changed since: the run is stale).
    """
    if not path.is_file():
        return False
    doc = json.loads(path.read_text())
    if doc.get("settings") != settings.to_dict():
        raise ValueError(f"--out: {path} holds a run made with other settings "
                         f"({doc.get('settings')}); pass another --out (or delete the folder)")
    expected = dict(cohorts or {})
    made_on = {k: (doc.get(k) or {}).get("folder") for k in expected}
    stale = [k for k in expected if made_on[k] != expected[k]]
    if stale:
        raise ValueError(f"--out: {path} was made on {({k: made_on[k] for k in stale})}, which the "
                         f"phantom generator no longer makes (now {({k: expected[k] for k in stale})}); "
                         "move the stale runs aside and rerun, or pass another --out")
    return True


def made_at_any_seed(out: Path, rho: float, method: str) -> bool:
    """Whether a finished run of ``method`` at ``rho`` exists at any seed (for the rows that do
    not depend on the seed)."""
    return any(run_paths(out, rho, method, 0)[0].parent.glob("seed*.json"))


def cohort_folders(rho: float, seed: int, settings: BenchSettings) -> dict[str, str]:
    """The cache folders of a run's test and training cohorts (keyed by the generator's version)."""
    width, height = settings.frame
    return {"test_cohort": CohortSpec(rho, "test", settings.test_patients, TEST_SEED, width, height,
                                      settings.test_views).folder,
            "train_cohort": CohortSpec(rho, "train", settings.train_patients, seed, width,
                                       height).folder}


def write_run(json_path: Path, npz_path: Path, doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """The predictions first, then the result (each atomically): the JSON marks a finished run."""
    def save(handle: Any) -> None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        handle.write(buffer.getvalue())

    atomic_write(npz_path, save)
    atomic_write_text(json_path, json.dumps(doc, indent=1, allow_nan=False) + "\n")


def load_cost(path: Path = COST) -> dict[str, Any]:
    """Fusion name -> its row of the catalogue's cost run (``{}`` when the file is absent)."""
    if not path.is_file():
        return {}
    doc = json.loads(path.read_text())
    setup = doc.get("setup", {})
    return {row["fusion"]: {**{k: row.get(k) for k in ("params", "fusion_params", "flops_per_pair",
                                                        "fusion_flops_per_pair", "latency_ms",
                                                        "fusion_latency_ms")},
                            "measured_with": setup, "file": path.name} for row in doc.get("rows", [])}


def compute_ceilings(test_config: Any, n_patients: int) -> dict[str, Any] | None:
    """The test cohort's ceilings (G's :func:`interaction_ceilings`), with and without labs, per
    view and per patient, for the cohort's class prior; None where the module is missing."""
    try:
        from mmfusion.liver.phantom.ceilings import interaction_ceilings
    except ImportError:
        return None
    out: dict[str, Any] = {"source": "mmfusion.liver.phantom.ceilings.interaction_ceilings("
                           f"n_patients={n_patients}, prior='cohort')"}
    for key, labs in (("with_labs", True), ("without_labs", False)):
        out[key] = {unit: interaction_ceilings(test_config, n_patients=n_patients, prior="cohort",
                                               per_view=unit == "per_view", labs=labs)
                    for unit in ("per_view", "per_patient")}
    return out


class Datasets:
    """Model-ready data sets of a cohort from crops decoded once per cohort (the library's crop
    cache keeps one manifest; the benchmark alternates a training and a test cohort)."""

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size
        self._crops: dict[Path, Any] = {}

    def keep(self, roots: Sequence[Path]) -> None:
        """Free the crops of every cohort but ``roots``."""
        self._crops = {r: c for r, c in self._crops.items() if r in set(roots)}

    def __call__(self, cohort: Any, modalities: tuple[str, ...], train: bool) -> Any:
        from mmfusion.data.pipeline import ModelInputs, cached_crops
        from mmfusion.data.seeded import SeededDataset
        from mmfusion.data.transforms import (
            default_intensity_transforms,
            eval_transforms,
            train_transforms,
        )
        from mmfusion.elastography import swe_crop

        size = self.image_size
        if cohort.root not in self._crops:  # SWE: the sector crop, zero outside the colour box,
            # so no B-mode texture reaches the SWE encoder and the two maps stay registered
            self._crops[cohort.root] = cached_crops(cohort.manifest, size,
                                                    crop={"swe": swe_crop("box_mask")})
        if train:  # train_dataset(augment="online")'s transform, on every pair
            intensity = {m: t for m, t in default_intensity_transforms().items() if m in modalities}
            transform = train_transforms(size, max_shift=max(1, round(10 * size / 224)),
                                         intensity=intensity)
        else:
            transform = eval_transforms(size)
        return SeededDataset(self._crops[cohort.root], ModelInputs(transform, modalities),
                             return_index=True)


def plan(rhos: Sequence[float], seeds: Sequence[int], rows: Sequence[Method]) -> list[tuple[float, int, Method]]:
    """Every run, in the order they are made (rho, then seed, then method); a method that does
    not depend on the seed runs at the first seed only (and :func:`run_all` skips it where a run
    of it at another seed is finished)."""
    return [(rho, seed, m) for rho in rhos for seed in seeds for m in rows
            if m.seeded or seed == seeds[0]]


def run_all(*, out: Path, cache: Path, rhos: Sequence[float], seeds: Sequence[int],
            rows: Sequence[Method], settings: BenchSettings,
            summarise: Callable[[], object] | None = None) -> dict[str, int]:
    """Make every run of :func:`plan` that is not finished; returns ``{"made", "skipped"}``."""
    from benchmarks.results_io import cpu_model, git_commit, utc_now

    todo = plan(rhos, seeds, rows)
    folders = {(rho, seed): cohort_folders(rho, seed, settings) for rho, seed, _ in todo}
    pending = [(rho, seed, m) for rho, seed, m in todo
               if not finished(run_paths(out, rho, m.name, seed)[0], settings, folders[rho, seed])
               and (m.seeded or not made_at_any_seed(out, rho, m.name))]
    say(f"{len(todo)} runs, {len(todo) - len(pending)} finished, {len(pending)} to make")
    cost = load_cost()
    data = Datasets(settings.image_size)
    width, height = settings.frame
    made = 0
    for rho in dict.fromkeys(r for r, _, _ in pending):
        test = load_cohort(CohortSpec(rho, "test", settings.test_patients, TEST_SEED, width, height,
                                      settings.test_views), cache, workers=settings.workers, say=say)
        ceilings = compute_ceilings(test.config, settings.ceiling_patients)
        for seed in dict.fromkeys(s for r, s, _ in pending if r == rho):
            train = load_cohort(CohortSpec(rho, "train", settings.train_patients, seed, width, height),
                                cache, workers=settings.workers, say=say)
            data.keep([test.root, train.root])
            for _, _, method in [p for p in pending if p[0] == rho and p[1] == seed]:
                json_path, npz_path = run_paths(out, rho, method.name, seed)
                say(f"run rho={rho:g} seed={seed} {method.name} ({method.kind}, "
                    f"{'+'.join(method.modalities) or 'no network'})")
                started, cpu_started = time.perf_counter(), time.process_time()
                if method.kind == "baseline":
                    result, arrays = run_baseline(
                        method, settings=settings, train=train, test=test,
                        features=lambda c: baseline_features(c, say=say))
                else:
                    result, arrays = run_model(method, settings=settings, seed=seed, train=train,
                                               test=test, ceilings=ceilings, datasets=data)
                doc = {
                    "benchmark": "fusion_bench", "schema": SCHEMA, "method": method.name,
                    "kind": method.kind, "modalities": list(method.modalities), "note": method.note,
                    "rho": rho, "seed": seed, "seeded": method.seeded,
                    "settings": settings.to_dict(),
                    "train_cohort": {"seed": seed, "patients": settings.train_patients,
                                     "pairs": len(train.manifest.rows), "folder": train.spec.folder},
                    "test_cohort": {"seed": TEST_SEED, "patients": len(set(test.manifest.groups)),
                                    "pairs": len(test.manifest.rows), "folder": test.spec.folder},
                    **result,
                    "wall_seconds": time.perf_counter() - started,
                    "cpu_seconds": time.process_time() - cpu_started,  # all threads of this process
                    "machine": cpu_model(), "created": utc_now(), "commit": git_commit(),
                }
                if ceilings is not None:  # every observer, for the summary's ceiling lines
                    doc["test_ceilings"] = ceilings
                if method.kind == "fusion" and method.name in cost:
                    doc["cost"] = cost[method.name]
                write_run(json_path, npz_path, doc, arrays)
                made += 1
                say(f"done in {doc['wall_seconds']:.0f} s: accuracy {result['per_view']['accuracy']:.3f} "
                    f"per view, {result['per_patient']['accuracy']:.3f} per patient")
    if summarise is not None:
        summarise()
    return {"made": made, "skipped": len(todo) - len(pending)}


# ----------------------------------------------------------------------------- command line


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected shares in [0, 1], got {text!r}")
    return values


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None
    if not values or min(values) < 0 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct ints >= 0, got {text!r}")
    return values


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}")
    return value


def _frame(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 400x300, got {text!r}") from None
    return width, height


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    d = BenchSettings()
    p = argparse.ArgumentParser(prog="python -m benchmarks.fusion_bench",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--rho", type=_floats, default=(0.0, 1.0), help="decoy shares (default 0,1)")
    p.add_argument("--seeds", type=_ints, default=(0, 1, 2), help="seeds (default 0,1,2)")
    p.add_argument("--methods", type=str, default=None,
                   help="comma-separated rows (default: every fusion, us_only, swe_only, baselines)")
    p.add_argument("--out", type=Path, default=RESULTS, help="per-run results folder")
    p.add_argument("--summary", type=Path, default=None,
                   help="summary Markdown (default: <out>/../fusion_bench.md)")
    p.add_argument("--cache", type=Path, default=Path("runs/fusion_bench_cache"),
                   help="where the cohorts are generated (once)")
    p.add_argument("--summarise", action="store_true", help="only read the runs: table and figures")
    p.add_argument("--epochs", type=_positive, default=d.epochs)
    p.add_argument("--image-size", type=_positive, default=d.image_size)
    p.add_argument("--backbone", default=d.backbone)
    p.add_argument("--out-indices", default="3", help="timm feature level(s), or 'none' (default 3)")
    p.add_argument("--train-patients", type=_positive, default=d.train_patients)
    p.add_argument("--test-patients", type=_positive, default=d.test_patients)
    p.add_argument("--n-bootstrap", type=_positive, default=d.n_bootstrap)
    p.add_argument("--ceiling-patients", type=_positive, default=d.ceiling_patients)
    p.add_argument("--frame", type=_frame, default=d.frame,
                   help=f"phantom frame WIDTHxHEIGHT (default {d.frame[0]}x{d.frame[1]})")
    p.add_argument("--workers", type=int, default=d.workers, help="phantom generation processes")
    return p


def select(names: str | None) -> list[Method]:
    """The rows named in ``names`` (all by default).

    Raises:
        ValueError: An unknown name (the known ones are listed).
    """
    rows = methods()
    if names is None:
        return rows
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {m.name: m for m in rows}
    unknown = [n for n in wanted if n not in known]
    if unknown or not wanted:
        raise ValueError(f"--methods: unknown {unknown or names!r}; known: {sorted(known)}")
    return [known[n] for n in dict.fromkeys(wanted)]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    from benchmarks.fusion_bench_summary import write_summary

    parser = build_parser()
    args = parser.parse_args(argv)
    summary = args.summary or args.out.parent / "fusion_bench.md"
    try:
        if args.summarise:
            write_summary(args.out, summary, say=say)
            return 0
        rows = select(args.methods)
        out_indices = (None if args.out_indices.lower() == "none"
                       else tuple(int(v) for v in args.out_indices.split(",")))
        settings = BenchSettings(image_size=args.image_size, backbone=args.backbone,
                                 out_indices=out_indices, epochs=args.epochs,
                                 train_patients=args.train_patients,
                                 test_patients=args.test_patients, n_bootstrap=args.n_bootstrap,
                                 ceiling_patients=args.ceiling_patients, frame=args.frame,
                                 workers=args.workers)
        counts = run_all(out=args.out, cache=args.cache, rhos=args.rho, seeds=args.seeds,
                         rows=rows, settings=settings,
                         summarise=lambda: write_summary(args.out, summary, say=say))
    except (ValueError, FileExistsError) as err:
        print(f"fusion_bench: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    say(f"{counts['made']} runs made, {counts['skipped']} finished before")
    return 0


if __name__ == "__main__":
    sys.exit(main())
