"""Paired-image data set over a manifest: decode -> ROI crop -> (resize) -> cache (paper II.B).

Each item is ``{"us": Tensor, "swe": Tensor, "available": {"us": bool, "swe": bool}, "label": int,
"patient_id": str}``; the modality keys are the manifest's ``*_path`` columns in column order.
Images are decoded with OpenCV (DICOM with pydicom, :mod:`mmfusion.data.dicom`), converted to
RGB (grey frames are replicated to 3 channels) and returned as uint8 ``[3, H, W]`` tensors before
normalisation. A modality missing from the pair (empty manifest field) is never read from disk:
its image is a zero placeholder of the pair's shape and ``available[m]`` is ``False``. With
``cache=True`` the decoded ROI crops are kept in memory, so an epoch after the first never decodes
PNGs; ``size=`` resizes the crops before caching to keep the cache small.

Each modality has a crop mode (``crop={"swe": "swe_box"}``; :data:`CROP_MODES`): ``"sector"`` (the
default, paper II.B) crops to the scan sector; ``"swe_box"`` crops an SWE frame to its elastography
colour box (:func:`~mmfusion.data.detect_swe_box`), so that an "SWE" input holds the stiffness
colours only and not the B-mode texture around the box; ``"swe_box_mask"`` keeps the sector crop
and zeroes every pixel outside the colour box; ``"swe_box_kpa"`` crops to the box and re-draws it
on one reference colour scale through the frame's own legend
(:func:`~mmfusion.data.standardise_swe_box`), so that scanners with other colour scales give the
same input for the same stiffness.

The data set is picklable and works with ``DataLoader`` workers and the default collate, which
gives a batch ``{m: [B, 3, H, W] for each modality m, "available": {m: bool [B]}, "label": int64
[B], "patient_id": list of B str}``; the model takes it as
``model({m: batch[m] for m in model.modalities},
available={m: batch["available"][m] for m in model.modalities})``.

A ``transform`` receives the whole sample dict with every modality wrapped as a
``torchvision.tv_tensors.Image``, so torchvision ``transforms.v2`` applies one geometric transform to
all modalities of a pair (see :mod:`mmfusion.data.transforms`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from mmfusion._checks import check_positive, check_size
from mmfusion.data.dicom import MissingDecoderError
from mmfusion.data.elastography import detect_swe_box
from mmfusion.data.file_roi import image_roi
from mmfusion.data.io import load_image
from mmfusion.data.manifest import SWE_SCALE_COLUMN, Manifest, ManifestRow, read_manifest
from mmfusion.data.swe_scale import standardise_swe_box
from mmfusion.data.transforms import AVAILABLE_KEY, zero_unavailable

__all__ = ["CROP_MODES", "PairedImageDataset", "SWEBoxNotFoundWarning", "load_image"]

Sample = dict[str, Any]

#: Crop modes of :class:`PairedImageDataset` (its ``crop=`` argument, per modality).
CROP_MODES = ("sector", "swe_box", "swe_box_mask", "swe_box_kpa")


class SWEBoxNotFoundWarning(UserWarning):
    """Warned when a frame has no SWE colour box and ``crop_fallback=True`` keeps its sector crop."""


class PairedImageDataset(Dataset[Sample]):
    """Image pairs (or n-tuples) of a manifest, ROI-cropped, optionally cached.

    Args:
        manifest: A :class:`~mmfusion.data.manifest.Manifest` or the path of a manifest CSV
            (read with :func:`~mmfusion.data.manifest.read_manifest`, ``verify="header"``: the
            pixels are decoded once, when a pair is first read, and an image that fails to
            decode or crop raises a ``ValueError`` naming the manifest, its line, the modality
            and the file).
        transform: Callable applied to the sample dict (modalities as ``tv_tensors.Image``,
            ``"available"``, ``"label"``, ``"patient_id"``); e.g.
            :func:`~mmfusion.data.transforms.train_transforms`. None returns the uint8 crops.
            Missing modalities' images are reset to zeros afterwards
            (:func:`~mmfusion.data.transforms.zero_unavailable`).
        cache: Keep decoded crops in memory (per process: fill it with :meth:`preload` before
            creating ``DataLoader`` workers so that forked workers share it). Memory is
            ``3 * H * W`` bytes per image: about 0.1 MB at ``size=(128, 128)``, about 0.8 MB for a
            full 800 x 600 frame's crop.
        roi: Crop every image to its scan sector (paper II.B): found by contour detection
            (pixels outside the fan are set to 0), or for a DICOM file with a tissue region, that
            region's box (:func:`~mmfusion.data.image_roi`; :attr:`roi_sources` says which).
        roi_fallback: If no sector is found, use the full frame with a warning instead of failing.
        size: Resize crops to ``(H, W)`` (or ``size x size``) with area interpolation at decode
            time, before caching. None keeps the crop's size.
        use_dicom_regions: False detects the sector by contour in DICOM files too, ignoring
            their ultrasound regions (then a DICOM copy of a PNG data set gives the same crops).
        crop: Crop mode per modality, ``{modality: mode}`` with a mode of :data:`CROP_MODES`;
            modalities not named (and None) get ``"sector"``. ``"sector"``: the ROI crop above
            (``roi=False``: the full frame). ``"swe_box"``: the frame's elastography colour box
            found by :func:`~mmfusion.data.detect_swe_box` (on the full frame, before any
            resizing; the box's aspect ratio is kept until ``size=`` resizes it), so that the
            model sees the stiffness colours and none of the B-mode texture around the box; the
            pair is then no longer pixel-registered. ``"swe_box_mask"``: the sector crop with
            every pixel outside the colour box set to 0 (registration kept). ``"swe_box_kpa"``:
            the colour box re-drawn on the reference colour scale (JET, 0-40 kPa) through the
            frame's legend and the top of its scale in kPa, read from the manifest's
            ``swe_scale_kpa`` column (else ``swe_scale_kpa=``); see
            :func:`~mmfusion.data.standardise_swe_box`. :attr:`applied_crops` records the mode
            each image got.
        crop_fallback: A frame without a colour box (mode ``"swe_box"``, ``"swe_box_mask"`` or
            ``"swe_box_kpa"``) gets its plain sector crop with a :class:`SWEBoxNotFoundWarning`
            instead of a ``ValueError`` naming the file. A frame with a box but no legend is
            always an error.
        swe_scale_kpa: Top of the SWE colour scale in kPa for rows whose ``swe_scale_kpa``
            column is empty or absent (crop mode ``"swe_box_kpa"`` only); None: such a row is an
            error.

    Example:
        >>> import tempfile
        >>> from mmfusion.liver import PhantomConfig, make_phantom_dataset
        >>> csv = make_phantom_dataset(tempfile.mkdtemp(), n_patients=5, workers=1,
        ...                            config=PhantomConfig(width=256, height=192))
        >>> ds = PairedImageDataset(csv, size=64, cache=True)
        >>> sample = ds[0]
        >>> sample["us"].shape, sample["us"].dtype, list(sample)
        (torch.Size([3, 64, 64]), torch.uint8, ['us', 'swe', 'available', 'label', 'patient_id'])
        >>> sample["available"]
        {'us': True, 'swe': True}
    """

    def __init__(
        self,
        manifest: Manifest | str | Path,
        transform: Callable[[Sample], Sample] | None = None,
        cache: bool = False,
        *,
        roi: bool = True,
        roi_fallback: bool = False,
        size: int | tuple[int, int] | None = None,
        use_dicom_regions: bool = True,
        crop: Mapping[str, str] | None = None,
        crop_fallback: bool = False,
        swe_scale_kpa: float | None = None,
    ) -> None:
        if isinstance(manifest, (str, Path)):
            # The header check only: decoding errors name their manifest line when a pair is read.
            manifest = read_manifest(manifest, verify="header")
        if not isinstance(manifest, Manifest):
            raise TypeError(
                f"manifest: expected a Manifest or a CSV path, got {type(manifest).__name__}"
            )
        if transform is not None and not callable(transform):
            raise TypeError(
                f"transform: expected a callable or None, got {type(transform).__name__}"
            )
        self.crop = _check_crop(crop, manifest.modalities)
        self.crop_fallback = bool(crop_fallback)
        self.swe_scale_kpa = None if swe_scale_kpa is None else check_positive(
            swe_scale_kpa, "swe_scale_kpa", "number of kPa"
        )
        self._applied: dict[tuple[str, Path], str] = {}
        self.manifest = manifest
        self.transform = transform
        self.cache = bool(cache)
        self.roi = bool(roi)
        self.roi_fallback = bool(roi_fallback)
        self.use_dicom_regions = bool(use_dicom_regions)
        self._roi_source: dict[Path, str] = {}
        self.size = None if size is None else check_size(size, "size")
        self._cache: dict[int, dict[str, torch.Tensor]] = {}

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modality keys, in manifest column order."""
        return self.manifest.modalities

    @property
    def labels(self) -> np.ndarray:
        """``[N]`` int64 stage labels."""
        return self.manifest.labels

    @property
    def availability(self) -> np.ndarray:
        """``[N, M]`` bool: pair ``i`` has modality ``modalities[j]`` (see the manifest)."""
        return self.manifest.availability

    def __len__(self) -> int:
        return len(self.manifest)

    @property
    def roi_sources(self) -> dict[int, dict[str, str]]:
        """Where the ROIs of the pairs decoded so far came from, as ``{index: {modality: source}}``.

        Sources are ``"dicom_region"``, ``"contour"`` or ``"full_frame"`` (see
        :func:`~mmfusion.data.image_roi`; ``"full_frame"`` also with ``roi=False``). Recorded in
        the process that decodes: call :meth:`preload` (or index the data set) here, not only in
        ``DataLoader`` workers. Missing modalities are left out, and so are images cropped to
        their colour box (crop mode ``"swe_box"``), which have no sector ROI.
        """
        out: dict[int, dict[str, str]] = {}
        for index, row in enumerate(self.manifest):
            found = {k: self._roi_source[p] for k, p in row.paths.items() if p in self._roi_source}
            if found:
                out[index] = found
        return out

    @property
    def applied_crops(self) -> dict[int, dict[str, str]]:
        """The crop mode each image of the pairs decoded so far got, ``{index: {modality: mode}}``.

        The mode asked in ``crop`` (a mode of :data:`CROP_MODES`), or ``"sector"`` where a frame
        had no colour box and ``crop_fallback=True`` kept its sector crop. Recorded in the process
        that decodes, like :attr:`roi_sources`; missing modalities are left out.
        """
        out: dict[int, dict[str, str]] = {}
        for index, row in enumerate(self.manifest):
            found = {
                k: self._applied[(k, p)] for k, p in row.paths.items() if (k, p) in self._applied
            }
            if found:
                out[index] = found
        return out

    def _sector(self, path: Path, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """The sector crop (the full frame with ``roi=False``) and its ``(x, y)`` frame offset."""
        self._roi_source[path] = "full_frame"
        if not self.roi:
            return image, (0, 0)
        found = image_roi(
            path, image=image, use_dicom_regions=self.use_dicom_regions,
            fallback=self.roi_fallback,
        )  # fmt: skip
        self._roi_source[path] = found.source
        return found.roi.crop(image), found.roi.bbox[:2]

    def _scale_kpa(self, row: ManifestRow) -> float:
        """The top of ``row``'s SWE colour scale in kPa (its column, else ``swe_scale_kpa=``)."""
        if row.swe_scale_kpa is not None:
            return row.swe_scale_kpa
        if self.swe_scale_kpa is None:
            raise ValueError(
                f"{SWE_SCALE_COLUMN}: crop mode 'swe_box_kpa' needs the top of each SWE frame's "
                f"colour scale in kPa; manifest line {row.line} has no {SWE_SCALE_COLUMN} value; "
                f"add the column or pass PairedImageDataset(swe_scale_kpa=...)"
            )
        return self.swe_scale_kpa

    def _load(self, path: Path, key: str, row: ManifestRow) -> torch.Tensor:
        image = load_image(path, frame=row.frame(key))
        mode = self.crop[key]
        box = detect_swe_box(image) if mode != "sector" else None
        if mode != "sector" and box is None:
            message = (
                f"crop: expected an SWE colour box in {str(path)!r} (crop mode {mode!r} for "
                f"modality {key!r}), found none"
            )
            if not self.crop_fallback:
                raise ValueError(message + "; crop_fallback=True keeps the sector crop instead")
            warnings.warn(message + "; using its sector crop", SWEBoxNotFoundWarning, stacklevel=3)
            mode = "sector"
        if mode == "swe_box":
            x0, y0, x1, y1 = box  # type: ignore[misc]
            image = np.ascontiguousarray(image[y0:y1, x0:x1])
        elif mode == "swe_box_kpa":
            scale = self._scale_kpa(row)
            try:
                image = standardise_swe_box(image, scale, box=box)
            except ValueError as err:  # the frame's fault: no legend
                raise ValueError(f"crop: {str(path)!r} ({key}): {err}") from None
        else:
            image, (ox, oy) = self._sector(path, image)
            if mode == "swe_box_mask":
                x0, y0, x1, y1 = box  # type: ignore[misc]
                inside = (slice(max(y0 - oy, 0), max(y1 - oy, 0)),
                          slice(max(x0 - ox, 0), max(x1 - ox, 0)))  # fmt: skip
                masked = np.zeros_like(image)
                masked[inside] = image[inside]
                image = masked
        self._applied[(key, path)] = mode
        if self.size is not None:
            image = cv2.resize(image, self.size[::-1], interpolation=cv2.INTER_AREA)
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))

    def _located(self, path: Path, key: str, row: ManifestRow) -> torch.Tensor:
        """:meth:`_load`, whose errors say where the file is listed: the manifest, its line
        (rows built in code with ``line=0`` have none) and the modality, and name the file."""
        try:
            return self._load(path, key, row)
        except ValueError as error:
            text = str(error)
            named = "" if str(path) in text else f" ({path})"
            message = f"{key} image{named}: {text}"
            if row.line > 0:
                message = f"manifest {self.manifest.source}, line {row.line}, {message}"
            kind = type(error) if type(error) in (ValueError, MissingDecoderError) else ValueError
            raise kind(message) from error

    def images(self, index: int) -> dict[str, torch.Tensor]:
        """The uint8 ``[3, H, W]`` crops of pair ``index`` by modality (cached if enabled).

        A modality missing from the pair is not read: its image is zeros of shape ``(3, *size)``,
        or without ``size`` the shape of the pair's first present crop.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"index: expected -{len(self)} <= index < {len(self)}, got {index}")
        index = index % len(self)
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        row: ManifestRow = self.manifest[index]
        loaded = {key: self._located(path, key, row)
                  for key, path in row.paths.items() if path is not None}
        shape = next(iter(loaded.values())).shape  # the manifest guarantees one present image
        images = {key: loaded.get(key, torch.zeros(shape, dtype=torch.uint8)) for key in row.paths}
        if self.cache:
            self._cache[index] = images
        return images

    def preload(self, num_threads: int = 2) -> PairedImageDataset:
        """Decode every pair into the cache now (requires ``cache=True``); returns ``self``."""
        if not self.cache:
            raise ValueError("cache: preload() needs a data set created with cache=True, got False")
        missing = [i for i in range(len(self)) if i not in self._cache]
        with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
            for _ in pool.map(self.images, missing):
                pass
        return self

    def __getitem__(self, index: int) -> Sample:
        images = self.images(index)
        row = self.manifest[index]
        if self.transform is None:
            return {
                **images,
                AVAILABLE_KEY: row.available,
                "label": row.stage,
                "patient_id": row.patient_id,
            }
        sample: Sample = {key: tv_tensors.Image(t) for key, t in images.items()}
        sample[AVAILABLE_KEY] = row.available
        sample.update(label=row.stage, patient_id=row.patient_id)
        out = self.transform(sample)
        if not isinstance(out, dict):
            raise TypeError(f"transform: expected it to return a dict, got {type(out).__name__}")
        out = zero_unavailable(out)
        return {
            k: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v
            for k, v in out.items()
        }


def _check_crop(crop: Mapping[str, str] | None, modalities: tuple[str, ...]) -> dict[str, str]:
    """``{modality: mode}`` for every modality (``"sector"`` where ``crop`` names none)."""
    if crop is None:
        crop = {}
    if not isinstance(crop, Mapping):
        raise TypeError(
            f"crop: expected a mapping {{modality: mode}} or None, got {type(crop).__name__}"
        )
    for key, mode in crop.items():
        if key not in modalities:
            raise ValueError(f"crop: expected modality keys among {list(modalities)}, got {key!r}")
        if mode not in CROP_MODES:
            raise ValueError(f"crop: expected a mode in {CROP_MODES} for {key!r}, got {mode!r}")
    return {m: str(crop.get(m, "sector")) for m in modalities}

