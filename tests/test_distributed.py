"""Data-parallel training (npvae.distributed): sharding, the single-process stand-in, and,
where mpi4py and mpirun are installed (CI installs both), real 2-rank runs.

* 2 ranks give the weights of 1 process with the same global batch (the Part I and Part II
  tasks, whichever kernel backend the suite runs on);
* a checkpoint written under MPI resumes in one process, and the other way round;
* a killed rank ends the job with a clear message and the last checkpoint intact;
  a hanging rank ends it after NPVAE_MPI_TIMEOUT seconds (no hang either way).
"""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from npvae import distributed
from npvae.audio.stft import STFTConfig
from npvae.engine.checkpoint import load_checkpoint
from npvae.data.mixtures import MixtureData
from npvae.errors import DistributedError
from npvae.tasks.music import sample_batch

REPO = Path(__file__).resolve().parents[1]
HELPER = REPO / "tests" / "_mpi_train.py"
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_rmaps_base_oversubscribe": "1",
           "MPLBACKEND": "Agg"}
MNIST = {"train_limit": 600, "eval_limit": 100, "hidden": [32, 16], "latent_dim": 4, "batch_size": 32,
         "kl_warmup": 1.0, "progress": False, "display_every": 100, "n_examples": 4}
MUSIC = {"dataset": "mir1k", "train_limit": 3, "eval_limit": 1, "channels": [4, 8, 8],
         "latent_channels": 4, "batch_size": 4, "frames": 32, "snippet_seconds": 1.0, "progress": False,
         "display_every": 100}
# Float tolerance: the 2-rank gradient is the sum of two half-batch gradients, which
# rounds differently from one full-batch sum (measured: 2e-7 after 38 Adam steps).
ATOL = 2e-5


def _have_mpi() -> bool:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return shutil.which("mpirun") is not None


needs_mpi = pytest.mark.skipif(not _have_mpi(), reason="mpi4py or mpirun missing: pip install '.[mpi]' and "
                               "apt-get install openmpi-bin (.ci/run installs both)")


# ----------------------------------------------------------------------------- without MPI

class _FakeComm(distributed.MPICommunicator):
    """The sharding maths of rank ``rank`` of ``size``, without MPI."""

    def __init__(self, rank, size):
        self.rank, self.size, self._shard = rank, size, None


@pytest.mark.parametrize("size", [2, 3])
def test_shards_cover_the_batch_in_order(size):
    for n in (size, 7, 32, 33):
        parts = [_FakeComm(r, size).shard(n) for r in range(size)]
        assert [i for p in parts for i in range(n)[p]] == list(range(n))
        lengths = [p.stop - p.start for p in parts]
        assert max(lengths) - min(lengths) <= 1 and lengths[0] == max(lengths)


def test_sharded_noise_is_the_single_process_noise():
    shapes = [(5, 3), (5, 2, 4, 4)]
    whole = np.random.default_rng(7)
    expect = [whole.standard_normal(s, dtype=np.float32) for s in shapes]
    got = [[] for _ in shapes]
    for rank in range(2):
        comm = _FakeComm(rank, 2)
        rng = np.random.default_rng(7)
        noise = comm.noise(rng)
        for k, s in enumerate(shapes):
            part = comm.shard(s[0])
            got[k].append(noise.standard_normal((part.stop - part.start, *s[1:]), dtype=np.float32))
        # every rank's generator ends where the single process's does
        assert rng.bit_generator.state == whole.bit_generator.state
    for e, g in zip(expect, got):
        np.testing.assert_array_equal(np.concatenate(g), e)


def test_mixture_batches_shards_make_the_single_process_batch():
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for n in (90, 90, 20, 20)]
    data = MixtureData(*imgs, n_validation=10, n_eval=20)
    whole = list(data.batches(np.random.default_rng(3), 32))
    parts = [list(data.batches(np.random.default_rng(3), 32, shard=_FakeComm(r, 3).shard)) for r in range(3)]
    assert len(whole) == 3 and [len(b[0]) for b in whole] == [32, 32, 16]
    for i, batch in enumerate(whole):
        for k in range(3):
            np.testing.assert_array_equal(np.concatenate([p[i][k] for p in parts]), batch[k])


