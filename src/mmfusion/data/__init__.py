"""mmfusion.data: everything between image files and a batch (paper section II).

- :mod:`~mmfusion.data.roi`: fan-shaped sector ROI by contour detection (II.B).
- :mod:`~mmfusion.data.io`: image files (PNG, JPEG, DICOM) to RGB arrays.
- :mod:`~mmfusion.data.dicom`: DICOM frames, frame counts and ultrasound regions (pydicom).
- :mod:`~mmfusion.data.file_roi`: a file's ROI: its DICOM tissue region, else contour detection.
- :mod:`~mmfusion.data.transforms`: paired geometric and per-modality intensity transforms.
- :mod:`~mmfusion.data.augmentation`: the paper's offline flip/shift expansion as a plan.
- :mod:`~mmfusion.data.manifest`: CSV manifest reading with full validation.
- :mod:`~mmfusion.data.dataset`: paired-image data set with ROI crop and cache.
- :mod:`~mmfusion.data.splits`: patient-level and leave-one-site-out splits, and the warned
  image-level and paper (augment, then split) splits.
- :mod:`~mmfusion.data.seeded`: per-sample seeds, so augmentation does not depend on the workers.
- :mod:`~mmfusion.data.elastography`: the SWE colour box and its stiffness in kPa.

This package never imports :mod:`mmfusion.nn`. The liver phantom and the METAVIR stage vocabulary
live in :mod:`mmfusion.liver`.
"""

from mmfusion.data.augmentation import (
    AugmentationItem,
    PlannedAugmentationDataset,
    balanced_augmentation_plan,
)
from mmfusion.data.dataset import CROP_MODES, PairedImageDataset, SWEBoxNotFoundWarning
from mmfusion.data.dicom import (
    MissingDecoderError,
    UltrasoundRegion,
    dicom_frame_count,
    dicom_regions,
    is_dicom,
)
from mmfusion.data.elastography import (
    colour_bar_lut,
    colourmap_lut,
    decode_swe_kpa,
    detect_colour_bar,
    detect_swe_box,
)
from mmfusion.data.file_roi import ImageROI, image_roi
from mmfusion.data.io import load_image
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

__all__ = [
    "AVAILABLE_KEY",
    "CROP_MODES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AsImages",
    "ImageROI",
    "AugmentationItem",
    "LeakageWarning",
    "Manifest",
    "ManifestError",
    "ManifestRow",
    "MissingDecoderError",
    "PairedImageDataset",
    "PerModality",
    "PlannedAugmentationDataset",
    "SectorCrop",
    "SectorNotFoundWarning",
    "SectorROI",
    "SWEBoxNotFoundWarning",
    "SeededDataset",
    "SeededSampler",
    "UltrasoundRegion",
    "augmented_image_split",
    "balanced_augmentation_plan",
    "colour_bar_lut",
    "colourmap_lut",
    "decode_swe_kpa",
    "default_intensity_transforms",
    "detect_colour_bar",
    "detect_sector",
    "detect_swe_box",
    "dicom_frame_count",
    "dicom_regions",
    "eval_transforms",
    "image_roi",
    "image_split",
    "is_dicom",
    "load_image",
    "patient_kfold",
    "patient_split",
    "read_manifest",
    "sample_seed",
    "site_splits",
    "train_transforms",
    "write_manifest",
    "zero_unavailable",
]
