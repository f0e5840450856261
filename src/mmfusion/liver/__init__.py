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
- :mod:`~mmfusion.liver.labs`: lab values (age, AST, ALT, platelets) as a third modality, their
  per-stage distributions, exact likelihood and the FIB-4 / APRI scores;
  :mod:`~mmfusion.liver.lab_baseline`: those scores read with their published cut-offs
  (:data:`~mmfusion.liver.FIB4_CUTOFFS`, :data:`~mmfusion.liver.APRI_CUTOFFS`), a third baseline.

The phantom's names are importable from here (``from mmfusion.liver import make_phantom_dataset``);
they load on first use, so importing the stage vocabulary does not load the phantom.
"""

from __future__ import annotations

from mmfusion._lazy import attach
from mmfusion.liver import presets  # noqa: F401 - registers the liver's models (create_model)
from mmfusion.liver.cutoffs import (
    APRI_CIRRHOSIS_CUTOFFS,
    APRI_CUTOFFS,
    FIB4_CUTOFFS,
    HERRMANN_2018,
    ScoreCutoffs,
    SweCutoffs,
    score_band,
    stage_from_kpa,
)
from mmfusion.liver.labs import (
    LAB_COLUMNS,
    LAB_MODEL,
    LabModel,
    apri,
    cohort_labs,
    fib4,
    labs_log_likelihood,
    sample_labs,
)
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
    "interaction_ceilings",
    "interaction_config",
    "make_phantom_dataset",
    "phantom_ceilings",
    "phantom_truth",
    "sample_cohort",
)

_BASELINE_NAMES = ("FEATURE_NAMES", "LogisticBaseline", "baseline_features", "pair_features", "pair_inputs")

_LAB_BASELINE_NAMES = (
    "LabCutoffBaseline",
    "cutoff_readouts",
    "evaluate_lab_baseline",
    "lab_scores",
    "score_aurocs",
)

__all__ = [
    "APRI_CIRRHOSIS_CUTOFFS",
    "APRI_CUTOFFS",
    "FIB4_CUTOFFS",
    "HERRMANN_2018",
    "LAB_COLUMNS",
    "LAB_MODEL",
    "METAVIR",
    "NUM_STAGES",
    "STAGE_NAMES",
    "LabModel",
    "ScoreCutoffs",
    "SweCutoffs",
    "apri",
    "cohort_labs",
    "fib4",
    "labs_log_likelihood",
    "parse_stage",
    "sample_labs",
    "score_band",
    "stage_from_kpa",
    "stage_name",
    *_PHANTOM_NAMES,
    *_BASELINE_NAMES,
    *_LAB_BASELINE_NAMES,
]

__getattr__, __dir__ = attach(
    __name__,
    {
        "mmfusion.liver.phantom": _PHANTOM_NAMES,
        "mmfusion.liver.baseline": _BASELINE_NAMES,
        "mmfusion.liver.lab_baseline": _LAB_BASELINE_NAMES,
    },
)
