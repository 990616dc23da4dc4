"""A small document model for the report: headings, paragraphs, tables and images that
become both Markdown (:meth:`Doc.markdown`) and A4 PDF pages drawn with matplotlib's PDF
backend (:meth:`Doc.pdf`: text that flows over pages, monospace tables, scaled figures).
"""
from __future__ import annotations

import textwrap
from pathlib import Path

from npvae.plotting import pyplot


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

    # -- PDF -----------------------------------------------------------------
    def pdf(self, path: Path):
        plt = pyplot()
        import matplotlib.image as mpimg
        from matplotlib.backends.backend_pdf import PdfPages

        W, H, M = 8.27, 11.69, 0.7               # A4 in inches, margin
        DPI = 80                                 # figures are resampled to this: a PDF of a few MB
        usable = W - 2 * M
        state = {"fig": None, "y": 0.0, "page": 0}
        pdf = PdfPages(path)

        def new_page():
            if state["fig"] is not None:
                pdf.savefig(state["fig"], dpi=DPI)
                plt.close(state["fig"])
            state["fig"] = plt.figure(figsize=(W, H))
            state["page"] += 1
            state["fig"].text(0.5, 0.3 / H, str(state["page"]), ha="center", fontsize=8, color="0.4")
            state["y"] = H - M

        def need(height):
            if state["fig"] is None or state["y"] - height < M:
                new_page()

        def text_lines(lines, size, family="sans-serif", weight="normal", gap=0.06):
            lh = size / 72 * 1.35
            for line in lines:
                need(lh)
                state["fig"].text(M / W, (state["y"] - lh) / H, line, fontsize=size, family=family,
                                  weight=weight, va="bottom")
                state["y"] -= lh
            state["y"] -= gap

        for b in self.blocks:
            if b[0] == "h1":
                need(0.9)
                text_lines(textwrap.wrap(b[1], 60), 15, weight="bold", gap=0.15)
            elif b[0] == "h2":
                need(0.8)
                text_lines(textwrap.wrap(b[1], 80), 11.5, weight="bold", gap=0.08)
            elif b[0] == "p":
                text_lines(textwrap.wrap(b[1].replace("**", "").replace("`", ""), 105), 8.5, gap=0.1)
            elif b[0] == "table":
                header, rows = b[1], b[2]
                cells = [header] + rows
                widths = [min(46, max(len(r[i]) for r in cells)) for i in range(len(header))]
                fmt = lambda r: "  ".join((c if len(c) <= w else c[:w - 1] + "~").ljust(w)
                                          for c, w in zip(r, widths))
                lines = [fmt(header), "-" * len(fmt(header))] + [fmt(r) for r in rows]
                size = max(4.5, min(7.5, usable * 72 / (0.6 * max(len(s) for s in lines))))
                text_lines(lines, size, family="monospace", gap=0.15)
            elif b[0] == "img":
                img = mpimg.imread(b[1])
                h, w = img.shape[:2]
                width = usable
                height = width * h / w
                if height > 0.42 * H:
                    height = 0.42 * H
                    width = height * w / h
                need(height + 0.35)
                ax = state["fig"].add_axes([M / W, (state["y"] - height) / H, width / W, height / H])
                ax.imshow(img)
                ax.axis("off")
                state["y"] -= height + 0.05
                text_lines(textwrap.wrap(b[2], 110), 7.5, weight="normal", gap=0.15)
        if state["fig"] is not None:
            pdf.savefig(state["fig"], dpi=DPI)
            plt.close(state["fig"])
        pdf.close()


def _cells(line: str) -> list[str]:
    """The cells of a Markdown table row ``| a | b |``."""
    if not line.endswith(" |"):
        raise ValueError(f"not a table row: {line[:60]!r}")
    return line[2:-2].split(" | ")
