"""Fault cases of sizes that would take the machine's memory: a sample rate that makes
resampling explode, a file declaring a tensor of gigabytes, a model too large to train."""
import zipfile

import numpy as np
import pytest
from _faults import cheap, expect_error, lib_error

import npvae
from npvae.audio.stft import STFTConfig
from npvae.separation.blind_separator import BlindMusicSeparator
from npvae.engine.checkpoint import model_arrays, save_checkpoint
from npvae.models.blind import BlindSeparationVAE
from npvae.models.mnist import build_model
from npvae.models.music import SpectrogramUNetVAE
from npvae.separation.separator import Normalizer, Separator

AUDIO = (0.1 * np.random.default_rng(5).standard_normal(4000)).astype(np.float32)


def _separator():
    model = SpectrogramUNetVAE(channels=(4, 4, 8), latent_channels=4, rng=np.random.default_rng(0))
    return Separator(model, STFTConfig(sample_rate=8000, n_fft=256, hop=64),
                     Normalizer(mean=np.zeros(128), std=np.ones(128)))


# --- sample rates ------------------------------------------------------------------------------

@pytest.mark.fault("inputs", "Separator.separate(audio, 1): a rate of 1 Hz (resampled 8000-fold)", "clear error")
def test_separate_at_one_hertz():
    with lib_error(r"sample rate 1 Hz.*1,000 to 384,000 Hz"):
        _separator().separate(AUDIO[:40], 1)


@pytest.mark.fault("inputs", "Separator.separate at 1,000,000 Hz", "clear error")
def test_separate_above_the_audio_rates():
    with lib_error(r"sample rate 1,000,000 Hz.*384,000 Hz"):
        _separator().separate(AUDIO, 1_000_000)


@pytest.mark.fault("inputs", "BlindMusicSeparator.separate at 500 Hz", "clear error")
def test_blind_separate_below_the_audio_rates():
    model = BlindSeparationVAE(hidden=(8,), latent_dim=2, shape=(128, 8), rng=np.random.default_rng(0))
    sep = BlindMusicSeparator(model, STFTConfig(sample_rate=8000, n_fft=256, hop=64), 1.0)
    with lib_error(r"sample rate 500 Hz.*1,000 to 384,000 Hz"):
        sep.separate(AUDIO[:100], 500)


@pytest.mark.fault("separate", "a WAV file whose header declares 500 Hz (nothing written)", "clear error")
def test_separate_command_refuses_a_500_hz_file(cli, music_model, song, new_dir):
    path = song("slow.wav", sr=500, seconds=2.0)
    out = new_dir()
    r = cli("separate", "--model", music_model, "--out", out, "--no-progress", path)
    expect_error(r, r"slow\.wav.*sample rate 500 Hz.*1,000 to 384,000 Hz")
    assert not any(out.iterdir())


# --- declared sizes ----------------------------------------------------------------------------

def _redeclared_checkpoint(folder, name, shape):
    """A checkpoint of a small dense model whose array ``name`` declares ``shape`` (its
    ``.npy`` header) over a few bytes of data."""
    model = build_model("dense", rng=np.random.default_rng(0), hidden=(16,), latent_dim=2)
    good, path = folder / "good.npz", folder / "checkpoint.npz"
    save_checkpoint(good, model_arrays(model.state_dict()), {"epoch": 1, "model_spec": model.spec(), "config": {}})
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            if item.filename != f"a/model/{name}.npy":
                dst.writestr(item, src.read(item))
                continue
            with dst.open(item.filename, "w") as f:
                np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
                f.write(b"\0" * 64)
    return path


@pytest.mark.fault("checkpoint", "load_model of a checkpoint whose weight declares (1, 2**28) (1 GB)",
                   "clear error")
def test_checkpoint_tensor_declared_huge(tmp_path):
    path = _redeclared_checkpoint(tmp_path, "encoder.1.W", (1, 2**28))
    with cheap(), lib_error(r"checkpoint\.npz.*encoder\.1\.W.*\(1, 268435456\).*\(784, 16\)"):
        npvae.load_model(path)


# --- models too large to train -----------------------------------------------------------------

LARGE = [("mnist", "--hidden", "10000000"), ("music", "--channels", "4000", "8000"),
         ("blind-mnist", "--hidden", "100000000"), ("blind-music", "--hidden", "30000000")]


@pytest.mark.fault("engine", "npvae train {argv} (a model of hundreds of GiB)", "clear error")
@pytest.mark.parametrize("argv", LARGE, ids=[" ".join(a) for a in LARGE])
def test_train_refuses_a_model_larger_than_the_machine(cli, argv, new_dir):
    out = new_dir() / "run"
    with cheap(seconds=60):
        r = cli("train", *argv, "--epochs", "1", "--out", out, "--no-progress")
    expect_error(r, rf"would need about [\d,.]+ GiB.*more than this machine's [\d,.]+ GiB.*{argv[1]}")
    assert not out.exists()
