"""mmfusion.lightning: train any multimodal classifier with Lightning (optional extra).

``pip install "mmfusion[lightning]"``. Two classes, usable on their own in any Lightning project:

- :class:`FusionModule`: the model, its ensemble loss, the optimizer and schedule of a
  :class:`~mmfusion.models.TrainingConfig`, and the library's metrics after validation and test.
- :class:`FusionDataModule`: a manifest split by patient, the paper's augmentation, per-sample
  seeded sampling sharded over processes.

And :mod:`~mmfusion.lightning.checkpoints`: atomic checkpoints, a checked resume, an epoch log.
"""

try:
    import lightning.pytorch  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'mmfusion.lightning needs the Lightning package: pip install "mmfusion[lightning]"'
    ) from err

from mmfusion.lightning.checkpoints import AtomicCheckpointIO, EpochLog, check_checkpoint
from mmfusion.lightning.datamodule import FusionDataModule, Split, make_splits
from mmfusion.lightning.module import FusionModule
from mmfusion.lightning.predictions import Predictions

__all__ = [
    "AtomicCheckpointIO",
    "EpochLog",
    "FusionDataModule",
    "FusionModule",
    "Predictions",
    "Split",
    "check_checkpoint",
    "make_splits",
]
