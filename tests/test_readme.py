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


def _make_targets() -> dict[str, tuple[list[str], list[str]]]:
    """Makefile target (also ``$(VAR)`` ones) -> (prerequisites, recipe lines)."""
    targets: dict[str, tuple[list[str], list[str]]] = {}
    current: list[str] | None = None
    for line in (README.parent / "Makefile").read_text().splitlines():
        if line.startswith("\t") and current is not None:
            current.append(line.strip())
            continue
        m = re.match(r"^([A-Za-z][\w-]*|\$\(\w+\))\s*:(?!=)\s*(.*)$", line)
        if m:
            current = []
            deps = [d for d in re.split(r"[\s|]+", m.group(2)) if d]
            targets[m.group(1)] = (deps, current)
        elif line.strip() and not line.startswith("#"):
            current = None
    return targets


def _recipe(target: str, targets: dict[str, tuple[list[str], list[str]]]) -> list[str]:
    """The commands ``make target`` runs, prerequisites first (Makefile targets only)."""
    deps, lines = targets[target]
    return [cmd for d in deps if d in targets for cmd in _recipe(d, targets)] + lines


def test_readme_make_commands_do_what_the_readme_says():
    """Every ``make X`` the README shows is a Makefile target, and the two commands of a fresh
    clone run what the README promises: ruff and pytest; the example into runs/liver_fibrosis."""
    text = README.read_text()
    shown = set(re.findall(r"(?:^|`)make ([a-z][\w-]*)", text, flags=re.M))
    targets = _make_targets()
    assert {"test", "train"} <= shown
    assert shown <= set(targets), f"README names make targets the Makefile lacks: {shown - set(targets)}"
    test_cmds = " ; ".join(_recipe("test", targets))
    assert "ruff check" in test_cmds and "pytest" in test_cmds
    assert '-m pip install --quiet -e ".[all]"' in test_cmds  # "installs mmfusion with its extras"
    train_cmds = _recipe("train", targets)
    assert any("-m examples.liver_fibrosis.train" in c and "--out runs/liver_fibrosis" in c
               for c in train_cmds), train_cmds
    assert "into runs/liver_fibrosis" in text
