"""Fuzzing the edges: IDX, WAV/FLAC, HDF5 model files, checkpoints and command-line
numbers. Every input ends in a named npvae error or a correct result, never another
exception; and kill -9 at a random moment of a tiny run, then --resume, gives the
same final weights as an uninterrupted run and leaves no temporary file."""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import npvae
from npvae.audio.io import read_audio, write_audio
from npvae.engine.checkpoint import load_checkpoint, save_checkpoint
from npvae.data.idx import parse_idx, read_idx, write_idx
from npvae.errors import DatasetError, FileFormatError

REPO = Path(__file__).resolve().parents[1]
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


# ----------------------------------------------------------------------------- IDX

@FAST
@given(st.binary(max_size=64))
def test_idx_bytes_parse_or_raise_dataset_error(raw):
    try:
        a = parse_idx(raw)
    except DatasetError:
        return
    assert isinstance(a, np.ndarray) and a.ndim >= 1


@FAST
@given(dtype=st.sampled_from(["u1", "i1", ">i2", ">i4", ">f4", ">f8"]),
       shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), gz=st.booleans(), seed=st.integers(0, 2 ** 31))
def test_idx_round_trip_and_truncation(dtype, shape, gz, seed, tmp_path_factory):
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal(shape) * 50).astype(np.dtype(dtype).newbyteorder("="))
    p = tmp_path_factory.mktemp("idx") / ("a.idx.gz" if gz else "a.idx")
    write_idx(p, a)
    back = read_idx(p)
    assert back.dtype == a.dtype and np.array_equal(back, a, equal_nan=True)
    raw = p.read_bytes()
    cut = int(rng.integers(0, len(raw)))
    p.write_bytes(raw[:cut])
    with pytest.raises(DatasetError):
        read_idx(p)


# ----------------------------------------------------------------------------- audio files

@FAST
@given(fmt=st.sampled_from([("wav", "PCM_16"), ("wav", "PCM_24"), ("wav", "FLOAT"), ("flac", "PCM_16"),
                            ("flac", "PCM_24")]),
       channels=st.integers(1, 3), n=st.integers(1, 3000), sr=st.sampled_from([8000, 11025, 44100, 96000]),
       seed=st.integers(0, 2 ** 31))
def test_audio_round_trip(fmt, channels, n, sr, seed, tmp_path_factory):
    ext, subtype = fmt
    x = (np.random.default_rng(seed).uniform(-0.99, 0.99, (n, channels))).astype(np.float32)
    p = write_audio(tmp_path_factory.mktemp("a") / f"x.{ext}", x, sr, subtype=subtype)
    y, got_sr = read_audio(p)
    step = {"PCM_16": 2 ** -15, "PCM_24": 2 ** -23, "FLOAT": 0}[subtype]
    assert got_sr == sr and y.shape == (n, channels)
    np.testing.assert_allclose(y, x, atol=step * 1.01 + 1e-7)


@FAST
@given(raw=st.binary(max_size=400), ext=st.sampled_from(["wav", "flac", "ogg", "mp3"]))
def test_random_bytes_as_audio_are_named_errors(raw, ext, tmp_path_factory):
    p = tmp_path_factory.mktemp("b") / f"x.{ext}"
    p.write_bytes(raw)
    try:
        x, sr = read_audio(p)
    except FileFormatError:
        return
    assert x.ndim == 2 and x.shape[0] > 0 and np.all(np.isfinite(x)) and sr > 0


# ----------------------------------------------------------------------------- model files, checkpoints

@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory):
    from npvae.files.model_file import save_model
    from npvae.models.mnist import build_model
    m = build_model("dense", rng=np.random.default_rng(0), hidden=(8,), latent_dim=2)
    return save_model(tmp_path_factory.mktemp("m") / "model.h5", m, {}).read_bytes()


