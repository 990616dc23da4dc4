"""Fault cases of data folders: --data-dir, NPVAE_DATA and dataset names."""
import os
import subprocess
import sys

import pytest
from _faults import lib_error

from npvae.audio.datasets import load_tracks
from npvae.data.mnist import load_images


def _load_mnist(data_dir=None):
    return load_images("mnist", "test", data_dir=data_dir, download=False)


@pytest.mark.fault("data", "load_images with a --data-dir typo", "clear error")
def test_data_dir_typo(tmp_path):
    with lib_error("does not exist"):
        _load_mnist(tmp_path / "dta")


@pytest.mark.fault("data", "load_images with NPVAE_DATA pointing nowhere", "clear error")
def test_npvae_data_nowhere(tmp_path, monkeypatch):
    monkeypatch.setenv("NPVAE_DATA", str(tmp_path / "nowhere"))
    with lib_error("NPVAE_DATA=.*not a folder"):
        _load_mnist()


@pytest.mark.fault("data", "a relative NPVAE_DATA, then the program changes folder", "correct result")
def test_relative_npvae_data_after_chdir(shared_data, tmp_path):
    """``NPVAE_DATA=../shared/data`` names a folder relative to where the program started."""
    start = tmp_path / "clone"
    (start / "runs" / "a").mkdir(parents=True)      # deeper, so that the path does not climb past /
    code = ("import os, sys; from npvae.data.mnist import load_images; os.chdir(sys.argv[1]); "
            "x, y = load_images('mnist', 'test', download=False); print(x.shape)")
    env = {**os.environ, "NPVAE_DATA": os.path.relpath(shared_data, start)}
    r = subprocess.run([sys.executable, "-c", code, str(start / "runs" / "a")],
                       cwd=start, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-800:]
    assert r.stdout.strip() == "(10000, 28, 28)", r.stdout


@pytest.mark.fault("data", "load_images with a --data-dir that lacks mnist/ (no fallback)", "clear error")
def test_data_dir_without_mnist(tmp_path):
    with lib_error("not found"):
        _load_mnist(tmp_path)


@pytest.mark.fault("data", "load_images with --data-dir being a file", "clear error")
def test_data_dir_is_a_file(song):
    with lib_error("is a file"):
        _load_mnist(song())


@pytest.mark.fault("data", "load_tracks mir1k with a --data-dir typo", "clear error")
def test_mir1k_typo(tmp_path):
    with lib_error("does not exist"):
        load_tracks("mir1k", "train", tmp_path / "typo")


@pytest.mark.fault("data", "a stems folder without vocals/", "clear error")
def test_stems_without_vocals(tmp_path):
    (tmp_path / "accompaniment").mkdir()
    with lib_error("vocals"):
        load_tracks("stems", "all", tmp_path)


@pytest.mark.fault("data", "load_tracks of an unknown dataset", "clear error")
def test_unknown_dataset():
    with lib_error("unknown dataset"):
        load_tracks("musdb", "train")
