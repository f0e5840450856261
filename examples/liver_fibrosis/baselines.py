"""``baselines``: SWE cut-offs and a logistic regression on the deep runs' patient split (issue 13)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from examples.liver_fibrosis.cli import run, say
from examples.liver_fibrosis.options import command_parser, flag, normalise, preset_config
from mmfusion import liver
from mmfusion.liver import METAVIR, STAGE_NAMES


def build_parser() -> Any:
    """The ``baselines`` command line."""
    p = command_parser("python -m examples.liver_fibrosis.baselines",
                       "Cut-off and logistic-regression baselines on the patient split.")
    p.add_argument("--out", default="runs/baselines", help="output folder")
    p.add_argument("--data", type=str | None, default=None, help="manifest (default: the phantom)")
    p.add_argument("--seed", type=int, default=0, help="split seed (as the deep runs' --seed)")
    p.add_argument("--test_size", type=float, default=0.2, help="held-out fraction of patients")
    p.add_argument("--n_bootstrap", type=int, default=1000, help="bootstrap resamples of the intervals")
    p.add_argument("--kpa_max", type=float, default=40.0,
                   help="top of the SWE colour scale in kPa where the manifest has no swe_scale_kpa column")
    flag(p, "overwrite", False, "replace a previous result in --out")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m examples.liver_fibrosis.baselines``."""
    args = build_parser().parse_args(normalise(argv))
    from examples.liver_fibrosis.runs import check_free, load_manifest, prepare_phantom, write_json
    from mmfusion.lightning import make_splits
    from mmfusion.liver import pair_inputs
    from mmfusion.metrics import classification_report, patient_report

    out = Path(args.out)
    check_free(out, ("metrics.json",), args.overwrite, "baselines")
    cfg = preset_config("quick", {"seed": args.seed, "test_size": args.test_size, "data": args.data})
    if not cfg.run.data:
        prepare_phantom(cfg)
    manifest = load_manifest(cfg)
    split = make_splits(manifest, "patient", args.test_size, args.seed)[0]
    started = time.perf_counter()
    features = np.stack([liver.pair_features(**pair_inputs(row, args.kpa_max)) for row in manifest.rows])
    say(f"features of {len(manifest.rows)} pairs in {time.perf_counter() - started:.0f} s")
    train, test = list(split.train_idx), list(split.test_idx)
    labels, groups = manifest.labels, manifest.groups
    median = features[:, liver.FEATURE_NAMES.index("swe_median_kpa")]
    stages = liver.stage_from_kpa(np.nan_to_num(median[test], nan=0.0))
    options = dict(num_classes=METAVIR.num_classes, label_spec=METAVIR, n_bootstrap=args.n_bootstrap, seed=args.seed)

    def reports(probs: np.ndarray) -> dict[str, Any]:
        return {"pairs": classification_report(probs, labels[test], groups=groups[test], **options),
                "patients": patient_report(probs, labels[test], groups[test], **options)}

    logistic = liver.LogisticBaseline().fit(features[train], labels[train])
    h = liver.HERRMANN_2018
    results = {
        "cutoffs": {"source": h.source, "kpa": {"f2": h.f2, "f3": h.f3, "f4": h.f4},
                    **reports(np.eye(len(STAGE_NAMES))[stages])},  # a rule: one stage, probability 1
        "logistic": {"features": list(liver.FEATURE_NAMES), **reports(logistic.predict_proba(features[test]))},
        "split": split.description, "seed": args.seed, "n_train_pairs": len(train), "n_test_pairs": len(test),
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
