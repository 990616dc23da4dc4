"""The inline marks of the report's text (bold, code) and its numbers, shared by the
document model (:mod:`.document`) and its typesetters (:mod:`.doc_pdf`, :mod:`.doc_html`)."""
from __future__ import annotations

import re

NUMBER = re.compile(r"^[+-]?(\d[\d,]*(\.\d+)?|\.\d+)( / [+-]?\d+(\.\d+)?)?( dB)?$")
INLINE = re.compile(r"(\*\*[^*]+\*\*|`[^`]+`)")


def spans(text: str) -> list[tuple[str, str]]:
    """The inline marks of a paragraph or cell as [(kind, text)], kind "text", "bold"
    (``**...**``) or "code" (a backquoted span)."""
    out = []
    for part in INLINE.split(text):
        if part.startswith("**") and part.endswith("**") and len(part) > 4:
            out.append(("bold", part[2:-2]))
        elif part.startswith("`") and part.endswith("`") and len(part) > 2:
            out.append(("code", part[1:-1]))
        elif part:
            out.append(("text", part))
    return out


def plain(text: str) -> str:
    """``text`` without its inline marks: what a reader sees."""
    return "".join(t for _, t in spans(text))


def is_number(cell: str) -> bool:
    """Whether a table cell is a number (or two, "25.74 / 0.905"), set flush right."""
    return bool(NUMBER.match(cell))
