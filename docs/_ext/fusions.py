"""``.. fusion-catalogue::``: the fusion catalogue as one table, read from the code and the cost run.

One row per catalogue method: its registered name, the paper it implements, the inputs it takes
(map / vector, as token sequences for the attention methods), how many modalities, what a sample
with an absent modality gets, whether it compiles in one graph - all read from the class
attributes of each fusion (:class:`mmfusion.nn.fusions.base.BaseFusion`) - and its cost from the
committed run of ``benchmarks/fusion_cost.py`` (``benchmarks/results/fusion_cost_cpu.json``):
parameters, FLOPs per pair and CPU latency at batch 32 of the fusion with its joint head. A method
missing from the cost run shows "not measured".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive
from presets import _row  # one table-row builder for the docs' extensions

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks
from benchmarks.fusion_cost import human_count  # noqa: E402 - after the path

COST = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "fusion_cost_cpu.json"
TOKENS = {"cross_attention", "bottleneck", "perceiver"}
HEADER = ("name", "reference", "input kind", "modalities", "absent modality", "compiles",
          "params", "FLOPs/pair", "latency b32")


def catalogue() -> tuple[str, ...]:
    """The catalogue's names in table order (the built-in fusions of the registry)."""
    from mmfusion.nn import registry

    return tuple(registry._FUSIONS.builtins)


def rows() -> list[list[str]]:
    """The table's cells, one list per method."""
    from mmfusion.nn.registry import get_fusion

    cost = {}
    if COST.is_file():
        cost = {r["fusion"]: r for r in json.loads(COST.read_text())["rows"]}
    out = []
    for name in catalogue():
        cls = get_fusion(name)
        kinds = " / ".join(getattr(cls, "kinds", ("map", "vector")))
        if name in TOKENS:
            kinds += " (as tokens)"
        low, high = getattr(cls, "min_modalities", 1), getattr(cls, "max_modalities", None)
        count = f"{low}+" if high is None else (f"{low}" if low == high else f"{low}-{high}")
        if getattr(cls, "same_spatial", False):
            count += ", maps of one size"
        row = cost.get(name)
        measured = (
            [human_count(row["fusion_params"]), human_count(row["fusion_flops_per_pair"]),
             f"{row['fusion_latency_ms']['32']:.2f} ms"]
            if row else ["not measured"] * 3
        )
        out.append([name, cls.reference, kinds, count, cls.missing,
                    "yes" if getattr(cls, "compiles", True) else "no", *measured])
    return out


class FusionCatalogue(Directive):
    has_content = False

    def run(self) -> list[nodes.Node]:
        table = nodes.table()
        group = nodes.tgroup(cols=len(HEADER))
        table += group
        for width in (3, 6, 3, 3, 5, 2, 2, 2, 2):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        head += _row([nodes.Text(h) for h in HEADER])
        group += head
        body = nodes.tbody()
        for cells in rows():
            body += _row([nodes.literal(cells[0], cells[0]), *(nodes.Text(c) for c in cells[1:])])
        group += body
        return [table]


def setup(app):  # type: ignore[no-untyped-def]
    app.add_directive("fusion-catalogue", FusionCatalogue)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
