"""Bringing an existing report up to date with new results (``npvae report --update``).

A report is built from the runs given to it; the runs behind an earlier report may no
longer be on the machine. :func:`merge_reports` keeps that report's sections and takes
from a report built from the new runs only:

* every section whose title is new, inserted before the shipped models' section (or
  right after it, for a section that follows it in the new report: the missed marks');
* the sections with the same title (a study or an ablation of the same folder name,
  the shipped models, the published results), which replace the old ones;
* for the full training runs' sections, the table rows of the new runs (a run of the
  same name replaces its row) and their figures, added to the old ones (Part II's
  section, a table per run: a new run's blocks replace those of the same run, the
  others follow the old ones);

and keeps the old discussion, which compares results across all the runs of the first
build. A paragraph under the title says what was updated, when, and from which files.
"""
from __future__ import annotations

from .document import Doc

KEPT = ("Discussion",)                       # sections an update never rebuilds
MERGED = ("Part I: separation results", "Part II: separation results")   # rows added
ANCHOR = "Shipped models"                    # new sections go before this one


def merge_reports(old: Doc, new: Doc, note: str) -> Doc:
    """``old`` with the sections of ``new`` (see the module docstring) and ``note`` as a
    paragraph after the old introduction."""
    old_sections = old.sections()
    new_sections = {title: blocks for title, blocks in new.sections() if title is not None}
    old_titles = {title for title, _ in old_sections}
    pending = [t for t in new_sections if t not in old_titles and not t.startswith(KEPT)]
    order = list(new_sections)
    follow_anchor = [t for t in pending if order.index(t) > 0 and order[order.index(t) - 1].startswith(ANCHOR)]
    pending = [t for t in pending if t not in follow_anchor]
    merged = Doc()
    merged.blocks += old_sections[0][1] + [("p", note)]
    for title, blocks in old_sections[1:]:
        if title.startswith(ANCHOR):
            for t in pending:
                merged.blocks += new_sections[t]
            pending = []
        if title in new_sections and not title.startswith(KEPT):
            blocks = (_merge_rows(blocks, new_sections[title]) if title.startswith(MERGED)
                      else new_sections[title])
        merged.blocks += blocks
        if title.startswith(ANCHOR):
            for t in follow_anchor:
                merged.blocks += new_sections[t]
            follow_anchor = []
    for t in pending + follow_anchor:
        merged.blocks += new_sections[t]
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
