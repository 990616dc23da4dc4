"""Bringing an existing report up to date with new results (``npvae report --update``).

A report is built from the runs given to it; the runs behind an earlier report may no
longer be on the machine. :func:`merge_reports` keeps that report's sections and takes
from a report built from the new runs only:

* every section whose title is new;
* the sections with the same title (a study or an ablation of the same folder name,
  the shipped models, the published results), which replace the old ones;
* for the full training runs' sections, the table rows of the new runs (a run of the
  same name replaces its row) and their figures, added to the old ones (Part II's
  section, a table per run: a new run's blocks replace those of the same run, the
  others follow the old ones);

and keeps the old discussion, which compares results across all the runs of the first
build, but for the paragraph of each loss study given again, which the new one replaces.
The sections come in the order a whole build writes them (:func:`rank`), and each keeps
or gets the line naming the files it was read from (:mod:`.report_sources`).
"""
from __future__ import annotations

import re

from . import report_sources as src
from .document import Doc

KEPT = ("Discussion",)                       # sections an update never rebuilds whole
# a discussion paragraph about one loss study: "Images (study-mnist-default, ..." (report.py)
STUDY_PARAGRAPH = re.compile(r"^(?:Images|Music) \(([^,]+),")
MERGED = ("Part I: separation results", "Part II: separation results")   # rows added

# The order of a whole build (report.py's _compose_report); a study or baselines section
# of Part II follows that of Part I; a title of no kind here goes before the shipped models.
ORDER = ("Approach", ("Loss study", "Ablation", "Sweep"), "Part I: separation results", "Part II: separation results",
         "Blind", "Baselines", None, "Shipped models", "Missed marks", "Discussion", "What outperforms")


def rank(title: str) -> float:
    """Where a section of this title stands in a whole build (see :data:`ORDER`)."""
    for i, prefix in enumerate(ORDER):
        if prefix is not None and title.startswith(prefix):
            part = re.search(r"\bPart (I+)\b", title.split(":")[0])
            return i + (0.5 if part and part.group(1) == "II" else 0.0)
    return float(ORDER.index(None))


def merge_reports(old: Doc, new: Doc, intro: str) -> Doc:
    """``old`` with the sections of ``new`` (see the module docstring) and ``intro`` as the
    paragraph under the title. An old section without its sources line (a report written
    before sections named theirs) gets one from the old introduction's paragraphs."""
    old_sections = old.sections()
    legacy = src.provenance_paragraphs(old_sections[0][1])
    new_sections = {title: src.split(blocks) for title, blocks in new.sections() if title is not None}
    sections = []                                         # (title, blocks, sources)
    for title, blocks in old_sections[1:]:
        blocks, sources = src.split(blocks)
        if sources is None:
            sources = src.inferred(title, blocks, legacy)
        if title in new_sections and title.startswith(KEPT):
            blocks, studies = _merge_study_paragraphs(blocks, new_sections[title][0])
            sources = src.merged(sources or [], [(what, date) for what, date in new_sections[title][1] or []
                                                 if any(src.names([("p", what)], s) for s in studies)])
        elif title in new_sections:
            new_blocks, new_sources = new_sections[title]
            rows = _merge_rows(blocks, new_blocks) if title.startswith(MERGED) else new_blocks
            # rows that kept the old runs' rows keep their sources; a section replaced drops them
            sources = src.merged(sources, new_sources or []) if rows is not new_blocks else new_sources or []
            blocks = rows
        sections.append((title, blocks, sources))
    old_titles = {t for t, _, _ in sections}
    sections += [(t, b, s or []) for t, (b, s) in new_sections.items()
                 if t not in old_titles and not t.startswith(KEPT)]
    order = sorted(range(len(sections)), key=lambda i: (rank(sections[i][0]), i))
    merged = Doc()
    merged.blocks += [b for b in old_sections[0][1] if b[0] == "h1"] + [("p", intro)]
    for i in order:
        merged.blocks += src.attach(sections[i][1], sections[i][2])
    return merged


def _merge_rows(old: list[tuple], new: list[tuple]) -> list[tuple]:
    """A runs section: the old table's rows with the new ones (by first cell), the new
    text, the old figures and then the new ones. Tables of different columns: the new
    section as it is. A section with a table per run (Part II's: a paragraph, the run's
    scores by system and source, its figures) keeps the old runs' blocks and adds the new
    runs' after them."""
    old_tables = [b for b in old if b[0] == "table"]
    new_tables = [b for b in new if b[0] == "table"]
    if new_tables and new_tables[0][1][0] != "run":
        return _merge_run_blocks(old, new)
    if len(old_tables) != 1 or len(new_tables) != 1 or old_tables[0][1] != new_tables[0][1]:
        return new
    rows = {r[0]: r for r in old_tables[0][2]}
    rows.update({r[0]: r for r in new_tables[0][2]})
    new_images = [b for b in new if b[0] == "img"]
    images = [b for b in old if b[0] == "img" and b[1] not in {n[1] for n in new_images}] + new_images
    return ([new[0], ("table", new_tables[0][1], list(rows.values()))]
            + [b for b in new[1:] if b[0] == "p"] + images)


def _merge_study_paragraphs(old: list[tuple], new: list[tuple]) -> tuple[list[tuple], list[str]]:
    """The old discussion with each loss study's paragraph (:data:`STUDY_PARAGRAPH`)
    replaced by the new discussion's paragraph of the same study, and the new studies'
    paragraphs after the last old one; the other paragraphs (on the full runs of the
    first build) stay. Returns the blocks and the names of the studies taken from ``new``."""
    def study(b):
        m = STUDY_PARAGRAPH.match(b[1]) if b[0] == "p" else None
        return m.group(1) if m else None

    fresh = {study(b): b for b in new if study(b)}
    merged = [fresh.get(study(b), b) for b in old]
    studies_at = [i for i, b in enumerate(merged) if study(b)]
    at = studies_at[-1] + 1 if studies_at else 1                   # else after the heading
    added = [b for name, b in fresh.items() if name not in {study(o) for o in old}]
    return merged[:at] + added + merged[at:], list(fresh)


def _run_blocks(blocks: list[tuple]) -> tuple[list[tuple], dict[str, list[tuple]]]:
    """A section with a block per run: (its heading and text before the first run,
    {run name: the run's blocks}), a run's blocks starting at its "Run NAME: ..." paragraph."""
    head, runs, name = [], {}, None
    for b in blocks:
        if b[0] == "p" and b[1].startswith("Run "):
            name = b[1][4:].split(":", 1)[0]
            runs[name] = []
        (runs[name] if name is not None else head).append(b)
    return head, runs


def _merge_run_blocks(old: list[tuple], new: list[tuple]) -> list[tuple]:
    """The old runs' blocks, each replaced by the new one of the same run name, then the
    new runs' blocks."""
    head, old_runs = _run_blocks(old)
    _, new_runs = _run_blocks(new)
    merged = {**old_runs, **new_runs}
    order = list(old_runs) + [n for n in new_runs if n not in old_runs]
    return head + [b for n in order for b in merged[n]]


__all__ = ["merge_reports"]
