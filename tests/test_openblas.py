"""kernels.openblas: OpenBLAS's idle threads stop spinning at once, whatever was imported
first; a user's own OPENBLAS_THREAD_TIMEOUT and NPVAE_TUNE_OPENBLAS=0 are respected."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# NumPy (hence OpenBLAS) is loaded and has run a threaded GEMM before kernels is imported.
PROBE = r"""
import json, sys, time
import numpy as np
a = np.random.default_rng(0).random((512, 512), dtype=np.float32)
a @ a
from npvae import kernels
from npvae.kernels import openblas
libs = openblas._libraries()
timeouts = [openblas.thread_timeout(lib) for _, lib in libs]
spent = []
for _ in range(7):
    a @ a
    c0 = time.process_time()
    time.sleep(0.05)
    spent.append(time.process_time() - c0)
print(json.dumps({"timeouts": timeouts, "spin_s": sorted(spent)[3], "report": openblas.tune()}))
"""


def probe(**env):
    full = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "NPVAE_TUNE_OPENBLAS")}
    full.update(PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="2", **env)
    r = subprocess.run([sys.executable, "-c", PROBE], env=full, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def openblas_present():
    r = probe()
    if not r["timeouts"]:
        pytest.skip("NumPy does not use OpenBLAS here")
    return r


def test_idle_threads_sleep_after_a_gemm(openblas_present):
    r = openblas_present
    assert r["timeouts"] == [4] * len(r["timeouts"]), r
    # A spinning worker burns about the whole 0.05 s sleep (measured 0.048 s untuned).
    assert r["spin_s"] < 0.02, r


def test_users_timeout_and_opt_out_are_respected(openblas_present):
    assert probe(OPENBLAS_THREAD_TIMEOUT="12")["timeouts"][0] == 12
    off = probe(NPVAE_TUNE_OPENBLAS="0")
    assert off["report"] == [] and off["timeouts"][0] != 4
