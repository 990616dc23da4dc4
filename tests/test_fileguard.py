"""Atomic files: normal permissions, no temporaries left by killed writers; output checks."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from npvae.engine.checkpoint import save_checkpoint
from npvae.files.atomic import TMP_TAG, atomic_path, sweep_stale_temporaries
from npvae.errors import OutputError
from npvae.files.guard import check_writable_dir, prepare_run_dir, unique_run_dir


def test_atomic_files_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "ck.npz", {"a": np.zeros(2)}, {"epoch": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "ck.npz").stat().st_mode & 0o777 == 0o644


def test_temporary_of_a_killed_writer_is_swept(tmp_path):
    # A child opens an atomic write and is killed with SIGKILL in the middle of it.
    code = textwrap.dedent(f"""
        import os, time
        from npvae.files.atomic import atomic_path
        with atomic_path({str(tmp_path / 'model.h5')!r}, '.h5') as tmp:
            open(tmp, 'wb').write(b'half')
            print('ready', flush=True)
            time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, text=True)
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGKILL)
    child.wait()
    stray = [p.name for p in tmp_path.iterdir()]
    assert len(stray) == 1 and TMP_TAG in stray[0]           # what kill -9 leaves
    with atomic_path(tmp_path / "other.txt") as tmp:
        tmp.write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.txt"]


def test_sweep_spares_live_writers(tmp_path):
    mine = tmp_path / f".x.h5.{os.getpid()}.abc{TMP_TAG}.h5"
    mine.write_bytes(b"")
    assert sweep_stale_temporaries(tmp_path) == [] and mine.exists()


def test_output_checks(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        check_writable_dir(f)
    with pytest.raises(OutputError, match="is a file"):
        check_writable_dir(f / "sub")
    with pytest.raises(OutputError, match="free space"):
        check_writable_dir(tmp_path / "new", need_bytes=1 << 62)
    assert check_writable_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()                  # checks create nothing


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            check_writable_dir(ro / "out")
    finally:
        ro.chmod(0o700)


def test_run_dirs(tmp_path):
    run = tmp_path / "run"
    prepare_run_dir(run)                                     # new: fine
    run.mkdir()
    (run / "model.h5").write_text("x")
    with pytest.raises(OutputError, match="--resume.*--overwrite"):
        prepare_run_dir(run)
    prepare_run_dir(run, resume=True)
    prepare_run_dir(run, overwrite=True)
    a, b = unique_run_dir(tmp_path / "r"), unique_run_dir(tmp_path / "r")
    assert a != b and a.is_dir() and b.is_dir()


def test_training_run_refuses_a_full_disk_before_the_first_epoch(tmp_path, monkeypatch):
    """The trainer checks for room for its checkpoints when it is made, not an epoch later."""
    import shutil
    from collections import namedtuple

    import numpy as np

    from npvae.files.guard import RUN_MARGIN_BYTES, run_space_needed
    from npvae.layers import Dense
    from npvae.optim import Adam
    from npvae.engine.loop import Trainer

    model = Dense(100, 50, rng=np.random.default_rng(0))
    need = run_space_needed((100 * 50 + 50) * 4)
    assert need == 8 * 5050 * 4 + RUN_MARGIN_BYTES
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1 << 40, (1 << 40) - need + 1, need - 1))
    with pytest.raises(OutputError, match="not enough free space"):
        Trainer(model, Adam(model), np.random.default_rng(0), tmp_path / "run", progress=False, log=lambda s: None)
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1 << 40, 0, need))
    Trainer(model, Adam(model), np.random.default_rng(0), tmp_path / "run", progress=False, log=lambda s: None)
