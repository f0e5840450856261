"""Data-parallel training of the liver fibrosis example: 2 CPU processes under torchrun (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmfusion.liver import PhantomConfig, make_phantom_dataset

pytestmark = pytest.mark.xdist_group("example_ddp")

REPO = Path(__file__).resolve().parents[1]


def test_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    """No modality dropout: the placeholders get gradients only via ``placeholders_in_graph``."""
    config = PhantomConfig(width=256, height=192, stage_prevalence=(1, 1, 1, 1, 1),
                           views_range=(2, 2), pairs_per_patient=2.0)
    manifest = make_phantom_dataset(tmp_path / "phantom", n_patients=10, seed=0, config=config,
                                    workers=1)
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "examples.liver_fibrosis.train", "--data", str(manifest), "--out", str(out),
        "--backbone", "test_resnet", "--image-size", "64", "--batch-size", "2", "--epochs", "1",
        "--test-size", "0.5", "--n-bootstrap", "10", "--hidden", "16", "--embed-dim", "16",
        "--preset", "quick", "--device", "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test_pairs"] == 10  # gathered from both ranks, each pair once
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and log[0]["pairs"] == 8  # 2 ranks x 2 steps x 2 pairs (5 each, drop_last)
    assert proc.stderr.count("test accuracy") == 1  # only rank 0 reports and writes
