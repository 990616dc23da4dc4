"""Fault cases of training checkpoints (npvae.engine.checkpoint): damaged files, atomic writes,
and a run killed with SIGKILL then resumed."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from _faults import lib_error, no_temporaries, umask

from npvae.engine.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture(scope="session")
def valid_checkpoint(fault_root) -> bytes:
    p = fault_root / "fixtures" / "ck.npz"
    p.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(p, {"a": np.arange(100.0)}, {"epoch": 1})
    return p.read_bytes()


def _load_bytes(folder, data: bytes):
    p = folder / "checkpoint.npz"
    p.write_bytes(data)
    load_checkpoint(p)


@pytest.mark.fault("checkpoint", "load_checkpoint of a missing file", "clear error")
def test_missing(tmp_path):
    with lib_error("does not exist"):
        load_checkpoint(tmp_path / "none.npz")


@pytest.mark.fault("checkpoint", "a checkpoint cut short", "clear error")
def test_cut_short(tmp_path, valid_checkpoint):
    with lib_error("corrupt"):
        _load_bytes(tmp_path, valid_checkpoint[:200])


@pytest.mark.fault("checkpoint", "a checkpoint that is not a zip", "clear error")
def test_not_a_zip(tmp_path):
    with lib_error("corrupt"):
        _load_bytes(tmp_path, b"PK-not-really" * 10)


@pytest.mark.fault("checkpoint", "a zip without npvae's meta record", "clear error")
def test_no_meta(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, a=np.zeros(3))
    with lib_error("corrupt|not an npvae checkpoint"):
        load_checkpoint(p)


@pytest.mark.fault("checkpoint", "a checkpoint whose meta is not JSON", "clear error")
def test_meta_not_json(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, meta=np.array("{broken"))
    with lib_error("corrupt"):
        load_checkpoint(p)


@pytest.mark.fault("checkpoint", "a checkpoint of random bytes (seed {seed})", "clear error")
@pytest.mark.parametrize("seed", range(5))
def test_random_bytes(tmp_path, seed):
    with lib_error("corrupt"):
        _load_bytes(tmp_path, np.random.default_rng(seed).integers(0, 256, 2048, dtype=np.uint8).tobytes())


@pytest.mark.fault("checkpoint", "atomic writes leave no temporary and keep normal permissions", "correct result")
def test_atomic_write(tmp_path):
    save_checkpoint(tmp_path / "c.npz", {"a": np.zeros(3)}, {"epoch": 1})
    no_temporaries(tmp_path)
    assert (tmp_path / "c.npz").stat().st_mode & 0o777 == 0o666 & ~umask()


# --- kill -9 and --resume: real processes ------------------------------------------------

def _train_command(args):
    return [sys.executable, "-m", "npvae", "train", "mnist", *[str(a) for a in args]]


def _env():
    return {**os.environ, "MPLBACKEND": "Agg"}


@pytest.fixture(scope="session")
def straight_run(fault_root, shared_data, mnist_args):
    """A 3-epoch tiny MNIST run that nothing interrupted: its time and final weights."""
    out = fault_root / "fixtures" / "straight"
    t = time.perf_counter()
    r = subprocess.run(_train_command(mnist_args(out, 3, data_dir=shared_data)), env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-500:]
    return {"seconds": time.perf_counter() - t, "weights": load_checkpoint(out / "checkpoint.npz")[0]}


@pytest.mark.slow
@pytest.mark.fault("checkpoint", "kill -9 at a random moment, then --resume (seed {seed})", "correct result")
@pytest.mark.parametrize("seed", range(3))
def test_kill9_then_resume(tmp_path, shared_data, mnist_args, straight_run, seed):
    out = tmp_path / "run"
    cmd = _train_command(mnist_args(out, 3, data_dir=shared_data))
    delay = np.random.default_rng(seed).uniform(0.3, 1.0) * straight_run["seconds"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # killed before its first checkpoint, the run has nothing to resume: as the error
    # says, start it again in the same folder with --overwrite
    resume = (["--resume"] if (out / "checkpoint.npz").exists() else ["--overwrite"] if out.exists() else [])
    r = subprocess.run(cmd + resume, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-300:]
    weights, _ = load_checkpoint(out / "checkpoint.npz")
    for k, v in straight_run["weights"].items():
        assert np.array_equal(weights[k], v), f"weights differ after kill at {delay:.1f} s: {k}"
    no_temporaries(out)
