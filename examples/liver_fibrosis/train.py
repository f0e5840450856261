"""``train``: the liver fibrosis fusion network, evaluated on held-out patients."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from examples.liver_fibrosis import options
from examples.liver_fibrosis.cli import CliError, run, say

PROG = "python -m examples.liver_fibrosis.train"


def machine_config(given: dict[str, Any], cheap: bool = False) -> tuple[options.RunConfig, str]:
    """A new run's configuration here (preset given or chosen, device defaults) and why."""
    if not cheap:
        from examples.liver_fibrosis.runs import resolve_device

        resolve_device(str(given.get("device", "auto")))  # a clear error for a device not here
    cuda = options.cuda_count(str(given.get("device", "auto")), cheap) > 0
    preset, reason = str(given.get("preset") or ""), ""
    if not preset:
        preset, reason = options.default_preset(cuda, any(given.get(k) for k in ("weights", "weights_us", "weights_swe")))
    auto = {"amp": "bf16" if cuda else "off", "channels_last": cuda, "workers": 4 if cuda else 0}
    return options.preset_config(preset, auto), reason


def build_parser(base: options.RunConfig | None = None, why: str = "") -> Any:
    """The ``train`` command line; its defaults are ``base`` (default: this machine's)."""
    if base is None:
        base, reason = machine_config({}, cheap=True)
        why = f"; default here: {base.preset.removeprefix('liver_fibrosis_')} ({reason})"
    parser = options.command_parser(PROG, "Train the liver fibrosis fusion network (US + SWE) and evaluate "
                                  "it on held-out patients.")
    options.add_settings(parser, base, preset_help=why)
    return parser


def resolve_config(argv: Sequence[str] | None) -> options.RunConfig:
    """The run's configuration: preset (or the resumed run's), ``--config`` files, command line."""
    argv = options.normalise(argv)
    for i, (flag, value) in enumerate(zip(argv, argv[1:], strict=False)):  # a run folder or its config.json (before 26)
        if flag == "--config" and (Path(value).is_dir() or value.endswith(".json")):
            argv[i + 1] = options.load_config(Path(value) if Path(value).is_dir() else Path(value).parent).to_yaml()
    given = options.named(argv)
    cheap = any(a in ("-h", "--help") or a.startswith("--print_config") for a in argv)
    out = Path(str(given.get("out", "runs/liver_fibrosis")))
    saved = None
    if given.get("resume") is True and (out / "config.json").is_file():
        saved = options.load_config(out)
        base, why = saved.replace(resume=False, overwrite=False), f"; default: the one {out} was trained with"
        if not cheap:
            from examples.liver_fibrosis.runs import has_training_state

            saved = saved if has_training_state(out) else None
    else:
        base, reason = machine_config(given, cheap)
        why = f"; default here: {base.preset.removeprefix('liver_fibrosis_')} ({reason})" if reason else ""
        if reason and not cheap and int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) == 0:
            say(f"preset: {base.preset.removeprefix('liver_fibrosis_')} ({reason}; choose with --preset paper|quick)")
    namespace = build_parser(base, why).parse_args(argv)
    preset = options.resolve_preset(namespace.preset)
    if preset != base.preset:  # a --config file's preset: its settings start from it
        base = options.preset_config(preset, {})
    cfg = base.replace(**options.settings_of(namespace))
    if saved is not None:  # what was trained must match
        old, new = saved.flat(), cfg.flat()
        conflicts = [f"{k}: saved {old[k]!r}, asked {new[k]!r}" for k in given
                     if k in old and k not in options.RESUME_FREE and old[k] != new[k]]
        if conflicts:
            raise CliError(f"--resume: {out} was trained with other settings ({'; '.join(conflicts)}); "
                           "drop those options to resume it, or start a new run with another --out")
    options.validate(cfg)
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m examples.liver_fibrosis.train``."""
    started = time.perf_counter()
    cfg = resolve_config(argv)
    from examples.liver_fibrosis.runs import global_rank, require

    require("matplotlib", "lightning")  # the plots come at the end: fail now, not after training
    from examples.liver_fibrosis.runner import run_training, weights_check

    weights_check(cfg)
    run_training(cfg)
    if global_rank() == 0:
        say(f"done in {(time.perf_counter() - started) / 60:.1f} min; outputs in {cfg.run.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
