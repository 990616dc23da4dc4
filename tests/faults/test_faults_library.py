"""Fault cases of the library a Python user calls: damaged model files (load_model,
load_separator), separation that would return NaN, and odd inputs (integer types, sample
rates, NaN samples, damaged WAV headers, a layer's backward before its forward)."""
import json
import shutil
import time
import warnings

import h5py
import numpy as np
import pytest
import soundfile as sf
from _faults import cheap, edited_model, lib_error

import npvae
from npvae.audio.io import read_audio
from npvae.audio.stft import STFTConfig
from npvae.audio.stream import iter_file_blocks
from npvae.separation.blind_separator import BlindMusicSeparator
from npvae.files.model_file import load_separator, save_model
from npvae.layers import Conv2d, ConvTranspose2d, Dense, LeakyReLU, Reshape
from npvae.models.blind import BlindSeparationVAE
from npvae.models.mnist import build_model
from npvae.models.music import SpectrogramUNetVAE
from npvae.separation.separator import Normalizer, Separator

AUDIO = (0.1 * np.random.default_rng(5).standard_normal(4000)).astype(np.float32)


def damaged_copy(source, folder, edit):
    """A copy of the model file ``source`` in ``folder``, changed in place by ``edit(h5py.File)``."""
    p = folder / "model.h5"
    shutil.copyfile(source, p)
    with h5py.File(p, "r+") as f:
        edit(f)
    return p


def _param(f, name):
    """The dataset of parameter ``name`` ("enc1.W") in /model/params."""
    return f["model/params/" + name.replace(".", "_")]


