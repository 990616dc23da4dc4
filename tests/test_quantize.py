"""Model files with int8 weights (npvae.files.quantize, `npvae ship --quantize int8`):
the codes and scales, the file that holds them, what loading gives back, damaged
files refused, and the same model in Octave."""
import h5py
import numpy as np
import pytest
import scipy.io

import npvae
from npvae.errors import FileFormatError
from npvae.files.model_file import read_model_file, save_model
from npvae.files.quantize import (QUANTIZE_MIN_SIZE, dequantize, quantizable, quantize_int8,
                                  quantized_round_trip)
from npvae.models import UNetSeparationVAE

from _octave import needs_octave, octave_ok


def _unet(rng_seed=0):
    """A small U-Net with BatchNorm (its buffers stay float) and weights large enough to quantize."""
    return UNetSeparationVAE(channels=(8, 16, 32), latent_dim=4, norm="batch", rng=np.random.default_rng(rng_seed))


def test_codes_are_int8_within_half_a_step_of_each_slice():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 5, 3, 3)).astype(np.float32) * np.arange(1, 7, dtype=np.float32)[:, None, None, None]
    w[2] = 0                                            # a slice of zeros
    state = {"W": w, "b": rng.standard_normal(6).astype(np.float32),
             "small": rng.standard_normal((3, 4)).astype(np.float32)}
    params, scales = quantize_int8(state)
    assert set(scales) == {"W"} and params["W"].dtype == np.int8
    assert np.array_equal(params["b"], state["b"]) and np.array_equal(params["small"], state["small"])
    s = scales["W"]
    assert s.dtype == np.float32 and s.shape == (6,) and s[2] == 1.0
    assert np.abs(params["W"]).max() == 127                             # each slice's peak maps to +-127
    assert [np.abs(params["W"][i]).max() for i in range(6)] == [127, 127, 0, 127, 127, 127]
    back = dequantize("x", params, scales)["W"]
    assert back.dtype == np.float32
    assert np.all(np.abs(back - w) <= s[:, None, None, None] / 2 * (1 + 1e-6))
    assert quantizable(np.zeros((8, 32))) and not quantizable(np.zeros(QUANTIZE_MIN_SIZE))
    assert not quantizable(np.zeros((2, QUANTIZE_MIN_SIZE // 2 - 1)))
    assert not quantizable(np.zeros((1568, 4)))          # a scale for every 4 values: stays float


def test_an_int8_file_saves_three_quarters_of_the_weights_bytes_and_loads_to_the_round_trip(tmp_path):
    model = _unet()
    plain, small = save_model(tmp_path / "f.h5", model), save_model(tmp_path / "q.h5", model, quantize="int8")
    weights = [v for v in model.state_dict().values() if quantizable(v)]
    # three bytes of four a weight, less the scales and their datasets' HDF5 headers (about 3 kB each)
    saving = sum(0.75 * v.nbytes - 4 * v.shape[0] - 4096 for v in weights)
    assert plain.stat().st_size - small.stat().st_size > saving > 0.5 * sum(v.nbytes for v in weights)
    with h5py.File(small, "r") as f:
        assert f["model/params/enc2_W"].dtype == np.int8 and f["model/param_scales/enc2_W"].dtype == np.float32
        assert f["model/params/enc2_norm_running_var"].dtype == np.float32 and "enc1_W" not in f["model/param_scales"]
    loaded, _ = read_model_file(small)
    want = quantized_round_trip(model.state_dict())
    got = loaded.state_dict()
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == np.float32
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    x = np.random.default_rng(1).random((5, 28, 28), dtype=np.float32)
    model.load_state_dict(want)
    model.eval()
    for a, b in zip(model.separate(x), loaded.separate(x)):
        np.testing.assert_array_equal(a, b)


def test_save_refuses_an_unknown_quantization(tmp_path):
    with pytest.raises(ValueError, match=r"quantize must be one of \('int8',\)"):
        save_model(tmp_path / "q.h5", _unet(), quantize="int4")


def _damaged(tmp_path, edit):
    path = save_model(tmp_path / "q.h5", _unet(), quantize="int8")
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda f: f["model/param_scales/enc2_W"].__setitem__((0, 3), np.nan), r"scale 3 of tensor enc2\.W is nan"),
    (lambda f: f["model/param_scales/enc2_W"].__setitem__((0, 0), 0.0), r"scale 0 of tensor enc2\.W is 0"),
    (lambda f: f["model/param_scales/enc2_W"].__setitem__((0, 1), -2.0), r"scale 1 of tensor enc2\.W is -2"),
    (lambda f: f.__delitem__("model/param_scales/enc2_W"), r"tensor enc2\.W holds int8 codes but /model/param_"
                                                           r"scales has no scale for it"),
])
def test_damaged_scales_are_refused_naming_the_tensor(tmp_path, edit, message):
    with pytest.raises(FileFormatError, match=message):
        read_model_file(_damaged(tmp_path, edit))


