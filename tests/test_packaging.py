"""What ``pip install`` installs: a wheel built from this checkout holds the library, its
compute kernels as ``npvae.kernels``, the command and the shipped models, and nothing of
the lab (scripts/npvae_lab) or a top-level ``kernels`` package."""
import configparser
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
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


def _installed_venv(wheel_file: Path, folder: Path) -> Path:
    """A new virtual environment in ``folder`` with the wheel installed offline, which
    sees this environment's other packages (numpy, numba, ...: nothing is downloaded)
    as plain folders, so that no editable install of the checkout comes with them;
    returns its bin folder."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=300)
    bin_dir = folder / ("Scripts" if sys.platform == "win32" else "bin")
    python = bin_dir / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # the wheel first: with the other environment visible, pip would take its npvae (a
    # non-editable install, as in CI) for this one and install nothing
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                        "--no-index", "--ignore-installed", str(wheel_file)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    here = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
    (Path(site) / "this_environment.pth").write_text("\n".join(here) + "\n")    # after its own site-packages
    return bin_dir


def _inside(path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


def _checkout_folders() -> set[Path]:
    """The folders of the checkout from which its npvae or lab would import."""
    return {REPO.resolve(), (REPO / "scripts").resolve()}


@pytest.mark.slow       # a venv, and a tiny study of 9 configurations: 1-2 minutes
def test_the_installed_package_runs_a_tiny_study_and_its_report_outside_the_checkout(wheel, shared_data, tmp_path):
    """The studies and the report are product, not tooling: the wheel installed into a
    new environment runs ``npvae study --task mnist --budget tiny`` and ``npvae report``
    from a folder outside the checkout, with npvae imported from the environment."""
    from npvae.lab.study_table import PRIMARY, read_study
    bin_dir = _installed_venv(Path(wheel.filename), tmp_path / "venv")
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(NPVAE_DATA=str(shared_data), MPLBACKEND="Agg")
    run = lambda *args: subprocess.run([*map(str, args)], cwd=work, env=env, capture_output=True,  # noqa: E731
                                       text=True, timeout=1200)

    where = run(bin_dir / "python", "-c", "import json, sys, npvae; print(json.dumps([npvae.__file__, sys.path]))")
    assert where.returncode == 0, where.stderr[-2000:]
    package, path = json.loads(where.stdout)
    assert _inside(package, tmp_path / "venv"), f"npvae imported from {package}, not the new environment"
    assert not [p for p in path if (work / p).resolve() in _checkout_folders()], f"the checkout is on sys.path: {path}"

    listed = run(bin_dir / "npvae", "study", "--task", "mnist", "--list")
    assert listed.returncode == 0, listed.stderr[-2000:]
    names = [line.split()[0] for line in listed.stdout.splitlines()[1:] if line.strip()]
    study = run(bin_dir / "npvae", "study", "--task", "mnist", "--budget", "tiny", "--out", work / "study")
    assert study.returncode == 0, study.stdout[-3000:] + study.stderr[-3000:]
    assert (work / "study" / "table.md").is_file()
    rows = {r["name"]: r for r in read_study(work / "study")["rows"]}
    key = PRIMARY["mnist"][0]
    assert len(names) >= 5 and set(names) <= set(rows), (names, sorted(rows))
    assert all(np.isfinite(rows[n][key]) for n in names), {n: rows[n][key] for n in names}
    table = (work / "study" / "table.md").read_text()
    assert all(rows[n]["label"] in table for n in names)

    report = run(bin_dir / "npvae", "report", "study", "--out", "report")
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    assert {"report.md", "report.pdf", "report.html"} <= {p.name for p in (work / "report").iterdir()}
    assert f"{rows[names[0]][key]:.2f}" in (work / "report" / "report.md").read_text()
