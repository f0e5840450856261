"""``.. example-presets::``: the registry's liver fibrosis presets as a table, read from the code.

The table lists every field of :class:`mmfusion.models.ModelConfig` and
:class:`mmfusion.models.TrainingConfig` with its command-line option and the value in each preset
(``liver_fibrosis_paper``, ``liver_fibrosis_quick``, ``liver_fibrosis_texture``), so the page can never disagree with the code.
"""

from __future__ import annotations

import importlib

from docutils import nodes
from docutils.parsers.rst import Directive


def _value(value: object) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _row(cells: list[nodes.Node]) -> nodes.row:
    row = nodes.row()
    for cell in cells:
        entry = nodes.entry()
        entry += nodes.paragraph("", "", cell)
        row += entry
    return row


class ExamplePresets(Directive):
    has_content = False

    def run(self) -> list[nodes.Node]:
        models = importlib.import_module("mmfusion.models")
        names = ["paper", "quick", "texture"]
        presets = {}
        for name in names:
            preset = models.get_preset(f"liver_fibrosis_{name}")
            presets[name] = {**preset.model.to_dict(), **preset.training.to_dict()}
        fields = list(presets[names[0]])
        table = nodes.table()
        group = nodes.tgroup(cols=1 + len(names))
        table += group
        for width in [3] + [2] * len(names):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        head += _row([nodes.Text("option")] + [nodes.literal(n, n) for n in names])
        group += head
        body = nodes.tbody()
        for field in fields:
            option = "--" + field.replace("_", "-")
            cells: list[nodes.Node] = [nodes.literal(option, option)]
            for name in names:
                text = _value(presets[name][field]) if field in presets[name] else "(default)"
                cells.append(nodes.Text(text))
            body += _row(cells)
        group += body
        return [table]


def setup(app):  # type: ignore[no-untyped-def]
    app.add_directive("example-presets", ExamplePresets)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
