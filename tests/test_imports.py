"""Every module imports on its own, in a fresh interpreter state: no module relies on
another having been imported first, and no import cycle breaks a cold import."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# package name -> its folder in the checkout (kernels/ installs as npvae.kernels)
PACKAGES = {"npvae": REPO / "npvae", "npvae.kernels": REPO / "kernels"}


def all_modules() -> list[str]:
    """Every module of the installed package, by name (``npvae.__main__``, which runs the
    command, left out)."""
    names = []
    for pkg, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = (*pkg.split("."), *path.relative_to(folder).with_suffix("").parts)
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            if not name.endswith("__main__"):
                names.append(name)
    return names


def module_file(name: str) -> Path:
    """The source file of module ``name`` in the checkout (a package's ``__init__.py``)."""
    for pkg, folder in sorted(PACKAGES.items(), key=lambda kv: -len(kv[0])):
        if name == pkg or name.startswith(pkg + "."):
            path = folder.joinpath(*name[len(pkg):].strip(".").split(".")) if name != pkg else folder
            return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    raise KeyError(name)


CHECK = r"""
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for m in [m for m in sys.modules if m.split(".")[0] == "npvae"]:
        del sys.modules[m]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ":\n" + traceback.format_exc(limit=3))
print("\n".join(failed))
sys.exit(1 if failed else 0)
"""


# Modules that need an optional package: imported only where it is installed.
OPTIONAL = {}


def test_every_module_imports_alone():
    import importlib.util
    modules = [m for m in all_modules() if m not in OPTIONAL or importlib.util.find_spec(OPTIONAL[m]) is not None]
    assert "npvae.files.model_file" in modules and "npvae.cli" in modules and len(modules) > 40
    r = subprocess.run([sys.executable, "-c", CHECK, *modules], cwd=REPO, capture_output=True, text=True,
                       env={**__import__("os").environ, "MPLBACKEND": "Agg"})
    assert r.returncode == 0, r.stdout + r.stderr


# ----------------------------------------------------------------------------- the layering

# Imports point one way, down this list (a module may import its own level and below):
# command -> facade -> engine run, tasks -> model files -> separation -> models -> layers & co -> kernels.
# Model files sit above the separators because load_model returns one for a music model file.
LEVELS = [
    ("npvae", 8),                 # the package's facade (its __init__): nothing inside imports it
    ("npvae.pretrained.scoring", 7), ("npvae.pretrained.shipping", 7),
    ("npvae.engine.run", 7), ("npvae.tasks", 7),
    ("npvae.tasks.mnist", 6), ("npvae.tasks.music", 6), ("npvae.tasks.blind_mnist", 6), ("npvae.tasks.blind_music", 6),
    ("npvae.tasks.blind_objective", 6),
    ("npvae.files.model_file", 5),
    ("npvae.separation", 4), ("npvae.separation.audio_files", 6),
    ("npvae.models", 3), ("npvae.baselines", 3), ("npvae.models.options", 1),
    ("npvae.engine", 2), ("npvae.plotting", 2), ("npvae.vae", 2), ("npvae.metrics", 2), ("npvae.audio", 2),
    ("npvae.data", 2), ("npvae.optim", 2), ("npvae.watch", 2),
    ("npvae.layers", 1), ("npvae.losses", 1), ("npvae.spectral_losses", 1), 
    ("npvae.threads", 1), ("npvae.progress", 1), ("npvae.datapath", 1), ("npvae.files", 1),
    ("npvae.inputs", 1), ("npvae.distributed", 1), ("npvae.schedules", 1), ("npvae.pretrained", 1),
    ("npvae.errors", 0), ("npvae._version", 0), ("npvae.kernels", 0), ("npvae._kernels", 0), ("npvae.cli", 9), ("npvae.lab", 8),
]


def level(module: str) -> int:
    best = max((p for p, _ in LEVELS if module == p or module.startswith(p + ".")), key=len)
    return dict(LEVELS)[best]


def import_edges() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its file (functions too)."""
    import ast
    modules = set(all_modules())
    edges = {}
    for name in modules:
        parts = name.split(".")
        src = module_file(name)
        is_pkg = src.name == "__init__.py"
        here = parts if is_pkg else parts[:-1]          # the package a relative import starts from
        out = set()
        for node in ast.walk(ast.parse(src.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module.split(".") if node.module else []
                if node.level:
                    base = here[:len(here) - node.level + 1] + base
                pkg = ".".join(base)
                targets = [f"{pkg}.{a.name}" if f"{pkg}.{a.name}" in modules else pkg for a in node.names]
            else:
                continue
            out |= {t for t in targets if t in modules and t != name}
        edges[name] = out
    return edges


def test_no_import_cycles():
    edges = import_edges()
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_imports_point_down_the_layers():
    wrong = [f"{m} (level {level(m)}) imports {n} (level {level(n)})"
             for m, targets in import_edges().items() for n in targets if level(n) > level(m)]
    assert not wrong, "\n".join(wrong)


def test_kernels_are_reached_through_their_loader():
    """In a source checkout ``npvae.kernels`` exists only once :mod:`npvae._kernels` has
    loaded the top-level kernels/ folder under that name: a module that imports it as an
    attribute of the package (``from .. import kernels``) would work only because the
    facade ran first."""
    import ast
    direct = []
    for name in all_modules():
        if not name.startswith("npvae.") or name.startswith(("npvae.kernels", "npvae._kernels")):
            continue
        for node in ast.walk(ast.parse(module_file(name).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level and (
                    (node.module or "").split(".")[0] == "kernels"
                    or (not node.module and any(a.name == "kernels" for a in node.names))):
                direct.append(f"{name}: line {node.lineno}")
    assert not direct, "import the kernels from npvae._kernels:\n" + "\n".join(direct)


def test_the_studies_and_the_report_never_load_pytorch():
    """npvae.lab is installed with the library, which has no PyTorch."""
    code = ("import sys, npvae.cli, npvae.lab.studies, npvae.lab.report; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       env={**__import__("os").environ, "MPLBACKEND": "Agg"})
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
