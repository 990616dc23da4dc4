"""A :class:`~.document.Doc` typeset as an A4 PDF with ReportLab.

Paragraphs flow over pages in a 9.5-point font; tables are real tables whose cells wrap
inside the margins (7.5-point text, the header row repeated on each page they run
onto); figures are embedded at the pixels of their PNG files, scaled to the text width
(:func:`png_image`): grids losslessly in about their PNG bytes, line plots in 256
colours indistinguishable from theirs in under half of them, figures of photographic
colour (spectrograms) as high-quality JPEG in about a third of them; each
heading is an entry of the PDF's outline (its bookmarks), h2 under h1. The fonts
are the DejaVu faces that matplotlib ships, embedded, so a run name beyond Latin-1
prints. Every mark on a page, page numbers included, lies inside :data:`MARGIN`.
"""
from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from pathlib import Path
from xml.sax.saxutils import escape

from ..files.atomic import atomic_path

from .doc_text import is_number, plain, spans

PT_PER_CM = 72 / 2.54
MARGIN = 2.0 * PT_PER_CM             # on every side, in points
BODY, TABLE, CAPTION, FOOTER = 9.5, 7.5, 8.0, 8.0     # font sizes (pt); none under 7
MAX_FIGURE_HEIGHT = 0.45             # of the text frame's height
CELL_PAD = 2.5                       # left and right padding of a table cell (pt)
# A figure of more colours than this is photographic (a spectrogram: ~18,000 colours), whose
# every lossless encoding stays near its PNG's bytes; JPEG stores it in a quarter of them. Line
# plots, whose antialiased edges blend a few colours into ~1,000-3,500, are not for JPEG: it
# would blur their lines and letters and save little.
JPEG_MIN_COLOURS = 8192
# A line plot of more than 256 colours is stored as its closest 256 (median cut, no dither)
# when they stay this close to it (PSNR in dB; the report's plots come out at 46-62 dB): one
# byte a pixel instead of three, 40% of the bytes; the antialiasing is what changes, by at
# most a shade. Below it (many colours spread evenly) the figure stays exact RGB.
QUANTISE_MIN_PSNR = 44.0
# With full-resolution colour (4:4:4): no colour fringes on thin lines. 75 keeps a report of
# a dozen Part II runs under the 2 MB a repository file may take (about 76 KB for the
# 1019x289 example figure, 122 KB at 90), with no artefact visible at its printed size.
JPEG_QUALITY = 75

FONTS = {"sans": "DejaVuSans.ttf", "sans-bold": "DejaVuSans-Bold.ttf", "sans-italic": "DejaVuSans-Oblique.ttf",
         "sans-bolditalic": "DejaVuSans-BoldOblique.ttf", "mono": "DejaVuSansMono.ttf",
         "mono-bold": "DejaVuSansMono-Bold.ttf"}


def _register_fonts() -> None:
    from matplotlib import get_data_path
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    if "sans" in pdfmetrics.getRegisteredFontNames():
        return
    folder = Path(get_data_path()) / "fonts" / "ttf"
    for name, file in FONTS.items():
        pdfmetrics.registerFont(TTFont(name, str(folder / file)))
    sans = {(0, 0): "sans", (1, 0): "sans-bold", (0, 1): "sans-italic", (1, 1): "sans-bolditalic"}
    for (bold, italic), face in sans.items():        # <b> and <i> in a paragraph pick these faces
        addMapping("sans", bold, italic, face)
        addMapping("mono", bold, italic, "mono-bold" if bold else "mono")


def markup(text: str) -> str:
    """``text``'s inline marks (:func:`.document.spans`) as ReportLab paragraph markup."""
    out = []
    for kind, part in spans(text):
        part = escape(part)
        out.append({"bold": f"<b>{part}</b>", "code": f'<font face="mono">{part}</font>'}.get(kind, part))
    return "".join(out)


def _styles() -> dict:
    from reportlab.lib.enums import TA_RIGHT
    from reportlab.lib.styles import ParagraphStyle
    body = ParagraphStyle("body", fontName="sans", fontSize=BODY, leading=BODY * 1.35, spaceAfter=5)
    return {
        "h1": ParagraphStyle("h1", parent=body, fontName="sans-bold", fontSize=16, leading=20, spaceAfter=8),
        "h2": ParagraphStyle("h2", parent=body, fontName="sans-bold", fontSize=12, leading=15, spaceBefore=10,
                             spaceAfter=5, keepWithNext=1),
        "p": body,
        "caption": ParagraphStyle("caption", parent=body, fontName="sans-italic", fontSize=CAPTION,
                                  leading=CAPTION * 1.3, spaceAfter=8),
        "cell": ParagraphStyle("cell", parent=body, fontSize=TABLE, leading=TABLE * 1.25, spaceAfter=0),
        "number": ParagraphStyle("number", parent=body, fontSize=TABLE, leading=TABLE * 1.25, spaceAfter=0,
                                 alignment=TA_RIGHT),
        # the header row is set apart by its shade and rule: in the regular weight, its words fit whole
        "head": ParagraphStyle("head", parent=body, fontSize=TABLE, leading=TABLE * 1.25, spaceAfter=0),
    }


