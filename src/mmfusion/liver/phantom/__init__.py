"""The liver phantom: the embedded default data set (the paper's data are private; docs/paper_map.rst).

Paired B-mode + SWE frames with a convex-probe fan, Rayleigh speckle, stage-dependent texture and
stiffness, artifacts and other organs that hide part of the evidence, three sites with their own
scanner styles, and the ground truth needed to check ROI detection and models.

- :class:`LiverPhantom` renders single pairs in memory (with :class:`PhantomTruth`).
- :func:`make_phantom_dataset` writes PNG and DICOM pairs and ``manifest.csv`` (1,414 pairs, 250
  patients, 3 sites).
- :class:`ScannerStyle` and :data:`STYLES`: how each site's scanner lays out and codes its frames.
- :func:`phantom_truth` reads a pair's ground truth (e.g. the SWE colour box) from its manifest row.
- :func:`bayes_ceiling` is the accuracy of the Bayes-optimal classifier: the phantom's ceiling;
  :func:`phantom_ceilings` the ceilings that match a trained model's inputs and test set.
"""

from mmfusion.liver.phantom.ceiling import bayes_ceiling, phantom_ceilings
from mmfusion.liver.phantom.ceilings import interaction_ceilings
from mmfusion.liver.phantom.cohort import PatientLatent, sample_cohort
from mmfusion.liver.phantom.config import PhantomConfig
from mmfusion.liver.phantom.generator import LiverPhantom, PhantomPair, PhantomTruth
from mmfusion.liver.phantom.geometry import SectorGeometry
from mmfusion.liver.phantom.interaction import interaction_config
from mmfusion.liver.phantom.styles import STYLES, ScannerStyle, get_style
from mmfusion.liver.phantom.swe import colour_lut
from mmfusion.liver.phantom.writer import (
    GENERATOR_VERSION,
    generator_fingerprint,
    make_phantom_dataset,
    phantom_truth,
)

__all__ = [
    "GENERATOR_VERSION",
    "STYLES",
    "LiverPhantom",
    "PatientLatent",
    "PhantomConfig",
    "PhantomPair",
    "PhantomTruth",
    "ScannerStyle",
    "SectorGeometry",
    "bayes_ceiling",
    "colour_lut",
    "generator_fingerprint",
    "get_style",
    "interaction_ceilings",
    "interaction_config",
    "make_phantom_dataset",
    "phantom_ceilings",
    "phantom_truth",
    "sample_cohort",
]