@FAST
@given(data=st.data())
def test_damaged_model_files_are_named_errors(model_bytes, tmp_path_factory, data):
    raw = bytearray(model_bytes)
    how = data.draw(st.sampled_from(["cut", "zero block", "random"]))
    if how == "cut":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    elif how == "zero block":
        at = data.draw(st.integers(0, len(raw) - 64))
        raw[at:at + 64] = bytes(64)
    else:
        raw = bytearray(data.draw(st.binary(min_size=0, max_size=2048)))
    p = tmp_path_factory.mktemp("d") / "model.h5"
    p.write_bytes(bytes(raw))
    try:
        model = npvae.load_model(p)
    except (FileFormatError, FileNotFoundError):
        return
    # A block of zeros may land in unused space: then the model must still work.
    d, f, m = model.separate(np.full((1, 28, 28), 0.5, np.float32))
    assert d.shape == (1, 28, 28)


@FAST
@given(data=st.data())
def test_damaged_checkpoints_are_named_errors(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("c") / "checkpoint.npz"
    save_checkpoint(p, {"w": np.arange(50.0)}, {"epoch": 3, "config": {"lr": 0.001}})
    raw = p.read_bytes()
    p.write_bytes(raw[:data.draw(st.integers(0, len(raw) - 1))])
    with pytest.raises(FileFormatError):
        load_checkpoint(p)


# ----------------------------------------------------------------------------- settings

numbers = st.one_of(st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True, width=32),
                    st.sampled_from([0, 1, 7, 8, 64, 1e-3]))


@FAST
@given(epochs=numbers, batch_size=numbers, lr=numbers, beta=numbers, latent_dim=numbers, seed=numbers)
def test_mnist_settings_are_accepted_only_when_valid(epochs, batch_size, lr, beta, latent_dim, seed):
    from npvae.tasks.mnist import MnistConfig
    kw = dict(epochs=epochs, batch_size=batch_size, lr=lr, beta=beta, latent_dim=latent_dim, seed=seed)
    try:
        MnistConfig(**kw)
    except ValueError as e:
        assert str(e).startswith("--")                       # names the flag
        return
    assert int(epochs) == epochs >= 1 and int(batch_size) == batch_size >= 1 and np.isfinite(lr) and lr > 0
    assert np.isfinite(beta) and beta >= 0 and int(latent_dim) == latent_dim >= 1 and int(seed) == seed >= 0


@FAST
@given(frames=numbers, batch_size=numbers, epochs=numbers, lr=numbers)
def test_music_settings_are_accepted_only_when_valid(frames, batch_size, epochs, lr):
    from npvae.tasks.music import MusicConfig
    try:
        MusicConfig(frames=frames, batch_size=batch_size, epochs=epochs, lr=lr)
    except ValueError as e:
        assert str(e).startswith("--")
        return
    assert int(frames) == frames >= 8 and frames % 8 == 0 and batch_size >= 1 and epochs >= 1 and lr > 0


@FAST
@given(st.lists(st.sampled_from(["--chunk-frames", "--block-seconds", "--bits", "--format", "--stems", "7", "0",
                                 "-1", "nan", "8", "16", "flac", "float", "vocals", "x"]), max_size=6))
def test_separate_arguments_parse_or_exit_with_usage(tokens):
    from npvae.cli import parser
    from npvae.cli.common import UsageError
    from npvae.cli.separate import check_args
    from npvae.separation.audio_files import SUBTYPES
    try:
        a = parser().parse_args(["separate", "song.wav", "--model", "m.h5", "--out", "o", *tokens])
        check_args(a)
    except SystemExit as e:
        assert e.code == 2                                    # argparse's usage error
        return
    except UsageError:                                        # a usage error argparse alone does not see
        return
    assert a.chunk_frames > 0 and a.chunk_frames % 8 == 0 and a.block_seconds > 0
    assert (a.format, a.bits) in SUBTYPES


# ----------------------------------------------------------------------------- kill -9, then --resume


# kill -9 at random moments, then resume: tests/faults/test_faults_checkpoint.py
