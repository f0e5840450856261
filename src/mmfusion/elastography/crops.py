"""SWE crops: what of an SWE frame an "SWE" input shows (crops of :mod:`mmfusion.data.crops`).

The paper's SWE input is the scan sector of the whole SWE frame (the default
:class:`~mmfusion.data.ROICrop`), so the B-mode texture around the colour box reaches the SWE
encoder too. :class:`SWEBoxCrop` separates the two:

- ``"box"``: the elastography colour box only (:func:`~mmfusion.elastography.detect_swe_box`,
  on the full frame; its aspect ratio is kept until the data set resizes it), so the model sees
  the stiffness colours and none of the B-mode around them; the pair is no longer
  pixel-registered;
- ``"box_mask"``: the sector crop with every pixel outside the colour box set to 0 (registration
  kept);
- ``"box_kpa"``: the colour box re-drawn on the reference colour scale (JET, 0-40 kPa) through the
  frame's own legend and the top of its scale in kPa, from the manifest's
  :data:`~mmfusion.elastography.SWE_SCALE_COLUMN` column (else ``scale_kpa=``; see
  :func:`~mmfusion.elastography.standardise_swe_box`), so that scanners with other colour scales
  give the same input for the same stiffness.

A frame without a colour box raises :class:`SWEBoxNotFoundError` (a
:class:`~mmfusion.data.CropNotFoundError`): an error naming the file, or with
``PairedImageDataset(crop_fallback=True)`` the frame's sector crop with a
:class:`SWEBoxNotFoundWarning`. A frame with a box but no legend is always an error
(``"box_kpa"``).

:func:`swe_crop` maps an SWE input name (``"frame"``, ``"box"``, ``"box_mask"``, ``"box_kpa"``,
:data:`SWE_INPUTS`) to its crop; :func:`crop_from_name` maps a crop's name as recorded in
``applied_crops`` and in an exported model's metadata (``"sector"``, ``"swe_box"``, ...) back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mmfusion._values import check_positive
from mmfusion.data.crops import CropNotFoundError, CropNotFoundWarning, ROICrop
from mmfusion.elastography.colour import detect_swe_box
from mmfusion.elastography.scale_column import SWE_SCALE_COLUMN, swe_scale_kpa
from mmfusion.elastography.standardise import standardise_swe_box

if TYPE_CHECKING:
    from mmfusion.data.crops import Crop
    from mmfusion.data.manifest import ManifestRow
    from mmfusion.data.roi import SectorROI

__all__ = [
    "SWE_BOX_MODES",
    "SWE_CROP_NAMES",
    "SWE_INPUTS",
    "SWEBoxCrop",
    "SWEBoxNotFoundError",
    "SWEBoxNotFoundWarning",
    "crop_from_name",
    "swe_crop",
]

#: Modes of :class:`SWEBoxCrop`.
SWE_BOX_MODES = ("box", "box_mask", "box_kpa")

#: What an SWE input shows (:func:`swe_crop`): the sector of the whole SWE frame, B-mode texture
#: around the colour box included (the paper's input), the colour box only, the sector with
#: everything outside the box zeroed, or the colour box re-drawn on one reference colour scale.
SWE_INPUTS = ("frame", *SWE_BOX_MODES)

#: The names of those crops (their keys without parameters), as ``applied_crops`` and an exported
#: model's metadata record them.
SWE_CROP_NAMES = ("sector", *(f"swe_{mode}" for mode in SWE_BOX_MODES))


class SWEBoxNotFoundWarning(CropNotFoundWarning):
    """Warned when a frame has no SWE colour box and ``crop_fallback=True`` keeps its sector
    crop."""


class SWEBoxNotFoundError(CropNotFoundError):
    """A frame has no SWE colour box (an SWE crop's "not found"; see
    :class:`~mmfusion.data.CropNotFoundError`)."""

    warning = SWEBoxNotFoundWarning


class SWEBoxCrop:
    """Crop an SWE frame to its colour box (``"box"``), mask the sector crop outside the box
    (``"box_mask"``), or re-draw the box on the reference colour scale (``"box_kpa"``).

    A crop of :mod:`mmfusion.data.crops`: pass it as ``PairedImageDataset(crop={"swe": ...})``.

    Args:
        mode: One of :data:`SWE_BOX_MODES`.
        scale_kpa: ``"box_kpa"`` only: the top of the SWE colour scale in kPa for rows whose
            :data:`~mmfusion.elastography.SWE_SCALE_COLUMN` column is empty or absent; None: such
            a row is an error.

    Attributes:
        key: ``"swe_<mode>"``, with ``(scale_kpa=...)`` appended when given (every parameter is in
            the key, so the crop cache never mixes two crops).
        uses_roi: True for ``"box_mask"`` only: the other modes do not look for the sector.

    Raises:
        ValueError: Unknown ``mode``, ``scale_kpa`` not a positive number, or given with another
            mode than ``"box_kpa"``.

    Example:
        >>> SWEBoxCrop("box").key, SWEBoxCrop("box_kpa", scale_kpa=70).key
        ('swe_box', 'swe_box_kpa(scale_kpa=70.0)')
    """

    def __init__(self, mode: str = "box", *, scale_kpa: float | None = None) -> None:
        if mode not in SWE_BOX_MODES:
            raise ValueError(f"mode: expected one of {SWE_BOX_MODES}, got {mode!r}")
        if scale_kpa is not None:
            if mode != "box_kpa":
                raise ValueError(
                    f"scale_kpa: only the mode 'box_kpa' reads a colour scale; got "
                    f"scale_kpa={scale_kpa!r} with mode {mode!r}"
                )
            scale_kpa = check_positive(scale_kpa, "scale_kpa", "number of kPa")
        self.mode = mode
        self.scale_kpa = scale_kpa
        self.name = f"swe_{mode}"
        self.key = self.name if scale_kpa is None else f"{self.name}(scale_kpa={scale_kpa!r})"
        self.uses_roi = mode == "box_mask"

    def __repr__(self) -> str:
        scale = "" if self.scale_kpa is None else f", scale_kpa={self.scale_kpa!r}"
        return f"SWEBoxCrop({self.mode!r}{scale})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SWEBoxCrop) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __call__(
        self, frame: np.ndarray, row: ManifestRow, modality: str, roi: SectorROI | None
    ) -> np.ndarray:
        """The crop of ``row``'s ``modality`` frame (see :mod:`mmfusion.data.crops`).

        Raises:
            SWEBoxNotFoundError: The frame has no colour box.
            ValueError: ``"box_kpa"`` and no scale for the row, or no legend in the frame; the
                message names the file.
        """
        path = row.paths.get(modality) if row is not None else None
        where = f"{str(path)!r}" if path is not None else "the frame"
        what = f"crop mode {self.key!r} for modality {modality!r}"
        return self._crop(frame, roi, lambda: self._row_scale(row), f"{where} ({what})")

    def crop_frame(
        self, frame: np.ndarray, roi: SectorROI | None = None, *, scale_kpa: float | None = None,
        where: str = "the frame",
    ) -> np.ndarray:  # fmt: skip
        """The crop of one frame without a manifest row (e.g. a file given on a command line).

        Args:
            frame: ``[H, W, 3]`` uint8 RGB frame.
            roi: The frame's ROI (``"box_mask"`` only; None: the full frame).
            scale_kpa: Top of the frame's colour scale in kPa (``"box_kpa"``; None: the crop's
                own ``scale_kpa``).
            where: How messages name the frame (e.g. its path, quoted).

        Returns:
            ``[h, w, 3]`` uint8 crop.

        Raises:
            SWEBoxNotFoundError: The frame has no colour box.
            ValueError: ``"box_kpa"`` without a scale, or no legend in the frame.
        """

        def scale() -> float:
            value = self.scale_kpa if scale_kpa is None else scale_kpa
            if value is None:
                raise ValueError(
                    f"scale_kpa: crop mode {self.key!r} needs the top of the SWE colour scale of "
                    f"{where} in kPa, got None"
                )
            return check_positive(value, "scale_kpa", "number of kPa")

        return self._crop(frame, roi, scale, f"{where} (crop mode {self.key!r})")

    def _row_scale(self, row: ManifestRow) -> float:
        """The top of ``row``'s colour scale in kPa: its column, else ``scale_kpa``."""
        value = swe_scale_kpa(row)
        if value is not None:
            return value
        if self.scale_kpa is None:
            raise ValueError(
                f"{SWE_SCALE_COLUMN}: crop mode {self.key!r} needs the top of each SWE frame's "
                f"colour scale in kPa; manifest line {row.line} has no {SWE_SCALE_COLUMN} value; "
                f"add the column or pass SWEBoxCrop('box_kpa', scale_kpa=...)"
            )
        return self.scale_kpa

    def _crop(self, frame: np.ndarray, roi: SectorROI | None, scale: Any, where: str) -> np.ndarray:
        box = detect_swe_box(frame)
        if box is None:
            raise SWEBoxNotFoundError(f"crop: expected an SWE colour box in {where}, found none")
        x0, y0, x1, y1 = box
        if self.mode == "box":
            return np.ascontiguousarray(frame[y0:y1, x0:x1])
        if self.mode == "box_kpa":
            kpa_max = scale()
            try:
                return standardise_swe_box(frame, kpa_max, box=box)
            except ValueError as err:  # the frame's fault: no legend
                raise ValueError(f"crop: {where}: {err}") from None
        if roi is None:
            cropped, (ox, oy) = frame, (0, 0)
        else:
            cropped, (ox, oy) = roi.crop(frame), roi.bbox[:2]
        inside = (slice(max(y0 - oy, 0), max(y1 - oy, 0)), slice(max(x0 - ox, 0), max(x1 - ox, 0)))
        masked = np.zeros_like(cropped)
        masked[inside] = cropped[inside]
        return masked


