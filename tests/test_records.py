"""Record-style stereo mixes (npvae.audio.records) and `npvae mix-records`."""
import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import sosfreqz, welch

from npvae.audio.datasets import Track
from npvae.audio.io import resample
from npvae.audio.records import (RECORD_RATE, draw_settings, equalise, excite, make_record, pan_gains,
                                 peak_sos, record_of_track, room_impulse_response, shelf_sos, widen)
from npvae.cli import main
from npvae.cli.records import FOLDERS, MANIFEST


def band_limited(rng, n, sr=16000):
    """Noise with a few harmonics, like a clip at ``sr`` Hz: (n,) float32."""
    t = np.arange(n) / sr
    x = 0.1 * rng.standard_normal(n) + sum(0.2 / k * np.sin(2 * np.pi * 220 * k * t) for k in range(1, 12))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture
def track(rng):
    return Track("singer_1_01", band_limited(rng, 16000), band_limited(rng, 16000))


def high_share(x, sr=RECORD_RATE, above=8500.0):
    f, p = welch(x, sr, nperseg=4096, axis=0)
    p = p.reshape(len(f), -1).sum(axis=1)
    return p[f > above].sum() / p.sum()


def test_a_record_is_stereo_at_44100_with_stems_that_add_up_exactly(track):
    r = record_of_track(track, seed=3)
    assert r.sr == RECORD_RATE == 44100
    for x in (r.mixture, r.vocals, r.accompaniment):
        assert x.shape == (44100, 2) and x.dtype == np.float32
    np.testing.assert_array_equal(r.mixture, r.vocals + r.accompaniment)
    assert not np.array_equal(r.vocals[:, 0], r.vocals[:, 1])
    assert not np.array_equal(r.accompaniment[:, 0], r.accompaniment[:, 1])
    # each stem keeps its source's energy at 44.1 kHz (both channels together): the clip's levels
    for stem, source in ((r.vocals, track.voice), (r.accompaniment, track.accompaniment)):
        want = np.sum(resample(source.astype(np.float64), 16000, 44100) ** 2)
        assert np.sum(stem.astype(np.float64) ** 2) == pytest.approx(want, rel=1e-5)


def test_records_are_deterministic_by_seed_and_clip_name(track):
    a, b = record_of_track(track, seed=3), record_of_track(track, seed=3)
    np.testing.assert_array_equal(a.mixture, b.mixture)
    assert a.settings == b.settings
    assert record_of_track(track, seed=4).settings != a.settings
    renamed = Track("other_1_01", track.voice, track.accompaniment)
    assert record_of_track(renamed, seed=3).settings != a.settings


def test_settings_stay_in_their_ranges(rng):
    for _ in range(50):
        s = draw_settings(rng)
        assert abs(s.pan) <= 0.3 and 0.3 <= s.rt60 <= 1.2 and 0 < s.predelay and 0 < s.wet < 1
        assert -30 <= s.exciter_db <= -22
    assert draw_settings(rng, exciter=False).exciter_db is None


def test_constant_power_pan():
    for p in np.linspace(-1, 1, 9):
        g = pan_gains(p)
        assert g @ g == pytest.approx(1.0)
    np.testing.assert_allclose(pan_gains(0.0), [2 ** -0.5, 2 ** -0.5])
    np.testing.assert_allclose(pan_gains(-1.0), [1, 0], atol=1e-12)
    assert pan_gains(0.3)[1] > pan_gains(0.3)[0]           # positive: to the right
    with pytest.raises(ValueError, match=r"in \[-1, 1\]"):
        pan_gains(1.5)


def test_a_dry_voice_is_panned_where_the_settings_say(track):
    s = dataclasses.replace(draw_settings(np.random.default_rng(0), exciter=False), wet=0.0, pan=-0.25)
    v = make_record(track.voice, track.accompaniment, 16000, s).vocals.astype(np.float64)
    gains = pan_gains(-0.25)
    ratio = np.sum(v[:, 1] * v[:, 0]) / np.sum(v[:, 0] ** 2)       # right = ratio * left
    assert ratio == pytest.approx(gains[1] / gains[0], rel=1e-5)


