"""The README's code example runs as written (so it cannot rot)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    return blocks


def test_readme_model_api_runs(tmp_path, monkeypatch) -> None:
    """The opening example: the paper's network by name, saved and loaded back."""
    monkeypatch.chdir(tmp_path)  # it writes my_model/
    namespace: dict = {}
    exec(compile(_blocks()[0], "README.md", "exec"), namespace)  # noqa: S102 - our own README
    model = namespace["model"]
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 127.9
    assert {p.name for p in (tmp_path / "my_model").iterdir()} == {"config.json", "model.safetensors"}


def test_readme_python_example_runs():
    block = next(b for b in _blocks() if "MultiModalClassifier(" in b)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    out, loss = namespace["out"], namespace["loss"]
    assert out.probs.shape == (4, 5)
    assert loss.total.grad_fn is not None
    assert set(loss.components) == {"ce_us", "ce_swe", "ce_joint", "consistency"}


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert "make test" in text and "make train" in text
