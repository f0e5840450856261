"""Run a model exported by :func:`mmfusion.export.to_onnx` without PyTorch.

Needs only NumPy, onnxruntime and OpenCV (and pydicom for DICOM files): this module imports
neither torch nor torchvision nor timm, directly or through :mod:`mmfusion` (whose names load on
first use), so it runs on a machine where PyTorch is not installed.

* :class:`OnnxPredictor` - an ``onnxruntime.InferenceSession`` that takes and returns NumPy
  arrays (``predictor({"us": x, "swe": y}) -> probs``), and, for a file that carries its
  preprocessing facts, image files (:meth:`OnnxPredictor.predict_files`).
* :class:`ExportFacts` - what a model file says about its inputs, stored in the ONNX model's
  ``metadata_props`` under ``mmfusion.*`` keys (JSON values): the modalities in input order, the
  image size, the normalisation mean and std, the class names, the crop of each modality, the
  availability input's name, the output's name and the mmfusion version that wrote it.
* :func:`prepare_image` - one image file to a model input: decode (one frame of a cine DICOM),
  crop (the scan sector or the DICOM tissue region, or an SWE colour box), resize with area
  interpolation, scale to ``[0, 1]`` and normalise. It is the evaluation pipeline of
  :func:`mmfusion.data.pipeline.eval_dataset`, written with NumPy and OpenCV only.

Example::

    predictor = OnnxPredictor("model.onnx")
    result = predictor.predict_files({"us": "a.png", "swe": "b.png"})
    result.predicted, result.probabilities  # "F2", [K] float64
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmfusion._values import check_modality_keys
from mmfusion.elastography.crops import SWE_CROP_NAMES

__all__ = [
    "AVAILABLE_INPUT",
    "CROP_MODES",
    "METADATA_PREFIX",
    "OUTPUT_NAME",
    "ExportFacts",
    "FilePrediction",
    "OnnxPredictor",
    "PreparedImage",
    "image_frame",
    "prepare_image",
]

OUTPUT_NAME = "probs"
"""Name of the exported graph's only output: ``[batch, K]`` combined class probabilities."""

AVAILABLE_INPUT = "available"
"""Name of the optional availability input: ``[batch, M]`` bool, column ``j`` = modality ``j``."""

METADATA_PREFIX = "mmfusion."
"""Prefix of the ONNX ``metadata_props`` keys written by :func:`mmfusion.export.to_onnx`."""

CROP_MODES = SWE_CROP_NAMES
"""Crop names of :func:`prepare_image`: the keys of :class:`mmfusion.data.ROICrop` and of the SWE
crops of :mod:`mmfusion.elastography` (:data:`~mmfusion.elastography.SWE_CROP_NAMES`), as
:attr:`PairedImageDataset.applied_crops <mmfusion.data.PairedImageDataset.applied_crops>` records
them."""

#: How the inputs are made, in words (stored in the file for a reader without this module).
PREPROCESSING = (
    "per modality: decode the file as RGB (a multi-frame DICOM: one frame, the middle one unless "
    "chosen); crop it (crop 'sector': the scan sector, or the DICOM tissue region, pixels outside "
    "the fan set to 0; 'swe_box': the SWE colour box; 'swe_box_mask': the sector crop with pixels "
    "outside the colour box set to 0; 'swe_box_kpa': the colour box on the reference colour "
    "scale); resize to image_size [H, W] with area interpolation; float32 RGB / 255; subtract "
    "mean and divide by std per channel; layout [batch, 3, H, W]"
)

_EXTRA_HINT = "pip install 'mmfusion[export]'"


def _require_onnxruntime(purpose: str) -> Any:
    """Import onnxruntime or raise an ImportError naming the extra to install."""
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(
            f"{purpose} needs the optional package 'onnxruntime'; install it with {_EXTRA_HINT}"
        ) from err
    return onnxruntime


# -- the facts a model file carries -----------------------------------------------------------------


