"""The repository reads as documentation, not as a lab notebook.

* No development history (who ran what and when, which sitting, tracker numbers) and no
  absolute paths of the machine a file was made on, in the sources, docs, scripts,
  tests and MATLAB code: history belongs in git, and a report prints paths relative to
  where it was made.
* The README is a front door: under 300 lines, details in ``docs/``.
"""
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve().relative_to(REPO).as_posix()

# What must not appear (case-insensitive extended regex, as git grep -i -E reads it).
# (Built from parts, so that this file does not match itself.)
_SITTINGS = "|".join(f"{w} sess" + "ion" for w in ("this", "next", "previous", "last"))
FORBIDDEN = (_SITTINGS + r"|iss" + r"ue ?#?[0-9]+" + "|/" + "work/|/" + "root/|/" + "home/|other engineers|sitting")
# Where: the files that make up the project (.ci/ is the CI machine's own set-up).
PATHSPECS = ("README.md", "docs", "results", "npvae", "kernels", "scripts", "tests", "matlab", "setup.cfg")
README_MAX_LINES = 300


def in_git_checkout() -> bool:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        return False
    r = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=REPO, capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.strip() == "true"


@pytest.mark.skipif(not in_git_checkout(), reason="needs a git checkout (git grep)")
def test_no_history_and_no_machine_paths():
    # -I: binary files (model files, PDFs, images) are left out; --untracked: new files
    # not yet added count too (ignored ones, such as runs/, do not).
    r = subprocess.run(["git", "grep", "--untracked", "-n", "-I", "-i", "-E", FORBIDDEN, "--", *PATHSPECS,
                        f":(exclude){THIS}", ":(exclude).ci"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode in (0, 1), r.stderr          # 1: no match
    hits = r.stdout.strip().splitlines()
    assert not hits, ("development history or machine paths (state the fact as documentation, "
                      "print paths relative to where they were made):\n" + "\n".join(hits))


def test_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines; move details to docs/"


@pytest.mark.parametrize("page", ["README.md", *sorted(p.relative_to(REPO).as_posix()
                                                      for p in (REPO / "docs").glob("*.md"))])
def test_links_point_to_files(page):
    import re
    path = REPO / page
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
        if "://" not in target:
            assert (path.parent / target).exists(), f"{page} links to {target}, which does not exist"


def test_docs_hold_guides_only():
    """docs/ holds the guides and their figures; what commands generate (reports, the fault
    table, benchmark records) lives in results/, in folders named for what made them."""
    others = [p.relative_to(REPO).as_posix() for p in (REPO / "docs").iterdir()
              if not (p.suffix == ".md" or (p.is_dir() and p.name == "images"))]
    assert not others, others
