"""Export the inference path of a :class:`~mmfusion.nn.MultiModalClassifier` to ONNX, and run it.

* :func:`to_onnx` - ``images -> combined class probabilities`` (the ensemble prediction of the
  paper's Fig. 3 and section III.D) through ``torch.onnx.export(..., dynamo=True)``: one input per
  modality, named by the modality, ``[batch, C, H, W]`` float32 (``[batch, F]`` for a tabular
  modality, ``NaN`` where a value is missing) with a dynamic batch axis; one output ``"probs"``,
  ``[batch, K]``. With ``availability_input=True`` a last input
  ``"available"``, ``[batch, M]`` bool, flags per sample which modalities are present, so one graph
  serves pairs with and without SWE (the model ignores a modality's pixels where it is ``False``).
* :class:`OnnxPredictor` - a small wrapper around an ``onnxruntime.InferenceSession`` that takes and
  returns NumPy arrays, or image files; it lives in :mod:`mmfusion.onnx_predictor`, which imports
  no torch, so that inference runs where PyTorch is not installed.

The file carries the facts needed to preprocess its inputs in its ``metadata_props``
(:class:`~mmfusion.onnx_predictor.ExportFacts`: modalities in input order, image size,
normalisation, class names, crop per modality, the availability input, the mmfusion version).
It is written to a temporary file in the destination's folder, checked by ``onnx.checker``,
fsynced and renamed into place: an export that dies (or a full disk) leaves the previous file.
A model whose weights are not finite (a diverged training) is refused.

``onnx``, ``onnxscript`` and ``onnxruntime`` are optional dependencies (the ``mmfusion[export]``
extra); they are imported only when needed.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from mmfusion import __version__
from mmfusion._checks import check_modality_keys, check_size, eval_mode
from mmfusion.files import file_mode
from mmfusion.onnx_predictor import (
    AVAILABLE_INPUT,
    CROP_MODES,
    METADATA_PREFIX,
    OUTPUT_NAME,
    ExportFacts,
    OnnxPredictor,
)

__all__ = [
    "AVAILABLE_INPUT",
    "OUTPUT_NAME",
    "OnnxPredictor",
    "ProbabilitiesModule",
    "check_finite_weights",
    "check_parity",
    "to_onnx",
]

_EXTRA_HINT = "pip install 'mmfusion[export]'"


def _require(module: str, purpose: str) -> ModuleType:
    """Import an optional dependency or raise an ImportError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{purpose} needs the optional package {module!r}; install it with {_EXTRA_HINT}"
        ) from err