def test_scales_of_the_wrong_shape_are_refused(tmp_path):
    def wrong_shape(f):
        a = f["model/param_scales/enc2_W"][...]
        attrs = dict(f["model/param_scales/enc2_W"].attrs)
        del f["model/param_scales/enc2_W"]
        d = f.create_dataset("model/param_scales/enc2_W", data=np.concatenate([a, a], axis=1))
        d.attrs.update(attrs)
        d.attrs["npvae_shape"] = np.array([2 * a.shape[1]])
    with pytest.raises(FileFormatError, match=r"the scales of tensor enc2\.W have shape \(32,\).*need 16 float"):
        read_model_file(_damaged(tmp_path, wrong_shape))


def test_a_scale_for_float_weights_is_refused(tmp_path):
    def float_codes(f):                  # enc1.W (8 x 1 x 3 x 3) is too small to quantize
        assert f["model/params/enc1_W"].dtype == np.float32
        d = f.create_dataset("model/param_scales/enc1_W", data=np.ones((1, 8), np.float32))
        d.attrs.update(dict(f["model/param_scales/enc2_W"].attrs))
        d.attrs["npvae_name"] = "enc1.W"
    with pytest.raises(FileFormatError, match=r"tensor enc1\.W has a scale but holds float32, not int8"):
        read_model_file(_damaged(tmp_path, float_codes))


def test_a_scale_for_a_tensor_the_file_lacks_is_refused(tmp_path):
    def stray(f):
        f["model/param_scales/nothing_W"] = np.ones((1, 3), np.float32)
    with pytest.raises(FileFormatError, match=r"/model/param_scales names nothing_W, which /model/params does not"):
        read_model_file(_damaged(tmp_path, stray))


@needs_octave
def test_octave_runs_an_int8_model_as_python_does(tmp_path):
    model = _unet(3)
    path = save_model(tmp_path / "q.h5", model, quantize="int8")
    loaded = npvae.load_model(path)
    mixtures = np.random.default_rng(2).random((3, 28, 28), dtype=np.float32)
    scipy.io.savemat(tmp_path / "mix.mat", {"mix": mixtures})
    octave_ok(f"load('mix.mat'); [d, f, m] = npvae_forward('{path}', mix); save('-v7', 'out.mat', 'd', 'f', 'm');",
              tmp_path)
    got = scipy.io.loadmat(tmp_path / "out.mat")
    for key, want in zip("dfm", loaded.separate(mixtures)):
        np.testing.assert_allclose(got[key], want, atol=1e-5, rtol=0, err_msg=key)


@needs_octave
def test_octave_separates_with_an_int8_music_model_as_python_does(tmp_path):
    """npvae_separate.m reads the int8 weights of a music model (two stacked U-Nets with
    BatchNorm) as npvae.load_separator does: the same estimates to 1e-5."""
    import soundfile  # noqa: F401  (the audio stack the separator needs)
    from npvae.audio.stft import STFTConfig
    from npvae.files.model_file import load_separator, save_separator
    from npvae.models.stacked import StackedSpectrogramUNetVAE
    from npvae.separation.separator import Normalizer, Separator
    rng = np.random.default_rng(4)
    model = StackedSpectrogramUNetVAE(2, channels=(8, 16, 16), latent_channels=2, norm="batch",
                                      rng=np.random.default_rng(1)).eval()
    bins = 32
    norm = Normalizer("log", 0.3, rng.random(bins).astype(np.float32), (0.5 + rng.random(bins)).astype(np.float32))
    path = save_separator(tmp_path / "int8.h5", Separator(model, STFTConfig(8000, 64, 16, "hann"), norm),
                          quantize="int8")
    with h5py.File(path, "r") as f:
        assert len(f["model/param_scales"]) >= 4
    sep = load_separator(path)
    stereo = (0.3 * rng.standard_normal((8000 + 77, 2))).astype(np.float32)
    scipy.io.savemat(tmp_path / "in.mat", {"stereo": stereo.astype(np.float64)})
    octave_ok("load('in.mat'); [v, a] = npvae_separate('int8.h5', stereo, 8000); save('-v7', 'out.mat', 'v', 'a');",
              tmp_path, timeout=300)
    got = scipy.io.loadmat(tmp_path / "out.mat")
    want = sep.separate(stereo, 8000)
    for key, w in zip("va", want):
        np.testing.assert_allclose(got[key], w, atol=1e-5, rtol=0, err_msg=key)