class _Track:
    def __init__(self, rng, n):
        self.voice = rng.standard_normal(n).astype(np.float32)
        self.accompaniment = rng.standard_normal(n).astype(np.float32)
        self.n_samples = n


def test_music_batch_shards_make_the_single_process_batch():
    rng = np.random.default_rng(0)
    tracks = [_Track(rng, n) for n in (20000, 35000, 12000)]
    cfg = STFTConfig(16000, 1024, 256)
    kw = dict(batch_size=5, frames=16, stft_cfg=cfg, remix_prob=0.5, gain_db=3.0)
    whole_rng = np.random.default_rng(11)
    whole = sample_batch(tracks, whole_rng, **kw)
    parts = []
    for r in range(2):
        part_rng = np.random.default_rng(11)
        parts.append(sample_batch(tracks, part_rng, part=_FakeComm(r, 2).shard(5), **kw))
        assert part_rng.bit_generator.state == whole_rng.bit_generator.state
    assert [len(p["mixture"]) for p in parts] == [3, 2]
    for key in ("voice", "accompaniment", "mixture"):
        np.testing.assert_allclose(np.concatenate([p[key] for p in parts]), whole[key], rtol=0, atol=1e-6)
    # with voices at other pitches too (the cross sampler's shards: tests/test_augment.py)
    kw["voice_pitch"] = 2.0
    whole = sample_batch(tracks, np.random.default_rng(11), **kw)
    parts = [sample_batch(tracks, np.random.default_rng(11), part=_FakeComm(r, 2).shard(5), **kw) for r in range(2)]
    np.testing.assert_allclose(np.concatenate([p["voice"] for p in parts]), whole["voice"], rtol=0, atol=1e-6)


def test_outside_mpirun_the_world_is_one_process(monkeypatch):
    for var in distributed._LAUNCHER_SIZE + distributed._LAUNCHER_RANK:
        monkeypatch.delenv(var, raising=False)
    comm = distributed._make_world()
    assert type(comm) is distributed.SingleProcess and not comm.parallel and comm.is_root
    rng = np.random.default_rng(0)
    assert comm.noise(rng) is rng and comm.shard(9) == slice(0, 9)
    terms = {"total": 1.5}
    assert comm.allreduce_step([], terms) is terms
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("NPVAE_MPI", "0")
    assert type(distributed._make_world()) is distributed.SingleProcess


