"""Fault cases of the arrays a Python user hands to model.separate (Part I) and
Separator.separate (Part II): dtypes, shapes and values at the edge."""
import numpy as np
import pytest
from _faults import lib_error

from npvae.audio.stft import STFTConfig
from npvae.models.mnist import build_model
from npvae.models.music import SpectrogramUNetVAE
from npvae.separation.separator import Normalizer, Separator


@pytest.fixture(scope="module")
def mnist_separate():
    return build_model("unet", rng=np.random.default_rng(0), channels=(4, 4, 8), latent_dim=4).separate


@pytest.fixture(scope="module")
def separator():
    model = SpectrogramUNetVAE(channels=(4, 4, 8), latent_channels=4, rng=np.random.default_rng(0))
    return Separator(model, STFTConfig(sample_rate=8000, n_fft=256, hop=64),
                     Normalizer(mean=np.zeros(128), std=np.ones(128)))


_U8 = np.random.default_rng(3).integers(0, 256, (4, 28, 28)).astype(np.uint8)
_PCM = (np.random.default_rng(4).standard_normal((4000, 2)) * 3000).astype(np.int16)


# --- model.separate (Part I) --------------------------------------------------------------

@pytest.mark.fault("inputs", "model.separate of uint8 images (as load_images returns them)", "correct result")
def test_uint8_images(mnist_separate):
    a = mnist_separate(_U8)
    b = mnist_separate(_U8 / np.float32(255))
    assert all(np.allclose(x, y, atol=1e-6) for x, y in zip(a, b))
    assert max(float(x.max()) for x in a) <= 1.0


BAD_IMAGES = [
    ("model.separate of float images in 0..255", _U8.astype(np.float32), "divide by 255"),
    ("model.separate of int64 images", _U8.astype(np.int64), "ambiguous"),
    ("model.separate of images holding NaN", np.full((2, 28, 28), np.nan), "NaN"),
    ("model.separate of an empty batch", np.zeros((0, 28, 28)), "empty"),
    ("model.separate of flat (N, 784) images", np.zeros((2, 784)), "reshape"),
    ("model.separate of one (28, 28) image", np.zeros((28, 28)), r"x\[None\]"),
    ("model.separate of (N, 1, 28, 28) images", np.zeros((2, 1, 28, 28)), r"\(N, 28, 28\)"),
    ("model.separate of 32 x 32 images", np.zeros((2, 32, 32)), r"\(N, 28, 28\)"),
    ("model.separate of negative values", np.full((1, 28, 28), -0.5), r"\[0, 1\]"),
    ("model.separate of complex images", np.zeros((1, 28, 28), complex), "numbers"),
    ("model.separate of strings", np.full((1, 28, 28), "a"), "numbers"),
]


@pytest.mark.fault("inputs", "{description}", "clear error")
@pytest.mark.parametrize("description, x, match", BAD_IMAGES, ids=[b[0] for b in BAD_IMAGES])
def test_bad_images(mnist_separate, description, x, match):
    with lib_error(match):
        mnist_separate(x)


@pytest.mark.fault("inputs", "model.separate of float64 images in [0, 1]", "correct result")
def test_float64_images(mnist_separate):
    d, f, m = mnist_separate(np.random.default_rng(0).uniform(size=(2, 28, 28)))
    assert d.shape == (2, 28, 28) and d.dtype == np.float32, (d.shape, d.dtype)


# --- Separator.separate (Part II) ----------------------------------------------------------

@pytest.mark.fault("inputs", "Separator.separate of int16 audio (scaled by 1/32768)", "correct result")
def test_int16_audio(separator):
    a = separator.separate(_PCM, 8000)
    b = separator.separate(_PCM / np.float32(32768), 8000)
    assert np.array_equal(a, b) and float(np.abs(a).max()) < 2


@pytest.mark.fault("inputs", "Separator.separate of int32 audio", "correct result")
def test_int32_audio(separator):
    a = separator.separate(_PCM.astype(np.int32) << 16, 8000)
    b = separator.separate(_PCM / np.float32(32768), 8000)
    assert np.allclose(a, b, atol=1e-6)


@pytest.mark.fault("inputs", "Separator.separate of 8-bit (uint8, offset) audio", "correct result")
def test_uint8_audio(separator):
    u = (_PCM // 256 + 128).astype(np.uint8)
    a = separator.separate(u, 8000)
    assert float(np.abs(a).max()) < 2


BAD_AUDIO = [
    ("Separator.separate of audio holding NaN", np.r_[np.zeros(100), np.nan].astype(np.float32), 8000, "NaN"),
    ("Separator.separate of empty audio", np.zeros(0, np.float32), 8000, "empty"),
    ("Separator.separate of (channels, samples) audio", np.zeros((2, 4000), np.float32), 8000, "transpose"),
    ("Separator.separate at 0 Hz", np.zeros(4000, np.float32), 0, "sample rate"),
    ("Separator.separate at 44100.5 Hz", np.zeros(4000, np.float32), 44100.5, "sample rate"),
    ("Separator.separate of complex audio", np.zeros(4000, complex), 8000, "dtype"),
    ("Separator.separate of uint16 audio", np.zeros(4000, np.uint16), 8000, "unsigned"),
]


@pytest.mark.fault("inputs", "{description}", "clear error")
@pytest.mark.parametrize("description, x, sr, match", BAD_AUDIO, ids=[b[0] for b in BAD_AUDIO])
def test_bad_audio(separator, description, x, sr, match):
    with lib_error(match):
        separator.separate(x, sr)


@pytest.mark.fault("inputs", "Separator.separate of one sample", "correct result")
def test_one_sample(separator):
    out = separator.separate(np.array([0.5], np.float32), 8000)
    assert out.shape == (2, 1), out.shape
