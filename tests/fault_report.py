"""``--fault-report PATH``: the fault cases' outcomes (tests/faults) as a Markdown table.

Registered by tests/conftest.py on the process that sees every test's report (the
controller under pytest-xdist), so the table holds every case however the tests ran.
"""
from __future__ import annotations

import datetime
import os
import re
import shlex
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

class FaultReport:
    """Collects each fault case's outcome and writes the Markdown table at the end."""

    def __init__(self, config, path: Path):
        self.config = config
        self.path = path
        self.rows: dict[str, dict] = {}     # nodeid -> info + outcome, in the order run

    def pytest_runtest_logreport(self, report):
        info = dict(report.user_properties).get("fault")
        if info is None:
            return
        row = self.rows.setdefault(report.nodeid, {**info, "status": None, "outcome": ""})
        if report.when == "setup" and report.passed:
            return
        if report.skipped:
            if getattr(report, "wasxfail", None) is not None:
                row.update(status="failed", outcome=f"FAILED: expected to fail ({report.wasxfail})")
            elif row["status"] is None:
                row.update(status="skipped", outcome=f"skipped: {_skip_reason(report)}")
        elif report.failed:
            if row["status"] != "failed":
                row.update(status="failed", outcome=f"FAILED: {_failure_reason(report)}")
        elif report.when == "call" and row["status"] is None:
            row.update(status="passed", outcome=row["expect"])

    def pytest_sessionfinish(self, session):
        text = render_report(list(self.rows.values()), _command(self.config))
        from npvae.files.atomic import atomic_write_text
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, text)

    def pytest_terminal_summary(self, terminalreporter):
        terminalreporter.write_line(f"fault report: {len(self.rows)} cases written to {self.path}")


def _command(config) -> str:
    args = [_relative(a) for a in config.invocation_params.args]
    return "python -m pytest " + shlex.join(args)


def _relative(arg: str) -> str:
    root = str(REPO) + os.sep
    return arg.replace(root, "")


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return _clean(re.sub(r"^Skipped: ", "", text))


def _failure_reason(report) -> str:
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr).strip().splitlines()[-1]
    text = text.strip().splitlines()[0] if text.strip() else "(no message)"
    text = re.sub(r"^(AssertionError|Failed|_pytest\.outcomes\.Failed): ", "", text)
    if report.when != "call":
        text = f"in {report.when}: {text}"
    return _clean(text)


def _clean(text: str, limit: int = 160) -> str:
    """One table cell: one line, no path of this machine, no pipes, at most ``limit`` characters."""
    for folder, name in ((tempfile.gettempdir(), "$TMP"), (os.environ.get("NPVAE_DATA", ""), "$NPVAE_DATA"),
                         (str(REPO), "."), (str(Path.home()), "~")):
        if folder and len(folder) > 1:
            text = text.replace(folder, name)
    text = re.sub(r"\$TMP/pytest-of-[^/\s]+/pytest-\d+/", "$TMP/", text)      # pytest's own temporary folders
    text = re.sub(r"(?<![\w.~$])/(?:[^\s/:'\"|,;()]+/)+", ".../", text)     # any other absolute path
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def render_report(rows: list[dict], command: str) -> str:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    groups = dict(sorted(groups.items()))

    def count(rs, status):
        return sum(r["status"] == status for r in rs)
    n, ok, bad, skip = len(rows), count(rows, "passed"), count(rows, "failed"), count(rows, "skipped")
    lines = ["# Fault cases", "",
             f"Generated from the tests under `tests/faults/` by `{command}` "
             f"on {datetime.date.today().isoformat()}.", "",
             "Each case gives npvae a careless user's input or a fault (or a good input that is easy "
             "to get wrong) and says what must happen: a *clear error* (a non-zero exit status or an "
             "exception whose message names the problem, no traceback, no file lost) or a *correct "
             "result* that the case checks. The outcome is the expected one when the test passed, "
             "**FAILED** with the reason when it did not, or *skipped* with the reason.", "",
             f"{n} cases: {ok} as expected, {bad} failed, {skip} skipped.", "",
             "| group | cases | as expected | failed | skipped |", "|---|---|---|---|---|"]
    for group, rs in groups.items():
        lines.append(f"| [{group}](#{_anchor(group)}) | {len(rs)} | {count(rs, 'passed')} | "
                     f"{count(rs, 'failed')} | {count(rs, 'skipped')} |")
    for group, rs in groups.items():
        lines += ["", f"## {group}", "", "| case | expected | outcome |", "|---|---|---|"]
        for r in rs:
            outcome = r["outcome"] or "FAILED: did not run to the end"
            if outcome.startswith("FAILED"):
                outcome = "**FAILED**" + outcome[len("FAILED"):]
            lines.append(f"| {_clean(r['description'], 200)} | {r['expect']} | {outcome} |")
    return "\n".join(lines) + "\n"


def _anchor(group: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", group.lower()).replace(" ", "-")


