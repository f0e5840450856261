"""Crops: which part of a decoded frame a modality's input shows, one plug-in per modality.

:class:`~mmfusion.data.PairedImageDataset` decodes a frame, finds its region of interest (the
scan sector, or a DICOM file's tissue region: :func:`~mmfusion.data.image_roi`) and hands both to
the modality's crop. A crop is any callable::

    crop(frame, row, modality, roi) -> image

- ``frame``: the decoded ``[H, W, 3]`` uint8 RGB frame (:func:`~mmfusion.data.load_image`);
- ``row``: the :class:`~mmfusion.data.ManifestRow` of the pair, so a crop reads the manifest's
  extra columns it needs (``row.extra``, or ``row.values`` parsed by ``read_manifest(columns=)``)
  without the data set knowing their names;
- ``modality``: the modality key (``row.paths[modality]`` is the file, for messages);
- ``roi``: the frame's :class:`~mmfusion.data.SectorROI` (a full-frame ROI with
  ``PairedImageDataset(roi=False)``), or None for a crop whose ``uses_roi`` is False;
- returns an ``[h, w, 3]`` uint8 array (any size: the data set resizes it to ``size=``).

and carries two attributes:

- ``key: str``: names the crop with every parameter that changes its output. Two crops with the
  same key must give the same arrays: the key is part of the crop cache's key
  (:func:`~mmfusion.data.pipeline.cached_crops`) and of :attr:`PairedImageDataset.applied_crops
  <mmfusion.data.PairedImageDataset.applied_crops>`.
- ``uses_roi: bool`` (optional, default True): False tells the data set not to look for the
  frame's ROI at all (no contour detection, no ROI source recorded; ``roi`` is None).

A crop that does not find what it looks for in a frame (e.g. a colour overlay that a frame lacks)
raises :class:`CropNotFoundError`: the data set then fails naming the file, or with
``crop_fallback=True`` gives the frame the default :class:`ROICrop` and warns with the error's
``warning`` category. Any other ``ValueError`` is an error naming the file.

Domain packages provide their crops (e.g. the colour-box crops of an elastography package); the
generic layer here knows only :class:`ROICrop`.

Example:
    >>> import numpy as np
    >>> class Centre:
    ...     key = "centre(half=4)"
    ...     uses_roi = False
    ...     def __call__(self, frame, row, modality, roi):
    ...         h, w = frame.shape[:2]
    ...         return frame[h // 2 - 4 : h // 2 + 4, w // 2 - 4 : w // 2 + 4]
    >>> check_crops({"us": Centre()}, ("us", "swe"))["swe"].key
    'sector'
    >>> Centre()(np.zeros((32, 48, 3), np.uint8), None, "us", None).shape
    (8, 8, 3)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from mmfusion.data.manifest import ManifestRow
    from mmfusion.data.roi import SectorROI

__all__ = [
    "Crop",
    "CropNotFoundError",
    "CropNotFoundWarning",
    "ROICrop",
    "check_crops",
    "uses_roi",
]


@runtime_checkable
class Crop(Protocol):
    """What :class:`~mmfusion.data.PairedImageDataset` calls to crop a modality's frame.

    Attributes:
        key: The crop's name with every parameter that changes its output (equal keys, equal
            crops); part of the crop cache's key.
    """

    key: str

    def __call__(
        self, frame: np.ndarray, row: ManifestRow, modality: str, roi: SectorROI | None
    ) -> np.ndarray:
        """Crop ``frame`` (``[H, W, 3]`` uint8 RGB) to ``[h, w, 3]`` uint8."""
        ...


class CropNotFoundWarning(UserWarning):
    """Warned when a crop found nothing to crop in a frame and ``crop_fallback=True`` gave the
    frame the default :class:`ROICrop` instead."""


class CropNotFoundError(ValueError):
    """A crop found no region of the kind it crops to in a frame (an answer about the frame).

    :class:`~mmfusion.data.PairedImageDataset` turns it into a ``ValueError`` naming the file, or
    with ``crop_fallback=True`` into the default :class:`ROICrop` and a warning of the category
    in its class attribute ``warning``. Subclasses set ``warning`` to their own warning class (a
    subclass of :class:`CropNotFoundWarning`), so users can filter one domain's warnings.
    """

    #: The warning category of the fallback.
    warning: type[CropNotFoundWarning] = CropNotFoundWarning


class ROICrop:
    """The default crop: the frame's region of interest (paper II.B).

    The scan sector found by contour detection, with the pixels outside the fan set to 0, or a
    DICOM file's tissue region (:func:`~mmfusion.data.image_roi`); with
    ``PairedImageDataset(roi=False)`` the full frame. Its key is ``"sector"``.

    Example:
        >>> from mmfusion.data.roi import detect_sector
        >>> frame = np.zeros((64, 64, 3), np.uint8)
        >>> frame[8:56, 16:48] = 200
        >>> ROICrop()(frame, None, "us", detect_sector(frame)).shape
        (48, 32, 3)
    """

    key = "sector"
    uses_roi = True

    def __call__(
        self, frame: np.ndarray, row: ManifestRow | None, modality: str, roi: SectorROI | None
    ) -> np.ndarray:
        if roi is None:
            raise ValueError("roi: the sector crop needs the frame's ROI, got None")
        return roi.crop(frame)

    def __repr__(self) -> str:
        return "ROICrop()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ROICrop)

    def __hash__(self) -> int:
        return hash(self.key)


#: The crop of modalities that ``crop=`` does not name, and the fallback of ``crop_fallback``.
DEFAULT_CROP = ROICrop()


def uses_roi(crop: Crop) -> bool:
    """Whether ``crop`` wants the frame's ROI (its ``uses_roi`` attribute; True if it has none)."""
    return bool(getattr(crop, "uses_roi", True))


def check_crops(crop: Mapping[str, Crop] | None, modalities: Sequence[str]) -> dict[str, Crop]:
    """``{modality: crop}`` for every one of ``modalities`` (:class:`ROICrop` where ``crop`` names
    none).

    Args:
        crop: Modality -> crop (a callable with a string ``key``), or None.
        modalities: The modalities that have images.

    Returns:
        A new dict in the order of ``modalities``.

    Raises:
        TypeError: ``crop`` is not a mapping, or a value is not a callable with a string ``key``
            (a mode string among them: crops are objects).
        ValueError: A key of ``crop`` is not one of ``modalities``.
    """
    if crop is None:
        crop = {}
    if not isinstance(crop, Mapping):
        raise TypeError(
            f"crop: expected a mapping {{modality: crop}} or None, got {type(crop).__name__}"
        )
    for name, value in crop.items():
        if name not in modalities:
            raise ValueError(
                f"crop: expected modality keys among {list(modalities)}, got {name!r}"
            )
        key = getattr(value, "key", None)
        if isinstance(value, str) or not callable(value) or not isinstance(key, str) or not key:
            hint = (
                "; crops are objects now, not mode strings (the default crop is "
                "mmfusion.data.ROICrop(); a domain package provides its own)"
                if isinstance(value, str)
                else ""
            )
            raise TypeError(
                f"crop: expected a callable crop(frame, row, modality, roi) with a non-empty "
                f"string key for {name!r}, got {value!r}{hint}"
            )
    return {m: crop.get(m, DEFAULT_CROP) for m in modalities}