def test_mpirun_without_mpi4py_is_refused(monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.delenv("NPVAE_MPI", raising=False)
    monkeypatch.setitem(sys.modules, "mpi4py", None)    # import fails
    with pytest.raises(DistributedError, match=r"pip install \"\.\[mpi\]\""):
        distributed._make_world()


def test_bad_timeout_is_refused(monkeypatch):
    monkeypatch.setenv("NPVAE_MPI_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="NPVAE_MPI_TIMEOUT"):
        distributed.timeout_seconds()


# ----------------------------------------------------------------------------- under mpirun

def _env(shared_data, **extra):
    # A rank that waits 300 s for another says so and ends the job (a hang fails the test
    # with that message, not with a subprocess timeout); the generous limits are for a
    # busy shared machine.
    env = {**os.environ, **MPI_ENV, "NPVAE_DATA": str(shared_data), "PYTHONPATH": str(REPO),
           "NPVAE_MPI_TIMEOUT": "300", **extra}
    env.pop("NPVAE_MPI", None)
    return env


def _run(task, settings, out, shared_data, ranks=1, resume=False, timeout=900, **env):
    """Train ``task`` with ``settings`` into ``out`` (with ``resume``: the changes to the run's own settings)."""
    cmd = [sys.executable, str(HELPER), task, json.dumps({**settings, "out": str(out)})]
    if resume:
        cmd.append("--resume")
    if ranks > 1:
        cmd = ["mpirun", "-n", str(ranks)] + cmd
    r = subprocess.run(cmd, env=_env(shared_data, **env), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def _weights(run_dir):
    arrays, meta = load_checkpoint(Path(run_dir) / "checkpoint.npz")
    return arrays, meta


def _assert_same_run(a_dir, b_dir):
    a, ma = _weights(a_dir)
    b, mb = _weights(b_dir)
    assert ma["epoch"] == mb["epoch"] and sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=ATOL, err_msg=k)
    for k, v in ma["history"].items():
        if k.startswith(("train_", "val_")):
            np.testing.assert_allclose(mb["history"][k], v, rtol=1e-4, err_msg=k)
    assert ma["rng"] == mb["rng"]       # the same batches and noise were drawn


@pytest.fixture(scope="module")
def mnist_single(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("mpi") / "single"
    _run("mnist", {**MNIST, "epochs": 2}, out, shared_data)
    return out


@needs_mpi
def test_two_ranks_train_the_mnist_model_as_one_process(shared_data, mnist_single, tmp_path):
    tensorboard = importlib.util.find_spec("tensorboardX") is not None
    r = _run("mnist", {**MNIST, "epochs": 2, "tensorboard": tensorboard}, tmp_path / "mpi", shared_data, ranks=2)
    assert "data-parallel over 2 MPI ranks" in r.stdout
    assert r.stdout.count("test metrics") == 1          # rank 0 alone logs and evaluates
    _assert_same_run(mnist_single, tmp_path / "mpi")
    assert (tmp_path / "mpi" / "model.h5").exists() and (tmp_path / "mpi" / "grid.png").exists()
    if tensorboard:     # rank 0 alone writes TensorBoard's records: one file, every epoch once
        from npvae.watch.board import written_steps
        assert len(list((tmp_path / "mpi").glob("events.out.tfevents.*"))) == 1
        assert written_steps(tmp_path / "mpi")["train/total"] == {1, 2}
    assert not list((tmp_path / "mpi").glob(".*tmp"))


@needs_mpi
def test_two_ranks_train_the_music_model_as_one_process(shared_data, tmp_path):
    # with a weight average: every rank keeps it alike, the checkpoints compare it too
    settings = {**MUSIC, "epochs": 1, "ema_decay": 0.9}
    _run("music", settings, tmp_path / "single", shared_data)
    _run("music", settings, tmp_path / "mpi", shared_data, ranks=2)
    assert any(k.startswith("opt/ema/") for k in _weights(tmp_path / "mpi")[0])
    _assert_same_run(tmp_path / "single", tmp_path / "mpi")


@needs_mpi
@pytest.mark.slow
def test_checkpoints_move_between_mpi_and_one_process(shared_data, mnist_single, tmp_path):
    # 1 epoch on 2 ranks, then the 2nd in one process; and the other way round
    _run("mnist", {**MNIST, "epochs": 1}, tmp_path / "a", shared_data, ranks=2)
    _run("mnist", {"epochs": 2}, tmp_path / "a", shared_data, resume=True)
    _run("mnist", {**MNIST, "epochs": 1}, tmp_path / "b", shared_data)
    r = _run("mnist", {"epochs": 2}, tmp_path / "b", shared_data, ranks=2, resume=True)
    assert "resumed from" in r.stdout
    _assert_same_run(mnist_single, tmp_path / "a")
    _assert_same_run(mnist_single, tmp_path / "b")


def _rank_pid(tag: str, rank: int) -> int | None:
    """The pid of the process of MPI rank ``rank`` whose environment holds ``tag``."""
    want = [tag.encode(), f"OMPI_COMM_WORLD_RANK={rank}".encode()]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if all(w in env for w in want):
            return int(entry.name)
    return None


def _start_long_run(shared_data, out, tag, **env):
    cmd = ["mpirun", "-n", "2", sys.executable, str(HELPER), "mnist",
           json.dumps({**MNIST, "epochs": 400, "out": str(out)})]
    return subprocess.Popen(cmd, env=_env(shared_data, NPVAE_TEST_TAG=tag, **env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_for_checkpoint(proc, out, limit=600):
    deadline = time.monotonic() + limit
    while not (out / "checkpoint.npz").exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.05)


@needs_mpi
@pytest.mark.slow
@pytest.mark.parametrize("fault", ["kill", "hang"])
def test_a_dead_or_hanging_rank_ends_the_job_cleanly(shared_data, tmp_path, fault):
    out, tag = tmp_path / "run", f"NPVAE_TEST_TAG={uuid.uuid4().hex}"
    proc = _start_long_run(shared_data, out, tag.split("=")[1], NPVAE_MPI_TIMEOUT="5")
    try:
        _wait_for_checkpoint(proc, out)
        pid = _rank_pid(tag, 1)
        assert pid is not None, "rank 1 not found"
        os.kill(pid, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
        start = time.monotonic()
        text, _ = proc.communicate(timeout=300)
        seconds = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, text
    assert seconds < 150, f"the job took {seconds:.0f} s to end"   # no hang: far below any default limit
    expect = "another rank died" if fault == "kill" else "no answer from the other ranks for 5 s"
    assert expect in text, text
    assert "is intact in" in text and "--resume" in text, text
    arrays, meta = load_checkpoint(out / "checkpoint.npz")      # the last checkpoint is whole
    assert 1 <= meta["epoch"] < 400
    _run("mnist", {"epochs": meta["epoch"] + 1}, out, shared_data, resume=True)
    assert load_checkpoint(out / "checkpoint.npz")[1]["epoch"] == meta["epoch"] + 1


@needs_mpi
@pytest.mark.slow
def test_the_loss_study_deals_configurations_to_ranks(shared_data, tmp_path):
    out = tmp_path / "study"
    cmd = ["mpirun", "-n", "2", sys.executable, "-m", "npvae", "study", "--task", "mnist",
           "--budget", "tiny", "--out", str(out), "--only", "bce_beta1", "mse_beta1"]
    r = subprocess.run(cmd, env=_env(shared_data), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bce_beta1: finished" in r.stdout and "[rank 1] mse_beta1: finished" in r.stdout
    table = (out / "table.md").read_text()
    assert "| BCE, beta 1 |" in table and "| MSE, beta 1 |" in table
    assert r.stdout.count("| MSE, beta 1 |") == 1      # rank 0 alone prints the table


@pytest.mark.parametrize("ranks", [1, pytest.param(2, marks=[needs_mpi, pytest.mark.slow])])
def test_bench_mpi_reports_step_and_exchange_times(tmp_path, ranks):
    cmd = [sys.executable, str(REPO / "scripts" / "bench_mpi.py"), "--cases", "dense", "--steps", "2",
           "--warmup", "1", "--json", str(tmp_path / "b.jsonl")]
    if ranks > 1:
        cmd = ["mpirun", "-n", str(ranks)] + cmd
    env = {**os.environ, **MPI_ENV, "PYTHONPATH": str(REPO)}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    row = json.loads((tmp_path / "b.jsonl").read_text())
    assert row["ranks"] == ranks and row["parameters"] == 1494112 and row["gradient_bytes"] == 4 * 1494112
    assert row["step_ms"] > 0 and (row["comm_ms"] > 0) == (ranks > 1)
    assert "P=64 10G" in r.stdout


def test_a_batch_smaller_than_the_ranks_is_refused_by_name():
    comm = distributed.SingleProcess()
    comm.check_batch_size(1)                 # one process: any batch of at least one sample
    comm.size = 3                            # as three ranks would see it
    comm.check_batch_size(3)
    with pytest.raises(ValueError, match="--batch-size 2 is smaller than the 3 MPI ranks"):
        comm.check_batch_size(2)
