"""MIR-1K, IRMAS and stems loaders: real files, layouts built in tmp_path, splits, mixing."""
import numpy as np
import pytest

from npvae.audio.datasets import (Track, circular_remix, irmas_pairs, irmas_track, list_mir1k,
                                  load_mir1k_clip, load_tracks, mix_at_snr, mir1k_root,
                                  parse_irmas_name, stems_pairs)
from npvae.audio.io import write_audio
from npvae.errors import DatasetError, FileFormatError

GENUINE_IRMAS = ["cla/[cla][cla]0189__2.wav", "cla/031__[cel][nod][cla]0020__1.wav",
                 "flu/057__[flu][dru][cou_fol]0407__1.wav"]


def _quiet_fraction(x, frame=320):
    """Share of 20 ms frames more than 20 dB below the loudest: high for singing, which pauses."""
    rms = np.sqrt(np.mean(x[: len(x) // frame * frame].reshape(-1, frame) ** 2, axis=1))
    return np.mean(rms < 0.1 * rms.max())


# ----------------------------------------------------------------------------- MIR-1K

def test_mir1k_channel_order_on_real_files(shared_data):
    root = mir1k_root(shared_data)
    for name in ["abjones_1_01", "Ani_1_01"]:
        voice, acc = load_mir1k_clip(root / f"{name}.wav")
        assert voice.dtype == np.float32 and voice.shape == acc.shape and voice.ndim == 1
        # the right channel (voice) has pauses between phrases; the accompaniment does not
        assert _quiet_fraction(voice) > 0.2 > 0.1 > _quiet_fraction(acc)


def test_mir1k_singer_split(shared_data):
    train = list_mir1k("train", shared_data)
    val = list_mir1k("validation", shared_data)
    assert len(train) == 175 and len(val) == 24
    assert {p.stem.split("_")[0] for p in train} == {"abjones", "amy"}
    assert {p.stem.split("_")[0] for p in val} == {"Ani", "annar", "tammy"}
    only_ani = list_mir1k("validation", shared_data, validation_singers=["Ani"])
    assert len(only_ani) == 8 and all(p.stem.startswith("Ani_") for p in only_ani)
    with pytest.raises(DatasetError, match="no MIR-1K clips"):
        list_mir1k("train", shared_data, train_singers=["nobody"])


def test_mir1k_tracks_mixed_at_0db(shared_data):
    tracks = load_tracks("mir1k", "validation", shared_data, validation_singers=["tammy"])
    assert len(tracks) == 8
    for t in tracks:
        assert t.sr == 16000 and 4 < t.duration < 14
        ev, ea = np.sum(t.voice.astype(float) ** 2), np.sum(t.accompaniment.astype(float) ** 2)
        assert 10 * np.log10(ev / ea) == pytest.approx(0.0, abs=1e-4)
        np.testing.assert_allclose(t.mixture(), t.voice + t.accompaniment)
    (louder,) = load_tracks("mir1k", "validation", shared_data, validation_singers=["tammy"],
                            snr_db=5.0)[:1]
    assert 10 * np.log10(np.sum(louder.voice ** 2.0) / np.sum(louder.accompaniment ** 2.0)) == \
        pytest.approx(5.0, abs=1e-4)
    np.testing.assert_array_equal(louder.voice, tracks[0].voice)


def test_missing_mir1k_names_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("NPVAE_DATA", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DatasetError, match=r"MIR-1K/Wavfile.*MIR-1K\.zip"):
        load_tracks("mir1k", "train")


# ----------------------------------------------------------------------------- mixing

def test_mix_at_snr_sets_energy_ratio(rng):
    v, a = rng.standard_normal(1000), 3 * rng.standard_normal(1000)
    for snr in (-5.0, 0.0, 10.0):
        v2, a2 = mix_at_snr(v, a, snr)
        np.testing.assert_allclose(v2, v, rtol=1e-6)          # the voice is untouched
        assert 10 * np.log10(np.sum(v2 ** 2) / np.sum(a2 ** 2.0)) == pytest.approx(snr, abs=1e-4)
    with pytest.raises(DatasetError, match="silent"):
        mix_at_snr(v, np.zeros(1000))


def test_circular_remix_shifts_only_the_accompaniment():
    t = Track("x", np.arange(100.0), np.arange(100.0) * 2, 16000)
    out = circular_remix(t, np.random.default_rng(0))
    np.testing.assert_array_equal(out.voice, t.voice)
    shift = int(out.name.split("@")[1])
    assert 0 < shift < 100
    np.testing.assert_array_equal(out.accompaniment, np.roll(t.accompaniment, shift))
    again = circular_remix(t, np.random.default_rng(0))
    np.testing.assert_array_equal(again.accompaniment, out.accompaniment)  # seeded
    assert len({circular_remix(t, np.random.default_rng(s)).name for s in range(10)}) > 1


def test_track_rejects_mismatched_sources():
    with pytest.raises(ValueError, match="equal length"):
        Track("bad", np.zeros(10), np.zeros(11), 16000)


# ----------------------------------------------------------------------------- IRMAS

def test_parse_genuine_irmas_names():
    a, b, c = (parse_irmas_name(n) for n in GENUINE_IRMAS)
    assert (a.instrument, a.tags, a.genre, a.drums, a.number, a.excerpt) == \
        ("cla", ("cla", "cla"), "cla", None, None, 2)
    assert (b.instrument, b.tags, b.genre, b.drums, b.number, b.song, b.excerpt) == \
        ("cel", ("cel", "nod", "cla"), "cla", False, 31, "0020", 1)
    assert (c.instrument, c.genre, c.drums, c.number) == ("flu", "cou_fol", True, 57)
    with pytest.raises(FileFormatError, match="not an IRMAS"):
        parse_irmas_name("song.wav")


def test_genuine_irmas_files_exist_and_parse(shared_data):
    root = shared_data / "IRMAS-sample" / "IRMAS-TrainingData"
    for rel in GENUINE_IRMAS:
        assert (root / rel).is_file()
        assert parse_irmas_name(root / rel).instrument in ("cla", "cel", "flu")


def test_irmas_sample_without_voi_says_where_and_how(shared_data):
    with pytest.raises(DatasetError, match=r"voi.*zenodo"):
        load_tracks("irmas", "train", shared_data)


def _irmas_fixture(root, n_voice=10, n_music=(6, 4), sr=44100):
    rng = np.random.default_rng(7)
    base = root / "IRMAS-TrainingData"
    names = {"voi": [f"[voi][pop_roc]{k:04d}__{k % 3 + 1}.wav" for k in range(n_voice)],
             "cla": [f"[cla][cla]{k:04d}__1.wav" for k in range(n_music[0])],
             "flu": [f"{k:03d}__[flu][dru][cou_fol]{k:04d}__2.wav" for k in range(n_music[1])]}
    for inst, files in names.items():
        for name in files:
            write_audio(base / inst / name, 0.1 * rng.standard_normal((sr // 10, 2)), sr)
    return base


def test_irmas_fixture_pairs_splits_and_mixes(tmp_path):
    base = _irmas_fixture(tmp_path)
    splits = {s: irmas_pairs(s, tmp_path, seed=3) for s in ("train", "validation", "test")}
    assert [len(p) for p in splits.values()] == [8, 1, 1]         # every voice excerpt, once
    voices = [v for p in splits.values() for v, _ in p]
    assert sorted(voices) == sorted((base / "voi").glob("*.wav"))
    music = {s: {m for _, m in p} for s, p in splits.items()}
    assert not (music["train"] & music["test"]) and not (music["train"] & music["validation"])
    assert all(m.parent.name in ("cla", "flu") for m in music["train"])
    assert splits["train"] == irmas_pairs("train", tmp_path, seed=3)   # deterministic
    assert splits["train"] != irmas_pairs("train", tmp_path, seed=4)
    only_flu = irmas_pairs("all", tmp_path, music_instruments=["flu"])
    assert len(only_flu) == 10 and {m.parent.name for _, m in only_flu} == {"flu"}

    v, m = splits["train"][0]
    t = irmas_track(v, m, sr=16000, snr_db=-6.0)
    assert t.sr == 16000 and t.n_samples == 1600                      # 0.1 s at 16 kHz
    assert 10 * np.log10(np.sum(t.voice ** 2.0) / np.sum(t.accompaniment ** 2.0)) == \
        pytest.approx(-6.0, abs=1e-4)
    tracks = load_tracks("irmas", "validation", tmp_path, seed=3)
    assert len(tracks) == 1 and tracks[0].name.startswith("voi/")


def test_irmas_missing_instrument_folder(tmp_path):
    _irmas_fixture(tmp_path, n_voice=3, n_music=(2, 2))
    with pytest.raises(DatasetError, match="sax"):
        irmas_pairs("all", tmp_path, music_instruments=["sax"])


# ----------------------------------------------------------------------------- stems

def _stems(root, names_v, names_a, sr=16000, n=800):
    rng = np.random.default_rng(1)
    for folder, names in (("vocals", names_v), ("accompaniment", names_a)):
        for name in names:
            write_audio(root / folder / name, 0.2 * rng.standard_normal(n), sr)


def test_stems_pair_by_name(tmp_path):
    _stems(tmp_path, ["b.wav", "a.wav", "c.flac"], ["a.flac", "c.wav", "b.wav"])
    pairs = stems_pairs(tmp_path)
    assert [(v.name, a.name) for v, a in pairs] == [("a.wav", "a.flac"), ("b.wav", "b.wav"),
                                                     ("c.flac", "c.wav")]
    tracks = load_tracks("stems", "all", tmp_path)
    assert [t.name for t in tracks] == ["a", "b", "c"]
    assert all(t.n_samples == 800 and t.sr == 16000 for t in tracks)


def test_stems_mismatch_is_an_error(tmp_path):
    _stems(tmp_path, ["a.wav", "b.wav"], ["a.wav", "x.wav"])
    with pytest.raises(DatasetError, match=r"only in vocals/: \['b'\].*only in accompaniment/: \['x'\]"):
        stems_pairs(tmp_path)
    with pytest.raises(DatasetError, match="accompaniment/"):
        stems_pairs(tmp_path / "vocals")


def test_unknown_dataset_and_split(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        load_tracks("timit", "train", tmp_path)
    with pytest.raises(ValueError, match="unknown split"):
        list_mir1k("dev", tmp_path)
