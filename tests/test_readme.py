"""The README's code example runs as written (so it cannot rot)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - our own README
    out, loss = namespace["out"], namespace["loss"]
    assert out.probs.shape == (4, 5)
    assert loss.total.grad_fn is not None
    assert set(loss.components) == {"ce_us", "ce_swe", "ce_joint", "consistency"}


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert "make test" in text and "make train" in text
