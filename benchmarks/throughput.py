"""Training and inference throughput of the paper's model, as a ladder of optimisations.

Run ``python -m benchmarks.throughput`` (``make bench``): on a GPU it measures the paper's model
(two ResNet-50 encoders, stages 1-3 frozen, attention fusion, ensemble head, 224 px) at batch
sizes 4, 32, 128 and 256, one rung after another in this one process, plus the input pipeline;
on a CPU it runs the quick mode (a tiny backbone, 64 px, batch sizes 2 and 8) so that CI keeps the
code working. Results go to ``benchmarks/results/throughput_<device>.{json,md}``. See
``benchmarks/README.md`` for the rungs, the peak figures and how to read the tables.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn

from benchmarks import activations as activations_mod
from benchmarks import flops as flops_mod
from benchmarks import ladder, results_io
from benchmarks import summary as summary_mod
from mmfusion.models import get_preset

PAPER = get_preset("liver_fibrosis_paper").model
"""The paper's architecture (the registry is the one source of its values)."""

PAPER_BATCH = get_preset("liver_fibrosis_paper").training.batch_size
PAPER_SIZE_MB = 516
FULL_BATCH_SIZES = (4, 32, 128, 256)
QUICK_BATCH_SIZES = (2, 8)
MODALITIES = PAPER.modalities
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Options:
    """Resolved command-line options."""

    device: torch.device
    quick: bool
    batch_sizes: tuple[int, ...]
    rungs: tuple[str, ...]
    rungs_explicit: bool
    repeats: int
    warmup: int
    min_repeat_s: float
    out: Path
    data: bool
    overwrite: bool
    backbone: str
    image_size: int
    hidden: tuple[int, ...]
    compile_backend: str
    cudnn_benchmark: bool
    threads: int | None
    data_patients: int | None
    argv: tuple[str, ...]

    @property
    def reference_batch(self) -> int:
        """Batch of the "naive at batch 4" comparison (the smallest batch if 4 is not run)."""
        return PAPER_BATCH if PAPER_BATCH in self.batch_sizes else min(self.batch_sizes)

    @property
    def timing(self) -> ladder.TimingPlan:
        """The timing plan."""
        return ladder.TimingPlan(
            warmup=self.warmup,
            repeats=self.repeats,
            min_repeat_s=self.min_repeat_s,
            max_iters=20 if self.quick else 200,
        )


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog.removeprefix('python -m ')}: error: {message}\n")


def _csv_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return tuple(dict.fromkeys(values))