@dataclass(frozen=True)
class ExportFacts:
    """The preprocessing facts of an exported model, as stored in its ONNX metadata.

    Attributes:
        modalities: The image inputs, in input order.
        image_size: ``(H, W)`` of every image input.
        mean: Per-channel (RGB) mean subtracted from the ``[0, 1]``-scaled pixels.
        std: Per-channel (RGB) standard deviation they are divided by.
        class_names: Name of each output column (``K`` names).
        crop: Crop mode of each modality (a mode of :data:`CROP_MODES`).
        availability_input: Name of the ``[batch, M]`` bool availability input (``True`` where a
            modality's image is present; an absent image is fed as zeros), or ``None``.
        output: Name of the ``[batch, K]`` probabilities output.
        version: The mmfusion version that wrote the file.
    """

    modalities: tuple[str, ...]
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: tuple[str, ...]
    crop: Mapping[str, str] = field(default_factory=dict)
    availability_input: str | None = None
    output: str = OUTPUT_NAME
    version: str = ""

    def differences(self, image_size: int | Sequence[int], crop: Mapping[str, str],
                    mean: Sequence[float], std: Sequence[float]) -> list[str]:
        """How the recorded preprocessing differs from the given one, one entry per field
        (``"<field> <recorded> (given: <value>)"``; ``mean`` and ``std`` within 1e-6); empty when
        they agree. ``crop`` gives modes by modality; a modality left out is ``"sector"``."""
        size = (image_size,) * 2 if isinstance(image_size, int) else tuple(image_size)
        given = {"image_size": size, "crop": {m: crop.get(m, "sector") for m in self.modalities},
                 "mean": tuple(mean), "std": tuple(std)}
        recorded = {"image_size": tuple(self.image_size), "crop": dict(self.crop),
                    "mean": tuple(self.mean), "std": tuple(self.std)}
        return [f"{k} {recorded[k]} (given: {v})" for k, v in given.items()
                if (not np.allclose(recorded[k], v, atol=1e-6) if k in ("mean", "std") else recorded[k] != v)]

    def to_metadata(self) -> dict[str, str]:
        """The ``metadata_props`` entries: ``mmfusion.<field>`` -> JSON value."""
        values: dict[str, Any] = {
            "modalities": list(self.modalities),
            "image_size": list(self.image_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "class_names": list(self.class_names),
            "crop": dict(self.crop),
            "availability_input": self.availability_input,
            "output": self.output,
            "version": self.version,
            "preprocessing": PREPROCESSING,
        }
        return {METADATA_PREFIX + key: json.dumps(value) for key, value in values.items()}

    @classmethod
    def from_metadata(cls, props: Mapping[str, str], source: str) -> ExportFacts:
        """Parse the ``mmfusion.*`` entries of a model's metadata.

        Args:
            props: The model's metadata (key -> string).
            source: Where it came from, for error messages (the file).

        Raises:
            ValueError: An entry is missing or malformed; the message names the key and the file.
        """
        values: dict[str, Any] = {}
        for key in ("modalities", "image_size", "mean", "std", "class_names", "crop",
                    "availability_input", "output", "version"):  # fmt: skip
            full = METADATA_PREFIX + key
            if full not in props:
                raise ValueError(
                    f"path: {source} carries no {full!r} metadata (not written by "
                    "mmfusion.export.to_onnx, or by a version before 0.1.0 that wrote none); "
                    "export it again"
                )
            try:
                values[key] = json.loads(props[full])
            except json.JSONDecodeError as err:
                raise ValueError(f"path: {source}: metadata {full!r} is not JSON ({err})") from None
        try:
            facts = cls(
                modalities=tuple(str(m) for m in values["modalities"]),
                image_size=(int(values["image_size"][0]), int(values["image_size"][1])),
                mean=tuple(float(v) for v in values["mean"]),  # type: ignore[arg-type]
                std=tuple(float(v) for v in values["std"]),  # type: ignore[arg-type]
                class_names=tuple(str(c) for c in values["class_names"]),
                crop={str(k): str(v) for k, v in dict(values["crop"]).items()},
                availability_input=values["availability_input"],
                output=str(values["output"]),
                version=str(values["version"]),
            )
        except (TypeError, ValueError, IndexError, KeyError) as err:
            raise ValueError(f"path: {source}: malformed mmfusion metadata ({err})") from None
        if len(facts.mean) != 3 or len(facts.std) != 3 or not all(s > 0 for s in facts.std):
            raise ValueError(
                f"path: {source}: metadata mean/std must be 3 values each (std > 0), got "
                f"{list(facts.mean)} / {list(facts.std)}"
            )
        bad = {m: c for m, c in facts.crop.items() if c not in CROP_MODES}
        if bad or set(facts.crop) != set(facts.modalities):
            raise ValueError(
                f"path: {source}: metadata crop must give one mode of {CROP_MODES} per modality "
                f"{list(facts.modalities)}, got {dict(facts.crop)}"
            )
        return facts


# -- one image file to one model input -------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PreparedImage:
    """One image file made into a model input, and what was used to make it.

    Attributes:
        image: ``[3, H, W]`` float32, normalised.
        frame: The frame decoded (0-based; 0 for a single-frame file).
        n_frames: Frames in the file (1 for PNG, JPEG and single-frame DICOM).
        crop: The crop mode applied.
        roi_source: ``"dicom_region"``, ``"contour"`` or ``"full_frame"`` for a sector crop
            (see :func:`~mmfusion.data.image_roi`); None for a colour-box crop.
        region: For ``"dicom_region"``: ``{"index", "box", "kind"}`` of the DICOM ultrasound
            region used; else None.
        tissue_regions: Tissue regions the file lists (2 for a dual-view screen; 0 without).
    """

    image: np.ndarray
    frame: int
    n_frames: int
    crop: str
    roi_source: str | None = None
    region: dict[str, Any] | None = None
    tissue_regions: int = 0

    def record(self) -> dict[str, Any]:
        """What was used, as JSON-ready values (everything but the image)."""
        return {"frame": self.frame, "n_frames": self.n_frames, "crop": self.crop,
                "roi_source": self.roi_source, "region": self.region,
                "tissue_regions": self.tissue_regions}  # fmt: skip


def image_frame(path: str | os.PathLike, frame: int | None = None) -> tuple[int, int]:
    """The frame :func:`~mmfusion.data.load_image` decodes for ``frame``, and the file's frames.

    Args:
        path: An image file.
        frame: The frame asked for (None: the middle one of a multi-frame DICOM, ``n // 2``).

    Returns:
        ``(frame used, number of frames)``; ``(0, 1)`` for a non-DICOM file asked for None or 0.

    Raises:
        ValueError: ``frame`` is outside the file's frames (the message gives their number).
    """
    from mmfusion.data.dicom import dicom_frame_count, is_dicom

    n_frames = dicom_frame_count(path) if is_dicom(path) else 1
    used = n_frames // 2 if frame is None else frame
    if isinstance(used, bool) or not isinstance(used, int | np.integer) or not 0 <= used < n_frames:
        raise ValueError(
            f"frame: expected 0 <= frame < {n_frames} ({str(path)!r} has {n_frames} frame(s)), "
            f"got {frame!r}"
        )
    return int(used), n_frames


def _region_record(found: Any, path: str | os.PathLike) -> tuple[dict[str, Any] | None, int]:
    """The DICOM region an :class:`~mmfusion.data.ImageROI` used, and the file's tissue regions."""
    from mmfusion.data.dicom import dicom_regions, is_dicom

    tissue = sum(r.is_tissue and r.area > 0 for r in dicom_regions(path)) if is_dicom(path) else 0
    region = getattr(found, "region", None)
    if region is None:
        return None, tissue
    return {"index": region.index, "box": list(region.box), "kind": region.kind}, tissue


def _crop(
    image: np.ndarray, path: str | os.PathLike, mode: str, swe_scale_kpa: float | None
) -> tuple[np.ndarray, str | None, dict[str, Any] | None, int]:
    """``image`` cropped by the crop named ``mode``, as
    :class:`~mmfusion.data.PairedImageDataset` crops it (the SWE crops come from
    :mod:`mmfusion.elastography`)."""
    from mmfusion.data.file_roi import image_roi
    from mmfusion.elastography.crops import crop_from_name

    crop = crop_from_name(mode)
    if mode == "swe_box_kpa" and swe_scale_kpa is None:
        raise ValueError(
            f"swe_scale_kpa: crop mode 'swe_box_kpa' needs the top of the SWE colour scale "
            f"of {str(path)!r} in kPa, got None"
        )
    found = image_roi(path, image=image) if getattr(crop, "uses_roi", True) else None
    if mode == "sector":
        assert found is not None
        cropped = found.roi.crop(image)
    else:
        cropped = crop.crop_frame(  # type: ignore[attr-defined]
            image, None if found is None else found.roi, scale_kpa=swe_scale_kpa,
            where=repr(str(path)),
        )  # fmt: skip
    if found is None:
        return cropped, None, None, 0
    region, tissue = _region_record(found, path)
    return cropped, found.source, region, tissue


def prepare_image(
    path: str | os.PathLike,
    image_size: int | tuple[int, int],
    *,
    crop: str = "sector",
    mean: Sequence[float],
    std: Sequence[float],
    frame: int | None = None,
    swe_scale_kpa: float | None = None,
) -> PreparedImage:
    """One image file to a ``[3, H, W]`` model input (the evaluation pipeline, without torch).

    Decode (:func:`~mmfusion.data.load_image`), crop as ``crop`` says, resize to ``image_size``
    with ``cv2.INTER_AREA``, scale to ``[0, 1]``, subtract ``mean`` and divide by ``std``.

    Args:
        path: Image file (PNG, JPEG, DICOM, ...).
        image_size: ``(H, W)`` or one side.
        crop: A mode of :data:`CROP_MODES` (``"swe_box_kpa"`` needs ``swe_scale_kpa``).
        mean: Per-channel RGB mean of the normalisation.
        std: Per-channel RGB standard deviation of the normalisation.
        frame: The frame of a multi-frame DICOM (None: the middle one).
        swe_scale_kpa: Top of the SWE colour scale in kPa, for ``crop="swe_box_kpa"``.

    Returns:
        The :class:`PreparedImage` (the input, the frame, the crop and ROI used).

    Raises:
        ValueError: Unreadable file, ``frame`` out of range, no sector or colour box found,
            bad ``crop`` / ``image_size`` / ``mean`` / ``std``; the message names the argument.
        FileNotFoundError: ``path`` does not exist.
    """
    import cv2

    from mmfusion.data.io import load_image

    if not Path(path).is_file():
        raise FileNotFoundError(f"path: no such image file {str(path)!r}")
    if crop not in CROP_MODES:
        raise ValueError(f"crop: expected one of {CROP_MODES}, got {crop!r}")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"image_size: expected a positive int or (H, W), got {image_size!r}")
    mean_a, std_a = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if mean_a.shape != (3,) or std_a.shape != (3,) or not (std_a > 0).all():
        raise ValueError(f"mean, std: expected 3 values each (std > 0), got {mean} and {std}")
    used, n_frames = image_frame(path, frame)
    image = load_image(path, frame=used)
    image, source, region, tissue = _crop(image, path, crop, swe_scale_kpa)
    image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    scaled = image.astype(np.float32) * np.float32(1.0 / 255)  # as torchvision's ToDtype(scale)
    normalised = (scaled - mean_a) / std_a
    return PreparedImage(
        image=np.ascontiguousarray(normalised.transpose(2, 0, 1)), frame=used, n_frames=n_frames,
        crop=crop, roi_source=source, region=region, tissue_regions=tissue,
    )  # fmt: skip


