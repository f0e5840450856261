"""Forward time of the quick model, and how many input checks one forward pass runs.

Measures issue 25's "validate once" (inputs checked at the public entry point,
:meth:`~mmfusion.nn.MultiModalClassifier.forward`, not again in every inner layer): the model
``create_model("liver_fibrosis_quick", image_size=96)`` in eval mode under
:func:`torch.no_grad`, a batch of 32 image pairs on the CPU, the median of ``--repeats`` timed
forward passes after ``--warmup`` untimed ones. It also counts the calls of mmfusion's tensor
checks (``check_tensor``, ``check_availability``, ``batch_size_of``, ``check_modality_keys``)
during one forward pass, in every loaded ``mmfusion`` module that imported them.

Run ``python -m benchmarks.forward_validation`` (options: ``--batch-size``, ``--image-size``,
``--repeats``, ``--warmup``, ``--threads``, ``--json``). To compare two versions of the library
on the same machine in the same session, run it once per version (``PYTHONPATH=<other src>``)
and compare the medians; the CPU model is printed with them.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

CHECKS = ("check_tensor", "check_availability", "batch_size_of", "check_modality_keys")
"""The input checks whose calls are counted."""


def cpu_model() -> str:
    """The CPU's model name (``lscpu``'s "Model name", else :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def count_checks(forward: Callable[[], object]) -> Counter[str]:
    """Calls of each of :data:`CHECKS` made by ``forward()``, over every loaded mmfusion module."""
    calls: Counter[str] = Counter()
    patched: list[tuple[Any, str, Any]] = []

    def counting(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return original(*args, **kwargs)

        return wrapper

    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("mmfusion") or module is None:
            continue
        for name in CHECKS:
            original = getattr(module, name, None)
            if callable(original):
                patched.append((module, name, original))
                setattr(module, name, counting(name, original))
    try:
        forward()
    finally:
        for module, name, original in patched:
            setattr(module, name, original)
    return calls


def measure(batch_size: int, image_size: int, repeats: int, warmup: int) -> dict[str, Any]:
    """Median forward time (ms) of the quick model and the checks one forward pass runs."""
    from mmfusion.models import create_model

    torch.manual_seed(0)
    model = create_model("liver_fibrosis_quick", image_size=image_size).eval()
    inputs = {m: torch.randn(batch_size, 3, image_size, image_size) for m in model.modalities}
    times: list[float] = []
    with torch.no_grad():
        for _ in range(warmup):
            model(inputs)
        for _ in range(repeats):
            start = time.perf_counter()
            model(inputs)
            times.append((time.perf_counter() - start) * 1e3)
        checks = count_checks(lambda: model(inputs))
    return {
        "model": "liver_fibrosis_quick",
        "batch_size": batch_size,
        "image_size": image_size,
        "repeats": repeats,
        "warmup": warmup,
        "threads": torch.get_num_threads(),
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "checks_per_forward": dict(sorted(checks.items())),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "mmfusion_path": str(Path(sys.modules["mmfusion"].__file__ or "").parent),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the measurement (and write it as JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=30, help="timed runs (>= 20 advised)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    for name in ("batch_size", "image_size", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: expected a positive int")
    if args.warmup < 0:
        parser.error("--warmup: expected an int >= 0")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads: expected a positive int")
        torch.set_num_threads(args.threads)
    result = measure(args.batch_size, args.image_size, args.repeats, args.warmup)
    print(
        f"{result['model']} forward, batch {result['batch_size']}, {result['image_size']} px, "
        f"eval + no_grad, {result['threads']} thread(s), CPU {result['cpu']}: median "
        f"{result['median_ms']:.2f} ms over {result['repeats']} runs (min {result['min_ms']:.2f}, "
        f"max {result['max_ms']:.2f}); checks per forward: {result['checks_per_forward']}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
