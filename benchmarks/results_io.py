"""Writing the throughput results: environment facts, the JSON document and the Markdown table."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmfusion.files import atomic_write_text

if TYPE_CHECKING:  # imported where used, so the CPU-only phantom report runs without torch
    import torch

NOT_GPU_WARNING = (
    "**CPU run, not GPU results.** These numbers come from {what} on a CPU ({cpu}); they only "
    "show that the benchmark code works. No GPU numbers have been measured yet."
)


def device_slug(device: torch.device, quick: bool) -> str:
    """File-name slug of the device: ``nvidia-h100-80gb-hbm3``, ``cpu-quick``, ...

    Example:
        >>> import torch
        >>> device_slug(torch.device("cpu"), quick=True)
        'cpu-quick'
    """
    import torch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or device.type
    return f"{slug}-quick" if quick else slug


def output_paths(out_dir: Path, slug: str) -> tuple[Path, Path]:
    """``(json_path, md_path)`` of the results for a device slug."""
    stem = f"throughput_{slug}"
    return out_dir / f"{stem}.json", out_dir / f"{stem}.md"


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (or :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_name(device: torch.device) -> str:
    """What measured a number on ``device``: the GPU's name, or the CPU's model name."""
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def git_commit(start: Path | None = None) -> str | None:
    """The checked-out commit, read from ``.git`` without running git; ``None`` if unknown."""
    here = (start or Path(__file__)).resolve()
    for folder in (here, *here.parents):
        git = folder / ".git"
        if git.is_dir():
            return _resolve_head(git)
    return None


def _resolve_head(git: Path) -> str | None:
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head or None
        ref = head.split(":", 1)[1].strip()
        loose = git / ref
        if loose.is_file():
            return loose.read_text().strip() or None
        packed = git / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref:
                    return parts[0]
    except OSError:
        return None
    return None


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and device facts for the results header."""
    import timm
    import torch

    cuda = device.type == "cuda"
    return {
        "device_type": device.type,
        "device_name": machine_name(device) if cuda else f"CPU: {cpu_model()}",
        "cpu_model": cpu_model(),
        "cpu_cores_available": available_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu_total_memory_mb": (
            torch.cuda.get_device_properties(device).total_memory / 1e6 if cuda else None
        ),
    }