class ProbabilitiesModule(nn.Module):
    """The inference path with positional inputs: ``(x_m1, x_m2, ...) -> probs``.

    Exporters and compilers take tensors, not mappings of tensors; this wrapper takes one image
    batch per modality, in ``modalities`` order, and returns only the combined probabilities.

    Args:
        model: A :class:`~mmfusion.nn.MultiModalClassifier`.
        modalities: The modalities fed, in input order (a non-empty subset of
            ``model.modalities``; the others are treated as absent). Default: all of them.
        availability_input: Take a last input ``available``, ``[B, M]`` bool, column ``j``
            flagging per sample whether ``modalities[j]`` is present (passed to the model as its
            ``available`` mask).

    Shape:
        - Inputs: one ``[B, C_m, H, W]`` float tensor per modality (``[B, F]`` for a tabular
          one), then the ``[B, M]`` bool mask with ``availability_input``.
        - Output: ``[B, K]`` probabilities (rows sum to 1).

    Example:
        >>> from mmfusion import ClassifierHead, EnsembleHead, ModalityEncoder, MultiModalClassifier
        >>> enc = {"us": ModalityEncoder("test_resnet")}
        >>> model = MultiModalClassifier(enc, None, EnsembleHead({"us": ClassifierHead(96, 5, pool="avg")}))
        >>> ProbabilitiesModule(model)(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        model: nn.Module,
        modalities: Sequence[str] | None = None,
        *,
        availability_input: bool = False,
    ) -> None:
        super().__init__()
        known = getattr(model, "modalities", None)
        if not isinstance(model, nn.Module) or known is None:
            raise TypeError(
                f"model: expected a MultiModalClassifier (with .modalities), got {type(model).__name__}"
            )
        if modalities is None:
            modalities = tuple(known)
        if isinstance(modalities, str) or not isinstance(modalities, Sequence):
            raise TypeError(
                f"modalities: expected a sequence of modality names, got {modalities!r}"
            )
        check_modality_keys(modalities, known, "modalities")
        if len(set(modalities)) != len(modalities):
            raise ValueError(f"modalities: expected distinct names, got {list(modalities)}")
        if availability_input and AVAILABLE_INPUT in modalities:
            raise ValueError(
                f"modalities: {AVAILABLE_INPUT!r} names the availability input; rename the "
                "modality or export without availability_input"
            )
        self.model = model
        self.modalities: tuple[str, ...] = tuple(modalities)
        self.availability_input = bool(availability_input)

    def forward(self, *inputs: Tensor) -> Tensor:
        """Return ``[B, K]`` probabilities for one ``[B, C, H, W]`` batch per modality.

        With ``availability_input`` the last tensor is the ``[B, M]`` bool mask.
        """
        names = [*self.modalities, *([AVAILABLE_INPUT] if self.availability_input else [])]
        if len(inputs) != len(names):
            raise ValueError(f"inputs: expected {len(names)} tensors {names}, got {len(inputs)}")
        images = dict(zip(self.modalities, inputs, strict=False))
        if not self.availability_input:
            return self.model(images).probs
        mask = inputs[-1]
        m = len(self.modalities)
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise TypeError(f"{AVAILABLE_INPUT}: expected a bool tensor [B, {m}], got {got}")
        if mask.ndim != 2 or mask.shape[1] != m:
            raise ValueError(
                f"{AVAILABLE_INPUT}: expected shape [B, {m}] (one column per modality "
                f"{list(self.modalities)}), got {tuple(mask.shape)}"
            )
        available = {name: mask[:, j] for j, name in enumerate(self.modalities)}
        return self.model(images, available=available).probs


def _input_shape(model: nn.Module, modality: str, hw: tuple[int, int]) -> tuple[int, ...]:
    """One sample's input shape for ``modality``: the encoder's ``input_shape(hw)`` when it has
    one (``(F,)`` for a tabular encoder), else ``(in_chans, H, W)``."""
    encoder = cast(nn.ModuleDict, model.encoders)[modality]
    input_shape = getattr(encoder, "input_shape", None)
    if callable(input_shape):
        return tuple(int(n) for n in input_shape(hw))
    channels = getattr(encoder, "in_chans", None)
    if not isinstance(channels, int):
        raise ValueError(
            f"model.encoders[{modality!r}]: cannot tell its input shape (no input_shape(image_size) "
            "method, no int .in_chans)"
        )
    return (channels, *hw)


def check_finite_weights(model: nn.Module, name: str = "model") -> None:
    """Refuse a model whose parameters or buffers hold NaN or infinity (a diverged training).

    Raises:
        ValueError: Naming how many tensors are affected and the first few.
    """
    bad = [key for key, t in model.state_dict().items()
           if torch.is_floating_point(t) and not bool(torch.isfinite(t).all())]  # fmt: skip
    if bad:
        raise ValueError(
            f"{name}: {len(bad)} parameter/buffer tensor(s) hold values that are not finite (NaN "
            f"or inf), e.g. {bad[:3]}: the model diverged? (train again, e.g. with a lower "
            "learning rate); refusing to use it"
        )


def check_parity(model: nn.Module, predictor: Any, image_size: int, tolerance: float = 1e-3) -> float:
    """Largest ``|p_onnx - p_torch|`` of an exported ``model`` on two random inputs (seeded) and,
    where the graph has the availability input, with the last modality missing from the second.

    Args:
        model: The exported model (evaluation mode, on the CPU).
        predictor: Its :class:`OnnxPredictor`.
        image_size: Side of the square inputs.
        tolerance: Largest accepted difference.

    Raises:
        ValueError: The model's probabilities are not finite (a diverged model), ONNX Runtime's
            are not, or they differ by more than ``tolerance``.
    """
    names = list(predictor.modalities)
    x = {m: torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(i))
         for i, m in enumerate(names)}
    with torch.no_grad():
        expected = model(x).probs.numpy()
    got = predictor({m: v.numpy() for m, v in x.items()})
    if predictor.availability_input:
        present = {m: torch.tensor([True, i < len(names) - 1]) for i, m in enumerate(names)}
        with torch.no_grad():
            expected = np.concatenate([expected, model(x, present).probs.numpy()])
        got = np.concatenate([got, predictor({m: v.numpy() for m, v in x.items()},
                                             {m: v.numpy() for m, v in present.items()})])
    if not np.isfinite(expected).all():
        raise ValueError("model: its probabilities are not finite (NaN or inf): the model diverged? "
                         "(train it again, e.g. with a lower learning rate)")
    diff = float(np.abs(expected - got).max())
    if not np.isfinite(got).all():
        raise ValueError(f"ONNX Runtime disagrees with PyTorch: its probabilities are not finite "
                         f"(max |delta p| = {diff:.2e})")
    if not diff <= tolerance:  # also False for NaN
        raise ValueError(f"ONNX Runtime disagrees with PyTorch (max |delta p| = {diff:.2e} > {tolerance:g})")
    return diff


def _floats3(values: Sequence[float], name: str, positive: bool = False) -> tuple[float, ...]:
    """Three finite floats (positive ones with ``positive``), or a ValueError naming ``name``."""
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or not all(math.isfinite(v) and (v > 0 or not positive) for v in out):
        what = "positive" if positive else "finite"
        raise ValueError(f"{name}: expected 3 {what} numbers (R, G, B), got {values!r}")
    return out


def _facts(
    modalities: Sequence[str],
    hw: tuple[int, int],
    n_classes: int,
    availability_input: bool,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    class_names: Sequence[str] | None,
    crop: Mapping[str, str] | None,
) -> ExportFacts:
    """The :class:`ExportFacts` of an export, from ``to_onnx``'s arguments (checked)."""
    from mmfusion.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    names = [str(k) for k in range(n_classes)] if class_names is None else class_names
    if isinstance(names, str) or not all(isinstance(c, str) and c for c in names) or len(
        set(names)
    ) != len(names) or len(names) != n_classes:
        raise ValueError(
            f"class_names: expected {n_classes} distinct non-empty names (one per output "
            f"column), got {class_names!r}"
        )
    crop = dict(crop or {})
    unknown = [m for m in crop if m not in modalities]
    bad = {m: c for m, c in crop.items() if c not in CROP_MODES}
    if unknown or bad:
        raise ValueError(
            f"crop: expected modes among {CROP_MODES} for modalities among {list(modalities)}, "
            f"got {crop}"
        )
    return ExportFacts(
        modalities=tuple(modalities), image_size=hw,
        mean=_floats3(IMAGENET_MEAN if mean is None else mean, "mean"),  # type: ignore[arg-type]
        std=_floats3(IMAGENET_STD if std is None else std, "std", positive=True),  # type: ignore[arg-type]
        class_names=tuple(names), crop={m: crop.get(m, "sector") for m in modalities},
        availability_input=AVAILABLE_INPUT if availability_input else None,
        output=OUTPUT_NAME, version=__version__,
    )  # fmt: skip