def _csv_rungs(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    unknown = [n for n in names if n not in ladder.RUNG_NAMES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown rung(s) {unknown or [text]}; choose from {','.join(ladder.RUNG_NAMES)}"
        )
    return tuple(n for n in ladder.RUNG_NAMES if n in names)  # ladder order


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = _Parser(
        prog="python -m benchmarks.throughput",
        description="Throughput ladder of the paper's liver fibrosis model (see benchmarks/README.md).",
    )
    p.add_argument("--device", choices=("cuda", "cpu"), default=None,
                   help="default: cuda if available, else cpu")
    p.add_argument("--quick", action=argparse.BooleanOptionalAction, default=None,
                   help="tiny backbone, 64 px, batch 2 and 8, few repeats (default on a CPU)")
    p.add_argument("--batch-sizes", type=_csv_ints, default=None,
                   help="comma-separated, e.g. 4,32,128,256 (default) or 2,8 (quick)")
    p.add_argument("--rungs", type=_csv_rungs, default=None,
                   help=f"comma-separated subset of {','.join(ladder.RUNG_NAMES)} (default: all)")
    p.add_argument("--repeats", type=_positive_int, default=None,
                   help="timed repeats per measurement; the median is reported (5, quick 3)")
    p.add_argument("--warmup", type=_positive_int, default=None,
                   help="untimed warm-up steps (10, quick 2)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    p.add_argument("--no-data", action="store_true", help="skip the input-pipeline part")
    p.add_argument("--data-patients", type=_positive_int, default=None,
                   help="phantom patients for the input-pipeline part (8 quick, 20 full)")
    p.add_argument("--overwrite", action="store_true", help="replace existing results files")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend of the compile rungs (inductor)")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="set torch.backends.cudnn.benchmark for every rung (off: torch default)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch CPU threads (default: 1 in CPU quick mode, else torch's default)")
    return p


def resolve(argv: Sequence[str]) -> Options:
    """Parse and check the command line; errors exit with one line and status 2."""
    parser = build_parser()
    ns = parser.parse_args(list(argv))
    if ns.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here (use --device cpu)")
    device = torch.device(ns.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    quick = ns.quick if ns.quick is not None else device.type == "cpu"
    opts = Options(
        device=device,
        quick=quick,
        batch_sizes=ns.batch_sizes or (QUICK_BATCH_SIZES if quick else FULL_BATCH_SIZES),
        rungs=ns.rungs or ladder.RUNG_NAMES,
        rungs_explicit=ns.rungs is not None,
        repeats=ns.repeats or (3 if quick else 5),
        warmup=ns.warmup or (2 if quick else 10),
        min_repeat_s=0.05 if quick else 0.5,
        out=ns.out,
        data=not ns.no_data,
        overwrite=ns.overwrite,
        backbone="test_resnet" if quick else PAPER.backbone,
        image_size=64 if quick else PAPER.image_size,
        hidden=(32, 16) if quick else PAPER.hidden,
        compile_backend=ns.compile_backend,
        cudnn_benchmark=ns.cudnn_benchmark,
        threads=ns.threads or (1 if quick and device.type == "cpu" else None),
        data_patients=ns.data_patients,
        argv=tuple(argv),
    )
    json_path, md_path = results_io.output_paths(
        opts.out, results_io.device_slug(device, quick)
    )
    existing = [str(p) for p in (json_path, md_path) if p.exists()]
    if existing and not opts.overwrite:
        parser.error(f"{existing[0]} exists; pass --overwrite to replace it or --out elsewhere")
    return opts


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an error message, at most ``limit`` characters."""
    return (str(err).strip().splitlines() or [""])[0][:limit]


def log(message: str) -> None:
    """Progress line on stderr."""
    print(f"[throughput] {message}", file=sys.stderr, flush=True)


def build_template(opts: Options) -> tuple[nn.Module, nn.Module]:
    """The model (library default state, CPU, seed 0) that every rung copies, and its loss."""
    from mmfusion.models import build_loss, create_model

    torch.manual_seed(0)
    model = create_model(
        "liver_fibrosis_paper", modalities=MODALITIES, backbone=opts.backbone,
        image_size=opts.image_size, hidden=opts.hidden,
    )
    return model, build_loss(model.config)


def model_facts(model: nn.Module) -> dict[str, Any]:
    """Parameter counts and the model's size in MB (10^6 bytes), next to the paper's figure."""
    params = list(model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    return {
        "params_total": sum(p.numel() for p in params),
        "params_trainable": sum(p.numel() for p in params if p.requires_grad),
        "size_mb": param_bytes / 1e6,
        "size_mib": param_bytes / 2**20,
        "state_dict_mb": (param_bytes + buffer_bytes) / 1e6,
        "paper_size_mb": PAPER_SIZE_MB,
    }


def count_flops(template: nn.Module, loss_fn: nn.Module, opts: Options) -> dict[str, Any]:
    """FLOPs per batch size with FlopCounterMode on the eager fp32 model on the device.

    The training step and the inference forward are counted at every batch size in the
    library-default configuration (frozen stages under no_grad): these "useful" FLOPs give every
    rung's TFLOP/s. The naive rungs' executed FLOPs (frozen stages also differentiated) are
    counted once at the smallest batch and reported per pair, for information.
    """
    device = opts.device
    per_batch: dict[str, dict[str, int]] = {}
    with ladder.tf32_mode(False):
        setup = ladder.prepare(template, ladder.RungConfig(frozen_no_grad=True), device)
        for b in opts.batch_sizes:
            inputs, target = ladder.synthetic_batch(b, opts.image_size, MODALITIES, device)
            per_batch[str(b)] = {
                "train_step": flops_mod.count_train_flops(setup.model, loss_fn, inputs, target),
                "inference": flops_mod.count_inference_flops(setup.model, inputs),
            }
            setup.model.train()
        del setup
        ladder.free_memory(device, collect=True)
        small = min(opts.batch_sizes)
        naive = ladder.prepare(template, ladder.RungConfig(), device)
        inputs, target = ladder.synthetic_batch(small, opts.image_size, MODALITIES, device)
        naive_flops = flops_mod.count_train_flops(naive.model, loss_fn, inputs, target)
        del naive, inputs, target
        ladder.free_memory(device, collect=True)
    big = str(max(opts.batch_sizes))
    return {
        "method": "counted on the eager fp32 model at every batch size",
        "per_batch": per_batch,
        "train_per_pair": per_batch[big]["train_step"] / int(big),
        "infer_per_pair": per_batch[big]["inference"] / int(big),
        "train_naive_executed_per_pair": naive_flops / small,
    }


#: Configurations whose saved activations are counted: (label, rung configuration).
ACTIVATION_CONFIGS: tuple[tuple[str, ladder.RungConfig], ...] = (
    ("naive (fp32, frozen stages in the graph)", ladder.RungConfig()),
    ("fp32, frozen stages under no_grad", ladder.RungConfig(frozen_no_grad=True)),
    ("bf16 autocast, frozen stages under no_grad", ladder.RungConfig(bf16=True, frozen_no_grad=True)),
)


def count_activations(template: nn.Module, loss_fn: nn.Module, opts: Options) -> dict[str, Any]:
    """Bytes saved for backward per pair (batches 1 and 2) in three configurations.

    See :mod:`benchmarks.activations`; a count on this run's device, not a peak-memory
    measurement. Also the fixed training state (weights, gradients, Adam moments, fp32) for the
    arithmetic in the report.
    """
    device = opts.device
    rows = []
    with ladder.tf32_mode(False):
        batches = tuple(
            ladder.synthetic_batch(b, opts.image_size, MODALITIES, device) for b in (1, 2)
        )
        for label, cfg in ACTIVATION_CONFIGS:
            setup = ladder.prepare(template, cfg, device)
            counted = activations_mod.per_pair(setup.model, loss_fn, batches, bf16=cfg.bf16)
            rows.append({"config": label, **counted})
            del setup
            ladder.free_memory(device, collect=True)
    trainable = sum(p.numel() for p in template.parameters() if p.requires_grad)
    weights = sum(p.numel() * p.element_size() for p in template.parameters())
    return {
        "method": "autograd saved_tensors_hooks, distinct non-parameter storages, batches 1 and 2, "
                  f"on {device.type}",
        "rows": rows,
        "weights_mb": weights / 1e6,
        "grads_mb": trainable * 4 / 1e6,
        "adam_state_mb": 2 * trainable * 4 / 1e6,
    }


def _compile_stats() -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {
        "graphs": int(counters["stats"].get("unique_graphs", 0)),
        "graph_breaks": int(sum(counters["graph_break"].values())),
        "cudagraph_skips": int(counters["inductor"].get("cudagraph_skips", 0)),
    }


def measure_rung(
    name: str, batch: int, template: nn.Module, loss_fn: nn.Module, opts: Options,
    flops: dict[str, Any], peak: float | None, row: dict[str, Any],
) -> None:
    """Measure one rung at one batch size, filling ``row`` as results come (train, then infer).

    Training and inference each get a fresh copy of the template (and, for the compile rungs, a
    fresh compiled wrapper after a compiler reset), so the inference memory peak holds no
    optimizer state and no training CUDA-graph pool.
    """
    device, cfg = opts.device, ladder.rung_config(name, opts.device.type)
    per_batch = flops["per_batch"][str(batch)]
    if cfg.compile_mode is not None:
        from torch._dynamo.utils import counters

        counters.clear()
    with ladder.tf32_mode(cfg.tf32):
        inputs, target = ladder.synthetic_batch(
            batch, opts.image_size, MODALITIES, device, cfg.channels_last
        )
        setup = ladder.prepare(template, cfg, device, opts.compile_backend)
        ladder.free_memory(device)
        step = ladder.make_train_step(setup, loss_fn, inputs, target, device)
        train = ladder.time_step(step, device, opts.timing)
        row.update(_rates("train", train, batch, per_batch["train_step"], peak))
        row["train_peak_mem_mb"] = ladder.peak_memory_mb(device)
        del step, setup
        ladder.free_memory(device, collect=True, reset_compiler=cfg.compile_mode is not None)

        setup = ladder.prepare(template, cfg, device, opts.compile_backend)
        ladder.release_optimizer(setup)
        setup.model.eval()
        ladder.free_memory(device, collect=True)
        infer = ladder.time_step(ladder.make_infer_step(setup, inputs, device), device, opts.timing)
        row.update(_rates("infer", infer, batch, per_batch["inference"], peak))
        row["infer_peak_mem_mb"] = ladder.peak_memory_mb(device)
    if cfg.compile_mode is not None:
        row["compile_stats"] = _compile_stats()
    row["status"] = "ok"


def _rates(
    kind: str, timing: ladder.Timing, batch: int, flops: int, peak: float | None
) -> dict[str, Any]:
    tflops = flops / timing.median_s / 1e12
    return {
        f"{kind}_pairs_per_s": batch / timing.median_s,
        f"{kind}_step_ms": timing.median_s * 1e3,
        f"{kind}_repeats_ms": [t * 1e3 for t in timing.per_repeat_s],
        f"{kind}_iters_per_repeat": timing.iters_per_repeat,
        f"{kind}_tflops": tflops,
        f"{kind}_frac_peak": tflops / peak if peak else None,
    }


def run_ladder(
    template: nn.Module, loss_fn: nn.Module, opts: Options, flops: dict[str, Any],
    peak: float | None, on_row: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Every selected rung at every batch size; failures and skips become rows, not crashes.

    ``on_row`` is called with the rows so far after each measured row (the partial results files
    are written from it).
    """
    rows: list[dict[str, Any]] = []
    for batch in opts.batch_sizes:
        for name in opts.rungs:
            row: dict[str, Any] = {"rung": name, "batch_size": batch, "status": "skipped"}
            rows.append(row)
            reason = ladder.skip_reason(
                name, opts.device.type, quick=opts.quick and not opts.rungs_explicit
            )
            if reason:
                row["note"] = reason
                continue
            t0 = time.perf_counter()
            try:
                measure_rung(name, batch, template, loss_fn, opts, flops, peak, row)
            except Exception as err:  # one failing rung must not end the run
                row["status"] = "error"
                row["note"] = f"{type(err).__name__}: {first_line(err)}"
                err.__traceback__ = None
            finally:
                compiled = ladder.rung_config(name, opts.device.type).compile_mode is not None
                ladder.free_memory(opts.device, collect=True, reset_compiler=compiled)
            row["wall_s"] = time.perf_counter() - t0
            log(_progress(row))
            if on_row is not None:
                on_row(rows)
    summary_mod.add_speedups(rows, opts.reference_batch)
    return rows


def _progress(row: dict[str, Any]) -> str:
    head = f"{row['rung']:>14} b={row['batch_size']:<4}"
    if row["status"] != "ok":
        return f"{head} {row['status']}: {row.get('note')}"
    mem = row.get("train_peak_mem_mb")
    mem_text = f", train peak {mem:,.0f} MB" if mem is not None else ""
    return (
        f"{head} train {row['train_pairs_per_s']:,.1f} pairs/s, infer "
        f"{row['infer_pairs_per_s']:,.1f} pairs/s{mem_text} ({row['wall_s']:.1f} s)"
    )


def run(
    opts: Options, save: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Run the whole benchmark and return the results document.

    Args:
        opts: The resolved options.
        save: Called with a partial document (``"complete": false``) after every measured row,
            so that a run stopped by a time limit still leaves what it measured.

    Returns:
        The complete results document (``"complete": true``).
    """
    torch.backends.cudnn.benchmark = opts.cudnn_benchmark
    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    device = opts.device
    env = results_io.environment(device)
    peak, peak_source = flops_mod.peak_bf16_tflops(env["device_name"] if device.type == "cuda" else None)
    log(f"device {env['device_name']}; quick={opts.quick}; batch sizes {opts.batch_sizes}")
    template, loss_fn = build_template(opts)
    facts = model_facts(template)
    log(f"model: {facts['params_total']:,} parameters, {facts['size_mb']:.1f} MB")
    flops = count_flops(template, loss_fn, opts)
    activations = count_activations(template, loss_fn, opts)
    is_gpu = device.type == "cuda"
    head: dict[str, Any] = {
        "schema_version": 1,
        "is_gpu_result": is_gpu,
        "label": "GPU measurement" if is_gpu else "CPU run: NOT GPU results",
        "date_utc": results_io.utc_now(),
        "command": shlex.join(["python", "-m", "benchmarks.throughput", *opts.argv]),
        "git_commit": results_io.git_commit(),
        "environment": env,
        "peak": {"bf16_dense_tflops": peak, "source": peak_source},
        "config": _config(opts),
        "model": facts,
        "flops": flops,
        "activations": activations,
        "rungs": [
            {"name": r.name, "change": r.change, "cuda_only": r.cuda_only,
             "config": asdict(ladder.rung_config(r.name, device.type))}
            for r in ladder.RUNGS
        ],
    }
    planned = len(opts.batch_sizes) * len(opts.rungs)

    def document(rows: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
        if not complete:  # speed-ups of the rows so far, on a copy
            rows = copy.deepcopy(rows)
            summary_mod.add_speedups(rows, opts.reference_batch)
        summary = summary_mod.summarise(rows)
        return {
            **head,
            "complete": complete,
            "progress": {"rows_done": len(rows), "rows_planned": planned},
            "results": rows,
            "summary": summary,
            "goals": summary_mod.evaluate_goals(summary) if is_gpu and not opts.quick else None,
            "goals_note": "Goals (H100) apply to a full GPU run; not evaluated for this run.",
            "data_pipeline": {"skipped": "not reached (partial results)"} if not complete else None,
        }

    on_row = None if save is None else (lambda rows: save(document(rows, complete=False)))
    rows = run_ladder(template, loss_fn, opts, flops, peak, on_row)
    doc = document(rows, complete=True)
    doc["data_pipeline"] = _data_part(opts, doc["summary"])
    return doc


def _data_part(opts: Options, summary: dict[str, Any]) -> dict[str, Any]:
    if not opts.data:
        return {"skipped": "--no-data"}
    from benchmarks import input_pipeline

    best = max((v["best_train_pairs_per_s"] for v in summary.values()), default=None)
    try:
        return input_pipeline.measure(
            opts.device, opts.quick, opts.image_size, best, n_patients=opts.data_patients
        )
    except Exception as err:  # the model part stays valid without it
        return {"skipped": f"failed: {type(err).__name__}: {first_line(err)}"}


def _config(opts: Options) -> dict[str, Any]:
    plan = opts.timing
    return {
        "quick": opts.quick,
        "backbone": opts.backbone,
        "image_size": opts.image_size,
        "hidden": list(opts.hidden),
        "modalities": list(MODALITIES),
        "frozen_stages": 3,
        "batch_sizes": list(opts.batch_sizes),
        "rungs": list(opts.rungs),
        "reference_batch": opts.reference_batch,
        "compile_backend": opts.compile_backend,
        "cudnn_benchmark": opts.cudnn_benchmark,
        "threads": torch.get_num_threads(),
        "optimizer": f"Adam(lr={ladder.LR}, weight_decay={ladder.WEIGHT_DECAY})",
        "timing": (
            f"{plan.warmup} warm-up steps, then {plan.repeats} repeats of >= {plan.min_repeat_s} s "
            f"(at most {plan.max_iters} steps each); median of the repeats; wall time "
            "(perf_counter) with the device synchronised at both ends"
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = resolve(argv)
    t0 = time.perf_counter()
    json_path, md_path = results_io.output_paths(
        opts.out, results_io.device_slug(opts.device, opts.quick)
    )
    written = False

    def save(doc: dict[str, Any]) -> None:
        nonlocal written
        if not written and not opts.overwrite and (json_path.exists() or md_path.exists()):
            raise FileExistsError(f"{json_path} appeared during the run; not overwriting it")
        results_io.write_json(doc, json_path)
        results_io.write_markdown(doc, md_path)
        written = True

    try:
        save(run(opts, save))
    except FileExistsError as err:
        log(f"error: {err} (use --overwrite)")
        return 1
    log(f"wrote {json_path} and {md_path} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
