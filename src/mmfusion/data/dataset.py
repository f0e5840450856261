"""Paired-image data set over a manifest: decode -> ROI -> crop -> (resize) -> cache (paper II.B).

Each item is ``{"us": Tensor, "swe": Tensor, "available": {"us": bool, "swe": bool}, "label": int,
"patient_id": str}``; the modality keys are the manifest's modalities (:attr:`Manifest.modalities
<mmfusion.data.Manifest.modalities>`: the ``*_path`` columns in column order, then the tabular
modalities). Images are decoded with OpenCV (DICOM with pydicom, :mod:`mmfusion.data.dicom`),
converted to RGB (grey frames are replicated to 3 channels) and returned as uint8 ``[3, H, W]``
tensors before normalisation. A modality missing from the pair (empty manifest field) is never read
from disk: its image is a zero placeholder of the pair's shape and ``available[m]`` is ``False``.
With ``cache=True`` the decoded crops are kept in memory, so an epoch after the first never decodes
an image; ``size=`` resizes the crops before caching to keep the cache small.

Each image modality has a crop (``crop={"us": my_crop}``; see :mod:`mmfusion.data.crops`): a
callable that gets the decoded frame, the manifest row, the modality and the frame's ROI and
returns the image the model sees. The default, :class:`~mmfusion.data.ROICrop`, crops to the scan
sector (paper II.B); a domain package provides its own (e.g. an elastography colour box), which
may read the manifest's extra columns from the row without this module knowing their names.

A tabular modality (``read_manifest(tabular={"labs": ("age", "ast")})``) is no file: its item is
the row's values as a float32 ``[F]`` tensor with NaN where a cell was empty, and
``available[m]`` is ``False`` when every value is missing. Nothing is decoded, cropped or cached
for it.

The data set is picklable and works with ``DataLoader`` workers and the default collate, which
gives a batch ``{m: [B, 3, H, W] (image) or [B, F] (tabular) for each modality m, "available":
{m: bool [B]}, "label": int64 [B], "patient_id": list of B str}``; the model takes it as
``model({m: batch[m] for m in model.modalities},
available={m: batch["available"][m] for m in model.modalities})``.

A ``transform`` receives the whole sample dict with every image modality wrapped as a
``torchvision.tv_tensors.Image`` (tabular ones as plain 1-D tensors), so torchvision
``transforms.v2`` applies one geometric transform to all images of a pair (see
:mod:`mmfusion.data.transforms`, whose transforms leave tabular entries alone).
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

from mmfusion._checks import check_size
from mmfusion.data.crops import DEFAULT_CROP, Crop, CropNotFoundError, check_crops, uses_roi
from mmfusion.data.dicom import MissingDecoderError
from mmfusion.data.file_roi import image_roi
from mmfusion.data.io import load_image
from mmfusion.data.manifest import Manifest, ManifestRow, read_manifest
from mmfusion.data.roi import SectorROI, _full_frame
from mmfusion.data.transforms import AVAILABLE_KEY, zero_unavailable
from mmfusion.labels import LabelSpec

__all__ = ["PairedImageDataset", "load_image"]

Sample = dict[str, Any]


class PairedImageDataset(Dataset[Sample]):
    """Image pairs (or n-tuples, with tabular modalities) of a manifest, cropped, optionally cached.

    Args:
        manifest: A :class:`~mmfusion.data.manifest.Manifest` or the path of a manifest CSV
            (read with :func:`~mmfusion.data.manifest.read_manifest`, ``verify="header"`` and
            ``labels``: the pixels are decoded once, when a pair is first read, and an image that
            fails to decode or crop raises a ``ValueError`` naming the manifest, its line, the
            modality and the file). Read the manifest yourself for ``columns=`` or ``tabular=``.
        transform: Callable applied to the sample dict (image modalities as
            ``tv_tensors.Image``, tabular ones as float32 ``[F]`` tensors, ``"available"``,
            ``"label"``, ``"patient_id"``); e.g. :func:`~mmfusion.data.transforms.train_transforms`.
            None returns the uint8 crops. Missing modalities are reset afterwards (images to
            zeros, tabular vectors to NaN: :func:`~mmfusion.data.transforms.zero_unavailable`).
        cache: Keep decoded crops in memory (per process: fill it with :meth:`preload` before
            creating ``DataLoader`` workers so that forked workers share it). Memory is
            ``3 * H * W`` bytes per image: about 0.1 MB at ``size=(128, 128)``, about 0.8 MB for a
            full 800 x 600 frame's crop.
        roi: Find every image's ROI (paper II.B): its scan sector by contour detection (pixels
            outside the fan are set to 0 by the default crop), or for a DICOM file with a tissue
            region, that region's box (:func:`~mmfusion.data.image_roi`; :attr:`roi_sources` says
            which). False: the ROI is the full frame.
        roi_fallback: If no sector is found, use the full frame with a warning instead of failing.
        size: Resize crops to ``(H, W)`` (or ``size x size``) with area interpolation at decode
            time, before caching. None keeps the crop's size.
        use_dicom_regions: False detects the sector by contour in DICOM files too, ignoring
            their ultrasound regions (then a DICOM copy of a PNG data set gives the same crops).
        crop: Crop per image modality, ``{modality: crop}`` (:mod:`mmfusion.data.crops`: a
            callable ``crop(frame, row, modality, roi) -> [h, w, 3] uint8`` with a string
            ``key``); modalities not named (and None) get :class:`~mmfusion.data.ROICrop`, the
            ROI crop above. :attr:`applied_crops` records the key of the crop each image got.
        crop_fallback: A frame in which its crop finds nothing to crop to (the crop raises
            :class:`~mmfusion.data.CropNotFoundError`) gets the default ROI crop with a warning
            (the error's ``warning`` category) instead of a ``ValueError`` naming the file. Other
            crop errors are always errors.
        labels: The label specification to read a manifest path with (see
            :func:`~mmfusion.data.read_manifest`; None: a ``label`` column of class indices). Not
            with a :class:`~mmfusion.data.Manifest`, which has its own.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> import cv2
        >>> import numpy as np
        >>> root = Path(tempfile.mkdtemp())
        >>> frame = np.zeros((96, 128, 3), np.uint8)
        >>> frame[16:80, 24:104] = 180  # the scan region: bright on black
        >>> for name in ("a_us.png", "a_swe.png", "b_us.png"):
        ...     assert cv2.imwrite(str(root / name), frame)
        >>> _ = (root / "manifest.csv").write_text(
        ...     "patient_id,us_path,swe_path,label\\n"
        ...     "P1,a_us.png,a_swe.png,0\\n"
        ...     "P2,b_us.png,,1\\n")
        >>> ds = PairedImageDataset(root / "manifest.csv", size=64, cache=True)
        >>> sample = ds[0]
        >>> sample["us"].shape, sample["us"].dtype, list(sample)
        (torch.Size([3, 64, 64]), torch.uint8, ['us', 'swe', 'available', 'label', 'patient_id'])
        >>> ds[1]["available"], int(ds[1]["swe"].sum())
        ({'us': True, 'swe': False}, 0)
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
        crop: Mapping[str, Crop] | None = None,
        crop_fallback: bool = False,
        labels: LabelSpec | None = None,
    ) -> None:
        if isinstance(manifest, (str, Path)):
            # The header check only: decoding errors name their manifest line when a pair is read.
            manifest = read_manifest(manifest, verify="header", labels=labels)
        elif labels is not None:
            raise ValueError(
                "labels: only for a manifest path; a Manifest was read with its label spec "
                "already (manifest.label_spec)"
            )
        if not isinstance(manifest, Manifest):
            raise TypeError(
                f"manifest: expected a Manifest or a CSV path, got {type(manifest).__name__}"
            )
        if transform is not None and not callable(transform):
            raise TypeError(
                f"transform: expected a callable or None, got {type(transform).__name__}"
            )
        self.manifest = manifest
        self.crop = check_crops(crop, self.image_modalities)
        self.crop_fallback = bool(crop_fallback)
        self._applied: dict[tuple[str, Path], str] = {}
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
        """The modality keys, image modalities in manifest column order, then tabular ones."""
        return self.manifest.modalities

    @property
    def tabular(self) -> dict[str, tuple[str, ...]]:
        """Tabular modality -> its manifest columns (empty without tabular modalities)."""
        return dict(self.manifest.tabular)

    @property
    def image_modalities(self) -> tuple[str, ...]:
        """The modalities that are image files (decoded, cropped, cached)."""
        return tuple(m for m in self.manifest.modalities if m not in self.manifest.tabular)

    @property
    def crop_keys(self) -> dict[str, str]:
        """The ``key`` of each image modality's crop, ``{modality: key}``."""
        return {m: c.key for m, c in self.crop.items()}

    @property
    def labels(self) -> np.ndarray:
        """``[N]`` int64 class labels."""
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
        ``DataLoader`` workers. Missing modalities are left out, and so are images whose crop
        does not use an ROI (``crop.uses_roi`` False, e.g. a crop to an SWE colour box).
        """
        out: dict[int, dict[str, str]] = {}
        for index, row in enumerate(self.manifest):
            found = {k: self._roi_source[p] for k, p in row.paths.items() if p in self._roi_source}
            if found:
                out[index] = found
        return out

    @property
    def applied_crops(self) -> dict[int, dict[str, str]]:
        """The key of the crop each image of the pairs decoded so far got,
        ``{index: {modality: key}}``.

        The key of the crop asked in ``crop``, or the default crop's (``"sector"``) where the
        crop found nothing in a frame and ``crop_fallback=True`` kept the ROI crop. Recorded in
        the process that decodes, like :attr:`roi_sources`; missing modalities are left out.
        """
        out: dict[int, dict[str, str]] = {}
        for index, row in enumerate(self.manifest):
            found = {
                k: self._applied[(k, p)] for k, p in row.paths.items() if (k, p) in self._applied
            }
            if found:
                out[index] = found
        return out

    def _roi(self, path: Path, image: np.ndarray) -> SectorROI:
        """The frame's ROI (the full frame with ``roi=False``); records its source."""
        if not self.roi:
            self._roi_source[path] = "full_frame"
            return _full_frame((int(image.shape[0]), int(image.shape[1])))
        found = image_roi(
            path, image=image, use_dicom_regions=self.use_dicom_regions,
            fallback=self.roi_fallback,
        )  # fmt: skip
        self._roi_source[path] = found.source
        return found.roi

    def _apply(
        self, crop: Crop, image: np.ndarray, path: Path, key: str, row: ManifestRow
    ) -> np.ndarray:
        """``crop`` applied to ``image`` (with its ROI if the crop uses one), output checked."""
        roi = self._roi(path, image) if uses_roi(crop) else None
        out = crop(image, row, key, roi)
        if not (isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 3
                and out.shape[2] == 3 and min(out.shape[:2]) > 0):  # fmt: skip
            got = (f"{out.dtype} array of shape {tuple(out.shape)}" if isinstance(out, np.ndarray)
                   else type(out).__name__)  # fmt: skip
            raise ValueError(
                f"crop: expected crop {crop.key!r} to return an [h, w, 3] uint8 array with "
                f"h, w > 0, got {got}"
            )
        return out

    def _load(self, path: Path, key: str, row: ManifestRow) -> torch.Tensor:
        image = load_image(path, frame=row.frame(key))
        crop = self.crop[key]
        try:
            cropped = self._apply(crop, image, path, key, row)
        except CropNotFoundError as error:
            if not self.crop_fallback:
                raise ValueError(
                    f"{error}; crop_fallback=True keeps the {DEFAULT_CROP.key} crop instead"
                ) from None
            warnings.warn(f"{error}; using its {DEFAULT_CROP.key} crop", error.warning,
                          stacklevel=3)  # fmt: skip
            crop = DEFAULT_CROP
            cropped = self._apply(crop, image, path, key, row)
        self._applied[(key, path)] = crop.key
        if self.size is not None:
            cropped = cv2.resize(cropped, self.size[::-1], interpolation=cv2.INTER_AREA)
        return torch.from_numpy(np.ascontiguousarray(cropped.transpose(2, 0, 1)))

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
        """The uint8 ``[3, H, W]`` crops of pair ``index`` by image modality (cached if enabled).

        A modality missing from the pair is not read: its image is zeros of shape ``(3, *size)``,
        or without ``size`` the shape of the pair's first present crop. Tabular modalities are
        not images: see :meth:`tabular_values`.

        Raises:
            ValueError: A file fails to decode or crop (the message names the manifest line, the
                modality and the file), or a row has no image and the data set no ``size``.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"index: expected -{len(self)} <= index < {len(self)}, got {index}")
        index = index % len(self)
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        row: ManifestRow = self.manifest[index]
        loaded = {key: self._located(path, key, row)
                  for key, path in row.paths.items() if path is not None}  # fmt: skip
        if loaded:
            shape = next(iter(loaded.values())).shape
        elif self.size is not None or not row.paths:
            shape = torch.Size((3, *(self.size or (1, 1))))
        else:
            raise ValueError(
                f"size: manifest line {row.line} has none of the images {list(row.paths)} (only "
                f"tabular values); pass size= so that their placeholders have a shape"
            )
        images = {key: loaded.get(key, torch.zeros(shape, dtype=torch.uint8)) for key in row.paths}
        if self.cache:
            self._cache[index] = images
        return images

    def tabular_values(self, index: int) -> dict[str, torch.Tensor]:
        """The tabular modalities of pair ``index``: float32 ``[F]`` tensors (one value per
        column, in the manifest's column order), NaN where a value is missing."""
        row: ManifestRow = self.manifest[index]
        return {m: torch.tensor(values, dtype=torch.float32) for m, values in row.tabular.items()}

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
        values = self.tabular_values(index)
        if self.transform is None:
            return {
                **{m: images[m] if m in images else values[m] for m in self.modalities},
                AVAILABLE_KEY: row.available,
                "label": row.label,
                "patient_id": row.patient_id,
            }
        sample: Sample = {
            m: tv_tensors.Image(images[m]) if m in images else values[m] for m in self.modalities
        }
        sample[AVAILABLE_KEY] = row.available
        sample.update(label=row.label, patient_id=row.patient_id)
        out = self.transform(sample)
        if not isinstance(out, dict):
            raise TypeError(f"transform: expected it to return a dict, got {type(out).__name__}")
        out = zero_unavailable(out)
        return {
            k: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v
            for k, v in out.items()
        }
