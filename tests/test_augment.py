"""Voices at another pitch (npvae.audio.augment) and the samplers that use it."""
import numpy as np
import pytest

from npvae.audio.augment import draw_ratio, read_at_rate
from npvae.audio.datasets import Track
from npvae.audio.remix import sample_remix_batch
from npvae.audio.stft import STFTConfig
from npvae.tasks.music.batches import sample_batch

SR = 16000
CFG = STFTConfig(SR, 1024, 256)


def sine(freq, seconds=2.0):
    t = np.arange(int(seconds * SR)) / SR
    return np.sin(2 * np.pi * freq * t).astype(np.float32)


def peak_hz(x):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=8 * len(x)))
    return np.argmax(spectrum) * SR / (8 * len(x))


def test_rate_one_is_the_plain_excerpt_and_the_end_is_silence():
    x = np.arange(100, dtype=np.float32)
    assert np.array_equal(read_at_rate(x, 10, 20), x[10:30])
    tail = read_at_rate(x, 90, 20)
    assert np.array_equal(tail[:10], x[90:]) and not tail[10:].any()
    with pytest.raises(ValueError, match="must be positive"):
        read_at_rate(x, 0, 10, 0.0)


@pytest.mark.parametrize("semitones", [-3.0, -0.5, 2.0, 4.0])
def test_a_faster_read_raises_the_pitch_by_its_semitones(semitones):
    ratio = 2.0 ** (semitones / 12)
    out = read_at_rate(sine(440.0), 1000, 8000, ratio)
    assert out.dtype == np.float32 and out.shape == (8000,)
    assert peak_hz(out) == pytest.approx(440.0 * ratio, rel=3e-3)
    # anti-aliased: the sine keeps its level, and no other tone appears
    assert np.sqrt(np.mean(out[500:-500] ** 2)) == pytest.approx(np.sqrt(0.5), rel=0.02)


def test_raising_the_pitch_does_not_fold_partials_back_at_full_level():
    # a 7.9 kHz partial read a whole tone faster would sit at 8.9 kHz, above the Nyquist
    # frequency: the filter attenuates it (>= 20 dB) instead of folding it down to 7.1 kHz
    out = read_at_rate(sine(7900.0), 0, 8000, 2.0 ** (2 / 12))
    assert np.sqrt(np.mean(out[500:-500] ** 2)) < 0.1 * np.sqrt(0.5)


def test_ratios_cover_the_semitone_range(rng):
    cents = 1200 * np.log2([draw_ratio(rng, 2.0) for _ in range(2000)])
    assert -200 <= cents.min() < -190 and 190 < cents.max() <= 200 and abs(cents.mean()) < 10


@pytest.mark.parametrize("sampler", [sample_batch, sample_remix_batch])
def test_samplers_change_the_voice_pitch_and_nothing_without_it(sampler):
    tracks = [Track("a", sine(440.0, 3.0), 0.1 * sine(97.0, 3.0), SR),
              Track("b", sine(440.0, 3.0), 0.1 * sine(97.0, 3.0), SR)]
    plain = sampler(tracks, np.random.default_rng(3), 16, 32, CFG, 0.5, 3.0)
    again = sampler(tracks, np.random.default_rng(3), 16, 32, CFG, 0.5, 3.0, voice_pitch=0.0)
    for key in plain:
        assert np.array_equal(plain[key], again[key])
    pitched = sampler(tracks, np.random.default_rng(3), 16, 32, CFG, 0.5, 3.0, voice_pitch=3.0)
    bin_hz = SR / CFG.n_fft
    peaks = np.array([np.argmax(np.abs(v).sum(axis=1)) * bin_hz for v in pitched["voice"]])
    semitones = 12 * np.log2(peaks / 440.0)
    assert np.all(np.abs(semitones) <= 3.0 + 0.3) and np.ptp(semitones) > 1.5      # moved, within the range
    assert np.allclose(pitched["mixture"], pitched["voice"] + pitched["accompaniment"])
    # one MPI rank's part of the batch is that part of the whole batch
    part = sampler(tracks, np.random.default_rng(3), 16, 32, CFG, 0.5, 3.0, part=slice(4, 8), voice_pitch=3.0)
    assert np.allclose(part["voice"], pitched["voice"][4:8], atol=1e-6)
