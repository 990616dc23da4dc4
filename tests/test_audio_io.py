"""Audio file reading and writing: round trips, resampling, and clear errors."""
import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

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


@pytest.mark.parametrize("shape,sr_in,sr_out", [((70001, 3), 44100, 16000), ((70001, 2, 2), 16000, 44100),
                                                ((70001, 1), 44100, 16000), ((70001,), 16000, 44100),
                                                ((100, 2), 44100, 16000)])
def test_resampling_a_channel_per_thread_changes_no_number(monkeypatch, shape, sr_in, sr_out):
    """Long signals of several channels go a channel per thread: bit for bit what one
    call of scipy's resample_poly on the whole array gives."""
    monkeypatch.setenv("NPVAE_NUM_THREADS", "2")
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    g = np.gcd(sr_in, sr_out)
    want = resample_poly(x, sr_out // g, sr_in // g, axis=0).astype(np.float32)
    got = resample(x, sr_in, sr_out)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


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


def test_sample_rates_are_checked_with_what_was_wrong(tmp_path):
    from npvae.inputs import as_sample_rate
    assert as_sample_rate(16000) == 16000 and as_sample_rate(np.int32(8000)) == 8000
    assert as_sample_rate(44100.0) == 44100
    for bad, match in [(float("nan"), "got nan"), ("16000", "got the string '16000'; pass the number 16000"),
                       (0, "got 0"), (-8000, "got -8000"), (float("inf"), "got inf"), (True, "got bool True"),
                       (None, "got NoneType None"), (16000.5, "whole number of Hz, got 16000.5")]:
        with pytest.raises(ValueError, match=match):
            as_sample_rate(bad)
    sf.write(tmp_path / "a.wav", np.zeros(100, np.float32), 16000)
    with pytest.raises(ValueError, match="target sample rate must be a positive number in Hz, got nan"):
        read_audio(tmp_path / "a.wav", sr=float("nan"))
    with pytest.raises(ValueError, match="output sample rate .* got the string '8000'"):
        resample(np.zeros(10, np.float32), 16000, "8000")


def test_wav_header_frames_and_warnings(tmp_path):
    import warnings

    from npvae.audio.io import wav_declared_frames, warn_if_suspect
    x = np.zeros((300, 3), np.float32)
    sf.write(tmp_path / "ext.wav", x, 16000, subtype="FLOAT")          # WAVE_FORMAT_EXTENSIBLE
    assert wav_declared_frames(tmp_path / "ext.wav") == 300
    # a LIST chunk before the data chunk, as many editors write
    sf.write(tmp_path / "plain.wav", x[:, :1], 16000, subtype="PCM_16")
    raw = (tmp_path / "plain.wav").read_bytes()
    at = raw.index(b"data")
    tagged = raw[:at] + b"LIST" + (5).to_bytes(4, "little") + b"INFOx\x00" + raw[at:]
    (tmp_path / "tagged.wav").write_bytes(tagged[:4] + (len(tagged) - 8).to_bytes(4, "little") + tagged[8:])
    assert wav_declared_frames(tmp_path / "tagged.wav") == 300
    sf.write(tmp_path / "a.flac", x, 16000)
    assert wav_declared_frames(tmp_path / "a.flac") is None and wav_declared_frames(tmp_path / "nope.wav") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_suspect(tmp_path / "tagged.wav", 300, 16000)
        assert read_audio(tmp_path / "tagged.wav")[0].shape == (300, 1)
    with pytest.warns(RuntimeWarning, match="header says 300 frames, 299 read"):
        warn_if_suspect(tmp_path / "tagged.wav", 299, 16000)
    with pytest.warns(RuntimeWarning, match="sample rate 3999 Hz is unusually low"):
        warn_if_suspect(tmp_path / "a.flac", 300, 3999)
