"""Shared fixtures. Real data comes from ``$NPVAE_DATA`` or, in a checkout,
from ``../shared/data`` beside the repository; tests that need it skip only
where neither exists."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# The lab (benchmark, studies, report builder) is not installed: it lives in the
# checkout's scripts/ folder, importable as npvae_lab from there.
if str(REPO / "scripts") not in sys.path:
    sys.path.append(str(REPO / "scripts"))


# Convolution algorithms chosen by timing (npvae.layers.conv_algos) are cached per user;
# the suite keeps its own cache (shared by its processes and subprocesses) so that it
# never writes the user's choices or reads choices timed elsewhere.
if "NPVAE_CACHE_DIR" not in os.environ:
    import tempfile
    os.environ["NPVAE_CACHE_DIR"] = str(Path(tempfile.gettempdir()) / f"npvae-test-cache-{os.getuid()}")


# A relative NPVAE_DATA (the README's ``NPVAE_DATA=../shared/data``) names a folder relative
# to where pytest started; tests that change folder, and the commands they start elsewhere,
# must see the same folder.
if os.environ.get("NPVAE_DATA") and not os.path.isabs(os.path.expanduser(os.environ["NPVAE_DATA"])):
    os.environ["NPVAE_DATA"] = os.path.abspath(os.path.expanduser(os.environ["NPVAE_DATA"]))


def _shared_data() -> Path | None:
    env = os.environ.get("NPVAE_DATA")
    if env and Path(env).is_dir():
        return Path(env)
    cand = REPO.parent / "shared" / "data"
    return cand if cand.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = _shared_data()
    if path is None:
        pytest.skip("real data not found: set NPVAE_DATA to the folder holding mnist/, fashion-mnist/, MIR-1K/")
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_addoption(parser):
    parser.addoption("--fault-report", metavar="PATH", default=None,
                     help="write the fault cases' outcomes (tests/faults) as a Markdown table to PATH")


def pytest_configure(config):
    path = config.getoption("--fault-report", default=None)
    # under pytest-xdist the controller, which sees every worker's reports, writes the table
    if path and not hasattr(config, "workerinput") and not config.pluginmanager.has_plugin("fault-report"):
        from fault_report import FaultReport
        config.pluginmanager.register(FaultReport(config, Path(path)), "fault-report")
