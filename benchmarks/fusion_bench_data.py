"""The cohorts of the fusion benchmark (issue 28): generated once into a cache, read back.

Per ``rho`` (the share of views with a decoy, ``PhantomConfig.decoy_share``) two kinds of cohort,
each with lab values (``PhantomConfig.labs=True``):

* a training cohort per seed: the paper's size (250 patients, II.B), the phantom's default views
  per patient (4-7, 1,414 pairs for 250 patients), cohort seed = the run's seed;
* one large test cohort: :data:`TEST_PATIENTS` patients of another seed (:data:`TEST_SEED`), two
  views each (generation time), so the standard error of a per-patient accuracy near 0.7 is
  ``sqrt(0.7 * 0.3 / 2000) = 0.010`` (one point) and less per view.

Each (rho, cohort) has its own folder (``make_phantom_dataset`` refuses a folder holding a phantom
of other parameters). The frame size is a setting (:class:`CohortSpec`): the models see 64 px
crops, so the benchmark draws 400 x 300 frames (half the default per side; about twice as fast to
generate: 60 pairs in 6.5 s against 13 s at 800 x 600, 2 workers, shared 2-core CPU) unless told
otherwise.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "TEST_PATIENTS",
    "TEST_SEED",
    "CohortSpec",
    "Cohort",
    "baseline_features",
    "load_cohort",
    "phantom_config",
]

#: Patients of the large test cohort (issue 28: >= 2,000, standard error of accuracy < 1 point).
TEST_PATIENTS = 2000
#: Seed of the test cohort: not one of the training cohorts' seeds (0, 1, 2, ...).
TEST_SEED = 28_000


@dataclass(frozen=True)
class CohortSpec:
    """One cohort to generate.

    Attributes:
        rho: Share of views with a decoy (``PhantomConfig.decoy_share``).
        kind: ``"train"`` or ``"test"``.
        n_patients: Patients.
        seed: Generation seed.
        width: Frame width in pixels.
        height: Frame height in pixels.
        views: ``(min, max)`` views per patient for the test cohort; ``None``: the default.
        weak_texture: The weak-texture preset of
            :func:`~mmfusion.liver.interaction_config` (B-mode alone weaker, so knowing where
            to read SWE is worth more: a joint - late gap of about 5 points per patient at
            ``rho = 1`` against about 2.5 with the default texture).
    """

    rho: float
    kind: str
    n_patients: int
    seed: int
    width: int = 400
    height: int = 300
    views: tuple[int, int] | None = None
    weak_texture: bool = True

    @property
    def folder(self) -> str:
        """The cache sub-folder: ``rho-<rho>/<kind>-seed<seed>-n<patients>-<w>x<h>-<key>``, where
        ``key`` hashes the phantom's configuration and generator version (a phantom changed since
        gets a new folder instead of a refusal)."""
        from mmfusion.liver import generator_fingerprint

        text = json.dumps([phantom_config(self).as_dict(), generator_fingerprint()], sort_keys=True)
        key = hashlib.sha256(text.encode()).hexdigest()[:8]
        return (f"rho-{self.rho:g}/{self.kind}-seed{self.seed}-n{self.n_patients}-"
                f"{self.width}x{self.height}-{key}")


def phantom_config(spec: CohortSpec) -> Any:
    """The :class:`~mmfusion.liver.PhantomConfig` of ``spec``: labs on, void SWE pixels black (so
    no B-mode grey shows inside the colour box), and
    :func:`~mmfusion.liver.interaction_config` with ``decoy_share = rho``."""
    from mmfusion.liver import PhantomConfig, interaction_config

    kwargs: dict[str, Any] = {"labs": True, "void_black": True, "width": spec.width,
                              "height": spec.height}
    if spec.views is not None:
        lo, hi = spec.views
        kwargs.update(views_range=(lo, hi), pairs_per_patient=(lo + hi) / 2)
    return interaction_config(spec.rho, weak_texture=spec.weak_texture,
                              base=PhantomConfig(**kwargs))


@dataclass
class Cohort:
    """A generated cohort, read back.

    Attributes:
        spec: What was generated.
        root: Its folder.
        manifest: The :class:`~mmfusion.data.Manifest` (METAVIR stages; ``labs`` a tabular
            modality of :data:`~mmfusion.liver.labs.LAB_COLUMNS`).
        config: Its ``PhantomConfig``.
    """

    spec: CohortSpec
    root: Path
    manifest: Any
    config: Any

    def lab_values(self) -> dict[str, np.ndarray]:
        """Column -> ``[P]`` lab values per patient (sorted ids; NaN without labs)."""
        from mmfusion.liver.labs import LAB_COLUMNS

        ids, first = np.unique(self.manifest.groups, return_index=True)
        rows = [self.manifest.rows[i] for i in first]
        table = np.array([[np.nan if v is None else v for v in r.tabular["labs"]] for r in rows],
                         dtype=np.float64)
        return {c: table[:, j] for j, c in enumerate(LAB_COLUMNS)}

    def patient_labels(self) -> np.ndarray:
        """``[P]`` stage per patient (sorted ids)."""
        _, first = np.unique(self.manifest.groups, return_index=True)
        return np.asarray(self.manifest.labels)[first]


def load_cohort(spec: CohortSpec, cache: Path, *, workers: int = 2, say: Any = print) -> Cohort:
    """Generate ``spec`` into ``cache / spec.folder`` unless it is there, and read it.

    Raises:
        FileExistsError: The folder holds a phantom of other parameters (from
            ``make_phantom_dataset``).
    """
    from mmfusion.data import read_manifest
    from mmfusion.liver import METAVIR, make_phantom_dataset
    from mmfusion.liver.labs import LAB_COLUMNS

    root = Path(cache) / spec.folder
    config = phantom_config(spec)
    if not (root / "manifest.csv").is_file():
        say(f"generating {spec.kind} cohort rho={spec.rho:g} ({spec.n_patients} patients, seed "
            f"{spec.seed}) into {root}")
    path = make_phantom_dataset(root, spec.n_patients, spec.seed, config=config, workers=workers)
    manifest = read_manifest(path, labels=METAVIR, verify="exists",
                             tabular={"labs": LAB_COLUMNS})
    return Cohort(spec, root, manifest, config)


def baseline_features(cohort: Cohort, *, say: Any = print) -> np.ndarray:
    """``[N, F]`` :func:`mmfusion.liver.pair_features` of every pair (cached in the cohort's
    folder as ``baseline_features.npy``, written atomically); NaN rows where a frame has no
    colour box."""
    from mmfusion import liver
    from mmfusion.files import atomic_write

    path = cohort.root / "baseline_features.npy"
    if path.is_file():
        table = np.load(path)
        if table.shape == (len(cohort.manifest.rows), len(liver.FEATURE_NAMES)):
            return table
    say(f"baseline features of {len(cohort.manifest.rows)} pairs ({cohort.root})")
    rows = []
    for row in cohort.manifest.rows:
        try:
            rows.append(liver.pair_features(**liver.pair_inputs(row, 40.0)))
        except ValueError:
            rows.append(np.full(len(liver.FEATURE_NAMES), np.nan))
    table = np.stack(rows)
    atomic_write(path, lambda handle: np.save(handle, table))
    return table