def test_the_room_decays_60_db_in_rt60_after_its_predelay(rng):
    sr, rt60, pre = 44100, 0.8, 0.02
    ir = room_impulse_response(rt60, pre, sr, rng)
    k = int(round(pre * sr))
    assert ir.shape == (k + int(round(rt60 * sr)), 2)
    assert not ir[:k].any() and ir[k:k + 100].any()
    np.testing.assert_allclose(np.sum(ir ** 2, axis=0), 1.0)
    assert abs(np.corrcoef(ir[k:, 0], ir[k:, 1])[0, 1]) < 0.1           # decorrelated channels
    w = int(0.05 * sr)
    first = 10 * np.log10(np.mean(ir[k:k + w] ** 2))
    middle = 10 * np.log10(np.mean(ir[k + int(rt60 / 2 * sr) - w // 2:k + int(rt60 / 2 * sr) + w // 2] ** 2))
    assert first - middle == pytest.approx(30.0, abs=3.0)               # half of 60 dB at half of RT60


def test_widening_leaves_the_mid_signal_alone(rng):
    x = rng.standard_normal(1000)
    y = widen(x, 0.01, 0.5, 10000)
    np.testing.assert_allclose((y[:, 0] + y[:, 1]) / 2, x)
    np.testing.assert_allclose((y[:, 0] - y[:, 1]) / 2, 0.5 * np.r_[np.zeros(100), x[:900]])


def test_equaliser_bands_have_their_gains():
    sr = 44100
    assert 20 * np.log10(abs(sosfreqz(shelf_sos("low", 150, 3.0, sr), [0.0], fs=sr)[1][0])) == pytest.approx(3.0)
    assert 20 * np.log10(abs(sosfreqz(shelf_sos("high", 8000, -2.0, sr), [sr / 2], fs=sr)[1][0])) \
        == pytest.approx(-2.0)
    assert 20 * np.log10(abs(sosfreqz(peak_sos(1000, 2.5, 1.0, sr), [1000.0], fs=sr)[1][0])) == pytest.approx(2.5)
    s = draw_settings(np.random.default_rng(1))
    x = np.random.default_rng(2).standard_normal(4000)
    assert equalise(x, s, sr).shape == x.shape and not np.allclose(equalise(x, s, sr), x)


def test_the_exciter_fills_the_band_above_the_source_at_its_level(track):
    x = resample(track.voice.astype(np.float64), 16000, 44100)
    assert high_share(x) < 1e-3             # the resampler's stop band: -37 dB of white noise
    y = excite(x, -24.0, 44100, 16000)
    assert 10 * np.log10(high_share(y - x)) > -1                    # all of the added part is up there
    assert 10 * np.log10(np.sum((y - x) ** 2) / np.sum(x ** 2)) == pytest.approx(-24.0, abs=0.01)
    r = record_of_track(track, 0)
    plain = record_of_track(track, 0, exciter=False)
    assert high_share(r.vocals) > 3 * high_share(plain.vocals)
    assert high_share(r.accompaniment) > 3 * high_share(plain.accompaniment)


def write_clip(folder, name, n=8000, channels=2, seed=0):
    x = band_limited(np.random.default_rng(seed), n * channels).reshape(n, channels)
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / name, x, 16000, subtype="PCM_16")


def test_mix_records_writes_mixtures_with_their_stems(tmp_path, capsys):
    wav = tmp_path / "data" / "MIR-1K" / "Wavfile"
    write_clip(wav, "abjones_1_01.wav", seed=1)                     # a training singer: not in validation
    write_clip(wav, "singer_1_01.wav", seed=2)
    write_clip(wav, "singer_2_01.wav", 9000, seed=3)
    out = tmp_path / "records"
    assert main(["mix-records", "--data-dir", str(tmp_path / "data"), "--split", "validation", "--out", str(out),
                 "--seed", "5"]) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert [c["name"] for c in manifest["clips"]] == ["singer_1_01", "singer_2_01"] and manifest["seed"] == 5
    for clip, n in (("singer_1_01", 22050), ("singer_2_01", 24807)):
        x = {f: sf.read(out / f / f"{clip}.wav", dtype="float32") for f in FOLDERS}
        assert all(sr == 44100 and a.shape == (n, 2) for a, sr in x.values())
        np.testing.assert_array_equal(x["mixtures"][0], x["vocals"][0] + x["accompaniment"][0])
    # the same command again: refused before any work, then replaced with --overwrite
    before = sf.read(out / "vocals" / "singer_1_01.wav", dtype="float32")[0]
    assert main(["mix-records", "--data-dir", str(tmp_path / "data"), "--out", str(out), "--seed", "5"]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["mix-records", "--data-dir", str(tmp_path / "data"), "--out", str(out), "--seed", "5",
                 "--overwrite"]) == 0
    np.testing.assert_array_equal(sf.read(out / "vocals" / "singer_1_01.wav", dtype="float32")[0], before)


def test_mix_records_says_what_is_wrong_with_a_data_folder(tmp_path, capsys):
    out = str(tmp_path / "records")
    assert main(["mix-records", "--data-dir", str(tmp_path), "--out", out]) == 1
    err = capsys.readouterr().err
    assert "MIR-1K not found" in err and "--data-dir" in err
    write_clip(tmp_path / "MIR-1K" / "Wavfile", "singer_1_01.wav", channels=1)
    assert main(["mix-records", "--data-dir", str(tmp_path), "--out", out]) == 1
    err = capsys.readouterr().err
    assert "1 channel(s)" in err and "stereo" in err
    write_clip(tmp_path / "MIR-1K" / "Wavfile", "abjones_1_01.wav")
    (tmp_path / "MIR-1K" / "Wavfile" / "singer_1_01.wav").unlink()
    assert main(["mix-records", "--data-dir", str(tmp_path), "--out", out]) == 1
    assert "no MIR-1K clips for split 'validation'" in capsys.readouterr().err
