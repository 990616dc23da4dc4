"""How Separator.separate and `npvae separate` use a stereo song's channels (--stereo) and
the band above the model's Nyquist frequency (--high-band)."""
import numpy as np
import pytest
import soundfile as sf

from npvae.audio.datasets import Track
from npvae.audio.io import resample
from npvae.audio.stft import STFTConfig, stft
from npvae.cli import main
from npvae.files.model_file import save_separator
from npvae.models.music import SpectrogramUNetVAE
from npvae.separation.separator import (HIGH_BAND_MODES, STEREO_MODES, Normalizer, Separator, frame_gains,
                                        top_band_share)

CFG = STFTConfig(sample_rate=8000, n_fft=256, hop=64)     # a model at 8 kHz: songs at 22.05 kHz have a high band
SR = 22050
COMBOS = [(s, h) for s in STEREO_MODES for h in HIGH_BAND_MODES]


def voice_and_music(rng, seconds, sr):
    t = np.arange(int(seconds * sr)) / sr
    voice = sum(0.3 / k * np.sin(2 * np.pi * 330 * k * t) for k in range(1, 40) if 330 * k < sr / 2)
    voice = voice * (np.sin(2 * np.pi * 1.3 * t) > -0.3)
    music = 0.2 * np.sign(np.sin(2 * np.pi * 110 * t)) + 0.05 * rng.standard_normal(t.size)
    return voice.astype(np.float32), music.astype(np.float32)


@pytest.fixture
def sep(rng):
    model = SpectrogramUNetVAE(channels=(4, 4, 8), latent_channels=4, rng=rng)
    norm = Normalizer.fit([Track("t", *voice_and_music(rng, 1.5, 8000), 8000)], CFG)
    return Separator(model, CFG, norm)


@pytest.fixture
def song(rng):
    """A 22.05 kHz stereo song of odd length: the voice left of centre, the music wide."""
    voice, music = voice_and_music(rng, 1.3, SR)
    return np.stack([0.7 * voice + music, 0.5 * voice + 0.8 * music + 0.02 * rng.standard_normal(voice.size)],
                    axis=1).astype(np.float32)[:-7]


def todays_separation(sep, audio, sr):
    """Every channel on its own, the band above the model's all in the accompaniment."""
    work = resample(audio, sr, CFG.sample_rate)
    out = np.zeros((2,) + audio.shape, np.float32)
    for c in range(audio.shape[1]):
        est = resample(sep.separate_mono(work[:, c]).T, CFG.sample_rate, sr).T
        out[:, :, c] = est[:, :audio.shape[0]]
    out[-1] += audio - resample(work, CFG.sample_rate, sr)[:audio.shape[0]]
    return out


def test_per_channel_with_the_high_band_in_the_accompaniment_is_the_separation_as_it_was(sep, song):
    np.testing.assert_array_equal(sep.separate(song, SR, stereo="per-channel", high_band="accompaniment"),
                                  todays_separation(sep, song, SR))


@pytest.mark.parametrize("stereo,high_band", COMBOS)
def test_every_option_keeps_the_input_shape_mono_too(sep, song, stereo, high_band):
    out = sep.separate(song, SR, stereo=stereo, high_band=high_band)
    assert out.shape == (2,) + song.shape and out.dtype == np.float32 and np.isfinite(out).all()
    mono = sep.separate(song[:, 0], SR, stereo=stereo, high_band=high_band)
    assert mono.shape == (2, song.shape[0])
    # one channel has no mid signal but itself: "mid" separates it as "per-channel" does
    np.testing.assert_array_equal(mono, sep.separate(song[:, 0], SR, high_band=high_band))


@pytest.mark.parametrize("stereo", STEREO_MODES)
def test_the_high_band_is_shared_and_still_adds_up(sep, song, stereo):
    plain = sep.separate(song, SR, stereo=stereo, high_band="accompaniment")
    shared = sep.separate(song, SR, stereo=stereo, high_band="mask")
    # what the voice takes of the high band, the accompaniment gives up: the sum is the same
    np.testing.assert_allclose(shared.sum(axis=0), plain.sum(axis=0), atol=1e-5)
    moved = shared[0] - plain[0]
    assert np.sqrt(np.mean(moved ** 2)) > 1e-3 * np.sqrt(np.mean(song ** 2))     # the voice did take some
    # ... and all of it lies above the model's Nyquist frequency (4 kHz)
    spectrum = np.abs(np.fft.rfft(moved, axis=0)) ** 2
    freqs = np.fft.rfftfreq(moved.shape[0], 1 / SR)
    assert spectrum[freqs < 3500].sum() < 1e-3 * spectrum.sum()
    # at the model's own rate there is no high band: both options give the same
    low = resample(song, SR, CFG.sample_rate)
    np.testing.assert_array_equal(sep.separate(low, CFG.sample_rate, stereo=stereo, high_band="mask"),
                                  sep.separate(low, CFG.sample_rate, stereo=stereo, high_band="accompaniment"))


