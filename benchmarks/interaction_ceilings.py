"""The exact ceilings of the interaction phantom (issue 28), as a results table.

For the default texture and the weak-texture preset
(:func:`mmfusion.liver.phantom.interaction.interaction_config`), with and without lab values,
``rho`` 0 and 1, per view and per patient, the cohort's class prior and a balanced test set:
every observer of :func:`mmfusion.liver.phantom.ceilings.interaction_ceilings` (joint, late,
each modality alone, each modality removed) and the joint - late gap that the fusion benchmark
asks methods to close.

Usage::

    python -m benchmarks.interaction_ceilings [--patients 200000] [--out benchmarks/results]

Writes ``interaction_ceilings.json`` and ``interaction_ceilings.md`` atomically (the machine and
the time are recorded; the numbers are Monte-Carlo estimates with standard error about
``sqrt(a (1 - a) / patients)``, at most 0.0011 at the default, and every observer of one row sees the same
simulated patients).
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.results_io import cpu_model, git_commit, utc_now, write_json
from mmfusion.files import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = ("joint", "late", "us", "swe", "labs", "no_us", "no_swe", "no_labs")


def table(patients: int, seed: int = 0) -> list[dict[str, Any]]:
    """One row per (texture, labs, rho, unit, prior) with every observer's ceiling."""
    from mmfusion.liver.phantom.ceilings import interaction_ceilings
    from mmfusion.liver.phantom.interaction import interaction_config

    rows = []
    for weak, labs, rho, per_view, prior in itertools.product(
        (False, True), (False, True), (0.0, 1.0), (True, False), ("cohort", "balanced")
    ):
        started = time.perf_counter()
        ceilings = interaction_ceilings(interaction_config(rho, weak_texture=weak),
                                        n_patients=patients, seed=seed, per_view=per_view,
                                        prior=prior, labs=labs)
        rows.append({"texture": "weak" if weak else "default", "labs": labs, "rho": rho,
                     "unit": "view" if per_view else "patient", "prior": prior,
                     "ceilings": {k: float(v) for k, v in ceilings.items()},
                     "gap_joint_late": float(ceilings["joint"] - ceilings["late"])})
        print(f"{rows[-1]['texture']} labs={labs} rho={rho} {rows[-1]['unit']} {prior}: "
              f"{time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return rows


def render_markdown(doc: Mapping[str, Any]) -> str:
    """The table as Markdown: one row per setting, one column per observer."""
    lines = [
        "# Interaction phantom: exact ceilings",
        "",
        f"Machine: {doc['cpu']}. Created {doc['created']} at commit "
        f"{(doc.get('commit') or 'unknown')[:10]}; {doc['patients']:,} simulated patients per "
        f"row (seed {doc['seed']}), standard error at most {0.5 / math.sqrt(doc['patients']):.4f}. "
        "Accuracy of the Bayes-optimal "
        "observer that sees: `joint` everything (B-mode tells which SWE region is the decoy); "
        "`late` the product of per-modality likelihoods (cannot tell the decoy); one modality "
        "alone; or everything but one (`no_*`). Without labs, `labs` is the class prior's best "
        "guess and `no_labs` equals `joint`.",
        "",
        "| texture | labs | rho | unit | prior | " + " | ".join(COLUMNS) + " | joint - late |",
        "|---|---|---|---|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    for r in doc["rows"]:
        cells = " | ".join(f"{r['ceilings'][c]:.4f}" for c in COLUMNS)
        lines.append(f"| {r['texture']} | {'yes' if r['labs'] else 'no'} | {r['rho']:g} "
                     f"| {r['unit']} | {r['prior']} | {cells} "
                     f"| {100 * r['gap_joint_late']:.2f} pt |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: compute the table and write it."""
    from benchmarks.throughput import _Parser, _positive_int

    parser = _Parser(prog="python -m benchmarks.interaction_ceilings",
                     description="Exact ceilings of the interaction phantom.")
    parser.add_argument("--patients", type=_positive_int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    doc = {"benchmark": "interaction_ceilings", "created": utc_now(), "commit": git_commit(),
           "cpu": cpu_model(), "patients": args.patients, "seed": args.seed,
           "rows": table(args.patients, args.seed)}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(doc, args.out / "interaction_ceilings.json")
    atomic_write_text(args.out / "interaction_ceilings.md", render_markdown(doc))
    print(f"wrote {args.out / 'interaction_ceilings.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
