"""Run code in GNU Octave with matlab/ on the path (tests of the MATLAB scripts)."""
import shutil
import subprocess
from pathlib import Path

import pytest

OCTAVE = shutil.which("octave-cli")
MATLAB_DIR = Path(__file__).resolve().parents[1] / "matlab"
needs_octave = pytest.mark.skipif(OCTAVE is None, reason="octave-cli not on PATH (CI installs GNU Octave)")


def octave(code: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in ``cwd``; the result has ``returncode``, ``stdout`` and ``stderr``."""
    script = f"addpath('{MATLAB_DIR}'); {code}"
    return subprocess.run([OCTAVE, "--no-gui", "--norc", "--eval", script], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def octave_ok(code: str, cwd: Path, timeout: float = 120) -> str:
    """Run ``code`` and return its stdout; fail the test with Octave's stderr if it errs."""
    res = octave(code, cwd, timeout)
    assert res.returncode == 0, f"Octave failed:\n{res.stderr}\n{res.stdout}"
    return res.stdout


def assert_octave_errors(cases: dict, cwd: Path) -> None:
    """Run every call of ``cases`` (``{call: (error identifier, text in the message)}``) in
    one Octave session and require each to fail with that identifier and text."""
    code = "".join(f"try, {call}; disp('no error'); catch err, fprintf('%s|%s\\n', err.identifier, err.message); end;"
                   for call in cases)
    res = octave(code, cwd)
    lines = res.stdout.strip().splitlines()
    assert len(lines) == len(cases), (res.stdout, res.stderr)
    for line, (call, (ident, text)) in zip(lines, cases.items()):
        assert line.startswith(ident + "|") and text in line, (call, line)