def swe_crop(swe_input: str, *, scale_kpa: float | None = None) -> Crop:
    """The crop that gives an SWE modality the input ``swe_input``.

    Args:
        swe_input: ``"frame"`` (the sector crop, paper II.B: :class:`~mmfusion.data.ROICrop`),
            ``"box"`` (the elastography colour box only: no B-mode texture reaches an "SWE"
            encoder), ``"box_mask"`` (the sector crop, zero outside the box) or ``"box_kpa"``
            (the colour box on the reference colour scale: the same stiffness gives the same
            colours whatever the scanner's scale); see :class:`SWEBoxCrop`.
        scale_kpa: ``"box_kpa"`` only: the default top of the colour scale in kPa.

    Returns:
        The crop, e.g. ``PairedImageDataset(csv, crop={"swe": swe_crop("box")})``.

    Raises:
        ValueError: Unknown ``swe_input``.

    Example:
        >>> swe_crop("box").key, swe_crop("frame").key
        ('swe_box', 'sector')
    """
    if swe_input not in SWE_INPUTS:
        raise ValueError(f"swe_input: expected one of {SWE_INPUTS}, got {swe_input!r}")
    if swe_input == "frame":
        if scale_kpa is not None:
            raise ValueError(
                f"scale_kpa: only the SWE input 'box_kpa' reads a colour scale; got "
                f"scale_kpa={scale_kpa!r} with 'frame'"
            )
        return ROICrop()
    return SWEBoxCrop(swe_input, scale_kpa=scale_kpa)


def crop_from_name(name: str, *, scale_kpa: float | None = None) -> Crop:
    """The crop whose name is ``name`` (one of :data:`SWE_CROP_NAMES`, e.g. from an exported
    model's metadata).

    Raises:
        ValueError: Unknown ``name``.

    Example:
        >>> crop_from_name("swe_box_mask")
        SWEBoxCrop('box_mask')
    """
    if name not in SWE_CROP_NAMES:
        raise ValueError(f"name: expected one of {SWE_CROP_NAMES}, got {name!r}")
    return swe_crop("frame" if name == "sector" else name[len("swe_"):], scale_kpa=scale_kpa)
