"""The cost of every fusion method of the catalogue, side by side, on one machine in one run.

For each registered fusion (issue 27): ``create_model(preset, fusion=name)`` with the preset's
encoders (``liver_fibrosis_quick``: resnet10t at 96 px, randomly initialised, no download), then

* parameters of the whole model and of the fusion with its joint head;
* FLOPs per pair, whole model and fusion alone (PyTorch's ``FlopCounterMode``: matrix products
  and convolutions, 2 FLOPs per multiply-add, as in :mod:`benchmarks.flops`);
* CPU latency of an inference forward at batch 1 and 32 (median over ``--repeats`` timed runs
  after two warm-up runs, all of this process's threads), whole model and fusion alone on
  precomputed encoder maps;
* the memory the fusion adds: its parameters' bytes, and the bytes per pair that autograd saves
  in a training forward + loss (:func:`benchmarks.activations.saved_bytes`), each minus the
  ``late`` (concatenation) model's.

Usage::

    python -m benchmarks.fusion_cost                 # every fusion, into benchmarks/results/
    python -m benchmarks.fusion_cost --fusions late,gated --repeats 3 --out /tmp/cost

Writes ``fusion_cost_cpu.json`` and ``fusion_cost_cpu.md`` (atomically; the machine is named in
both). A bad argument prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.activations import saved_bytes
from benchmarks.results_io import environment, git_commit, utc_now, write_json
from benchmarks.throughput import _Parser, _positive_int
from mmfusion.files import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
BATCHES = (1, 32)


def _flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(2):  # warm-up: allocator, kernel selection
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _images(modalities: Sequence[str], batch: int, size: int) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {m: torch.randn(batch, 3, size, size, generator=gen) for m in modalities}


def _count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def _bytes(module: nn.Module | None) -> int:
    if module is None:
        return 0
    return sum(p.numel() * p.element_size() for p in module.parameters())


def measure(name: str, *, preset: str = "liver_fibrosis_quick", repeats: int = 5,
            **changes: Any) -> dict[str, Any]:
    """The cost of fusion ``name`` in ``preset``'s model (``changes`` override the preset).

    Returns:
        A row: ``fusion``, ``params`` / ``fusion_params``, ``flops_per_pair`` /
        ``fusion_flops_per_pair``, ``latency_ms`` / ``fusion_latency_ms`` (batch -> ms, as
        strings ``"1"``, ``"32"``), ``fusion_param_bytes`` and ``saved_bytes_per_pair``.
    """
    from mmfusion.models import build_loss, create_model

    torch.manual_seed(0)
    model = create_model(preset, fusion=name, **changes)
    config = model.config
    modalities, size = config.modalities, config.image_size
    fusion_parts = nn.ModuleList([model.fusion, model.head.joint_head])
    model.eval()
    row: dict[str, Any] = {
        "fusion": name,
        "params": _count(model),
        "fusion_params": _count(fusion_parts),
        "fusion_param_bytes": _bytes(fusion_parts),
        "latency_ms": {},
        "fusion_latency_ms": {},
    }
    with torch.no_grad():  # FlopCounterMode's module tracker does not run on inference tensors
        one = _images(modalities, 1, size)
        maps_one = {m: model.encoders[m](x) for m, x in one.items()}
        row["flops_per_pair"] = _flops(lambda: model(one))
        row["fusion_flops_per_pair"] = _flops(lambda: model.fusion(maps_one))
    with torch.inference_mode():
        for batch in BATCHES:
            x = _images(modalities, batch, size)
            maps = {m: model.encoders[m](t) for m, t in x.items()}
            row["latency_ms"][str(batch)] = 1e3 * _median_seconds(lambda x=x: model(x), repeats)
            row["fusion_latency_ms"][str(batch)] = 1e3 * _median_seconds(
                lambda maps=maps: model.fusion(maps), repeats)
    model.train()
    loss_fn = build_loss(config)
    batch = max(BATCHES)
    target = torch.arange(batch) % config.num_classes
    row["saved_bytes_per_pair"] = saved_bytes(
        model, loss_fn, _images(modalities, batch, size), target) / batch
    return row


def run(names: Sequence[str], *, repeats: int, preset: str = "liver_fibrosis_quick",
        **changes: Any) -> dict[str, Any]:
    """Measure every fusion in ``names`` (plus ``late``, the reference for the added memory)."""
    load_before = os.getloadavg()[0]
    rows = {}
    for name in dict.fromkeys(["late", *names]):
        started = time.perf_counter()
        rows[name] = measure(name, preset=preset, repeats=repeats, **changes)
        print(f"{name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    late = rows["late"]
    for row in rows.values():
        row["added_param_bytes"] = row["fusion_param_bytes"] - late["fusion_param_bytes"]
        row["added_saved_bytes_per_pair"] = row["saved_bytes_per_pair"] - late["saved_bytes_per_pair"]
    from mmfusion.models import get_preset

    model = get_preset(preset).model.replace(**changes)
    return {
        "benchmark": "fusion_cost",
        "created": utc_now(),
        "commit": git_commit(),
        "environment": environment(torch.device("cpu")),
        "load_average": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "setup": {"preset": preset, "backbone": model.backbone, "image_size": model.image_size,
                  "embed_dim": model.embed_dim, "modalities": list(model.modalities),
                  "repeats": repeats, "batches": list(BATCHES), "changes": dict(changes)},
        "rows": list(rows.values()),
    }


def human_count(n: float) -> str:
    """``n`` with a k / M / G suffix and two decimals (``131072 -> "131.07 k"``), as the tables
    (this file's and the docs' catalogue) print counts."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f}"


