"""Issue 24, item 12/14 for exports: the temporary file of an export killed before its rename is
removed by the next export; the candidate of an export still running (it holds a lock) is kept."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from mmfusion.files import remove_stale_candidates


def test_a_killed_exports_candidate_is_removed_and_a_live_one_kept(tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    stale = tmp_path / ".model.onnx.k1ll3d.tmp"
    live = tmp_path / ".model.onnx.l1v3.tmp"
    other = tmp_path / ".other.onnx.x.tmp"  # another file's candidate: not ours to judge
    for path in (stale, live, other):
        path.write_bytes(b"partial protobuf")
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a running export holds its candidate
        # flock locks belong to the open file description: a second open in this process
        # contends with it exactly like another process would
        removed = remove_stale_candidates(out)
    finally:
        os.close(fd)
    assert removed == [stale]
    assert not stale.exists() and live.exists() and other.exists()
