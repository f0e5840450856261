"""``.. example-presets::``: the liver fibrosis example's presets as a table, read from the code.

The table lists every field of ``examples.liver_fibrosis.config.PRESETS`` with its command-line
option and the value of each preset, so the page can never disagree with the code.
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
        presets = importlib.import_module("examples.liver_fibrosis.config").PRESETS
        names = list(presets)
        fields = [f for f in presets[names[0]] if all(f in presets[n] for n in names)]
        fields += [f for n in names for f in presets[n] if f not in fields]
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