def column_widths(cells: list[list[str]], width: float, size: float, font: str = "sans",
                  head_font: str = "sans") -> list[float]:
    """Widths (pt) of a table's columns (``cells``: the header row, then the body) that
    sum to at most ``width``.

    A column's natural width is that of its longest body cell on one line, or of half its
    header (headers wrap to two lines first). When the natural widths do not fit, each
    column gets at least its longest word, of the body first (a number never breaks)
    and then of the header, and what is left goes to the columns in proportion to the
    rest of their natural width, so the longest cells wrap first. Only when the body's
    words alone do not fit do words break inside."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    def w(text, face=font):
        return stringWidth(text, face, size) + 2 * CELL_PAD + 1

    def longest_word(texts, face=font):
        # a word longer than a quarter of the width breaks inside rather than starve the others
        return min(max(w(word, face) for text in texts for word in (text.split() or [""])), width / 4)

    columns = list(zip(*cells))
    body = [longest_word(col[1:] or [""]) for col in columns]
    head = [max(b, longest_word(col[:1], head_font)) for col, b in zip(columns, body)]
    natural = [max([w(cell) for cell in col[1:]] + [h, w(col[0], head_font) / 2]) for col, h in zip(columns, head)]
    if sum(natural) <= width:
        return natural
    if sum(body) >= width:
        return [width * b / sum(body) for b in body]
    least = head
    if sum(head) > width:                    # header words break, the body's do not
        share = (width - sum(body)) / (sum(head) - sum(body))
        return [b + share * (h - b) for b, h in zip(body, head)]
    spare, extra = width - sum(least), [b - a for a, b in zip(least, natural)]
    return [a + spare * e / sum(extra) for a, e in zip(least, extra)]


def _table(block, styles, width):
    from reportlab.lib import colors
    from reportlab.platypus import Paragraph, Table, TableStyle
    header, rows = block[1], block[2]
    widths = column_widths([[plain(c) for c in r] for r in [header, *rows]], width, TABLE)
    data = [[Paragraph(markup(c), styles["head"]) for c in header]]
    data += [[Paragraph(markup(c), styles["number" if is_number(c) else "cell"]) for c in r] for r in rows]
    t = Table(data, colWidths=widths, repeatRows=1, hAlign="LEFT", spaceBefore=2, spaceAfter=8)
    t.setStyle(TableStyle([
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), CELL_PAD), ("RIGHTPADDING", (0, 0), (-1, -1), CELL_PAD),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
        ("BACKGROUND", (0, 0), (-1, 0), colors.Color(0.9, 0.9, 0.9)),
        ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.black),
        ("LINEBELOW", (0, -1), (-1, -1), 0.6, colors.black),
        ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.Color(0.97, 0.97, 0.97)]),
    ]))
    return t


def png_image(path: Path) -> dict:
    """The PNG file ``path`` as the parts of an 8-bit PDF image: ``width``, ``height``
    (pixels), ``colors`` (components a pixel: 1 or 3), ``palette`` (the RGB bytes of an
    indexed image, else None), ``filter`` (``"FlateDecode"`` or ``"DCTDecode"``) and
    ``data``: for Flate, rows each led by their PNG filter, deflated (a PDF reads them with
    PNG predictors); for DCT, a JPEG file, which a PDF reads as it is.

    ReportLab would store a figure's raw RGB rows deflated without predictors, two to three
    times the PNG's bytes. Here the pixels are kept: a grey image stays grey, one of at most
    256 colours becomes indexed, one of at most :data:`JPEG_MIN_COLOURS` becomes indexed
    in its closest 256 colours when they are within :data:`QUANTISE_MIN_PSNR` of it, else
    RGB; an alpha channel is laid on white, the page's colour. Grey and RGB rows are
    filtered and deflated by Pillow's PNG writer. An image of more colours is stored as a JPEG of
    quality :data:`JPEG_QUALITY`, at its pixels, with no colour subsampling."""
    import numpy as np
    from PIL import Image
    with Image.open(path) as im:
        rgba = im.convert("RGBA")
    rgb = Image.new("RGB", rgba.size, "white")
    rgb.paste(rgba, mask=rgba.getchannel("A"))
    pixels = np.asarray(rgb)
    grey = bool((pixels == pixels[..., :1]).all())
    if not grey and rgb.getcolors(JPEG_MIN_COLOURS) is None:
        buffer = io.BytesIO()
        rgb.save(buffer, "JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=True)
        return {"width": rgb.width, "height": rgb.height, "colors": 3, "palette": None, "filter": "DCTDecode",
                "data": buffer.getvalue()}
    if not grey and rgb.getcolors(256) is None:
        nearest = _closest_256_colours(rgb)
        if _psnr(pixels, nearest) >= QUANTISE_MIN_PSNR:
            pixels = nearest
    if not grey:
        key = (pixels[..., 0].astype(np.uint32) << 16) | (pixels[..., 1].astype(np.uint32) << 8) | pixels[..., 2]
        colours, index = np.unique(key, return_inverse=True)      # sorted: the same file, the same bytes
    if not grey and len(colours) <= 256:
        rows = np.zeros((key.shape[0], key.shape[1] + 1), np.uint8)   # filter 0 (none), then a byte an index
        rows[:, 1:] = index.reshape(key.shape)
        palette = np.stack([colours >> 16, colours >> 8, colours], axis=1).astype(np.uint8).tobytes()
        return {"width": key.shape[1], "height": key.shape[0], "colors": 1, "palette": palette,
                "filter": "FlateDecode", "data": zlib.compress(rows.tobytes(), 9)}
    buffer = io.BytesIO()
    (Image.fromarray(np.ascontiguousarray(pixels[..., 0]), "L") if grey else rgb).save(buffer, "PNG", optimize=True)
    png, at, data = buffer.getvalue(), 8, []
    while at < len(png):                    # the chunks: IHDR first, then the IDATs
        length, kind = struct.unpack(">I4s", png[at:at + 8])
        if kind == b"IDAT":
            data.append(png[at + 8:at + 8 + length])
        at += 12 + length
    width, height, bits, _, _, _, interlace = struct.unpack(">IIBBBBB", png[16:29])
    if bits != 8 or interlace:
        raise ValueError(f"{path}: Pillow wrote {bits}-bit or interlaced rows; an 8-bit plain PNG was expected")
    return {"width": width, "height": height, "colors": 1 if grey else 3, "palette": None, "filter": "FlateDecode",
            "data": b"".join(data)}


def _closest_256_colours(rgb):
    """An RGB image (Pillow) in 256 colours chosen by median cut, no dithering (a dither
    would speckle the flat background): (H, W, 3) uint8."""
    import numpy as np
    from PIL import Image
    return np.asarray(rgb.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).convert("RGB"))


def _psnr(a, b) -> float:
    """PSNR (dB) of 8-bit pixels ``b`` against ``a``; inf when equal."""
    import numpy as np
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255 ** 2 / mse))


def _image_xobject(image: dict, name: str):
    """:func:`png_image`'s parts as a ReportLab PDF image object."""
    from reportlab.pdfbase.pdfdoc import PDFArray, PDFDictionary, PDFImageXObject, PDFName, PDFObject, PDFStream

    class Hex(PDFObject):                   # an indexed colour space's table, as a hexadecimal string
        def format(self, document):
            return b"<" + image["palette"].hex().encode() + b">"

    class XObject(PDFImageXObject):
        def format(self, document):
            space = PDFName({1: "DeviceGray", 3: "DeviceRGB"}[image["colors"]])
            if image["palette"] is not None:
                space = PDFArray([PDFName("Indexed"), PDFName("DeviceRGB"), len(image["palette"]) // 3 - 1, Hex()])
            entries = {"Type": PDFName("XObject"), "Subtype": PDFName("Image"), "Width": image["width"],
                       "Height": image["height"], "BitsPerComponent": 8, "ColorSpace": space,
                       "Filter": PDFName(image["filter"])}
            if image["filter"] == "FlateDecode":
                entries["DecodeParms"] = PDFDictionary({"Predictor": 15, "Colors": image["colors"],
                                                        "BitsPerComponent": 8, "Columns": image["width"]})
            return PDFStream(PDFDictionary(entries), image["data"]).format(document)

    xobject = XObject(name)
    xobject.width, xobject.height = image["width"], image["height"]
    return xobject


def _png_flowable():
    from reportlab.platypus import Flowable

    class PNGFigure(Flowable):
        """A PNG file drawn ``width`` x ``height`` points, stored once per document however
        often it is drawn."""

        def __init__(self, path: Path, width: float, height: float):
            super().__init__()
            self.path, self.width, self.height, self.hAlign = Path(path), width, height, "LEFT"

        def wrap(self, available_width, available_height):
            return self.width, self.height

        def draw(self):
            # what Canvas.drawImage does, with an image object of our own
            canvas, doc = self.canv, self.canv._doc
            content = self.path.read_bytes()
            name = "png" + hashlib.sha256(content).hexdigest()[:32]
            key = doc.getXObjectName(name)
            if key not in doc.idToObject:
                doc.addForm(name, _image_xobject(png_image(self.path), name))
            canvas._currentPageHasImages = 1
            canvas.saveState()
            canvas.scale(self.width, self.height)
            canvas._code.append(f"/{key} Do")
            canvas.restoreState()
            canvas._formsinuse.append(name)

    return PNGFigure


def _figure(block, styles, width, height):
    from PIL import Image
    from reportlab.platypus import KeepTogether, Paragraph
    path, caption = block[1], block[2]
    with Image.open(path) as im:
        px_w, px_h = im.size
    w = width
    h = w * px_h / px_w
    if h > MAX_FIGURE_HEIGHT * height:
        h = MAX_FIGURE_HEIGHT * height
        w = h * px_w / px_h
    return KeepTogether([_png_flowable()(path, w, h), Paragraph(markup(caption), styles["caption"])])


def _audio(block, styles, base: Path):
    from reportlab.platypus import Paragraph
    links = "; ".join(f'<a href="{escape(_relative(p, base))}" color="blue">{escape(label)}</a>'
                      for label, p in block[1])
    return Paragraph(f"Audio ({escape(block[2])}; players in report.html): {links}.", styles["caption"])


def _relative(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def write_pdf(doc, path: Path, base: Path) -> Path:
    """Typeset ``doc`` (a :class:`~.document.Doc`) into the PDF file ``path``; links to
    audio files are relative to ``base``."""
    from reportlab.lib.pagesizes import A4
    from reportlab.platypus import BaseDocTemplate, Frame, PageTemplate, Paragraph

    _register_fonts()
    styles = _styles()
    page_w, page_h = A4
    frame_w, frame_h = page_w - 2 * MARGIN, page_h - 2 * MARGIN - 2 * FOOTER

    class Template(BaseDocTemplate):
        def beforeDocument(self):
            self.canv.showOutline()             # the viewer opens with the bookmarks shown

        def afterFlowable(self, flowable):
            level = getattr(flowable, "outline_level", None)
            if level is None:
                return
            level = min(level, self.outline_depth + 1)       # an h2 before any h1 goes to the top
            self.outline_depth = level
            key = f"heading-{self.outline_count}"
            self.outline_count += 1
            self.canv.bookmarkPage(key)
            self.canv.addOutlineEntry(flowable.getPlainText(), key, level=level, closed=False)

    def footer(canvas, template):
        canvas.saveState()
        canvas.setFont("sans", FOOTER)
        canvas.setFillGray(0.4)
        # the baseline sits the font's descent above the margin, so the digits end inside it
        canvas.drawCentredString(page_w / 2, MARGIN + 0.3 * FOOTER, str(canvas.getPageNumber()))
        canvas.restoreState()

    title = next((b[1] for b in doc.blocks if b[0] == "h1"), "report")
    template = Template(str(path), pagesize=A4, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=MARGIN,
                        bottomMargin=MARGIN, title=title, author="npvae report",
                        initialFontName="sans", initialFontSize=BODY,   # every font embedded
                        invariant=1)        # no date or random id: the same document gives the same bytes
    template.outline_depth, template.outline_count = -1, 0
    template.addPageTemplates([PageTemplate("page", [Frame(MARGIN, MARGIN + 2 * FOOTER, frame_w, frame_h,
                                                           leftPadding=0, rightPadding=0, topPadding=0,
                                                           bottomPadding=0)], onPage=footer)])
    story = []
    for b in doc.blocks:
        if b[0] in ("h1", "h2"):
            heading = Paragraph(markup(b[1]), styles[b[0]])
            heading.outline_level = 0 if b[0] == "h1" else 1
            story.append(heading)
        elif b[0] == "p":
            story.append(Paragraph(markup(b[1]), styles["p"]))
        elif b[0] == "table":
            story.append(_table(b, styles, frame_w))
        elif b[0] == "img":
            story.append(_figure(b, styles, frame_w, frame_h))
        elif b[0] == "audio":
            story.append(_audio(b, styles, base))
        else:
            raise ValueError(f"unknown block {b[0]!r}")
    with atomic_path(path, ".pdf") as tmp:
        template.filename = str(tmp)
        template.build(story)
    return Path(path)


__all__ = ["JPEG_MIN_COLOURS", "JPEG_QUALITY", "MARGIN", "QUANTISE_MIN_PSNR", "column_widths", "markup", "png_image", "write_pdf"]
