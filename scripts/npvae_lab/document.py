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

    # -- PDF -----------------------------------------------------------------
    def pdf(self, path: Path):
        plt = pyplot()
        import matplotlib.image as mpimg
        from matplotlib.backends.backend_pdf import PdfPages

        W, H, M = 8.27, 11.69, 0.7               # A4 in inches, margin
        usable = W - 2 * M
        state = {"fig": None, "y": 0.0, "page": 0}
        pdf = PdfPages(path)

        def new_page():
            if state["fig"] is not None:
                pdf.savefig(state["fig"])
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
            pdf.savefig(state["fig"])
            plt.close(state["fig"])
        pdf.close()