def _set_nan(name):
    def edit(f):
        ds = _param(f, name)
        a = ds[()]
        a.flat[a.size // 2] = np.nan
        ds[...] = a
    return edit


def _flip_exponent(name):
    """Bit 30 (the exponent's top bit) of every float32 of one tensor: 0.05 becomes 1.7e37."""
    def edit(f):
        ds = _param(f, name)
        ds[...] = (ds[()].view(np.uint32) ^ np.uint32(1 << 30)).view(np.float32)
    return edit


def _set_std(value):
    def edit(f):
        ds = f["config/normalizer/std"]
        a = ds[()]
        a[...] = value
        ds[...] = a
    return edit


def replaced_tensor(source, folder, name, make):
    """A copy of the model file ``source`` in ``folder`` whose parameter ``name`` is the dataset
    ``make(group, key, old)`` creates (with the old one's attributes). The file is copied object
    by object: deleting a link from npvae's creation-ordered groups hides the new one."""
    target = "/model/params/" + name.replace(".", "_")
    p = folder / "model.h5"

    def copy(src, dst):
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        for key, obj in src.items():
            if isinstance(obj, h5py.Group):
                copy(obj, dst.create_group(key, track_order=True))
            elif obj.name == target:
                new = make(dst, key, obj)
                for k, v in obj.attrs.items():
                    new.attrs[k] = v
            else:
                src.copy(obj, dst, key)

    with h5py.File(source, "r") as src, h5py.File(p, "w", track_order=True) as dst:
        copy(src, dst)
    return p


def _huge(group, key, old):
    """A compressed dataset that declares (40000, 20000) float32 in a file of a few kilobytes."""
    return group.create_dataset(key, shape=(40000, 20000), dtype=np.float32, chunks=(1000, 1000),
                                compression="gzip")


def _as_int32(group, key, old):
    return group.create_dataset(key, data=old[()].astype(np.int32))


@pytest.fixture(scope="module")
def dense_model(tmp_path_factory):
    """A small Part I dense VAE saved as a model file."""
    m = build_model("dense", rng=np.random.default_rng(0), hidden=(16,), latent_dim=4)
    return save_model(tmp_path_factory.mktemp("dense") / "model.h5", m, {"model": "dense"})


def _spec(**change):
    def edit(tree):
        spec = json.loads(tree["model"]["spec"])
        spec.update(change)
        tree["model"]["spec"] = json.dumps(spec)
    return edit


# --- model files ------------------------------------------------------------------------------

WEIGHT_DAMAGE = [
    ("load_model of a music model file with a NaN weight", "music", _set_nan("enc2.W"), r"enc2\.W.*NaN"),
    ("load_model of an MNIST model file with a NaN weight", "mnist", _set_nan("enc2.W"), r"enc2\.W.*NaN"),
    ("load_model of a music model file with the exponent bits of one tensor flipped", "music",
     _flip_exponent("dec2.W"), r"dec2\.W.*(NaN|beyond)"),
    ("load_model of an MNIST model file with the exponent bits of one tensor flipped", "mnist",
     _flip_exponent("up1.W"), r"up1\.W.*(NaN|beyond)"),
    ("load_model of a music model file whose normaliser std is 0", "music", _set_std(0.0), r"std.*positive"),
    ("load_model of a music model file whose normaliser std holds NaN", "music", _set_std(np.nan), r"std.*NaN"),
]


@pytest.mark.fault("model file", "{description}", "clear error")
@pytest.mark.parametrize("description, which, edit, match", WEIGHT_DAMAGE, ids=[w[0] for w in WEIGHT_DAMAGE])
def test_damaged_weights(tmp_path, music_model, mnist_model, description, which, edit, match):
    p = damaged_copy(music_model if which == "music" else mnist_model, tmp_path, edit)
    for load in (npvae.load_model, load_separator) if which == "music" else (npvae.load_model,):
        with lib_error(r"model\.h5.*" + match):
            out = load(p)
            if which == "music":     # what the user gets if the load goes through
                assert np.isfinite(out.separate(AUDIO, 8000)).all()


@pytest.mark.fault("model file", "load_model of a small file declaring a (40000, 20000) tensor", "clear error")
def test_huge_declared_tensor(tmp_path, dense_model):
    p = replaced_tensor(dense_model, tmp_path, "encoder.1.W", _huge)
    assert p.stat().st_size < 10e6
    with cheap(), lib_error(r"model\.h5.*encoder\.1\.W.*\(40000, 20000\)"):
        npvae.load_model(p)


@pytest.mark.fault("model file", "load_model of a model file with a tensor stored as int32", "clear error")
def test_int32_tensor(tmp_path, mnist_model):
    p = replaced_tensor(mnist_model, tmp_path, "enc1.W", _as_int32)
    with lib_error(r"model\.h5.*enc1\.W.*int32"):
        npvae.load_model(p)


SPEC_EDITS = [
    ("load_model of a spec asking for hidden [40000, 40000]", _spec(hidden=[40000, 40000]), r"50,000,000"),
    ("load_model of a spec with hidden 'abc'", _spec(hidden="abc"), r"hidden.*'abc'"),
    ("load_model of a spec with latent_dim 4.5", _spec(latent_dim=4.5), r"latent_dim.*4\.5"),
    ("load_model of a spec with a negative width", _spec(hidden=[-16]), r"hidden.*-16"),
]


@pytest.mark.fault("model file", "{description}", "clear error")
@pytest.mark.parametrize("description, edit, match", SPEC_EDITS, ids=[s[0] for s in SPEC_EDITS])
def test_edited_spec(tmp_path, dense_model, description, edit, match):
    p = edited_model(dense_model, edit, tmp_path)
    with cheap(), lib_error(r"model\.h5.*" + match):
        npvae.load_model(p)


@pytest.mark.fault("model file", "load_model of a spec nested 50,000 levels deep", "clear error")
def test_deep_spec(tmp_path, dense_model):
    depth = 50_000
    for text, match in [('{"type": "DenseSeparationVAE", "hidden": ' + "[" * depth + "]" * depth + "}", "nests"),
                        ('{"type": "Sequential", "layers": [' * depth + "]}" * depth, "nests|declares")]:
        p = edited_model(dense_model, lambda t: t["model"].__setitem__("spec", text), tmp_path)
        with cheap(), lib_error(r"model\.h5.*" + match):
            npvae.load_model(p)


# --- separation ---------------------------------------------------------------------------------

def _music_separator(**norm):
    model = SpectrogramUNetVAE(channels=(4, 4, 8), latent_channels=4, rng=np.random.default_rng(0))
    return Separator(model, STFTConfig(sample_rate=8000, n_fft=256, hop=64),
                     Normalizer(**{"mean": np.zeros(128), "std": np.ones(128), **norm}))


@pytest.mark.fault("separation", "Separator.separate after a weight was set to NaN in memory", "clear error")
def test_separator_nan_weight():
    sep = _music_separator()
    sep.model.dec2.params["W"][0, 0, 0, 0] = np.nan
    with lib_error("NaN or infinite"):
        sep.separate(AUDIO, 8000)
    with lib_error("NaN or infinite"):
        sep.separate_mono(AUDIO)


@pytest.mark.fault("separation", "a Normalizer with std 0 (every feature would be NaN)", "clear error")
def test_normalizer_zero_std():
    with lib_error("std must be positive"):
        _music_separator(std=np.zeros(128))


@pytest.mark.fault("separation", "BlindMusicSeparator.separate after a weight was set to NaN in memory",
                   "clear error")
def test_blind_separator_nan_weight():
    model = BlindSeparationVAE(hidden=(8,), latent_dim=2, shape=(128, 8), output="softplus", log_input=True,
                               rng=np.random.default_rng(0))
    model.decoder[0].params["W"][0, 0] = np.nan
    sep = BlindMusicSeparator(model, STFTConfig(sample_rate=8000, n_fft=256, hop=64), 1.0)
    with lib_error("NaN or infinite"), np.errstate(invalid="ignore"):
        sep.separate(AUDIO, 8000)


# --- inputs -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def separator():
    return _music_separator()


BAD_INPUTS = [
    ("Separator.separate of int64 audio", (AUDIO * 32767).astype(np.int64), 8000, r"int64.*ambiguous.*int16"),
    ("Separator.separate at a NaN sample rate", AUDIO, float("nan"), r"positive number in Hz, got nan"),
    ("Separator.separate at the sample rate '16000' (a string)", AUDIO, "16000",
     r"positive number in Hz, got the string '16000'"),
    ("Separator.separate at sample rate True", AUDIO, True, r"positive number in Hz"),
    ("Separator.separate of audio with a NaN at sample 1000", np.where(np.arange(4000) == 1000, np.nan, AUDIO),
     8000, r"NaN.*sample 1000\b"),
]


@pytest.mark.fault("inputs", "{description}", "clear error")
@pytest.mark.parametrize("description, x, sr, match", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input(separator, description, x, sr, match):
    with lib_error(match):
        separator.separate(x, sr)


@pytest.mark.fault("inputs", "BlindMusicSeparator.separate at the sample rate '16000'", "clear error")
def test_blind_sample_rate_string():
    model = BlindSeparationVAE(hidden=(8,), latent_dim=2, shape=(128, 8), rng=np.random.default_rng(0))
    sep = BlindMusicSeparator(model, STFTConfig(sample_rate=8000, n_fft=256, hop=64), 1.0)
    with lib_error("got the string '16000'"):
        sep.separate(AUDIO, "16000")


def _nan_wav(path):
    x = np.tile(AUDIO[:, None], (1, 2))
    x[1000, 1] = np.nan
    sf.write(str(path), x, 8000, subtype="FLOAT")
    return path


@pytest.mark.fault("inputs", "read_audio of a float WAV with a NaN at sample 1000", "clear error")
def test_read_audio_nan_index(tmp_path):
    with lib_error(r"first at sample 1000\b"):
        read_audio(_nan_wav(tmp_path / "nan.wav"))


@pytest.mark.fault("inputs", "separating a float WAV in blocks with a NaN at sample 1000", "clear error")
def test_stream_nan_index(tmp_path):
    with sf.SoundFile(str(_nan_wav(tmp_path / "nan.wav"))) as f, lib_error(r"sample 1000\b"):
        iter_file_blocks(f)(0, 4000)


@pytest.mark.fault("inputs", "read_audio of a WAV cut short (warns: header says N frames, M read)",
                   "correct result")
def test_truncated_wav(tmp_path):
    p = tmp_path / "full.wav"
    sf.write(str(p), np.tile(AUDIO[:, None], (1, 2)), 8000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(p.read_bytes()[:44 + 4 * 1500])
    with pytest.warns(RuntimeWarning, match=r"cut\.wav is truncated: header says 4000 frames, 1500 read"):
        x, sr = read_audio(cut)
    assert x.shape == (1500, 2) and sr == 8000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_audio(p)                           # a whole file reads without a word


@pytest.mark.fault("inputs", "read_audio of a 100 Hz WAV (warns: unusually low)", "correct result")
def test_low_rate_wav(tmp_path):
    p = tmp_path / "low.wav"
    sf.write(str(p), AUDIO[:400], 100)
    with pytest.warns(RuntimeWarning, match=r"low\.wav.*sample rate 100 Hz is unusually low"):
        x, sr = read_audio(p)
    assert sr == 100 and x.shape == (400, 1)


LAYERS = [
    ("Dense.backward before forward", lambda: Dense(4, 3), (2, 3)),
    ("Dense(activation='relu').backward before forward", lambda: Dense(4, 3, activation="relu"), (2, 3)),
    ("Conv2d.backward before forward", lambda: Conv2d(1, 4, 3), (1, 4, 5, 5)),
    ("Conv2d (direct kernel).backward before forward", lambda: Conv2d(4, 1, 3), (1, 1, 5, 5)),
    ("ConvTranspose2d.backward before forward", lambda: ConvTranspose2d(2, 1, 3), (1, 1, 5, 5)),
    ("LeakyReLU.backward before forward", lambda: LeakyReLU(0.2), (2, 3)),
    ("Reshape.backward before forward", lambda: Reshape((3,)), (2, 3)),
]


@pytest.mark.fault("inputs", "{description}", "clear error")
@pytest.mark.parametrize("description, make, shape", LAYERS, ids=[entry[0] for entry in LAYERS])
def test_backward_before_forward(description, make, shape):
    layer = make()
    with pytest.raises(RuntimeError, match=rf"{type(layer).__name__}\(.*backward called before forward"):
        layer.backward(np.zeros(shape, np.float32))