def utc_now() -> str:
    """The current UTC time, ISO 8601, seconds."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def write_json(doc: Mapping[str, Any], path: Path) -> None:
    """Write the results document (NaN-free, indented), atomically."""
    atomic_write_text(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")


def _fmt(value: object, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:,.{digits}f}"
    return str(value)


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _title(doc: Mapping[str, Any]) -> str:
    env = doc["environment"]
    mode = " (quick mode, tiny model)" if doc["config"]["quick"] else ""
    if not doc.get("complete", True):
        mode += " (PARTIAL)"
    if doc["is_gpu_result"]:
        return f"# mmfusion throughput: {env['device_name']}{mode}"
    return f"# mmfusion throughput: {env['device_name']}{mode}, NOT GPU results"


def _header(doc: Mapping[str, Any]) -> list[str]:
    env, cfg, model = doc["environment"], doc["config"], doc["model"]
    lines = [_title(doc), ""]
    if not doc.get("complete", True):
        progress = doc["progress"]
        lines += [
            f"> **Partial results.** The run stopped (or is still running) after "
            f"{progress['rows_done']} of {progress['rows_planned']} rung x batch-size "
            "measurements; the input pipeline was not reached.",
            "",
        ]
    if not doc["is_gpu_result"]:
        what = f"a tiny model ({cfg['backbone']}, {cfg['image_size']} px)" if cfg["quick"] else (
            "the model"
        )
        lines += ["> " + NOT_GPU_WARNING.format(what=what, cpu=env["cpu_model"]), ""]
    peak = doc["peak"]
    lines += [
        f"- Command: `{doc['command']}`",
        f"- Date (UTC): {doc['date_utc']}; git commit: {doc['git_commit'] or 'unknown'}",
        f"- torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, timm {env['timm']}, "
        f"Python {env['python']}; torch threads: {env['torch_threads']}; CPU cores available: "
        f"{env['cpu_cores_available']} ({env['cpu_model']})",
        f"- Dense BF16 peak: {_fmt(peak['bf16_dense_tflops'])} TFLOP/s ({peak['source']})",
        f"- Model: {cfg['backbone']} x {len(cfg['modalities'])}, {cfg['image_size']} px, "
        f"hidden {tuple(cfg['hidden'])}; {model['params_total']:,} parameters "
        f"({model['params_trainable']:,} trainable), {model['size_mb']:.1f} MB in fp32 "
        f"(paper: about {model['paper_size_mb']} MB)",
        f"- FLOPs per pair (FlopCounterMode, {doc['flops']['method']}): training step "
        f"{doc['flops']['train_per_pair'] / 1e9:.3f} GFLOP, inference "
        f"{doc['flops']['infer_per_pair'] / 1e9:.3f} GFLOP; the naive rungs execute "
        f"{doc['flops']['train_naive_executed_per_pair'] / 1e9:.3f} GFLOP per training pair",
        f"- Timing: {cfg['timing']}",
        "",
    ]
    return lines


def _flops_cell(tflops: float | None, frac: float | None) -> str:
    if tflops is None:
        return "-"
    return f"{tflops:.3g}" + ("" if frac is None else f" ({100 * frac:.1f}%)")


def _ladder(doc: Mapping[str, Any]) -> list[str]:
    ref = doc["config"]["reference_batch"]
    header = [
        "batch", "rung", "train pairs/s", "x naive", f"x naive@{ref}", "infer pairs/s",
        "x naive", "train peak MB", "infer peak MB", "train TFLOP/s (% peak)",
        "infer TFLOP/s (% peak)", "status",
    ]
    order = {r["name"]: i for i, r in enumerate(doc["rungs"])}
    rows = []
    for r in sorted(doc["results"], key=lambda r: (r["batch_size"], order.get(r["rung"], 0))):
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('note') or ''}"
        rows.append([
            str(r["batch_size"]), r["rung"], _fmt(r.get("train_pairs_per_s")),
            _x(r.get("train_speedup_vs_naive")), _x(r.get("train_speedup_vs_naive_ref_batch")),
            _fmt(r.get("infer_pairs_per_s")), _x(r.get("infer_speedup_vs_naive")),
            _fmt(r.get("train_peak_mem_mb")), _fmt(r.get("infer_peak_mem_mb")),
            _flops_cell(r.get("train_tflops"), r.get("train_frac_peak")),
            _flops_cell(r.get("infer_tflops"), r.get("infer_frac_peak")), status,
        ])
    device = doc["environment"]["device_name"]
    return [f"## Ladder on {device} (each rung adds one change)", "", *_table(header, rows), ""]


def _activations(doc: Mapping[str, Any]) -> list[str]:
    act = doc.get("activations")
    if not act:
        return []
    fixed_state = act["weights_mb"] + act["grads_mb"] + act["adam_state_mb"]
    big = max(doc["config"]["batch_sizes"])
    rows = [
        [r["config"], _fmt(r["mb_per_pair"], 2), _fmt(r["fixed_mb"], 1),
         _fmt(r["fixed_mb"] + big * r["mb_per_pair"]),
         _fmt(fixed_state + r["fixed_mb"] + big * r["mb_per_pair"])]
        for r in act["rows"]
    ]
    header = ["configuration", "saved MB per pair", "saved MB fixed", f"saved MB at batch {big}",
              f"+ weights, grads, Adam: MB at batch {big}"]
    return [
        "## Activation memory (counted, not measured)", "",
        f"Tensors autograd saves for backward in one training forward + loss ({act['method']}). "
        f"The last two columns are arithmetic from that count: the saved tensors at batch {big}, "
        f"then plus the fp32 training state (weights {act['weights_mb']:,.0f} MB, gradients "
        f"{act['grads_mb']:,.0f} MB, Adam moments {act['adam_state_mb']:,.0f} MB). A device's "
        "peak also holds kernel workspaces, temporaries and allocator caching; the measured peaks "
        "are the ladder's memory columns.",
        "", *_table(header, rows), "",
    ]


def _rungs(doc: Mapping[str, Any]) -> list[str]:
    rows = [[r["name"], r["change"]] for r in doc["rungs"]]
    return ["## Rungs", "", *_table(["rung", "adds"], rows), ""]


def _data(doc: Mapping[str, Any]) -> list[str]:
    data = doc.get("data_pipeline") or {}
    if "stages" not in data:
        return ["## Input pipeline", "", f"Not measured: {data.get('skipped', 'unknown')}.", ""]
    rows = [
        [s["name"], s["where"], _fmt(s["pairs_per_s"]), _fmt(s.get("pairs_per_s_per_core"))]
        for s in data["stages"]
    ]
    lines = ["## Input pipeline", "", *_table(["stage", "where", "pairs/s", "per core"], rows)]
    lines += ["", data["verdict"], ""]
    return lines


def _goals(doc: Mapping[str, Any]) -> list[str]:
    goals = doc.get("goals")
    if not goals:
        return ["## Goals", "", doc.get("goals_note", "Goals apply to a full GPU run."), ""]
    rows = [
        [g["goal"], _fmt(g["measured"], 2), str(g["target"]), {True: "yes", False: "no"}.get(
            g["met"], "-")]
        for g in goals
    ]
    return ["## Goals", "", *_table(["goal", "measured", "target", "met"], rows), ""]


def render_markdown(doc: Mapping[str, Any]) -> str:
    """The Markdown report of a results document."""
    parts = _header(doc) + _ladder(doc) + _activations(doc) + _rungs(doc) + _data(doc) + _goals(doc)
    return "\n".join(parts).rstrip() + "\n"


def write_markdown(doc: Mapping[str, Any], path: Path) -> None:
    """Write :func:`render_markdown` to ``path``, atomically."""
    atomic_write_text(path, render_markdown(doc))
