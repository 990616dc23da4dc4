"""Files written by npvae 0.1.0 (before the issue-11 refactor) still load and resume.

``tests/fixtures/v0_1`` holds model and results files of both tasks and the
checkpoints of two tiny training runs after their first epoch, all written by the
code of commit 10e5cbf (``make_fixtures.py`` there says how), with the outputs and
final weights that code produced. Today's code must rebuild the same models,
give the same outputs, and resume those checkpoints to the same weights.
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


def test_part1_checkpoint_resumes_to_the_same_weights(tmp_path, shared_data, expected):
    from npvae.pipelines.mnist import TrainConfig, train
    run = tmp_path / "mnist"
    run.mkdir()
    shutil.copy(FIX / "mnist_checkpoint_epoch1.npz", run / "checkpoint.npz")
    cfg = TrainConfig(model="dense", hidden=(4, 4), latent_dim=2, epochs=2, batch_size=64, train_limit=256,
                      eval_limit=50, display_every=1, data_dir=str(shared_data), out=str(run), progress=False,
                      warmup=1.0, n_examples=2)
    train(cfg, resume=True, log=lambda *a: None)
    _assert_weights(npvae.load_model(run).state_dict(), expected, "mnist_epoch2/")


def test_part2_checkpoint_resumes_to_the_same_weights(tmp_path, shared_data, expected):
    from npvae.pipelines.music import TrainConfig, train
    run = tmp_path / "music"
    run.mkdir()
    shutil.copy(FIX / "music_checkpoint_epoch1.npz", run / "checkpoint.npz")
    cfg = TrainConfig(dataset="mir1k", data_dir=str(shared_data), out=str(run), epochs=2, batch_size=2, frames=16,
                      channels=(2, 2, 4), latent_channels=2, display_every=1, snippet_seconds=0.5,
                      max_val_tracks=1, max_train_tracks=1, progress=False)
    train(cfg, resume=True, log=lambda *a: None)
    _assert_weights(npvae.load_model(run).model.state_dict(), expected, "music_epoch2/")
