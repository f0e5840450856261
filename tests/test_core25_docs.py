"""Issue 25, docs: README's "Build your own fusion model" registers a fusion and uses it; the
extending page is reachable and includes its snippets (``tests/test_docs.py`` runs them).

The README block is run here as written (in a temporary folder it may write to); the fusion it
registers is forgotten after its test (``tests/conftest.py``, checked here in a pytest session of
its own), so that no other test sees a fusion name it did not register.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SNIPPETS = ("extend_fusion.py", "extend_encoder.py", "extend_domain.py")


def _readme_block(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"expected one README python block with {marker!r}, got {len(found)}"
    return found[0]


def test_readme_registers_a_fusion_and_builds_saves_and_loads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from mmfusion.models import list_fusions

    monkeypatch.chdir(tmp_path)  # it writes my_fusion_model/
    namespace: dict = {}
    exec(compile(_readme_block("@register_fusion("), "README.md", "exec"), namespace)  # noqa: S102
    assert "mean_of_present" in list_fusions()
    model, loaded, batch = namespace["model"], namespace["loaded"], namespace["batch"]
    assert type(model.fusion).__name__ == "MeanOfPresent" and type(loaded.fusion) is type(model.fusion)
    assert model.fusion.modalities == ("us", "labs") and model.fusion.out_features == 64
    assert type(model.encoders["labs"]).__name__ == "TabularEncoder"
    saved = json.loads((tmp_path / "my_fusion_model" / "config.json").read_text())
    assert saved["model"]["fusion"] == "mean_of_present"
    assert saved["model"]["encoders"]["labs"]["name"] == "tabular"
    probs = namespace["probs"]
    assert probs.shape == (2, 3) and torch.isfinite(probs).all()
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2))
    absent = {"labs": torch.tensor([True, False])}
    with torch.no_grad():
        assert torch.equal(loaded(batch).probs, model(batch).probs)
        assert torch.equal(loaded(batch, absent).probs, model(batch, absent).probs)
        # by hand: the fused vector is the mean of the present modalities' vectors
        maps = {m: model.encoders[m](batch[m]) for m in ("us", "labs")}
        out = model.fusion(maps, absent)
    us, labs = out.features["us"], out.features["labs"]
    torch.testing.assert_close(out.fused[0], (us[0] + labs[0]) / 2)
    torch.testing.assert_close(out.fused[1], us[1])  # its labs flagged absent


_REGISTERS = """
import runpy
from mmfusion.nn import registry


def test_a_script_registers_a_fusion(tmp_path):
    script = tmp_path / "user.py"
    script.write_text(
        "from torch import nn\\n"
        "from mmfusion.nn import register_fusion\\n"
        "@register_fusion('scripted')\\n"
        "class Scripted(nn.Module):\\n"
        "    pass\\n"
    )
    runpy.run_path(str(script), run_name="__main__")
    registry.get_fusion("attention")  # imports the built-ins: registered during this test
    exec("@registry.register_encoder('execed')\\nclass Execed:\\n    pass", {"registry": registry})
    assert {"scripted", "execed"} <= set(registry._FUSIONS.entries) | set(registry._ENCODERS.entries)


def test_the_next_test_does_not_see_them():
    assert "scripted" not in registry._FUSIONS.entries
    assert "execed" not in registry._ENCODERS.entries
    assert {"attention", "late"} <= set(registry._FUSIONS.entries)  # the built-ins stay
"""


@pytest.mark.parametrize("with_conftest", [True, False])
def test_a_registration_by_a_script_does_not_outlive_its_test(
    tmp_path: Path, with_conftest: bool
) -> None:
    """A fresh pytest session: two tests in order, with and without ``tests/conftest.py``."""
    (tmp_path / "test_order.py").write_text(_REGISTERS, encoding="utf-8")
    if with_conftest:
        shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "-o", "addopts=", "--rootdir", str(tmp_path), str(tmp_path / "test_order.py")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    if with_conftest:
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert "2 passed" in proc.stdout
    else:  # the check is not vacuous: without the fixture the names stay registered
        assert "1 failed, 1 passed" in proc.stdout, proc.stdout[-3000:]
        assert "test_the_next_test_does_not_see_them" in proc.stdout


def test_the_extending_page_is_in_the_toctree_and_includes_its_snippets() -> None:
    index = (DOCS / "index.rst").read_text(encoding="utf-8")
    toctree = index.split(".. toctree::")[1]
    assert re.search(r"^   extending$", toctree, flags=re.M)
    page = (DOCS / "extending.rst").read_text(encoding="utf-8")
    for snippet in SNIPPETS:
        assert (DOCS / "snippets" / snippet).is_file()
        assert f".. literalinclude:: snippets/{snippet}" in page
    for name in ("register_fusion", "register_encoder", "FeatureSpec", "LabelSpec",
                 "register_model", "mmfusion.plugins"):
        assert name in page, name


def test_the_domain_snippet_does_not_use_the_liver() -> None:
    """The second domain is built without the liver package (by import or by name)."""
    for snippet in SNIPPETS:
        source = (DOCS / "snippets" / snippet).read_text(encoding="utf-8")
        assert "liver" not in source, snippet
