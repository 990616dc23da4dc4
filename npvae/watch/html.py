"""The pieces of npvae's HTML pages: one style sheet, headings, tables, images and audio
players, each a string; :func:`write_page` puts them in a document and writes it
atomically.

A page opens from disk with no server and no network: it has no script, and every
image and sound it shows is a file beside it, named by a relative URL (:func:`link`).
"""
from __future__ import annotations

import html
import os
import re
from pathlib import Path
from urllib.parse import quote

import numpy as np

from ..files.atomic import atomic_write_text

STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 72em; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1em; margin-bottom: 0.3em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #f2f2f2; } td.text, th.text { text-align: left; }
figure { margin: 0.6em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; }
.players { display: flex; flex-wrap: wrap; gap: 0.6em 1.5em; }
.player { font-size: 0.85em; } .player audio { display: block; width: 18em; }
.row { display: flex; flex-wrap: wrap; align-items: center; gap: 0 1.5em; }
.note { color: #555; font-size: 0.9em; } .wide { overflow-x: auto; }
details { margin: 0.5em 0; } summary { cursor: pointer; }
"""


def slug(label: str) -> str:
    """``label`` as a file or tag name: lower case, runs of other characters as ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", str(label).lower()).strip("_") or "item"


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def link(path, folder) -> str:
    """The relative URL of file ``path`` from a page in ``folder``."""
    rel = os.path.relpath(Path(path).resolve(), Path(folder).resolve())
    return quote(Path(rel).as_posix())


def heading(text: str, level: int = 2) -> str:
    return f"<h{level}>{esc(text)}</h{level}>"


def paragraph(text: str, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<p{attr}>{esc(text)}</p>"


def image(path, folder, caption: str = "", alt: str = "") -> str:
    """A figure: the PNG ``path`` (shown from a page in ``folder``) and its caption."""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{link(path, folder)}" alt="{esc(alt or caption)}">{cap}</figure>'


def audio(path, folder, label: str) -> str:
    """A labelled player of sound file ``path``."""
    return (f'<div class="player">{esc(label)}<audio controls preload="metadata" '
            f'src="{link(path, folder)}"></audio></div>')


def players(items) -> str:
    """A row of players; ``items``: the strings of :func:`audio`."""
    return f'<div class="players">{"".join(items)}</div>'


def row(parts) -> str:
    """``parts`` side by side (wrapping on a narrow window)."""
    return f'<div class="row">{"".join(parts)}</div>'


def number(value) -> str:
    """A number as a table shows it: 4 significant digits, whole numbers as they are."""
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return str(value)


def table(header, rows, text_columns: int = 1) -> str:
    """A table; the first ``text_columns`` columns are left-aligned text, the rest numbers."""
    def cell(tag, i, v):
        cls = ' class="text"' if i < text_columns else ""
        return f"<{tag}{cls}>{esc(number(v))}</{tag}>"
    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def details(summary: str, content: str, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{content}</details>"


def document(title: str, parts) -> str:
    """A whole HTML document: ``title`` as its title and first heading, then ``parts``."""
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{esc(title)}</h1>\n"
            f"{body}\n</body>\n</html>\n")


def write_page(path, title: str, parts) -> Path:
    """Write :func:`document` to ``path`` atomically (a browser never sees half a page)."""
    return atomic_write_text(path, document(title, parts))


__all__ = ["slug", "esc", "link", "heading", "paragraph", "image", "audio", "players", "row", "number", "table",
           "details", "document", "write_page"]
