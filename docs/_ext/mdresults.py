"""``.. md-results:: path.md``: show results files written as Markdown, read at build time.

The benchmark and example scripts write their results as Markdown (``benchmarks/results/*.md``,
``examples/liver_fibrosis/RESULTS.md``). This directive renders such a file inside a page, so the
documentation always shows the latest committed numbers and never a hand-copied one:

- ``#`` headings become rubrics, paragraphs, ``- `` bullet lists and ``> `` quotes (as notes) stay;
- pipe tables become tables;
- inline ```code```, ``**bold**`` and ``[text](url)`` are kept; nothing else is interpreted.

Nodes are built directly (no reStructuredText parsing), so odd characters in a results file
cannot break the ``-W`` build. A file that does not exist yet renders as one paragraph saying the
numbers are still to be measured (``:missing:`` overrides the text). The path is relative to the
page and may be a glob (``../benchmarks/results/throughput_*.md``): every match is shown, sorted.

Options:
    sections: comma-separated prefixes of ``##`` headings to show (default: everything); the
        preamble before the first ``##`` heading is always shown.
    skip-title: leave out the file's ``#`` title.
"""

from __future__ import annotations

import re
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from sphinx.util import logging

logger = logging.getLogger(__name__)

_INLINE = re.compile(r"(`[^`]+`|\*\*[^*]+\*\*|\[[^\]]+\]\([^)]+\))")


def inline(text: str) -> list[nodes.Node]:
    """Text with Markdown code spans, bold and links as docutils nodes."""
    out: list[nodes.Node] = []
    for part in _INLINE.split(text):
        if not part:
            continue
        if part.startswith("`") and part.endswith("`"):
            out.append(nodes.literal(part[1:-1], part[1:-1]))
        elif part.startswith("**") and part.endswith("**"):
            out.append(nodes.strong("", "", *inline(part[2:-2])))
        elif part.startswith("[") and part.endswith(")") and "](" in part:
            label, url = part[1:-1].split("](", 1)
            if url.startswith(("http://", "https://")):
                out.append(nodes.reference(label, label, refuri=url))
            else:
                out.extend(inline(label))
        else:
            out.append(nodes.Text(part))
    return out


def split_row(line: str) -> list[str]:
    """Cells of a ``| a | b |`` row; pipes inside code spans do not split."""
    cells, current, in_code = [], [], False
    for ch in line.strip().strip("|"):
        if ch == "`":
            in_code = not in_code
        if ch == "|" and not in_code:
            cells.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    cells.append("".join(current).strip())
    return cells


def make_table(rows: list[list[str]]) -> nodes.table:
    header, body = rows[0], rows[1:]
    width = max(len(r) for r in rows)
    table = nodes.table(classes=["md-results"])
    group = nodes.tgroup(cols=width)
    table += group
    for _ in range(width):
        group += nodes.colspec(colwidth=1)

    def row_node(cells: list[str]) -> nodes.row:
        row = nodes.row()
        for i in range(width):
            entry = nodes.entry()
            entry += nodes.paragraph("", "", *inline(cells[i] if i < len(cells) else ""))
            row += entry
        return row

    thead = nodes.thead()
    thead += row_node(header)
    group += thead
    tbody = nodes.tbody()
    for cells in body:
        tbody += row_node(cells)
    group += tbody
    return table


def render(text: str, sections: list[str] | None, skip_title: bool) -> list[nodes.Node]:
    """Docutils nodes for a Markdown results file."""
    out: list[nodes.Node] = []
    lines = text.splitlines()
    keep = True  # the preamble before the first "##" heading (title, device, command) is kept
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("#"):
            level = len(stripped) - len(stripped.lstrip("#"))
            title = stripped.lstrip("#").strip()
            if level >= 2 and sections is not None:
                keep = any(title.startswith(s) for s in sections)
            if keep and not (level == 1 and skip_title):
                out.append(nodes.rubric("", "", *inline(title)))
            i += 1
            continue
        if not stripped:
            i += 1
            continue
        block: list[str] = []
        if stripped.startswith("|"):
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append(lines[i])
                i += 1
            rows = [split_row(r) for r in block if not re.fullmatch(r"[\s|:\-]+", r)]
            if keep and rows:
                out.append(make_table(rows))
        elif stripped.startswith(">"):
            while i < len(lines) and lines[i].strip().startswith(">"):
                block.append(lines[i].strip().lstrip(">").strip())
                i += 1
            if keep:
                note = nodes.note()
                note += nodes.paragraph("", "", *inline(" ".join(block)))
                out.append(note)
        elif stripped.startswith("```"):
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                block.append(lines[i])
                i += 1
            i += 1
            if keep:
                code = "\n".join(block)
                out.append(nodes.literal_block(code, code))
        elif stripped.startswith(("- ", "* ")):
            items: list[list[str]] = []
            while (
                i < len(lines)
                and lines[i].strip()
                and not lines[i].strip().startswith(("#", "|", ">", "```"))
            ):
                item = lines[i].strip()
                if item.startswith(("- ", "* ")):
                    items.append([item[2:]])
                else:
                    items[-1].append(item)
                i += 1
            if keep:
                bullets = nodes.bullet_list()
                for item_lines in items:
                    li = nodes.list_item()
                    li += nodes.paragraph("", "", *inline(" ".join(item_lines)))
                    bullets += li
                out.append(bullets)
        else:
            while (
                i < len(lines)
                and lines[i].strip()
                and not lines[i].strip().startswith(("#", "|", ">", "```", "- ", "* "))
            ):
                block.append(lines[i].strip())
                i += 1
            if keep:
                out.append(nodes.paragraph("", "", *inline(" ".join(block))))
    return out


class MarkdownResults(Directive):
    required_arguments = 1
    option_spec = {
        "sections": directives.unchanged,
        "skip-title": directives.flag,
        "missing": directives.unchanged,
    }

    def run(self) -> list[nodes.Node]:
        env = self.state.document.settings.env
        folder = Path(env.doc2path(env.docname)).parent
        pattern = self.arguments[0]
        paths = sorted(p.resolve() for p in folder.glob(pattern) if p.is_file())
        if not paths:
            logger.info("md-results: nothing matches %s yet", folder / pattern)
            text = self.options.get(
                "missing", f"To be measured: {pattern} has not been written yet."
            )
            return [nodes.paragraph("", "", nodes.emphasis(text, text))]
        sections = self.options.get("sections")
        wanted = [s.strip() for s in sections.split(",")] if sections else None
        out: list[nodes.Node] = []
        for path in paths:
            env.note_dependency(str(path))
            out += render(path.read_text(encoding="utf-8"), wanted, "skip-title" in self.options)
        return out


def setup(app):  # type: ignore[no-untyped-def]
    app.add_directive("md-results", MarkdownResults)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
