"""Paired-image data set over a manifest: decode -> sector ROI crop -> (resize) -> cache (paper II.B).

Each item is ``{"us": Tensor, "swe": Tensor, "label": int, "patient_id": str}``; the modality keys
are the manifest's ``*_path`` columns in column order. Images are decoded with OpenCV, converted to
RGB (grey frames are replicated to 3 channels) and returned as uint8 ``[3, H, W]`` tensors before
normalisation. With ``cache=True`` the decoded ROI crops are kept in memory, so an epoch after the
first never decodes PNGs; ``size=`` resizes the crops before caching to keep the cache small.

The data set is picklable and works with ``DataLoader`` workers and the default collate. A
``transform`` receives the whole sample dict with every modality wrapped as a
``torchvision.tv_tensors.Image``, so torchvision ``transforms.v2`` applies one geometric transform to
all modalities of a pair (see :mod:`mmfusion.data.transforms`).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from mmfusion._checks import check_size
from mmfusion.data.manifest import Manifest, ManifestRow, read_manifest
from mmfusion.data.roi import detect_sector

__all__ = ["PairedImageDataset", "load_image"]

Sample = dict[str, Any]


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image file (PNG, JPEG, ...) as RGB.

    Args:
        path: Image file.

    Returns:
        ``[H, W, 3]`` uint8 RGB array (grey images are replicated to 3 channels; alpha is dropped).

    Raises:
        ValueError: If the file cannot be read or decoded (the message names the path).
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise ValueError(f"path: cannot read image file {str(path)!r}: {error}") from error
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ValueError(f"path: {str(path)!r} is not a decodable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class PairedImageDataset(Dataset[Sample]):
    """Image pairs (or n-tuples) of a manifest, ROI-cropped, optionally cached.

    Args:
        manifest: A :class:`~mmfusion.data.manifest.Manifest` or the path of a manifest CSV
            (read with :func:`~mmfusion.data.manifest.read_manifest`).
        transform: Callable applied to the sample dict (modalities as ``tv_tensors.Image``,
            ``"label"``, ``"patient_id"``); e.g. :func:`~mmfusion.data.transforms.train_transforms`.
            None returns the uint8 crops.
        cache: Keep decoded crops in memory (per process: fill it with :meth:`preload` before
            creating ``DataLoader`` workers so that forked workers share it). Memory is
            ``3 * H * W`` bytes per image: about 0.1 MB at ``size=(128, 128)``, about 0.8 MB for a
            full 800 x 600 frame's crop.
        roi: Crop every image to its detected scan sector (paper II.B); pixels outside the fan
            are set to 0.
        roi_fallback: If no sector is found, use the full frame with a warning instead of failing.
        size: Resize crops to ``(H, W)`` (or ``size x size``) with area interpolation at decode
            time, before caching. None keeps the crop's size.

    Example:
        >>> import tempfile
        >>> from mmfusion.liver import PhantomConfig, make_phantom_dataset
        >>> csv = make_phantom_dataset(tempfile.mkdtemp(), n_patients=5, workers=1,
        ...                            config=PhantomConfig(width=256, height=192))
        >>> ds = PairedImageDataset(csv, size=64, cache=True)
        >>> sample = ds[0]
        >>> sample["us"].shape, sample["us"].dtype, list(sample)
        (torch.Size([3, 64, 64]), torch.uint8, ['us', 'swe', 'label', 'patient_id'])
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
    ) -> None:
        if isinstance(manifest, (str, Path)):
            manifest = read_manifest(manifest)
        if not isinstance(manifest, Manifest):
            raise TypeError(
                f"manifest: expected a Manifest or a CSV path, got {type(manifest).__name__}"
            )
        if transform is not None and not callable(transform):
            raise TypeError(
                f"transform: expected a callable or None, got {type(transform).__name__}"
            )
        self.manifest = manifest
        self.transform = transform
        self.cache = bool(cache)
        self.roi = bool(roi)
        self.roi_fallback = bool(roi_fallback)
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

    def __len__(self) -> int:
        return len(self.manifest)

    def _load(self, path: Path) -> torch.Tensor:
        image = load_image(path)
        if self.roi:
            try:
                sector = detect_sector(image, fallback=self.roi_fallback)
            except ValueError as error:
                raise ValueError(f"{error} (file {path})") from error
            image = sector.crop(image)
        if self.size is not None:
            image = cv2.resize(image, self.size[::-1], interpolation=cv2.INTER_AREA)
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))

    def images(self, index: int) -> dict[str, torch.Tensor]:
        """The uint8 ``[3, H, W]`` crops of pair ``index`` by modality (cached if enabled)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index: expected -{len(self)} <= index < {len(self)}, got {index}")
        index = index % len(self)
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        row: ManifestRow = self.manifest[index]
        images = {key: self._load(path) for key, path in row.paths.items()}
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
            return {**images, "label": row.stage, "patient_id": row.patient_id}
        sample: Sample = {key: tv_tensors.Image(t) for key, t in images.items()}
        sample.update(label=row.stage, patient_id=row.patient_id)
        out = self.transform(sample)
        if not isinstance(out, dict):
            raise TypeError(f"transform: expected it to return a dict, got {type(out).__name__}")
        return {
            k: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v
            for k, v in out.items()
        }
