"""Export the inference path of a :class:`~mmfusion.nn.MultiModalClassifier` to ONNX, and run it.

* :func:`to_onnx` - ``images -> combined class probabilities`` (the ensemble prediction of the
  paper's Fig. 3 and section III.D) through ``torch.onnx.export(..., dynamo=True)``: one input per
  modality, named by the modality, ``[batch, C, H, W]`` float32 with a dynamic batch axis; one
  output ``"probs"``, ``[batch, K]``. With ``availability_input=True`` a last input
  ``"available"``, ``[batch, M]`` bool, flags per sample which modalities are present, so one graph
  serves pairs with and without SWE (the model ignores a modality's pixels where it is ``False``).
* :class:`OnnxPredictor` - a small wrapper around an ``onnxruntime.InferenceSession`` that takes and
  returns NumPy arrays, so that inference runs without PyTorch.

``onnx``, ``onnxscript`` and ``onnxruntime`` are optional dependencies (the ``mmfusion[export]``
extra); they are imported only when needed.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from mmfusion._checks import check_modality_keys, check_size, eval_mode

__all__ = ["AVAILABLE_INPUT", "OUTPUT_NAME", "OnnxPredictor", "ProbabilitiesModule", "to_onnx"]

OUTPUT_NAME = "probs"
"""Name of the exported graph's only output: ``[batch, K]`` combined class probabilities."""

AVAILABLE_INPUT = "available"
"""Name of the optional availability input: ``[batch, M]`` bool, column ``j`` = modality ``j``."""

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
        - Inputs: one ``[B, C_m, H, W]`` float tensor per modality (then the ``[B, M]`` bool
          mask with ``availability_input``).
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


def _in_channels(model: nn.Module, modality: str) -> int:
    encoder = cast(nn.ModuleDict, model.encoders)[modality]
    channels = getattr(encoder, "in_chans", None)
    if not isinstance(channels, int):
        raise ValueError(
            f"model.encoders[{modality!r}]: cannot tell its input channels (no int .in_chans)"
        )
    return channels


