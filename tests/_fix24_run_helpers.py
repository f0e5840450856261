"""What the issue-24 run-folder tests share: the tiny command line and the tiny phantom."""

from __future__ import annotations

from pathlib import Path

import pytest

#: The example's options for a run of seconds on a 2-core CPU.
TINY = ["--backbone", "test_resnet", "--image-size", "32", "--batch-size", "4", "--epochs", "1",
        "--test-size", "0.5", "--n-bootstrap", "0", "--hidden", "16", "--embed-dim", "16",
        "--preset", "quick", "--device", "cpu", "--workers", "0"]


def tiny_phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 phantom patients, one small view each; returns the manifest's path."""
    from mmfusion.liver import PhantomConfig, make_phantom_dataset

    config = PhantomConfig(width=128, height=96, stage_prevalence=(1, 1, 1, 1, 1),
                           views_range=(1, 1), pairs_per_patient=1.0)
    return make_phantom_dataset(tmp_path_factory.mktemp("fix24_phantom"), n_patients=10, seed=0,
                                config=config, workers=1)
