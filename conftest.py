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