def to_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    modalities: Sequence[str] | None = None,
    image_size: int | tuple[int, int] = 224,
    opset: int | None = None,
    batch_size_example: int = 2,
    *,
    availability_input: bool = False,
) -> Path:
    """Export ``images -> combined probabilities`` to an ONNX file with a dynamic batch axis.

    The model is traced in eval mode by ``torch.onnx.export(..., dynamo=True)`` (``torch.export``
    underneath) on random example images of ``batch_size_example`` samples, on the device and
    dtype of the model's parameters; its training mode is restored afterwards. Flattening
    single-modal heads (the paper's, section III.B) tie the graph to ``image_size``.

    Args:
        model: A :class:`~mmfusion.nn.MultiModalClassifier`.
        path: Output ``.onnx`` file; its folder must exist. Weights are embedded in the file.
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

    Returns:
        The path written. Graph inputs are named after the modalities,
        ``[batch, C, H, W]`` float32 (then ``"available"``, ``[batch, M]`` bool, if asked for);
        the output is ``"probs"``, ``[batch, K]``.

    Raises:
        ImportError: ``onnx``/``onnxscript`` is missing (``pip install 'mmfusion[export]'``).
        TypeError: Wrong types of ``model``, ``modalities`` or ``image_size``.
        ValueError: Unknown modality names, or a bad ``batch_size_example`` / ``opset``.
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
    path = Path(path).expanduser()
    if not path.parent.is_dir():
        raise FileNotFoundError(f"path: folder {str(path.parent)!r} does not exist")
    _require("onnx", "to_onnx")
    _require("onnxscript", "to_onnx")

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    names = wrapper.modalities
    examples = tuple(
        torch.randn(batch_size_example, _in_channels(model, m), *hw, device=device, dtype=dtype)
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
    program.save(str(path))
    return path


class OnnxPredictor:
    """Run an exported model with onnxruntime: ``predictor({"us": x, "swe": y}) -> probs``.

    Args:
        path: An ``.onnx`` file written by :func:`to_onnx`.
        providers: onnxruntime execution providers (default ``["CPUExecutionProvider"]``).

    Attributes:
        modalities: Image inputs of the graph (the modalities), in input order.
        availability_input: Whether the graph takes the ``"available"`` mask
            (``to_onnx(..., availability_input=True)``).
        path: The file loaded.

    Example::

        predictor = OnnxPredictor(to_onnx(model, "model.onnx"))
        probs = predictor({"us": us_batch, "swe": swe_batch})  # [B, K] float32

        # A graph with the mask: sample 1 has no SWE (its SWE image may be zeros).
        predictor = OnnxPredictor(to_onnx(model, "mask.onnx", availability_input=True))
        probs = predictor({"us": us_batch, "swe": swe_batch},
                          available={"swe": np.array([True, False])})
    """

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(f"path: no such ONNX file {str(self.path)!r}")
        ort = _require("onnxruntime", "OnnxPredictor")
        self.session = ort.InferenceSession(
            str(self.path), providers=list(providers or ["CPUExecutionProvider"])
        )
        inputs = {i.name: i for i in self.session.get_inputs()}
        mask = inputs.get(AVAILABLE_INPUT)
        self.availability_input = mask is not None and mask.type == "tensor(bool)"
        if self.availability_input:
            del inputs[AVAILABLE_INPUT]
        self._inputs = inputs
        self.modalities: tuple[str, ...] = tuple(inputs)

    def __call__(
        self,
        inputs: Mapping[str, np.ndarray],
        available: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Predict the combined class probabilities.

        Args:
            inputs: modality -> ``[B, C, H, W]`` normalised images (NumPy arrays, cast to
                float32); every image input of the graph, the same ``B`` for all.
            available: optional modality -> ``[B]`` bool array (or CPU tensor): per-sample
                presence, as the model's ``available``; modalities left out are present. Only
                for a graph exported with ``availability_input=True``, where ``None`` means
                every modality is present.

        Returns:
            ``[B, K]`` float32 probabilities.

        Raises:
            TypeError: ``inputs`` or ``available`` is not a mapping, an image is not numeric, or
                a flag array is not bool.
            ValueError: Unknown or missing modality names, wrong shapes, or ``available`` for a
                graph without the mask input.
        """
        if not isinstance(inputs, Mapping):
            raise TypeError(
                f"inputs: expected a mapping modality name -> [B, C, H, W] array, "
                f"got {type(inputs).__name__}"
            )
        check_modality_keys(inputs.keys(), self.modalities, "inputs", require_all=True)
        feed: dict[str, np.ndarray] = {}
        for name in self.modalities:
            array = np.asarray(inputs[name])
            if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.bool_):
                raise TypeError(f"inputs[{name!r}]: expected a numeric array, got {array.dtype}")
            expected = self._inputs[name].shape
            if array.ndim != len(expected) or any(
                isinstance(e, int) and e != a for e, a in zip(expected, array.shape, strict=True)
            ):
                raise ValueError(
                    f"inputs[{name!r}]: expected shape {expected}, got {tuple(array.shape)}"
                )
            feed[name] = np.ascontiguousarray(array, dtype=np.float32)
        batches = {name: a.shape[0] for name, a in feed.items()}
        if len(set(batches.values())) > 1:
            raise ValueError(f"inputs: all modalities must have the same batch size, got {batches}")
        if self.availability_input:
            feed[AVAILABLE_INPUT] = self._mask(available, next(iter(batches.values())))
        elif available is not None:
            raise ValueError(
                f"available: {str(self.path)!r} has no {AVAILABLE_INPUT!r} input; export it with "
                "to_onnx(..., availability_input=True) to pass per-sample availability"
            )
        return self.session.run([OUTPUT_NAME], feed)[0]

    def _mask(self, available: Mapping[str, np.ndarray] | None, batch: int) -> np.ndarray:
        """The ``[B, M]`` bool input from modality -> ``[B]`` flags (absent: all True)."""
        mask = np.ones((batch, len(self.modalities)), dtype=bool)
        if available is None:
            return mask
        if not isinstance(available, Mapping):
            raise TypeError(
                f"available: expected a mapping modality name -> [B] bool array, "
                f"got {type(available).__name__}"
            )
        check_modality_keys(available.keys(), self.modalities, "available", require_any=False)
        for name, flags in available.items():
            array = np.asarray(flags)
            if array.dtype != np.bool_:
                raise TypeError(
                    f"available[{name!r}]: expected a bool array of shape [{batch}], "
                    f"got {array.dtype}"
                )
            if array.shape != (batch,):
                raise ValueError(
                    f"available[{name!r}]: expected shape [{batch}] (one flag per sample), "
                    f"got {tuple(array.shape)}"
                )
            mask[:, self.modalities.index(name)] = array
        return mask

    def __repr__(self) -> str:
        mask = ", availability_input=True" if self.availability_input else ""
        return f"OnnxPredictor({str(self.path)!r}, modalities={self.modalities}{mask})"
