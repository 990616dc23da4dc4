"""A small document model for the report: headings, paragraphs, tables, figures and
audio clips, written as Markdown (:meth:`Doc.markdown`, read back by
:meth:`Doc.from_markdown`), as a typeset A4 PDF (:meth:`Doc.pdf`, :mod:`.doc_pdf`) and as
an HTML page (:meth:`Doc.html`, :mod:`.doc_html`).

Blocks are tuples: ``("h1", text)``, ``("h2", text)``, ``("p", text)``,
``("table", header, rows)``, ``("img", path, caption)`` and
``("audio", [(label, path), ...], caption)``. Text may hold two inline marks, ``**bold**``
and backquoted code (:func:`spans`).
"""
from __future__ import annotations

import re
from pathlib import Path


class Doc:
    """A list of blocks that become both Markdown and PDF pages."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def h1(self, text):
        self.blocks.append(("h1", text))

    def h2(self, text):
        self.blocks.append(("h2", text))

    def p(self, text):
        self.blocks.append(("p", text))

    def table(self, header, rows):
        self.blocks.append(("table", list(header), [list(map(str, r)) for r in rows]))

    def image(self, path, caption):
        self.blocks.append(("img", Path(path), caption))

    def audio(self, clips, caption):
        """Audio players: ``clips`` [(label, path of a WAV file)], one caption for all."""
        clips = [(str(label), Path(path)) for label, path in clips]
        for label, _ in clips:
            if "]" in label or "[" in label:
                raise ValueError(f"an audio label may not hold brackets: {label!r}")
        self.blocks.append(("audio", clips, caption))

    # -- Markdown ------------------------------------------------------------
    def markdown(self, base: Path) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h1":
                out.append(f"# {b[1]}\n")
            elif b[0] == "h2":
                out.append(f"## {b[1]}\n")
            elif b[0] == "p":
                out.append(b[1] + "\n")
            elif b[0] == "table":
                out.append("| " + " | ".join(b[1]) + " |\n|" + "---|" * len(b[1]))
                out.extend("| " + " | ".join(r) + " |" for r in b[2])
                out.append("")
            elif b[0] == "img":
                out.append(f"![{b[2]}]({b[1].relative_to(base).as_posix()})\n\n*{b[2]}*\n")
            elif b[0] == "audio":
                links = ", ".join(f"[{label}]({path.relative_to(base).as_posix()})" for label, path in b[1])
                out.append(f"{AUDIO}{links}\n\n*{b[2]}*\n")
        return "\n".join(out)

    @classmethod
    def from_markdown(cls, text: str, base: Path) -> "Doc":
        """The blocks of Markdown that :meth:`markdown` wrote (image paths relative to
        ``base``); raises ValueError on anything else."""
        doc, lines, i = cls(), text.split("\n"), 0
        while i < len(lines):
            line = lines[i]
            if not line:
                i += 1
            elif line.startswith("# "):
                doc.h1(line[2:])
                i += 1
            elif line.startswith("## "):
                doc.h2(line[3:])
                i += 1
            elif line.startswith("| "):
                header = _cells(line)
                if i + 1 >= len(lines) or lines[i + 1] != "|" + "---|" * len(header):
                    raise ValueError(f"line {i + 1}: a table row without the header rule under it")
                rows, i = [], i + 2
                while i < len(lines) and lines[i].startswith("| "):
                    rows.append(_cells(lines[i]))
                    if len(rows[-1]) != len(header):
                        raise ValueError(f"line {i + 1}: {len(rows[-1])} cells under a header of {len(header)}")
                    i += 1
                doc.table(header, rows)
            elif line.startswith("!["):
                caption, _, rest = line[2:].partition("](")
                if not rest.endswith(")") or lines[i + 2: i + 3] != [f"*{caption}*"]:
                    raise ValueError(f"line {i + 1}: an image not written by Doc.markdown")
                doc.image(base / rest[:-1], caption)
                i += 3
            elif line.startswith(AUDIO + "["):
                clips = LINK.findall(line)
                caption = lines[i + 2][1:-1] if i + 2 < len(lines) else ""
                if (", ".join(f"[{a}]({b})" for a, b in clips) != line[len(AUDIO):]
                        or lines[i + 2: i + 3] != [f"*{caption}*"] or not caption):
                    raise ValueError(f"line {i + 1}: audio clips not written by Doc.markdown")
                doc.audio([(label, base / path) for label, path in clips], caption)
                i += 3
            else:
                doc.p(line)
                i += 1
        return doc

    def sections(self) -> list[tuple[str | None, list[tuple]]]:
        """The blocks cut at each h2: [(None, blocks before the first), (title, blocks
        from its h2 on), ...]."""
        out = [(None, [])]
        for b in self.blocks:
            if b[0] == "h2":
                out.append((b[1], []))
            out[-1][1].append(b)
        return out

    # -- PDF and HTML ----------------------------------------------------------
    def pdf(self, path: Path, base: Path):
        """Write the document as an A4 PDF (:mod:`.doc_pdf`); paths relative to ``base``
        become the PDF's links."""
        from .doc_pdf import write_pdf
        return write_pdf(self, Path(path), Path(base))

    def html(self, path: Path, base: Path):
        """Write the document as one HTML page that links its figures and audio by paths
        relative to ``base`` (the page's folder): it opens from disk, with no network."""
        from .doc_html import write_html
        return write_html(self, Path(path), Path(base))


LINK = re.compile(r"\[([^\]]*)\]\(([^)]*)\)")
AUDIO = "Listen: "           # the start of an audio block's line in Markdown


def _cells(line: str) -> list[str]:
    """The cells of a Markdown table row ``| a | b |``."""
    if not line.endswith(" |"):
        raise ValueError(f"not a table row: {line[:60]!r}")
    return line[2:-2].split(" | ")
