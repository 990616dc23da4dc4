"""What ``pip install`` installs: a wheel built from this checkout holds the library, its
compute kernels as ``npvae.kernels``, the command and the shipped models, and nothing of
the lab (scripts/npvae_lab) or a top-level ``kernels`` package."""
import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# package folder in the checkout -> its name when installed (setup.cfg's package_dir)
FOLDERS = {REPO / "npvae": "npvae", REPO / "kernels": "npvae.kernels"}


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg


def package_folders() -> dict[str, Path]:
    """Every folder with an ``__init__.py`` under npvae/ and kernels/, by installed name."""
    found = {}
    for root, name in FOLDERS.items():
        for init in root.rglob("__init__.py"):
            parts = init.parent.relative_to(root).parts
            found[".".join((name, *parts))] = init.parent
    return found


def test_every_package_folder_is_listed_in_setup_cfg():
    listed = set(_setup_cfg()["options"]["packages"].split())
    missing = sorted(set(package_folders()) - listed)
    assert not missing, f"package folders missing from setup.cfg's packages list: {missing}"
    stale = sorted(listed - set(package_folders()))
    assert not stale, f"setup.cfg lists packages that have no folder: {stale}"


def test_the_test_extra_installs_the_build_tools_the_wheel_test_uses():
    """The wheel test builds without isolation, so ``pip install ".[test]"`` in a fresh
    venv must bring every build requirement of pyproject.toml."""
    import re
    listed = re.search(r"^requires\s*=\s*\[(.*?)\]", (REPO / "pyproject.toml").read_text(), re.M | re.S)
    requires = re.findall(r'"([^"]+)"', listed.group(1))
    name = lambda req: re.split(r"[<>=!~; \[]", req, maxsplit=1)[0].lower()  # noqa: E731
    extra = {name(r) for r in _setup_cfg()["options.extras_require"]["test"].split()}
    assert {name(r) for r in requires} <= extra, (requires, sorted(extra))


def _left_out(folder, names) -> set[str]:
    """What the copy of the checkout leaves out: build products, caches and local runs."""
    out = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
    if Path(folder) == REPO:
        out |= {".git", "build", "dist", "runs", "data", ".venv", ".pytest_cache"} & set(names)
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """A wheel of the checkout, built from a copy of it (a build leaves build/ and
    *.egg-info behind, and a stale build/ would leak old files into the wheel)."""
    if shutil.which("pip") is None and subprocess.run([sys.executable, "-m", "pip", "--version"],
                                                      capture_output=True).returncode != 0:
        pytest.skip("pip is not available")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=_left_out)
    out = tmp / "dist"
    # without build isolation, offline: the build uses this environment's setuptools and
    # wheel, which the test extra installs (pip install ".[test]")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out), str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout[-2000:] + r.stderr[-2000:]
                               + "\n(the build tools come with the test extra: pip install \".[test]\")")
    (path,) = out.glob("npvae-*.whl")
    with zipfile.ZipFile(path) as z:
        yield z


def _py_files(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.py")}


@pytest.mark.slow       # a wheel build: 10-20 s
def test_wheel_holds_the_library_kernels_command_and_models(wheel):
    names = set(wheel.namelist())
    in_folder = lambda folder: {n.rsplit("/", 1)[1] for n in names if n.rsplit("/", 1)[0] == folder}  # noqa: E731
    assert _py_files(REPO / "kernels") <= in_folder("npvae/kernels")
    assert _py_files(REPO / "npvae" / "cli") <= in_folder("npvae/cli")
    for name, folder in package_folders().items():
        assert _py_files(folder) <= in_folder(name.replace(".", "/")), name
    shipped = {p.name for p in (REPO / "npvae" / "pretrained").glob("*.h5")}
    from npvae import pretrained
    assert shipped == {f"{m}.h5" for m in pretrained.list_models()} and len(shipped) == 5
    assert {n for n in in_folder("npvae/pretrained") if n.endswith(".h5")} == shipped
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    lines = [line.replace(" ", "") for line in wheel.read(entry).decode().splitlines()]
    assert "[console_scripts]" in lines and "npvae=npvae.cli:main" in lines


@pytest.mark.slow
def test_wheel_holds_the_studies_but_no_benchmark_and_no_top_level_kernels(wheel):
    """The studies and the report are installed (npvae.lab); the benchmark with its PyTorch
    twins (scripts/npvae_lab) is not."""
    tops = {n.split("/", 1)[0] for n in wheel.namelist()}
    assert tops <= {"npvae"} | {t for t in tops if t.endswith((".dist-info", ".data"))}, sorted(tops)
    assert not [n for n in wheel.namelist() if n.startswith(("npvae/experiments/", "kernels/", "npvae_lab/"))]
    lab = {n for n in wheel.namelist() if n.startswith("npvae/lab/")}
    assert {"npvae/lab/studies.py", "npvae/lab/report.py", "npvae/lab/doc_pdf.py"} <= lab, sorted(lab)
    assert not [n for n in lab if "torch" in n or "bench" in n]