def _verify(path: Path, final: Path) -> None:
    """Check a written ONNX file with ``onnx.checker``; a ValueError naming ``final`` if bad."""
    onnx = _require("onnx", "to_onnx")
    try:
        onnx.checker.check_model(str(path))
    except Exception as err:  # onnx raises ValidationError, DecodeError, ...
        raise ValueError(
            f"path: the ONNX file written for {str(final)!r} is not valid ({type(err).__name__}: "
            f"{' '.join(str(err).split())[:300]}); the previous file, if any, is kept"
        ) from err


def _save_atomically(program: Any, path: Path) -> None:
    """Save an ``ONNXProgram`` to ``path`` via a checked, fsynced temporary file and a rename.

    The temporary file (``.<name>.<random>.tmp``) sits in ``path``'s folder, so the rename is on
    one filesystem and atomic; it gets the umask's mode (:func:`mmfusion.files.file_mode`). On
    any failure or interruption it is removed and ``path`` is untouched.
    """
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        program.save(str(tmp), external_data=False)  # weights embedded: one self-contained file
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        _verify(tmp, path)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename durable (folders cannot be opened on
        folder = os.open(path.parent, os.O_RDONLY)  # every OS)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def to_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    modalities: Sequence[str] | None = None,
    image_size: int | tuple[int, int] = 224,
    opset: int | None = None,
    batch_size_example: int = 2,
    *,
    availability_input: bool = False,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    crop: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Export ``images -> combined probabilities`` to an ONNX file with a dynamic batch axis.

    The model is traced in eval mode by ``torch.onnx.export(..., dynamo=True)`` (``torch.export``
    underneath) on random example images of ``batch_size_example`` samples, on the device and
    dtype of the model's parameters; its training mode is restored afterwards. Flattening
    single-modal heads (the paper's, section III.B) tie the graph to ``image_size``.

    The file's ``metadata_props`` carry the preprocessing facts
    (:class:`~mmfusion.onnx_predictor.ExportFacts`, keys ``mmfusion.*``, JSON values), which
    :class:`~mmfusion.onnx_predictor.OnnxPredictor` reads to predict image files without torch.
    The file is written to a temporary file in its folder, checked with ``onnx.checker``, fsynced
    and renamed over ``path``: an export that fails or is killed leaves the previous file.

    Args:
        model: A :class:`~mmfusion.nn.MultiModalClassifier`.
        path: Output ``.onnx`` file; its folder must exist. Weights are embedded in the file
            (so it must stay under protobuf's 2 GB).
        modalities: Modalities that become inputs, in input order (default ``model.modalities``;
            a subset exports a model that treats the others as absent).
        image_size: Frame size, an int or ``(H, W)`` (224 in the paper).
        opset: ONNX opset version; ``None`` for the exporter's default.
        batch_size_example: Batch size of the example inputs (at least 2, so that the batch axis
            is not specialised to 1).
        availability_input: Add a last input ``"available"`` (:data:`AVAILABLE_INPUT`),
            ``[batch, M]`` bool: column ``j`` flags per sample whether ``modalities[j]`` is
            present, exactly the model's ``available`` mask. One graph then serves pairs with and
            without, say, SWE: feed any image (zeros) for a missing modality and ``False`` in its
            column. Without it, every sample is taken to have every input modality.
        mean: RGB normalisation mean the model was trained with, recorded in the metadata
            (default ImageNet's, that of :func:`~mmfusion.data.eval_transforms`).
        std: RGB normalisation std, likewise (default ImageNet's).
        class_names: Names of the ``K`` output columns, recorded (default ``"0"``, ``"1"``, ...).
        crop: Crop mode per modality (see :class:`~mmfusion.data.PairedImageDataset`), recorded;
            modalities not named get ``"sector"``.
        metadata: More ``metadata_props`` entries (str -> str), e.g. the training run; keys may
            not start with ``"mmfusion."``.

    Returns:
        The path written. Graph inputs are named after the modalities,
        ``[batch, C, H, W]`` float32 (``[batch, F]`` for a tabular modality; then
        ``"available"``, ``[batch, M]`` bool, if asked for); the output is ``"probs"``,
        ``[batch, K]``.

    Raises:
        ImportError: ``onnx``/``onnxscript`` is missing (``pip install 'mmfusion[export]'``).
        TypeError: Wrong types of ``model``, ``modalities`` or ``image_size``.
        ValueError: Unknown modality names, a bad ``batch_size_example`` / ``opset`` / ``mean``
            / ``std`` / ``class_names`` / ``crop`` / ``metadata``, weights that are not finite
            (a diverged model), or a written file that ``onnx.checker`` rejects.
        FileNotFoundError: The folder of ``path`` does not exist.
    """
    wrapper = ProbabilitiesModule(model, modalities, availability_input=availability_input)
    hw = check_size(image_size, "image_size")
    if isinstance(batch_size_example, bool) or not isinstance(batch_size_example, int):
        raise TypeError(f"batch_size_example: expected an int >= 2, got {batch_size_example!r}")
    if batch_size_example < 2:
        raise ValueError(f"batch_size_example: expected an int >= 2, got {batch_size_example!r}")
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 1):
        raise ValueError(f"opset: expected None or a positive int, got {opset!r}")
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    extra = dict(metadata or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()) or any(
        k.startswith(METADATA_PREFIX) for k in extra
    ):
        raise ValueError(
            f"metadata: expected str -> str entries whose keys do not start with "
            f"{METADATA_PREFIX!r} (those are written by to_onnx), got {extra!r}"
        )
    path = Path(path).expanduser()
    if not path.parent.is_dir():
        raise FileNotFoundError(f"path: folder {str(path.parent)!r} does not exist")
    check_finite_weights(model)
    _require("onnx", "to_onnx")
    _require("onnxscript", "to_onnx")

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    names = wrapper.modalities
    examples = tuple(
        torch.randn(batch_size_example, *_input_shape(model, m, hw), device=device, dtype=dtype)
        for m in names
    )
    input_names = list(names)
    if wrapper.availability_input:  # a mixed example mask; the graph does not branch on it
        mask = torch.ones(batch_size_example, len(names), dtype=torch.bool, device=device)
        if len(names) > 1:
            mask[0, 0] = False
        examples = (*examples, mask)
        input_names.append(AVAILABLE_INPUT)
    batch = torch.export.Dim("batch", min=1)
    with eval_mode(wrapper), warnings.catch_warnings():
        with torch.no_grad():
            n_classes = int(wrapper(*examples).shape[-1])
        facts = _facts(names, hw, n_classes, wrapper.availability_input, mean, std, class_names,
                       crop)  # fmt: skip
        # Every input shares the one batch Dim; the exporter notes that it reuses the name.
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*")
        program = torch.onnx.export(
            wrapper,
            examples,
            dynamo=True,
            input_names=input_names,
            output_names=[OUTPUT_NAME],
            dynamic_shapes=(tuple({0: batch} for _ in input_names),),
            opset_version=opset,
            verbose=False,
        )
    if program is None:  # only the legacy (dynamo=False) exporter returns None
        raise RuntimeError("torch.onnx.export(dynamo=True) returned no ONNX program")
    program.model.metadata_props.update({**extra, **facts.to_metadata()})
    _save_atomically(program, path)
    return path
