"""A :class:`~.document.Doc` as one HTML page.

The page holds its style sheet and no script; it links its figures and audio files by
paths relative to its own folder, so it opens from disk with no server and no network.
A list of the sections under the introduction links to each h2; every audio clip is a
player.
"""
from __future__ import annotations

import os
import re
from html import escape
from pathlib import Path
from urllib.parse import quote

from ..files.atomic import atomic_path

from .doc_text import is_number, plain, spans

STYLE = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; line-height: 1.45; color: #222; }
h1 { font-size: 1.7rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ccc; }
nav ol { columns: 2; font-size: 0.9rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.85rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.2rem 0.45rem; text-align: left; vertical-align: top; }
th { background: #eee; border-bottom: 2px solid #444; }
td.number { text-align: right; white-space: nowrap; }
.table { overflow-x: auto; }
figure { margin: 0.5rem 0 1.2rem; } figure img { max-width: 100%; height: auto; }
figcaption { font-style: italic; font-size: 0.88rem; color: #444; }
.clips { display: flex; flex-wrap: wrap; gap: 0.4rem 1.2rem; }
.clip { display: flex; flex-direction: column; font-size: 0.85rem; }
code { font-family: "DejaVu Sans Mono", monospace; font-size: 0.88em; background: #f4f4f4; }
"""


def inline(text: str) -> str:
    """``text``'s inline marks (:func:`.document.spans`) as HTML."""
    return "".join({"bold": f"<strong>{escape(t)}</strong>", "code": f"<code>{escape(t)}</code>"}
                   .get(kind, escape(t)) for kind, t in spans(text))


def anchor(title: str, taken: set) -> str:
    """A unique id for the heading ``title``: its words in lower case, joined by hyphens."""
    base = re.sub(r"[^a-z0-9]+", "-", plain(title).lower()).strip("-") or "section"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def _src(path: Path, base: Path) -> str:
    return escape(quote(Path(os.path.relpath(path, base)).as_posix()), quote=True)


def render(doc, base: Path) -> str:
    """The page of ``doc`` as text; figure and audio paths relative to ``base``."""
    title = next((plain(b[1]) for b in doc.blocks if b[0] == "h1"), "report")
    taken: set = set()
    ids = {i: anchor(b[1], taken) for i, b in enumerate(doc.blocks) if b[0] == "h2"}
    body = []
    for i, b in enumerate(doc.blocks):
        if b[0] == "h1":
            body.append(f"<h1>{inline(b[1])}</h1>")
        elif b[0] == "h2":
            if i == min(ids):                    # the contents, under the introduction
                body.append("<nav><ol>" + "".join(f'<li><a href="#{ids[j]}">{inline(doc.blocks[j][1])}</a></li>'
                                                  for j in ids) + "</ol></nav>")
            body.append(f'<h2 id="{ids[i]}">{inline(b[1])}</h2>')
        elif b[0] == "p":
            body.append(f"<p>{inline(b[1])}</p>")
        elif b[0] == "table":
            head = "".join(f"<th>{inline(c)}</th>" for c in b[1])
            rows = "".join("<tr>" + "".join(f'<td class="number">{inline(c)}</td>' if is_number(c)
                                            else f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in b[2])
            body.append(f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody>'
                        "</table></div>")
        elif b[0] == "img":
            body.append(f'<figure><img src="{_src(b[1], base)}" alt="{escape(plain(b[2]))}">'
                        f"<figcaption>{inline(b[2])}</figcaption></figure>")
        elif b[0] == "audio":
            clips = "".join(f'<div class="clip"><span>{escape(label)}</span>'
                            f'<audio controls preload="metadata" src="{_src(p, base)}"></audio></div>'
                            for label, p in b[1])
            body.append(f'<figure class="audio"><div class="clips">{clips}</div>'
                        f"<figcaption>{inline(b[2])}</figcaption></figure>")
        else:
            raise ValueError(f"unknown block {b[0]!r}")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def write_html(doc, path: Path, base: Path) -> Path:
    """Write the page of ``doc`` to ``path`` (atomically); links relative to ``base``."""
    with atomic_path(path, ".html") as tmp:
        Path(tmp).write_text(render(doc, base), encoding="utf-8")
    return Path(path)


__all__ = ["anchor", "inline", "render", "write_html"]
