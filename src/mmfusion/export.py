"""Export the inference path of a :class:`~mmfusion.nn.MultiModalClassifier` to ONNX, and run it.

* :func:`to_onnx` - ``images -> combined class probabilities`` (the ensemble prediction of the
  paper's Fig. 3 and section III.D) through ``torch.onnx.export(..., dynamo=True)``: one input per
  modality, named by the modality, ``[batch, C, H, W]`` float32 with a dynamic batch axis; one
  output ``"probs"``, ``[batch, K]``.
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

__all__ = ["OUTPUT_NAME", "OnnxPredictor", "ProbabilitiesModule", "to_onnx"]

OUTPUT_NAME = "probs"
"""Name of the exported graph's only output: ``[batch, K]`` combined class probabilities."""

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

    Shape:
        - Inputs: one ``[B, C_m, H, W]`` float tensor per modality.
        - Output: ``[B, K]`` probabilities (rows sum to 1).

    Example:
        >>> from mmfusion import ClassifierHead, EnsembleHead, ModalityEncoder, MultiModalClassifier
        >>> enc = {"us": ModalityEncoder("test_resnet")}
        >>> model = MultiModalClassifier(enc, None, EnsembleHead({"us": ClassifierHead(96, 5, pool="avg")}))
        >>> ProbabilitiesModule(model)(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 5])
    """

    def __init__(self, model: nn.Module, modalities: Sequence[str] | None = None) -> None:
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
        self.model = model
        self.modalities: tuple[str, ...] = tuple(modalities)

    def forward(self, *images: Tensor) -> Tensor:
        """Return ``[B, K]`` probabilities for one ``[B, C, H, W]`` batch per modality."""
        if len(images) != len(self.modalities):
            raise ValueError(
                f"images: expected {len(self.modalities)} tensors {list(self.modalities)}, "
                f"got {len(images)}"
            )
        return self.model(dict(zip(self.modalities, images, strict=True))).probs


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

    Returns:
        The path written. Graph inputs are named after the modalities,
        ``[batch, C, H, W]`` float32; the output is ``"probs"``, ``[batch, K]``.

    Raises:
        ImportError: ``onnx``/``onnxscript`` is missing (``pip install 'mmfusion[export]'``).
        TypeError: Wrong types of ``model``, ``modalities`` or ``image_size``.
        ValueError: Unknown modality names, or a bad ``batch_size_example`` / ``opset``.
        FileNotFoundError: The folder of ``path`` does not exist.
    """
    wrapper = ProbabilitiesModule(model, modalities)
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
    batch = torch.export.Dim("batch", min=1)
    with eval_mode(wrapper), warnings.catch_warnings():
        # Every input shares the one batch Dim; the exporter notes that it reuses the name.
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*")
        program = torch.onnx.export(
            wrapper,
            examples,
            dynamo=True,
            input_names=list(names),
            output_names=[OUTPUT_NAME],
            dynamic_shapes=(tuple({0: batch} for _ in names),),
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
        modalities: Input names of the graph (the modalities), in input order.
        path: The file loaded.

    Example::

        predictor = OnnxPredictor(to_onnx(model, "model.onnx"))
        probs = predictor({"us": us_batch, "swe": swe_batch})  # [B, K] float32
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
        self._inputs = {i.name: i for i in self.session.get_inputs()}
        self.modalities: tuple[str, ...] = tuple(self._inputs)

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Predict the combined class probabilities.

        Args:
            inputs: modality -> ``[B, C, H, W]`` normalised images (NumPy arrays, cast to
                float32); every input of the graph, the same ``B`` for all.

        Returns:
            ``[B, K]`` float32 probabilities.

        Raises:
            TypeError: ``inputs`` is not a mapping, or a value is not numeric.
            ValueError: Unknown or missing modality names, or wrong shapes.
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
        return self.session.run([OUTPUT_NAME], feed)[0]

    def __repr__(self) -> str:
        return f"OnnxPredictor({str(self.path)!r}, modalities={self.modalities})"
