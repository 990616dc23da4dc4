"""Fault cases of reading and writing audio files (npvae.audio.io)."""
import numpy as np
import pytest
import soundfile as sf
from _faults import lib_error, umask

from npvae.audio.io import read_audio, write_audio


@pytest.mark.fault("audio", "read_audio of a missing file", "clear error")
def test_read_missing(tmp_path):
    with lib_error("not found"):
        read_audio(tmp_path / "none.wav")


@pytest.mark.fault("audio", "read_audio of a text file named .wav", "clear error")
def test_read_text_file(tmp_path):
    p = tmp_path / "x.wav"
    p.write_text("hello")
    with lib_error("cannot read"):
        read_audio(p)


@pytest.mark.fault("audio", "read_audio of a WAV with no samples", "clear error")
def test_read_empty(tmp_path):
    p = tmp_path / "e.wav"
    sf.write(str(p), np.zeros((0, 2), np.float32), 8000)
    with lib_error("no samples"):
        read_audio(p)


@pytest.mark.fault("audio", "read_audio of a float WAV holding NaN", "clear error")
def test_read_nan(tmp_path):
    p = tmp_path / "n.wav"
    sf.write(str(p), np.array([[0.1], [np.nan]], np.float32), 8000, subtype="FLOAT")
    with lib_error("NaN"):
        read_audio(p)


@pytest.mark.fault("audio", "read_audio of a folder", "clear error")
def test_read_folder(tmp_path):
    with lib_error("not found"):
        read_audio(tmp_path)


@pytest.mark.fault("audio", "read_audio of a FLAC file named .wav", "correct result")
def test_read_flac_named_wav(song):
    p = song("x.flac")
    q = p.with_name("x.wav")
    p.rename(q)
    x, sr = read_audio(q)
    assert sr == 8000 and x.shape == (9600, 2), (sr, x.shape)


@pytest.mark.fault("audio", "read_audio of an MP3 (libsndfile >= 1.1)", "correct result")
def test_read_mp3(song):
    if "MP3" not in sf.available_formats():
        pytest.skip("MP3 not supported by this libsndfile (documented)")
    p = song("x.mp3", sr=16000, seconds=1.0)
    x, sr = read_audio(p)
    assert sr == 16000 and x.shape[1] == 2 and abs(x.shape[0] - 16000) < 2000, (sr, x.shape)


@pytest.mark.fault("audio", "read_audio resampling 44.1 kHz -> 16 kHz keeps the duration", "correct result")
def test_read_resampled(song):
    p = song("x.wav", sr=44100, seconds=1.0)
    x, sr = read_audio(p, sr=16000)
    assert sr == 16000 and x.shape == (16000, 2), x.shape


@pytest.mark.fault("audio", "read_audio to 0 Hz", "clear error")
def test_read_to_0_hz(song):
    with lib_error("positive"):
        read_audio(song(), sr=0)


BAD_WRITES = [
    ("write_audio with an unknown extension", "x.xyz", np.zeros(10), {}, "unknown audio extension"),
    ("write_audio of NaN samples", "x.wav", np.full(10, np.nan), {}, "NaN"),
    ("write_audio 16-bit of samples beyond full scale", "x.wav", np.full(10, 1.5), {"subtype": "PCM_16"}, "clip"),
    ("write_audio of no samples", "x.wav", np.zeros(0), {}, "n_samples > 0"),
    ("write_audio of a 3-D array", "x.wav", np.zeros((4, 2, 2)), {}, "shape"),
]


@pytest.mark.fault("audio", "{description}", "clear error")
@pytest.mark.parametrize("description, name, x, kw, match", BAD_WRITES, ids=[b[0] for b in BAD_WRITES])
def test_bad_write(tmp_path, description, name, x, kw, match):
    with lib_error(match):
        write_audio(tmp_path / name, x, 8000, **kw)


@pytest.mark.fault("audio", "write_audio creates files with normal permissions (not 0600)", "correct result")
def test_write_permissions(tmp_path):
    p = write_audio(tmp_path / "x.wav", np.zeros(10), 8000)
    mode = p.stat().st_mode & 0o777
    assert mode == 0o666 & ~umask(), oct(mode)
