"""The optimisation ladder: rung definitions, per-rung model set-up, step functions and timing.

Each rung adds one change to the rung before it (see ``benchmarks/README.md``):

========================  =====================================================================
``naive``                 fp32, TF32 off, NCHW, eager, frozen stages in the autograd graph (their
                          BatchNorm in train mode, ``requires_grad=True``, not in the optimizer),
                          ``torch.optim.Adam`` with its defaults (foreach on CUDA)
``tf32``                  TF32 tensor cores for fp32 matmuls and cuDNN convolutions (CUDA only)
``bf16``                  ``torch.autocast(dtype=torch.bfloat16)`` around forward and loss (CUDA only)
``channels_last``         model and inputs in ``torch.channels_last`` memory format
``frozen_no_grad``        the library default: frozen stem + stages 1-3 under ``torch.no_grad()``,
                          BatchNorm frozen (eval), ``requires_grad=False``
``fused_adam``            ``Adam(fused=True)``
``compile``               ``torch.compile(dynamic=False)`` (inductor, default mode): forward + loss
                          for training (one graph), the model for inference
``cudagraphs``            ``torch.compile(..., mode="reduce-overhead")``: CUDA graphs (CUDA only)
========================  =====================================================================

On a CPU the CUDA-only changes are left out of every later rung too, so a CPU rung's
configuration is the cumulative set of the changes that exist on a CPU.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from mmfusion import ModalityEncoder
from mmfusion.models import get_preset

_PAPER = get_preset("liver_fibrosis_paper")
LR = _PAPER.training.lr
WEIGHT_DECAY = _PAPER.training.weight_decay
NUM_CLASSES = _PAPER.model.num_classes


@dataclass(frozen=True)
class Rung:
    """One rung of the ladder.

    Attributes:
        name: Short name used on the command line and in the results.
        change: What this rung adds to the previous one (one line).
        cuda_only: The change does not exist (or means nothing) on a CPU.
    """

    name: str
    change: str
    cuda_only: bool = False


RUNGS: tuple[Rung, ...] = (
    Rung(
        "naive",
        "fp32, TF32 off, NCHW, eager, frozen stages in the autograd graph (BN train, grads "
        "computed, not in the optimizer), Adam defaults",
    ),
    Rung("tf32", "TF32 for fp32 matmuls and cuDNN convolutions", cuda_only=True),
    Rung("bf16", "bf16 autocast around forward + loss", cuda_only=True),
    Rung("channels_last", "channels_last model and inputs"),
    Rung("frozen_no_grad", "frozen stem + stages 1-3 under no_grad, BN eval (library default)"),
    Rung("fused_adam", "Adam(fused=True)"),
    Rung("compile", "torch.compile(dynamic=False), default mode"),
    Rung("cudagraphs", 'torch.compile(mode="reduce-overhead"): CUDA graphs', cuda_only=True),
)
RUNG_NAMES: tuple[str, ...] = tuple(r.name for r in RUNGS)


@dataclass(frozen=True)
class RungConfig:
    """The cumulative configuration of a rung.

    Attributes:
        tf32: TF32 allowed for fp32 matmuls and convolutions.
        bf16: bf16 autocast around forward and loss.
        channels_last: Model and inputs in channels_last memory format.
        frozen_no_grad: Library default for the frozen stages (no_grad, BN eval, no grads).
        fused_adam: Fused Adam kernel.
        compile_mode: ``None`` (eager), ``"default"`` or ``"reduce-overhead"``.
    """

    tf32: bool = False
    bf16: bool = False
    channels_last: bool = False
    frozen_no_grad: bool = False
    fused_adam: bool = False
    compile_mode: str | None = None

    @property
    def cudagraphs(self) -> bool:
        """Whether the rung replays CUDA graphs."""
        return self.compile_mode == "reduce-overhead"


_CHANGES: dict[str, dict[str, object]] = {
    "naive": {},
    "tf32": {"tf32": True},
    "bf16": {"bf16": True},
    "channels_last": {"channels_last": True},
    "frozen_no_grad": {"frozen_no_grad": True},
    "fused_adam": {"fused_adam": True},
    "compile": {"compile_mode": "default"},
    "cudagraphs": {"compile_mode": "reduce-overhead"},
}


def rung_config(name: str, device_type: str) -> RungConfig:
    """Cumulative configuration of rung ``name`` on a ``"cuda"`` or ``"cpu"`` device.

    Args:
        name: A name from :data:`RUNG_NAMES`.
        device_type: ``"cuda"`` or ``"cpu"``; on a CPU the CUDA-only changes are dropped.

    Returns:
        The :class:`RungConfig`.

    Example:
        >>> rung_config("channels_last", "cpu")
        RungConfig(tf32=False, bf16=False, channels_last=True, frozen_no_grad=False, fused_adam=False, compile_mode=None)
    """
    if name not in RUNG_NAMES:
        raise ValueError(f"rung: unknown rung {name!r}; expected one of {list(RUNG_NAMES)}")
    cfg = RungConfig()
    for rung in RUNGS:
        if not (rung.cuda_only and device_type != "cuda"):
            cfg = replace(cfg, **_CHANGES[rung.name])  # type: ignore[arg-type]
        if rung.name == name:
            return cfg
    raise AssertionError("unreachable")


def skip_reason(name: str, device_type: str, quick: bool) -> str | None:
    """Why rung ``name`` is not run on this device, or ``None`` when it runs.

    CUDA-only rungs are skipped on a CPU. The ``compile`` rung is left out of the default CPU
    quick run (inductor's C++ compile takes longer than the quick mode's minute); it still runs
    on a CPU when asked for with ``--rungs`` (pass ``quick=False`` then).
    """
    rung = RUNGS[RUNG_NAMES.index(name)]
    if rung.cuda_only and device_type != "cuda":
        return "CUDA only"
    if quick and device_type == "cpu" and name == "compile":
        return "left out of the CPU quick run (compile time); ask for it with --rungs"
    return None


@contextlib.contextmanager
def tf32_mode(enabled: bool) -> Iterator[None]:
    """Set TF32 for cuBLAS matmuls and cuDNN convolutions (new ``fp32_precision`` API).

    PyTorch >= 2.9 refuses to mix this API with the legacy ``allow_tf32`` flags, so only the
    new one is used there; older PyTorch (a GPU machine's own install) gets the legacy flags. Note that cuDNN convolutions default to TF32, so ``enabled=False`` really
    turns it off. The previous settings are restored on exit.
    """
    if not hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch < 2.9: legacy flags
        legacy = (torch.backends.cuda.matmul, torch.backends.cudnn)
        before = [b.allow_tf32 for b in legacy]
        try:
            for b in legacy:
                b.allow_tf32 = enabled
            yield
        finally:
            for b, v in zip(legacy, before, strict=True):
                b.allow_tf32 = v
        return
    backends = (torch.backends.cuda.matmul, torch.backends.cudnn, torch.backends.cudnn.conv)
    old = [b.fp32_precision for b in backends]
    value = "tf32" if enabled else "ieee"
    try:
        for b in backends:
            b.fp32_precision = value
        yield
    finally:
        for b, v in zip(backends, old, strict=True):
            b.fp32_precision = v


@dataclass
class Setup:
    """A model prepared for one rung, with its optimizer and (maybe compiled) forward.

    Attributes:
        model: The model on the device.
        forward: ``model`` or its compiled wrapper (inference).
        optimizer: The rung's optimizer (``None`` once released for inference).
        config: The rung configuration.
        compile: Compiles a callable as the rung asks (identity for the eager rungs); the training
            step compiles forward and loss together with it, so the loss's small kernels are fused
            (and captured by the CUDA graph) too.
    """

    model: nn.Module
    forward: Callable[..., object]
    optimizer: torch.optim.Optimizer | None
    config: RungConfig
    compile: Callable[[Callable[..., Tensor]], Callable[..., Tensor]] = lambda fn: fn


def encoders_of(model: nn.Module) -> list[ModalityEncoder]:
    """The :class:`~mmfusion.ModalityEncoder` modules of a model."""
    return [m for m in model.modules() if isinstance(m, ModalityEncoder)]


def set_train_mode(model: nn.Module, cfg: RungConfig) -> None:
    """Put the model in train mode; for the naive rungs also the frozen stages' BatchNorm."""
    model.train()
    if not cfg.frozen_no_grad:
        for enc in encoders_of(model):
            for module in enc.frozen_modules():
                module.train()


def prepare(
    template: nn.Module,
    cfg: RungConfig,
    device: torch.device,
    compile_backend: str = "inductor",
) -> Setup:
    """Copy the template model onto ``device`` and configure it for a rung.

    The template must be in the library's default state (frozen stages under no_grad with
    ``requires_grad=False``): its trainable parameters are what every rung's optimizer updates.

    Args:
        template: The model built once with a fixed seed (on the CPU).
        cfg: The rung configuration.
        device: Where to run.
        compile_backend: ``torch.compile`` backend for the compile rungs (``"inductor"``; tests
            use ``"eager"`` to exercise the code path quickly).

    Returns:
        The :class:`Setup`; the model is in train mode.
    """
    model = copy.deepcopy(template).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    trainable = [p for p in model.parameters() if p.requires_grad]
    for enc in encoders_of(model):
        enc.frozen_no_grad = cfg.frozen_no_grad
        for module in enc.frozen_modules():
            module.requires_grad_(not cfg.frozen_no_grad)
    optimizer = torch.optim.Adam(
        trainable, lr=LR, weight_decay=WEIGHT_DECAY, fused=True if cfg.fused_adam else None
    )
    set_train_mode(model, cfg)
    if cfg.compile_mode is None:
        return Setup(model=model, forward=model, optimizer=optimizer, config=cfg)
    inductor = compile_backend == "inductor"
    mode = cfg.compile_mode if inductor and cfg.compile_mode != "default" else None

    def compile_fn(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        return torch.compile(fn, dynamic=False, mode=mode, backend=compile_backend)

    forward = torch.compile(model, dynamic=False, mode=mode, backend=compile_backend)
    return Setup(model=model, forward=forward, optimizer=optimizer, config=cfg, compile=compile_fn)


def synthetic_batch(
    batch_size: int,
    image_size: int,
    modalities: tuple[str, ...],
    device: torch.device,
    channels_last: bool = False,
    seed: int = 0,
) -> tuple[dict[str, Tensor], Tensor]:
    """Random normalised images and labels, already on the device.

    Returns:
        ``(inputs, target)``: modality -> ``[B, 3, S, S]`` float32 and ``[B]`` int64 labels.
    """
    gen = torch.Generator().manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    inputs = {
        m: torch.randn(batch_size, 3, image_size, image_size, generator=gen)
        .to(device)
        .contiguous(memory_format=fmt)
        for m in modalities
    }
    target = torch.randint(0, NUM_CLASSES, (batch_size,), generator=gen).to(device)
    return inputs, target


def _autocast(cfg: RungConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if cfg.bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_train_step(
    setup: Setup,
    loss_fn: nn.Module,
    inputs: Mapping[str, Tensor],
    target: Tensor,
    device: torch.device,
) -> Callable[[], None]:
    """One training step: forward + loss + backward + ``optimizer.step`` + ``zero_grad``.

    ``zero_grad(set_to_none=True)`` is the optimizer's, so in the naive rungs the frozen stages'
    gradients (computed, never used) accumulate in place, as in a script that hands only the
    trainable parameters to the optimizer.
    """
    cfg, optimizer, model = setup.config, setup.optimizer, setup.model
    if optimizer is None:
        raise ValueError("setup: the optimizer was released; prepare the rung again")

    def training_loss(inputs: Mapping[str, Tensor], target: Tensor) -> Tensor:
        out = model(inputs)
        return loss_fn(out.logits, target, out.features, out.available).total

    compute_loss = setup.compile(training_loss)

    def step() -> None:
        if cfg.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        with _autocast(cfg, device):
            loss = compute_loss(inputs, target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def make_infer_step(
    setup: Setup, inputs: Mapping[str, Tensor], device: torch.device
) -> Callable[[], None]:
    """One inference forward in eval mode under ``torch.inference_mode`` (probabilities only)."""
    cfg, forward = setup.config, setup.forward

    def step() -> None:
        if cfg.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.inference_mode(), _autocast(cfg, device):
            _ = forward(inputs).probs

    return step


def release_optimizer(setup: Setup) -> None:
    """Drop the optimizer state and gradients (before measuring inference memory)."""
    setup.optimizer = None
    setup.model.zero_grad(set_to_none=True)


def synchronize(device: torch.device) -> None:
    """Wait for the device (no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _elapsed(step: Callable[[], None], iters: int, device: torch.device) -> float:
    """Synchronised wall time of ``iters`` calls of ``step``, in seconds.

    The device is synchronised before the clock starts and before it stops, so all queued GPU
    work (on any stream, CUDA-graph replays included) is inside the interval. On a CPU the
    synchronisation is a no-op, so both devices take the same path.
    """
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    synchronize(device)
    return time.perf_counter() - t0


@dataclass(frozen=True)
class TimingPlan:
    """How to time a step.

    Attributes:
        warmup: Untimed calls first (compilation and CUDA-graph recording happen here).
        repeats: Timed repeats; the median is reported.
        min_repeat_s: Each repeat runs enough calls to last at least this long.
        max_iters: Upper bound on calls per repeat.
    """

    warmup: int = 10
    repeats: int = 5
    min_repeat_s: float = 0.3
    max_iters: int = 200


@dataclass(frozen=True)
class Timing:
    """Result of :func:`time_step`: seconds per call, median and every repeat."""

    median_s: float
    per_repeat_s: tuple[float, ...]
    iters_per_repeat: int


def time_step(step: Callable[[], None], device: torch.device, plan: TimingPlan) -> Timing:
    """Warm up, size the repeats from one timed call, and return the median time per call.

    Args:
        step: The step to time.
        device: Where it runs (synchronised before and after each timed repeat).
        plan: The :class:`TimingPlan`.

    Returns:
        :class:`Timing` (seconds per call).
    """
    for _ in range(plan.warmup):
        step()
    one = _elapsed(step, 1, device)
    iters = max(1, min(plan.max_iters, math.ceil(plan.min_repeat_s / max(one, 1e-6))))
    times = tuple(_elapsed(step, iters, device) / iters for _ in range(plan.repeats))
    return Timing(statistics.median(times), times, iters)


def free_memory(device: torch.device, *, collect: bool = False, reset_compiler: bool = False) -> None:
    """Release memory between measurements and reset the CUDA peak counter.

    Args:
        device: The benchmark device.
        collect: Run the garbage collector (at the end of a rung, to free reference cycles such
            as compiled wrappers). It takes about half a second with torch loaded, so it is
            skipped on a CPU, where no memory is measured.
        reset_compiler: Also reset torch.compile state (``torch._dynamo.reset()``, which also
            releases CUDA-graph trees).
    """
    if reset_compiler:
        torch._dynamo.reset()
    if collect and device.type == "cuda":
        gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float | None:
    """``torch.cuda.max_memory_allocated`` in MB (10^6 bytes); ``None`` on a CPU."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 1e6
