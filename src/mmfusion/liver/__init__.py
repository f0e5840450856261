"""mmfusion.liver: the liver fibrosis domain, kept apart so the generic layers read as generic.

Everything that knows about livers lives here; :mod:`mmfusion.nn`, :mod:`mmfusion.losses`,
:mod:`mmfusion.metrics` and :mod:`mmfusion.data` are about images, modalities and ordered classes.

- :mod:`~mmfusion.liver.stages`: METAVIR fibrosis stages F0-F4 and how a manifest writes them:
  :data:`~mmfusion.liver.METAVIR`, the liver's :class:`~mmfusion.labels.LabelSpec` (read a liver
  manifest with ``read_manifest(path, labels=METAVIR)``).
- :mod:`~mmfusion.liver.phantom`: the procedural liver phantom, the embedded default data set
  (paired B-mode + SWE frames, the paper's data being private; docs/paper_map.rst).
- :mod:`~mmfusion.liver.cutoffs`: the clinician's baseline, stage from stiffness by published
  2D-SWE cut-offs.
- :mod:`~mmfusion.liver.baseline`: a non-deep baseline, stiffness and texture statistics ->
  logistic regression (loads scikit-learn and OpenCV on first use, like the phantom).

The phantom's names are importable from here (``from mmfusion.liver import make_phantom_dataset``);
they load on first use, so importing the stage vocabulary does not load the phantom.
"""

from __future__ import annotations

from mmfusion._lazy import attach
from mmfusion.liver import presets  # noqa: F401 - registers the liver's models (create_model)
from mmfusion.liver.cutoffs import HERRMANN_2018, SweCutoffs, stage_from_kpa
from mmfusion.liver.stages import METAVIR, NUM_STAGES, STAGE_NAMES, parse_stage, stage_name

_PHANTOM_NAMES = (
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
    "make_phantom_dataset",
    "phantom_truth",
    "sample_cohort",
)

_BASELINE_NAMES = ("FEATURE_NAMES", "LogisticBaseline", "baseline_features", "pair_features")

__all__ = [
    "HERRMANN_2018",
    "METAVIR",
    "NUM_STAGES",
    "STAGE_NAMES",
    "SweCutoffs",
    "parse_stage",
    "stage_from_kpa",
    "stage_name",
    *_PHANTOM_NAMES,
    *_BASELINE_NAMES,
]

__getattr__, __dir__ = attach(
    __name__, {"mmfusion.liver.phantom": _PHANTOM_NAMES, "mmfusion.liver.baseline": _BASELINE_NAMES}
)
