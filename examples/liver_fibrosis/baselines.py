"""The two non-deep baselines on a run's own patient split: the clinician's cut-offs and a
logistic regression on hand-made features (issue 13).

    python -m examples.liver_fibrosis.baselines --out runs/baselines            # phantom, seed 0
    python -m examples.liver_fibrosis.baselines --out runs/baselines --seed 1 --data my.csv

* ``cutoffs``: the median stiffness in the SWE colour box (decoded from the colour scale,
  :func:`mmfusion.elastography.decode_swe_kpa`) staged by the published 2D-SWE cut-offs
  (:data:`mmfusion.liver.HERRMANN_2018`: F>=2, F>=3, F4; below F>=2 -> F1). No training.
* ``logistic``: :class:`mmfusion.liver.LogisticBaseline` on eight numbers per pair (kPa median,
  IQR and valid fraction in the box; five B-mode texture statistics), fitted on the training
  patients of the same split the deep models use (``--seed``, ``--test-size``).

Each frame's colour scale is read from its own legend
(:func:`mmfusion.elastography.colour_bar_lut`), its top in kPa from the manifest's
``swe_scale_kpa`` column (the phantom writes it; scanners differ; read with
:func:`mmfusion.elastography.swe_scale_kpa`) or ``--kpa-max``. The B-mode statistics are taken
at the box's place in the B-mode frame, mapped through both frames' ROIs (a dual-view SWE screen shows its fan elsewhere than the B-mode frame).

Writes ``metrics.json`` (per pair and per patient, the same reports as a training run) into
``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from examples.liver_fibrosis.cli import CliError, run, say
from examples.liver_fibrosis.options import preset_config
from examples.liver_fibrosis.runs import check_free, load_manifest, prepare_phantom, write_json
from mmfusion.data import ManifestRow, image_roi, load_image
from mmfusion.elastography import (
    colour_bar_lut,
    detect_colour_bar,
    detect_swe_box,
    swe_scale_kpa,
)
from mmfusion.lightning import make_splits
from mmfusion.liver import METAVIR, STAGE_NAMES
from mmfusion.metrics import classification_report, patient_report

OUTPUTS = ("metrics.json",)


def build_parser() -> argparse.ArgumentParser:
    """The ``baselines`` command line."""
    p = argparse.ArgumentParser(prog="python -m examples.liver_fibrosis.baselines",
                                description="Cut-off and logistic-regression baselines on the patient split.")
    p.add_argument("--out", default="runs/baselines", help="output folder (default runs/baselines)")
    p.add_argument("--data", metavar="MANIFEST.csv", help="manifest (default: the phantom)")
    p.add_argument("--seed", type=int, default=0, help="split seed (as the deep runs' --seed)")
    p.add_argument("--test-size", type=float, default=0.2)
    p.add_argument("--n-bootstrap", type=int, default=1000)
    p.add_argument("--kpa-max", type=float, default=40.0,
                   help="top of the SWE colour scale in kPa where the manifest has no swe_scale_kpa "
                        "column (default 40)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous result in --out")
    return p


def reports(probs: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_bootstrap: int, seed: int
            ) -> dict[str, Any]:
    """Pair-level and patient-level reports of one baseline."""
    options = dict(num_classes=METAVIR.num_classes, label_spec=METAVIR, n_bootstrap=n_bootstrap,
                   seed=seed)
    return {"pairs": classification_report(probs, labels, groups=groups, **options),
            "patients": patient_report(probs, labels, groups, **options)}


def pair_inputs(row: ManifestRow, kpa_max: float) -> dict[str, Any]:
    """The frames of one manifest row and how to read them: colour box, legend, scale, B-mode box.

    Raises:
        CliError: The SWE frame has no colour box or no legend (the message names the file).
    """
    us, swe = load_image(row.paths["us"]), load_image(row.paths["swe"])
    box, bar = detect_swe_box(swe), detect_colour_bar(swe)
    if box is None or bar is None:
        missing = "colour box" if box is None else "colour bar (legend)"
        raise CliError(f"--data: {row.paths['swe']} (line {row.line}) has no {missing}")
    sx0, sy0, _, _ = image_roi(row.paths["swe"], image=swe).roi.bbox
    ux0, uy0, _, _ = image_roi(row.paths["us"], image=us).roi.bbox
    dx, dy = ux0 - sx0, uy0 - sy0
    x0, y0, x1, y1 = box
    scale = swe_scale_kpa(row) or kpa_max
    return {"us": us, "swe": swe, "box": box, "colormap": colour_bar_lut(swe, bar),
            "kpa_range": (0.0, scale), "us_box": (x0 + dx, y0 + dy, x1 + dx, y1 + dy)}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m examples.liver_fibrosis.baselines``."""
    from mmfusion.liver import (
        FEATURE_NAMES,
        HERRMANN_2018,
        LogisticBaseline,
        pair_features,
        stage_from_kpa,
    )

    args = build_parser().parse_args(argv)
    out = Path(args.out)
    check_free(out, OUTPUTS, args.overwrite, "baselines")
    overrides: dict[str, Any] = {"seed": args.seed, "test_size": args.test_size}
    if args.data:
        overrides["data"] = args.data
    cfg = preset_config("quick", overrides)
    if not cfg.run.data:
        prepare_phantom(cfg)
    manifest = load_manifest(cfg)
    split = make_splits(manifest, "patient", args.test_size, args.seed)[0]
    started = time.perf_counter()
    features = np.stack([pair_features(**pair_inputs(row, args.kpa_max)) for row in manifest.rows])
    say(f"features of {len(manifest.rows)} pairs in {time.perf_counter() - started:.0f} s")
    train, test = list(split.train_idx), list(split.test_idx)
    labels, groups = manifest.labels, manifest.groups
    median = features[:, FEATURE_NAMES.index("swe_median_kpa")]
    stages = stage_from_kpa(np.nan_to_num(median[test], nan=0.0))
    cutoff_probs = np.eye(len(STAGE_NAMES))[stages]  # a rule: one stage, probability 1
    logistic = LogisticBaseline().fit(features[train], labels[train])
    results = {
        "cutoffs": {"source": HERRMANN_2018.source,
                    "kpa": {"f2": HERRMANN_2018.f2, "f3": HERRMANN_2018.f3, "f4": HERRMANN_2018.f4},
                    **reports(cutoff_probs, labels[test], groups[test], args.n_bootstrap, args.seed)},
        "logistic": {"features": list(FEATURE_NAMES),
                     **reports(logistic.predict_proba(features[test]), labels[test], groups[test],
                               args.n_bootstrap, args.seed)},
        "split": split.description, "seed": args.seed,
        "n_train_pairs": len(train), "n_test_pairs": len(test),
        "n_test_patients": len(set(groups[test].tolist())),
    }
    write_json(out / "metrics.json", results)
    for name in ("cutoffs", "logistic"):
        r = results[name]
        say(f"{name}: accuracy {r['pairs']['accuracy']:.3f} per pair, {r['patients']['accuracy']:.3f} "
            f"per patient; macro AUC {r['pairs']['auc_macro']:.3f}; QWK {r['pairs']['qwk']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
