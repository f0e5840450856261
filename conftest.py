"""Repository-wide pytest setup: offline hub, small thread pools, doctest namespace."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace: dict) -> None:
    """Make ``torch`` available in every doctest and seed it for reproducible examples."""
    torch.manual_seed(0)
    doctest_namespace["torch"] = torch


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - a Path
    """A 10-patient phantom (2 per stage, 2 views of 256 x 192 px each): every stage on both sides
    of a 50/50 patient split. Generated once per test process."""
    from mmfusion.liver import PhantomConfig, make_phantom_dataset

    config = PhantomConfig(width=256, height=192, stage_prevalence=(1, 1, 1, 1, 1),
                           views_range=(2, 2), pairs_per_patient=2.0)
    return make_phantom_dataset(tmp_path_factory.mktemp("tiny_phantom"), n_patients=10, seed=0,
                                config=config, workers=1)