def render_markdown(doc: Mapping[str, Any]) -> str:
    """The results as a Markdown page: setup, machine and one table."""
    env, setup = doc["environment"], doc["setup"]
    lines = [
        "# Fusion catalogue: cost per method (CPU)",
        "",
        f"Machine: {env['cpu_model']}, {env['cpu_cores_available']} cores, {env['torch_threads']} "
        f"torch threads, torch {env['torch']}. Created {doc['created']} at commit "
        f"{(doc.get('commit') or 'unknown')[:10]}. Load average {doc['load_average']['before']} "
        f"before and {doc['load_average']['after']} after the run (1.0 = one core busy with "
        "other work): latencies on a busy machine are longer than on a quiet one.",
        "",
        f"Model: preset `{setup['preset']}` ({setup['backbone']}, {setup['image_size']} px, "
        f"embed_dim {setup['embed_dim']}, modalities {', '.join(setup['modalities'])}), "
        f"random weights, inference latency as the median of {setup['repeats']} runs. "
        "Fusion = the fusion module and its joint head; FLOPs count matrix products and "
        "convolutions (2 per multiply-add). Added memory is relative to `late`.",
        "",
        "| fusion | params (fusion) | params (model) | FLOPs/pair (fusion) | FLOPs/pair (model) "
        "| latency b1 (model) | latency b32 (model) | latency b32 (fusion) "
        "| added params | added saved/pair |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| `{r['fusion']}` | {human_count(r['fusion_params'])} | {human_count(r['params'])} "
            f"| {human_count(r['fusion_flops_per_pair'])} | {human_count(r['flops_per_pair'])} "
            f"| {r['latency_ms']['1']:.1f} ms | {r['latency_ms']['32']:.1f} ms "
            f"| {r['fusion_latency_ms']['32']:.2f} ms "
            f"| {human_count(r['added_param_bytes'])}B | {human_count(r['added_saved_bytes_per_pair'])}B |"
        )
    return "\n".join(lines) + "\n"


def _names(text: str) -> tuple[str, ...]:
    from mmfusion.nn.registry import check_fusion_name

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected fusion names separated by commas, got {text!r}")
    try:
        return tuple(check_fusion_name(n, "--fusions") for n in names)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: measure, then write the JSON and Markdown results."""
    parser = _Parser(prog="python -m benchmarks.fusion_cost",
                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--fusions", type=_names, default=None,
                        help="comma-separated fusion names (default: every registered fusion)")
    parser.add_argument("--repeats", type=_positive_int, default=5, help="timed runs per latency")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    from mmfusion.nn.registry import list_fusions

    names = args.fusions or tuple(list_fusions())
    doc = run(names, repeats=args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(doc, args.out / "fusion_cost_cpu.json")
    atomic_write_text(args.out / "fusion_cost_cpu.md", render_markdown(doc))
    print(f"wrote {args.out / 'fusion_cost_cpu.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
