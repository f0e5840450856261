"""Train the liver fibrosis fusion network (paper section III.E) and evaluate it on held-out patients.

Run from the repository root::

    python -m examples.liver_fibrosis.train --out runs/liver_fibrosis            # phantom, default preset
    python -m examples.liver_fibrosis.train --data my.csv --preset paper --weights imagenet
    torchrun --nproc_per_node=4 -m examples.liver_fibrosis.train --out runs/ddp    # data parallel

The run folder gets ``config.json`` + ``model.safetensors`` (loadable with
:func:`mmfusion.models.from_pretrained`), ``log.jsonl`` (one line per epoch), ``metrics.json``,
``confusion_matrix.png``, ``roc.png``, ``attention/`` overlays, ``logs/`` (CSV; TensorBoard where
installed) and ``checkpoints/last.ckpt`` for ``--resume``. The run's settings are written into
``config.json`` when it starts, and ``--resume`` refuses other settings. A previous run is never
overwritten without ``--overwrite`` (and then only once the new run is complete).

Needs the ``example`` extra (Lightning, matplotlib): ``pip install "mmfusion[example]"``;
``--help`` works without it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from examples.liver_fibrosis.cli import CliError, run, say
from examples.liver_fibrosis.options import (
    RESUME_FREE,
    RunConfig,
    add_settings_arguments,
    explicit_overrides,
    preset_config,
    validate,
)
from examples.liver_fibrosis.runs import (
    global_rank,
    has_training_state,
    load_config,
    require,
    resolve_device,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``train`` command line (one option per configuration field)."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.liver_fibrosis.train",
        description="Train the liver fibrosis fusion network (US + SWE) and evaluate it on held-out patients.",
    )
    parser.add_argument("--config", metavar="CONFIG.json",
                        help="rerun a saved config.json (command-line options still win)")
    add_settings_arguments(parser)
    return parser


def default_preset(device: torch.device, has_weights: bool) -> tuple[str, str]:
    """``(preset, reason)`` for a run whose ``--preset`` was not given."""
    if device.type != "cuda":
        return "quick", "CUDA is not available, so the paper's ResNet-50 would take hours"
    if not has_weights:
        return "quick", ("CUDA is available but no --weights were given, and the paper preset "
                         "freezes stages 1-3 of pretrained encoders; pass --weights imagenet for it")
    return "paper", f"CUDA is available ({torch.cuda.get_device_name(device)}) and weights are given"


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """Preset (or a saved ``config.json`` for ``--config``/``--resume``) + command-line options."""
    overrides = explicit_overrides(args)
    out = Path(overrides.setdefault("out", "runs/liver_fibrosis"))
    saved: RunConfig | None = None
    if args.config:
        saved = load_config(Path(args.config).parent if Path(args.config).is_file() else args.config)
    elif args.resume and (out / "config.json").is_file():
        saved = load_config(out)
    if saved is not None:
        if args.resume and has_training_state(out):  # what was trained must match
            base = {**saved.model.to_dict(), **saved.training.to_dict(), **vars(saved.run)}
            conflicts = {k: (base[k], v) for k, v in overrides.items()
                         if k not in RESUME_FREE and k in base and _norm(base[k]) != _norm(v)}
            if conflicts:
                listed = "; ".join(f"{k}: saved {a!r}, asked {b!r}" for k, (a, b) in conflicts.items())
                raise CliError(f"--resume: {out} was trained with other settings ({listed}); drop "
                               "those options to resume it, or start a new run with another --out")
        cfg = saved.replace(**{**overrides, "resume": bool(args.resume),
                               "overwrite": bool(args.overwrite)})
    else:
        device = resolve_device(overrides.get("device", "auto"))
        preset = args.preset
        if preset is None:
            preset, reason = default_preset(device, bool(overrides.get("weights")))
            if global_rank() == 0:
                say(f"preset: {preset} ({reason}; choose with --preset paper|quick)")
        cuda = device.type == "cuda"
        auto = {"amp": "bf16" if cuda else "off", "channels_last": cuda, "workers": 4 if cuda else 0}
        cfg = preset_config(preset, {**auto, **overrides})
    validate(cfg)
    return cfg


def _norm(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m examples.liver_fibrosis.train``."""
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    cfg = resolve_config(args)
    require("matplotlib", "lightning")  # the plots come at the end: fail now, not after training
    from examples.liver_fibrosis.runner import run_training, weights_check

    weights_check(cfg)
    run_training(cfg)
    if global_rank() == 0:
        say(f"done in {(time.perf_counter() - started) / 60:.1f} min; outputs in {cfg.run.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