# -- the predictor -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FilePrediction:
    """The prediction for one set of image files (:meth:`OnnxPredictor.predict_files`).

    Attributes:
        probabilities: ``[K]`` float64 class probabilities.
        class_names: The ``K`` class names.
        images: Modality -> the :class:`PreparedImage` fed (present modalities only).
    """

    probabilities: np.ndarray
    class_names: tuple[str, ...]
    images: dict[str, PreparedImage]

    @property
    def predicted(self) -> str:
        """The most probable class's name."""
        return self.class_names[int(np.argmax(self.probabilities))]


class OnnxPredictor:
    """Run an exported model with onnxruntime: ``predictor({"us": x, "swe": y}) -> probs``.

    Args:
        path: An ``.onnx`` file written by :func:`mmfusion.export.to_onnx`.
        providers: onnxruntime execution providers (default ``["CPUExecutionProvider"]``).

    Attributes:
        modalities: Image inputs of the graph (the modalities), in input order.
        availability_input: Whether the graph takes the ``"available"`` mask
            (``to_onnx(..., availability_input=True)``).
        facts: The file's preprocessing facts (:class:`ExportFacts`), or None for a file
            without them (then only arrays can be predicted, not files).
        path: The file loaded.

    Example::

        predictor = OnnxPredictor(to_onnx(model, "model.onnx"))
        probs = predictor({"us": us_batch, "swe": swe_batch})  # [B, K] float32

        # A graph with the mask: sample 1 has no SWE (its SWE image may be zeros).
        predictor = OnnxPredictor(to_onnx(model, "mask.onnx", availability_input=True))
        probs = predictor({"us": us_batch, "swe": swe_batch},
                          available={"swe": np.array([True, False])})

        # Image files, preprocessed as the file's metadata says.
        predictor.predict_files({"us": "a.png"}).predicted
    """

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(f"path: no such ONNX file {str(self.path)!r}")
        ort = _require_onnxruntime("OnnxPredictor")
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
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        self.facts: ExportFacts | None = None
        if any(key.startswith(METADATA_PREFIX) for key in props):
            self.facts = ExportFacts.from_metadata(props, str(self.path))
            if self.facts.modalities != self.modalities:
                raise ValueError(
                    f"path: {str(self.path)!r}: metadata modalities {list(self.facts.modalities)} "
                    f"differ from the graph's image inputs {list(self.modalities)}"
                )

    @property
    def class_names(self) -> tuple[str, ...]:
        """The output columns' names (from the metadata; else ``"0"``, ``"1"``, ...)."""
        if self.facts is not None:
            return self.facts.class_names
        k = self.session.get_outputs()[0].shape[-1]
        return tuple(str(i) for i in range(k)) if isinstance(k, int) else ()

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
        check_modality_keys(inputs, self.modalities, "inputs", require_all=True)
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
        if available:
            check_modality_keys(available, self.modalities, "available")
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

    def _require_facts(self) -> ExportFacts:
        if self.facts is None:
            raise ValueError(
                f"path: {str(self.path)!r} carries no mmfusion preprocessing metadata (exported "
                "before it was written); export it again with mmfusion.export.to_onnx to predict "
                "image files, or pass preprocessed arrays"
            )
        return self.facts

    def prepare(
        self,
        paths: Mapping[str, str | os.PathLike],
        *,
        frame: int | None = None,
        swe_scale_kpa: float | None = None,
    ) -> dict[str, PreparedImage]:
        """Preprocess image files as the model's metadata says: modality -> :class:`PreparedImage`.

        Args:
            paths: modality -> image file, for some or all of :attr:`modalities`.
            frame: The frame of multi-frame files (None: each file's middle frame).
            swe_scale_kpa: Top of the SWE colour scale in kPa (crop mode ``"swe_box_kpa"``).

        Raises:
            ValueError: The file has no metadata, unknown modalities, or a file's problem.
        """
        facts = self._require_facts()
        if not isinstance(paths, Mapping):
            raise TypeError(f"paths: expected a mapping modality -> file, got {type(paths).__name__}")
        check_modality_keys(paths, self.modalities, "paths", require_all=not self.availability_input)
        return {
            m: prepare_image(paths[m], facts.image_size, crop=facts.crop[m], mean=facts.mean,
                             std=facts.std, frame=frame, swe_scale_kpa=swe_scale_kpa)
            for m in self.modalities if m in paths
        }  # fmt: skip

    def predict_files(
        self,
        paths: Mapping[str, str | os.PathLike],
        *,
        frame: int | None = None,
        swe_scale_kpa: float | None = None,
    ) -> FilePrediction:
        """Class probabilities for one set of image files (one sample).

        Modalities left out of ``paths`` are fed as absent (zeros and ``False`` in the
        availability input); a graph without that input needs every modality.

        Args:
            paths: modality -> image file.
            frame: The frame of multi-frame files (None: each file's middle frame).
            swe_scale_kpa: Top of the SWE colour scale in kPa (crop mode ``"swe_box_kpa"``).

        Returns:
            The :class:`FilePrediction`.

        Raises:
            ValueError: See :meth:`prepare`; also if the model's probabilities are not finite
                (a diverged model).
        """
        images = self.prepare(paths, frame=frame, swe_scale_kpa=swe_scale_kpa)
        facts = self._require_facts()
        blank = np.zeros((1, 3, *facts.image_size), np.float32)
        batch = {m: images[m].image[None] if m in images else blank for m in self.modalities}
        available = None
        if self.availability_input:
            available = {m: np.array([m in images]) for m in self.modalities}
        probs = np.asarray(self(batch, available), dtype=np.float64)[0]
        if not np.isfinite(probs).all():
            raise ValueError(
                f"path: {str(self.path)!r} gives non-finite probabilities {probs.tolist()}: the "
                "model diverged? (its weights are likely NaN); export a model that trained well"
            )
        return FilePrediction(probs, self.class_names, images)

    def __repr__(self) -> str:
        mask = ", availability_input=True" if self.availability_input else ""
        return f"OnnxPredictor({str(self.path)!r}, modalities={self.modalities}{mask})"