@pytest.mark.parametrize("stereo,high_band", COMBOS)
def test_with_wiener_masks_the_estimates_add_up_to_the_song(sep, song, stereo, high_band):
    out = sep.separate(song, SR, wiener=True, stereo=stereo, high_band=high_band)
    err = out.sum(axis=0) - song
    assert np.sqrt(np.mean(err ** 2)) < 0.02 * np.sqrt(np.mean(song ** 2))


def test_mid_applies_one_mask_to_both_channels(sep, song):
    scaled = np.stack([song[:, 0], 0.5 * song[:, 0]], axis=1)
    mid = sep.separate(scaled, SR, stereo="mid")
    np.testing.assert_allclose(mid[:, :, 1], 0.5 * mid[:, :, 0], atol=1e-6)
    per = sep.separate(scaled, SR, stereo="per-channel")       # another level, another mask (log features)
    assert np.max(np.abs(per[:, :, 1] - 0.5 * per[:, :, 0])) > 1e-4
    twin = np.stack([song[:, 0], song[:, 0]], axis=1)           # equal channels: the mid is each channel
    np.testing.assert_allclose(sep.separate(twin, SR, stereo="mid"), sep.separate(twin, SR), atol=1e-6)


def test_the_voice_share_of_the_top_band_is_weighted_by_magnitude(rng):
    F, T = CFG.n_freq, 6
    mag = rng.uniform(0.5, 1, (F, T))
    assert np.array_equal(top_band_share(np.ones((F, T)), mag, CFG), np.ones(T, np.float32))
    assert np.array_equal(top_band_share(np.zeros((F, T)), mag, CFG), np.zeros(T, np.float32))
    lo = int(np.ceil(0.75 * (F - 1)))                           # 3 kHz and up at 8 kHz
    mask = np.zeros((F, T))
    mask[:lo] = 1.0                                             # the voice below the top band only
    mask[-1] = 1.0                                              # ... and in its last bin
    np.testing.assert_allclose(top_band_share(mask, mag, CFG), mag[-1] / mag[lo:].sum(axis=0), rtol=1e-6)
    assert top_band_share(np.ones((F, T)), np.zeros((F, T)), CFG).tolist() == [0.0] * T   # silence: none


def test_frame_values_become_gains_between_frame_centres():
    values = np.array([[0.0, 1.0, 1.0, 0.0]])
    g = frame_gains(values, CFG, 16000, 1000)
    assert g.shape == (1000, 1) and g.min() >= 0 and g.max() <= 1
    centre = (1 + CFG.first_frame) * CFG.hop * 2                # frame 1's centre, in 16 kHz samples
    assert g[centre, 0] == pytest.approx(1.0)


def test_unknown_options_are_refused_with_the_choices(sep, song):
    with pytest.raises(ValueError, match="stereo must be one of 'per-channel', 'mid'"):
        sep.separate(song, SR, stereo="side")
    with pytest.raises(ValueError, match="high_band must be one of"):
        sep.separate(song, SR, high_band="voice")


def test_separate_command_takes_the_options(sep, song, tmp_path, capsys):
    model = save_separator(tmp_path / "model.h5", sep)
    sf.write(tmp_path / "song.wav", song, SR, subtype="FLOAT")
    out = tmp_path / "out"
    assert main(["separate", str(tmp_path / "song.wav"), "--model", str(model), "--out", str(out), "--no-progress",
                 "--stereo", "mid", "--high-band", "mask"]) == 0
    from npvae.files.model_file import load_separator
    want = load_separator(model).separate(song, SR, chunk_frames=256, stereo="mid", high_band="mask")
    for k, stem in enumerate(("vocals", "accompaniment")):
        got, rate = sf.read(out / f"song_{stem}.wav", dtype="float32")
        assert rate == SR and got.shape == song.shape
        np.testing.assert_allclose(got, want[k], atol=1e-5)
    with pytest.raises(SystemExit) as stop:
        main(["separate", str(tmp_path / "song.wav"), "--out", str(out), "--stereo", "side"])
    assert stop.value.code == 2 and "invalid choice: 'side'" in capsys.readouterr().err
