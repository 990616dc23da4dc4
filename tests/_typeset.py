"""Reading a typeset report back: what a reader of its PDF and its HTML page gets.

:func:`check_typeset` asserts, for a PDF written from a :class:`npvae.lab.document.Doc`:
every table cell's text is in the PDF's text, in the table's order (pypdf's extraction);
every character and every image lies inside the page's margins and no character is set
under :data:`MIN_FONT` points (pdfplumber's character boxes); the PDF's outline lists the
document's headings, each section under the title. :func:`check_html` asserts that the
page's table cells are the document's and that it needs nothing but the files beside it.
"""
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pdfplumber
import pypdf

from npvae.lab.doc_pdf import MARGIN
from npvae.lab.doc_text import plain

MIN_FONT = 7.0          # points
SLACK = 0.5             # points of rounding in the boxes


def squeeze(text: str) -> str:
    """``text`` without whitespace: a cell wrapped over lines (or a long word broken
    inside) reads the same."""
    return re.sub(r"\s+", "", text)


def pdf_text(path) -> str:
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(str(path)).pages)


def missing_cells(doc, text: str) -> list[str]:
    """The table cells of ``doc`` not found in ``text``, each looked for after the
    previous cell of its table (a table's cells come in reading order)."""
    flat, missing = squeeze(text), []
    for b in doc.blocks:
        if b[0] != "table":
            continue
        at = 0
        for cell in [c for row in [b[1], *b[2]] for c in row]:
            found = flat.find(squeeze(plain(cell)), at)
            if found < 0:
                missing.append(cell)
            else:
                at = found
    return missing


def outside_margins(path) -> tuple[list[str], list[float]]:
    """(descriptions of characters and images outside the margins, the font sizes
    under :data:`MIN_FONT`)."""
    outside, small = [], []
    with pdfplumber.open(str(path)) as pdf:
        for number, page in enumerate(pdf.pages, 1):
            lo_x, hi_x = MARGIN - SLACK, page.width - MARGIN + SLACK
            lo_y, hi_y = MARGIN - SLACK, page.height - MARGIN + SLACK
            for box in [*page.chars, *page.images]:
                if box["x0"] < lo_x or box["x1"] > hi_x or box["top"] < lo_y or box["bottom"] > hi_y:
                    what = repr(box.get("text", "an image"))
                    outside.append(f"page {number}: {what} at x {box['x0']:.1f}-{box['x1']:.1f}, "
                                   f"y {box['top']:.1f}-{box['bottom']:.1f}")
            small += [c["size"] for c in page.chars if c["size"] < MIN_FONT - 1e-6]
    return outside, small


def outline(path) -> list[tuple[int, str]]:
    """The PDF's bookmarks as [(depth, title)] in order."""
    out = []

    def walk(items, depth):
        for item in items:
            if isinstance(item, list):
                walk(item, depth + 1)
            else:
                out.append((depth, item.title))

    walk(pypdf.PdfReader(str(path)).outline, 0)
    return out


def check_typeset(path, doc) -> str:
    """Assert the above of the PDF ``path`` typeset from ``doc``; returns its text."""
    text = pdf_text(path)
    missing = missing_cells(doc, text)
    assert not missing, f"{len(missing)} table cells not found in {path}: {missing[:5]}"
    outside, small = outside_margins(path)
    assert not outside, f"{len(outside)} marks outside the margins of {path}: {outside[:5]}"
    assert not small, f"characters under {MIN_FONT} pt in {path}: sizes {sorted(set(small))[:5]}"
    headings = [(0 if b[0] == "h1" else 1, plain(b[1])) for b in doc.blocks if b[0] in ("h1", "h2")]
    assert outline(path) == headings
    return text


class _Page(HTMLParser):
    """The tags and the table-cell texts of a page."""

    def __init__(self):
        super().__init__()
        self.tags, self.cells, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.cells.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _page(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def check_html(path: Path, doc) -> "_Page":
    """The page's cells are the document's, its figures and audio files are on disk beside
    it, it loads nothing from elsewhere and runs no script, its contents link to its sections."""
    page = _page(path)
    assert page.cells == [plain(c) for b in doc.blocks if b[0] == "table" for row in [b[1], *b[2]] for c in row]
    srcs = [unquote(a["src"]) for tag, a in page.tags if tag in ("img", "audio")]
    assert srcs and all((path.parent / s).is_file() for s in srcs), srcs
    assert not any(tag == "script" or tag == "link" for tag, _ in page.tags)
    assert not any("//" in v for _, a in page.tags for v in a.values() if v), "a link off the disk"
    ids = {a["id"] for _, a in page.tags if "id" in a}
    links = [a["href"][1:] for tag, a in page.tags if tag == "a"]
    assert len(links) == sum(b[0] == "h2" for b in doc.blocks) and set(links) == ids
    audio = [unquote(a["src"]) for tag, a in page.tags if tag == "audio"]
    assert audio == [p.relative_to(path.parent).as_posix() for b in doc.blocks if b[0] == "audio" for _, p in b[1]]
    return page
