"""Files written by npvae 0.1.0 still load and resume.

``tests/fixtures/v0_1`` holds model and results files of both tasks and the
checkpoints of two tiny training runs after their first epoch, all written by
version 0.1.0 (commit 10e5cbf; ``make_fixtures.py`` there says how), with the
outputs and final weights that code produced. Today's code must rebuild the same
models, give the same outputs, and resume those checkpoints to the same weights:
a resumed run takes its settings from the checkpoint (under the names it recorded,
``warmup`` or ``max_train_tracks`` for instance), so only the more epochs, the data
and the run folder are named here.
"""
import shutil
from pathlib import Path

import numpy as np
import pytest

import npvae

FIX = Path(__file__).resolve().parent / "fixtures" / "v0_1"


@pytest.fixture(scope="module")
def expected():
    with np.load(FIX / "expected.npz") as f:
        return dict(f)


@pytest.mark.parametrize("name", ["mnist_model.h5", "mnist_results.h5"])
def test_part1_files_load_and_separate_as_before(expected, name):
    model = npvae.load_model(FIX / name)
    assert type(model).__name__ == "UNetSeparationVAE"
    outs = model.separate(expected["mnist_mixture"])
    for key, out in zip(("mnist_digit", "mnist_fashion", "mnist_mixture_hat"), outs):
        np.testing.assert_allclose(out, expected[key], rtol=0, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("name", ["music_model.h5", "music_results.h5"])
def test_part2_files_load_and_separate_as_before(expected, name):
    sep = npvae.load_model(FIX / name)
    assert sep.stft_cfg.sample_rate == 8000 and sep.norm.n_bins == 128
    np.testing.assert_allclose(sep.separate_mono(expected["music_input"]), expected["music_estimates"],
                               rtol=0, atol=1e-5)


def _assert_weights(state, expected, prefix):
    keys = {k[len(prefix):] for k in expected if k.startswith(prefix)}
    assert keys == set(state)
    for k in keys:
        np.testing.assert_allclose(state[k], expected[prefix + k], rtol=0, atol=1e-6, err_msg=k)


def _resume(task, run, shared_data):
    """Resume the fixture's checkpoint in a fresh run folder for a second epoch."""
    run.mkdir()
    shutil.copy(FIX / f"{task}_checkpoint_epoch1.npz", run / "checkpoint.npz")
    return npvae.train(task, {"out": str(run), "epochs": 2, "data_dir": str(shared_data)}, resume=True,
                       log=lambda *a: None)


def test_part1_checkpoint_resumes_to_the_same_weights(tmp_path, shared_data, expected):
    result = _resume("mnist", tmp_path / "mnist", shared_data)
    cfg = result.config          # the recorded settings, "warmup" read as kl_warmup
    assert (cfg.model, cfg.hidden, cfg.latent_dim, cfg.kl_warmup, cfg.train_limit, cfg.eval_limit) == \
        ("dense", (4, 4), 2, 1.0, 256, 50)
    _assert_weights(npvae.load_model(tmp_path / "mnist").state_dict(), expected, "mnist_epoch2/")


def test_part2_checkpoint_resumes_to_the_same_weights(tmp_path, shared_data, expected):
    result = _resume("music", tmp_path / "music", shared_data)
    cfg = result.config          # the recorded settings, "max_train_tracks" read as train_limit
    assert (cfg.channels, cfg.frames, cfg.batch_size, cfg.train_limit, cfg.eval_limit) == ((2, 2, 4), 16, 2, 1, 1)
    _assert_weights(npvae.load_model(tmp_path / "music").model.state_dict(), expected, "music_epoch2/")
