"""Audio file reading and writing: round trips, resampling, and clear errors."""
import numpy as np
import pytest
import soundfile as sf

from npvae.audio.io import read_audio, resample, write_audio
from npvae.errors import DatasetError, FileFormatError


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_round_trip_16bit(tmp_path, rng, ext):
    x = (0.5 * rng.uniform(-1, 1, size=(4000, 2))).astype(np.float32)
    path = write_audio(tmp_path / f"a.{ext}", x, 16000)
    y, sr = read_audio(path)
    assert sr == 16000 and y.dtype == np.float32 and y.shape == (4000, 2)
    np.testing.assert_allclose(y, x, atol=1.0 / 32768 + 1e-7)   # 16-bit quantisation
    assert not list(tmp_path.glob(".a.*")), "temporary file left behind"


def test_round_trip_float_wav_is_exact(tmp_path, rng):
    x = rng.standard_normal(1000).astype(np.float32) * 2   # peak > 1 is fine in FLOAT
    write_audio(tmp_path / "f.wav", x, 8000, subtype="FLOAT")
    y, sr = read_audio(tmp_path / "f.wav")
    assert y.shape == (1000, 1) and sr == 8000
    np.testing.assert_array_equal(y[:, 0], x)


def test_mono_averages_channels(tmp_path):
    x = np.stack([np.full(100, 0.5), np.full(100, -0.25)], axis=1)
    write_audio(tmp_path / "s.wav", x, 16000, subtype="FLOAT")
    y, _ = read_audio(tmp_path / "s.wav", mono=True)
    assert y.shape == (100, 1)
    np.testing.assert_allclose(y, 0.125, atol=1e-7)


def test_resampling_rate_length_and_content(tmp_path):
    sr_in, sr_out, n = 44100, 16000, 44100
    t = np.arange(n) / sr_in
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    write_audio(tmp_path / "r.wav", x, sr_in, subtype="FLOAT")
    y, sr = read_audio(tmp_path / "r.wav", sr=sr_out)
    assert sr == sr_out and y.shape == (16000, 1) and y.dtype == np.float32
    want = 0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / sr_out)
    # away from the edges the polyphase filter reproduces the tone closely
    np.testing.assert_allclose(y[500:-500, 0], want[500:-500], atol=2e-3)
    assert resample(np.zeros((441, 2), np.float32), 44100, 16000).shape == (160, 2)


def test_missing_file_is_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        read_audio(tmp_path / "nope.wav")


def test_corrupt_file_names_file_and_fix(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00this is not audio at all")
    with pytest.raises(FileFormatError, match=r"bad\.wav.*convert"):
        read_audio(bad)


def test_empty_file_is_format_error(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1)), 16000)
    with pytest.raises(FileFormatError, match="no samples"):
        read_audio(tmp_path / "empty.wav")
    (tmp_path / "zero.wav").write_bytes(b"")
    with pytest.raises(FileFormatError, match="zero.wav"):
        read_audio(tmp_path / "zero.wav")


def test_non_finite_file_is_format_error(tmp_path):
    x = np.zeros(50, np.float32)
    x[7] = np.nan
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(FileFormatError, match="NaN"):
        read_audio(tmp_path / "nan.wav")


def test_write_refuses_clipping_and_unknown_extension(tmp_path):
    with pytest.raises(ValueError, match="clip"):
        write_audio(tmp_path / "loud.wav", np.full(10, 1.5), 16000)
    with pytest.raises(FileFormatError, match="extension"):
        write_audio(tmp_path / "a.xyz", np.zeros(10), 16000)
    assert not (tmp_path / "loud.wav").exists()
