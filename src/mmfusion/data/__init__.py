"""mmfusion.data: everything between image files and a batch (paper section II).

- :mod:`~mmfusion.data.roi`: fan-shaped sector ROI by contour detection (II.B).
- :mod:`~mmfusion.data.io`: image files (PNG, JPEG, DICOM) to RGB arrays; sizes from headers and
  the pixel limit (:data:`~mmfusion.data.MAX_IMAGE_PIXELS`).
- :mod:`~mmfusion.data.dicom`: DICOM frames, frame counts and ultrasound regions (pydicom).
- :mod:`~mmfusion.data.file_roi`: a file's ROI: its DICOM tissue region, else contour detection.
- :mod:`~mmfusion.data.transforms`: paired geometric and per-modality intensity transforms.
- :mod:`~mmfusion.data.augmentation`: the paper's offline flip/shift expansion as a plan.
- :mod:`~mmfusion.data.manifest`: CSV manifest reading with full validation; labels parsed with a
  :class:`~mmfusion.labels.LabelSpec` (also importable from here).
- :mod:`~mmfusion.data.crops`: the crop protocol (a plug-in per modality) and the default ROI crop.
- :mod:`~mmfusion.data.dataset`: paired-image data set (images and tabular values) with ROI,
  crops and cache.
- :mod:`~mmfusion.data.splits`: patient-level and leave-one-site-out splits, and the warned
  image-level and paper (augment, then split) splits.
- :mod:`~mmfusion.data.seeded`: per-sample seeds, so augmentation does not depend on the workers.

This package never imports :mod:`mmfusion.nn` nor any domain package: a domain (e.g. the liver's
phantom and METAVIR label spec) builds on it.

The names below load on first use (PEP 562): ``import mmfusion.data.manifest`` does not import
torch, and ``from mmfusion.data import PairedImageDataset`` imports what that class needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmfusion._lazy import attach

#: Submodule -> the public names loaded from it on first use.
_SUBMODULES = {
    "mmfusion.labels": ["LabelSpec"],
    "mmfusion.data.augmentation": [
        "AugmentationItem",
        "PlannedAugmentationDataset",
        "balanced_augmentation_plan",
    ],
    "mmfusion.data.crops": [
        "Crop",
        "CropNotFoundError",
        "CropNotFoundWarning",
        "ROICrop",
    ],
    "mmfusion.data.dataset": [
        "PairedImageDataset",
    ],
    "mmfusion.data.dicom": [
        "FlatFrameWarning",
        "MissingDecoderError",
        "UltrasoundRegion",
        "dicom_frame_count",
        "dicom_regions",
        "is_dicom",
    ],
    "mmfusion.data.file_roi": [
        "ImageROI",
        "image_roi",
    ],
    "mmfusion.data.io": [
        "MAX_IMAGE_PIXELS",
        "ImageInfo",
        "image_info",
        "load_image",
        "max_image_pixels",
    ],
    "mmfusion.data.manifest": [
        "Manifest",
        "ManifestError",
        "ManifestRow",
        "read_manifest",
        "write_manifest",
    ],
    "mmfusion.data.roi": [
        "SectorNotFoundWarning",
        "SectorROI",
        "detect_sector",
    ],
    "mmfusion.data.seeded": [
        "SeededDataset",
        "SeededSampler",
        "sample_seed",
    ],
    "mmfusion.data.splits": [
        "LeakageWarning",
        "augmented_image_split",
        "image_split",
        "patient_kfold",
        "patient_split",
        "site_splits",
    ],
    "mmfusion.data.transforms": [
        "AVAILABLE_KEY",
        "AsImages",
        "IMAGENET_MEAN",
        "IMAGENET_STD",
        "PerModality",
        "SectorCrop",
        "default_intensity_transforms",
        "eval_transforms",
        "train_transforms",
        "zero_unavailable",
    ],
}
__getattr__, __dir__ = attach(__name__, _SUBMODULES)

__all__ = [*(name for names in _SUBMODULES.values() for name in names)]

if TYPE_CHECKING:  # what static analysers and IDEs see
    from mmfusion.data.augmentation import (
        AugmentationItem,
        PlannedAugmentationDataset,
        balanced_augmentation_plan,
    )
    from mmfusion.data.crops import Crop, CropNotFoundError, CropNotFoundWarning, ROICrop
    from mmfusion.data.dataset import PairedImageDataset
    from mmfusion.data.dicom import (
        FlatFrameWarning,
        MissingDecoderError,
        UltrasoundRegion,
        dicom_frame_count,
        dicom_regions,
        is_dicom,
    )
    from mmfusion.data.file_roi import ImageROI, image_roi
    from mmfusion.data.io import (
        MAX_IMAGE_PIXELS,
        ImageInfo,
        image_info,
        load_image,
        max_image_pixels,
    )
    from mmfusion.data.manifest import (
        Manifest,
        ManifestError,
        ManifestRow,
        read_manifest,
        write_manifest,
    )
    from mmfusion.data.roi import SectorNotFoundWarning, SectorROI, detect_sector
    from mmfusion.data.seeded import SeededDataset, SeededSampler, sample_seed
    from mmfusion.data.splits import (
        LeakageWarning,
        augmented_image_split,
        image_split,
        patient_kfold,
        patient_split,
        site_splits,
    )
    from mmfusion.data.transforms import (
        AVAILABLE_KEY,
        IMAGENET_MEAN,
        IMAGENET_STD,
        AsImages,
        PerModality,
        SectorCrop,
        default_intensity_transforms,
        eval_transforms,
        train_transforms,
        zero_unavailable,
    )
    from mmfusion.labels import LabelSpec

