"""Every module imports on its own, in a fresh interpreter state: no module relies on
another having been imported first, and no import cycle breaks a cold import."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("npvae", "kernels")


def all_modules() -> list[str]:
    names = []
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


CHECK = r"""
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for m in [m for m in sys.modules if m.split(".")[0] in ("npvae", "kernels")]:
        del sys.modules[m]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ":\n" + traceback.format_exc(limit=3))
print("\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_alone():
    modules = all_modules()
    assert "npvae.io" in modules and "npvae.experiments.studies" in modules and len(modules) > 40
    r = subprocess.run([sys.executable, "-c", CHECK, *modules], cwd=REPO, capture_output=True, text=True,
                       env={**__import__("os").environ, "MPLBACKEND": "Agg"})
    assert r.returncode == 0, r.stdout + r.stderr
