"""mmfusion.data: everything between image files and a batch (paper section II).

- :mod:`~mmfusion.data.roi`: fan-shaped sector ROI by contour detection (II.B).
- :mod:`~mmfusion.data.transforms`: paired geometric and per-modality intensity transforms.
- :mod:`~mmfusion.data.augmentation`: the paper's offline flip/shift expansion as a plan.
- :mod:`~mmfusion.data.manifest`: CSV manifest reading with full validation.
- :mod:`~mmfusion.data.dataset`: paired-image data set with ROI crop and cache.
- :mod:`~mmfusion.data.splits`: patient-level (and warned image-level) splits.
- :mod:`~mmfusion.data.seeded`: per-sample seeds, so augmentation does not depend on the workers.

This package never imports :mod:`mmfusion.nn`. The liver phantom and the METAVIR stage vocabulary
live in :mod:`mmfusion.liver`.
"""

from mmfusion.data.augmentation import (
    AugmentationItem,
    PlannedAugmentationDataset,
    balanced_augmentation_plan,
)
from mmfusion.data.dataset import PairedImageDataset, load_image
from mmfusion.data.manifest import (
    Manifest,
    ManifestError,
    ManifestRow,
    read_manifest,
    write_manifest,
)
from mmfusion.data.roi import SectorNotFoundWarning, SectorROI, detect_sector
from mmfusion.data.seeded import SeededDataset, SeededSampler, sample_seed
from mmfusion.data.splits import LeakageWarning, image_split, patient_kfold, patient_split
from mmfusion.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AsImages,
    PerModality,
    SectorCrop,
    default_intensity_transforms,
    eval_transforms,
    train_transforms,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AsImages",
    "AugmentationItem",
    "LeakageWarning",
    "Manifest",
    "ManifestError",
    "ManifestRow",
    "PairedImageDataset",
    "PerModality",
    "PlannedAugmentationDataset",
    "SectorCrop",
    "SectorNotFoundWarning",
    "SectorROI",
    "SeededDataset",
    "SeededSampler",
    "balanced_augmentation_plan",
    "default_intensity_transforms",
    "detect_sector",
    "eval_transforms",
    "image_split",
    "load_image",
    "patient_kfold",
    "patient_split",
    "read_manifest",
    "sample_seed",
    "train_transforms",
    "write_manifest",
]
