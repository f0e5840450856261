"""Data-parallel training of the liver fibrosis example on Lightning's DDP (gloo, CPU processes).

One node with two processes (``torchrun --nproc_per_node 2``) and two "nodes" of one process each
(``torchrun --nnodes 2``, rendezvous on 127.0.0.1) must train the same model: same metrics.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.xdist_group("example_ddp"), pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["-m", "examples.liver_fibrosis.train", "--backbone", "test_resnet", "--image-size", "64",
         "--batch-size", "2", "--epochs", "1", "--test-size", "0.5", "--n-bootstrap", "10",
         "--hidden", "16", "--embed-dim", "16", "--preset", "quick", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def manifest(tiny_manifest: Path) -> Path:
    return tiny_manifest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def one_node_two_processes(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("ddp") / "1x2"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           *TRAIN, "--data", str(manifest), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stderr


def test_two_processes_gather_every_test_pair_once(one_node_two_processes: tuple[Path, str]) -> None:
    out, stderr = one_node_two_processes
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test_pairs"] == 10  # gathered from both ranks, each pair once
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and log[0]["pairs"] == 8  # 2 ranks x 2 steps x 2 pairs (5 each, drop_last)
    assert stderr.count("test accuracy") == 1  # only rank 0 reports and writes


def test_two_nodes_of_one_process_match_one_node_of_two(
    one_node_two_processes: tuple[Path, str], manifest: Path, tmp_path: Path
) -> None:
    """``torchrun --nnodes 2`` on localhost (static rendezvous at 127.0.0.1): same metrics."""
    out = tmp_path / "2x1"
    port = _free_port()
    procs = []
    for node in range(2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
               f"--node_rank={node}", "--master_addr=127.0.0.1", f"--master_port={port}",
               *TRAIN, "--data", str(manifest), "--out", str(out)]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
    reference = json.loads((one_node_two_processes[0] / "metrics.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ensemble"] == reference["ensemble"]
    log_a = json.loads((one_node_two_processes[0] / "log.jsonl").read_text().splitlines()[0])
    log_b = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert log_a["loss"] == log_b["loss"] and log_a["pairs"] == log_b["pairs"]
