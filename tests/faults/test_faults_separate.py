"""Fault cases of ``npvae separate``: outputs that collide or exist, bad flags, damaged
models and inputs, odd sample rates and formats, a full disk."""
import os
import resource
import signal
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _faults import edited_model, expect_error, must_survive, no_temporaries, shape_changed


@pytest.fixture
def sep(cli):
    """``sep(*argv)`` runs ``npvae separate ARGV --no-progress``."""
    return lambda *args: cli("separate", *args, "--no-progress")


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


# --- outputs --------------------------------------------------------------------------------

@pytest.mark.fault("separate", "two inputs with the same name in different folders", "correct result")
def test_same_name_in_two_folders(sep, song, music_model, tmp_path):
    a, b = song(folder=tmp_path / "a"), song(folder=tmp_path / "b", seed=1)
    r = sep(a, b, "--model", music_model, "--out", tmp_path / "out")
    assert r.code == 0, r.err
    va, vb = (sf.read(str(tmp_path / "out" / x / "song_vocals.wav"))[0] for x in ("a", "b"))
    assert not np.array_equal(va, vb), "one output replaced the other"


@pytest.mark.fault("separate", "song.wav and song.flac in one folder (same output names)", "clear error")
def test_same_stem_two_formats(sep, song, music_model, tmp_path):
    song("song.wav", folder=tmp_path)
    song("song.flac", folder=tmp_path)
    r = sep(tmp_path / "song.wav", tmp_path / "song.flac", "--model", music_model, "--out", tmp_path / "out")
    expect_error(r, "would both write")


@pytest.mark.fault("separate", "an existing output without --overwrite", "clear error")
def test_existing_output(sep, song, music_model, tmp_path):
    s = song(folder=tmp_path)
    (tmp_path / "out").mkdir()
    old = tmp_path / "out" / "song_vocals.wav"
    old.write_bytes(b"precious")
    r = sep(s, "--model", music_model, "--out", tmp_path / "out")
    must_survive(old, b"precious")
    expect_error(r, "exists; pass --overwrite")


@pytest.mark.fault("separate", "an existing output with --overwrite", "correct result")
def test_existing_output_overwrite(sep, song, music_model, tmp_path):
    s = song(folder=tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "song_vocals.wav").write_bytes(b"old")
    r = sep(s, "--model", music_model, "--out", tmp_path / "out", "--overwrite")
    assert r.code == 0, r.err
    assert sf.info(str(tmp_path / "out" / "song_vocals.wav")).frames == 9600


@pytest.mark.fault("separate", "an input inside --out that an output would replace", "clear error")
def test_output_would_replace_input(sep, song, music_model, tmp_path):
    victim = song("song_vocals.wav", folder=tmp_path / "sep")
    other = song("song.wav", folder=tmp_path / "sep")
    before = victim.read_bytes()
    r = sep(other, victim, "--model", music_model, "--out", tmp_path / "sep", "--overwrite")
    must_survive(victim, before)
    expect_error(r, "would replace the input")


@pytest.mark.fault("separate", "a folder scan that includes --out leaves --out's files alone", "correct result")
def test_folder_scan_includes_out(sep, song, music_model, tmp_path):
    song("one.wav", folder=tmp_path)
    inside = song("old_vocals.wav", folder=tmp_path / "out")
    before = inside.read_bytes()
    r = sep(tmp_path, "--model", music_model, "--out", tmp_path / "out")
    assert r.code == 0, r.err
    must_survive(inside, before)
    assert not (tmp_path / "out" / "out").exists() and (tmp_path / "out" / "one_vocals.wav").exists()


@pytest.mark.fault("separate", "--out is a file", "clear error")
def test_out_is_a_file(sep, song, music_model, tmp_path):
    (tmp_path / "f").write_text("x")
    expect_error(sep(song(folder=tmp_path), "--model", music_model, "--out", tmp_path / "f"), "is a file")


@pytest.mark.fault("separate", "--out below a file", "clear error")
def test_out_below_a_file(sep, song, music_model, tmp_path):
    (tmp_path / "f").write_text("x")
    expect_error(sep(song(folder=tmp_path), "--model", music_model, "--out", tmp_path / "f" / "sub"), "is a file")


# --- inputs ---------------------------------------------------------------------------------

@pytest.mark.fault("separate", "an unreadable input among good ones (nothing done)", "clear error")
def test_unreadable_input(sep, song, music_model, tmp_path):
    (tmp_path / "bad.wav").write_text("no")
    r = sep(song(folder=tmp_path), tmp_path / "bad.wav", "--model", music_model, "--out", tmp_path / "out")
    assert not (tmp_path / "out").exists(), "work started before the check"
    expect_error(r, "not readable audio")


@pytest.mark.fault("separate", "a missing input", "clear error")
def test_missing_input(sep, music_model, tmp_path):
    expect_error(sep(tmp_path / "nope.wav", "--model", music_model, "--out", tmp_path / "o"), "no such file")


@pytest.mark.fault("separate", "an empty folder", "clear error")
def test_empty_folder(sep, music_model, new_dir):
    d = new_dir()
    expect_error(sep(d, "--model", music_model, "--out", d / "o"), "no audio files")


@pytest.mark.fault("separate", "an input with no samples", "clear error")
def test_input_without_samples(sep, music_model, tmp_path):
    sf.write(str(tmp_path / "e.wav"), np.zeros((0, 1), np.float32), 8000)
    expect_error(sep(tmp_path / "e.wav", "--model", music_model, "--out", tmp_path / "o"), "no samples")


@pytest.mark.fault("separate", "a float input holding NaN (found while reading)", "clear error")
def test_input_with_nan(sep, music_model, tmp_path):
    x = np.full((4000, 1), 0.1, np.float32)
    x[3000] = np.nan
    sf.write(str(tmp_path / "n.wav"), x, 8000, subtype="FLOAT")
    r = sep(tmp_path / "n.wav", "--model", music_model, "--out", tmp_path / "o")
    assert not (tmp_path / "o").exists() or not _files(tmp_path / "o"), "partial outputs"
    expect_error(r, "NaN")


@pytest.mark.fault("separate", "the same file given twice is separated once", "correct result")
def test_same_file_twice(sep, song, music_model, tmp_path):
    s = song(folder=tmp_path)
    r = sep(s, s, "--model", music_model, "--out", tmp_path / "o")
    assert r.code == 0, r.err
    assert r.out.count("song_vocals.wav") == 1, r.out


@pytest.mark.fault("separate", "no songs given", "clear error")
def test_no_songs(sep, music_model, tmp_path):
    expect_error(sep("--model", music_model, "--out", tmp_path), "at least one song")


@pytest.mark.fault("separate", "no --out given", "clear error")
def test_no_out(sep, song, music_model):
    expect_error(sep(song(), "--model", music_model), "--out")


# --- stems, formats -------------------------------------------------------------------------

@pytest.mark.fault("separate", "--stems vocals writes only vocals", "correct result")
def test_stems_vocals(sep, song, music_model, tmp_path):
    r = sep(song(folder=tmp_path), "--model", music_model, "--out", tmp_path / "o", "--stems", "vocals")
    assert r.code == 0, r.err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["song_vocals.wav"]


@pytest.mark.fault("separate", "--format {fmt} --bits {bits}", "correct result")
@pytest.mark.parametrize("fmt, bits, subtype", [("wav", "16", "PCM_16"), ("wav", "24", "PCM_24"),
                                                ("wav", "float", "FLOAT"), ("flac", "16", "PCM_16"),
                                                ("flac", "24", "PCM_24")])
def test_format_and_bits(sep, song, music_model, tmp_path, fmt, bits, subtype):
    r = sep(song(folder=tmp_path), "--model", music_model, "--out", tmp_path / "o", "--format", fmt, "--bits", bits)
    assert r.code == 0, r.err
    info = sf.info(str(tmp_path / "o" / f"song_vocals.{fmt}"))
    assert info.subtype == subtype and info.frames == 9600, (info.subtype, info.frames)


def _rate(sr, ch, seconds=1.1, name="song.wav", subtype=None, marks=()):
    text = (f"{'mono' if ch == 1 else f'{ch}-channel'} {sr} Hz {Path(name).suffix[1:].upper()} input"
            f"{' (' + subtype + ')' if subtype else ''}")
    return pytest.param(sr, ch, seconds, name, subtype, text, id=text, marks=marks)


RATES = [_rate(sr, ch) for sr, ch in ((8000, 1), (8000, 2), (11025, 1), (16000, 6), (44100, 2), (48000, 1),
                                      (96000, 2), (7919, 1))] + [
    _rate(22050, 2, name="song.flac"),
    _rate(16000, 1, subtype="PCM_16"),
    _rate(8000, 1, seconds=0.01),
    _rate(16000, 2, name="song.mp3", marks=pytest.mark.skipif(
        "MP3" not in sf.available_formats(), reason="MP3 not supported by this libsndfile")),
]


@pytest.mark.fault("separate", "{text}", "correct result")
@pytest.mark.parametrize("sr, ch, seconds, name, subtype, text", RATES)
def test_sample_rates_and_channels(sep, song, music_model, tmp_path, sr, ch, seconds, name, subtype, text):
    s = song(name, sr=sr, ch=ch, seconds=seconds, folder=tmp_path, subtype=subtype)
    r = sep(s, "--model", music_model, "--out", tmp_path / "o")
    assert r.code == 0, r.err
    info = sf.info(str(tmp_path / "o" / f"{Path(name).stem}_accompaniment.wav"))
    n_in = sf.info(str(s)).frames
    assert (info.samplerate, info.channels, info.frames) == (sr, ch, n_in), \
        (info.samplerate, info.channels, info.frames)


# --- flags ----------------------------------------------------------------------------------

BAD_FLAGS = [
    (["--stems", "drums"], "invalid choice"),
    (["--format", "flac", "--bits", "float"], "not available in FLAC"),
    (["--chunk-frames", "7"], "multiple of 8"), (["--chunk-frames", "0"], "multiple of 8"),
    (["--chunk-frames", "-8"], "multiple of 8"), (["--block-seconds", "0"], "positive"),
    (["--block-seconds", "nan"], "positive"), (["--block-seconds", "-3"], "positive"),
    (["--format", "mp3"], "invalid choice"), (["--bits", "8"], "invalid choice"),
]


@pytest.mark.fault("separate", "{flags}", "clear error")
@pytest.mark.parametrize("flags, match", BAD_FLAGS, ids=[" ".join(b[0]) for b in BAD_FLAGS])
def test_bad_flags(sep, song, music_model, new_dir, flags, match):
    expect_error(sep(song(), "--model", music_model, "--out", new_dir(), *flags), match)


# --- models ---------------------------------------------------------------------------------

@pytest.mark.fault("separate", "--model that does not exist", "clear error")
def test_model_missing(sep, song, new_dir, tmp_path):
    expect_error(sep(song(), "--model", tmp_path / "no.h5", "--out", new_dir()), "does not exist")


@pytest.mark.fault("separate", "--model is a Part I (MNIST) model", "clear error")
def test_model_of_part_one(sep, song, mnist_model, new_dir):
    expect_error(sep(song(), "--model", mnist_model, "--out", new_dir()), "not a music separation model")


@pytest.mark.fault("separate", "--model with a changed parameter shape", "clear error")
def test_model_shape_changed(sep, song, mnist_model, new_dir):
    model = edited_model(mnist_model, shape_changed, new_dir())
    expect_error(sep(song(), "--model", model, "--out", new_dir()), "do not fit|not a music")


@pytest.mark.fault("separate", "--model of random bytes", "clear error")
def test_model_random_bytes(sep, song, new_dir, tmp_path):
    p = tmp_path / "m.h5"
    p.write_bytes(os.urandom(3000))
    expect_error(sep(song(), "--model", p, "--out", new_dir()), "not a readable HDF5")


# --- long songs, full disks -----------------------------------------------------------------

@pytest.mark.fault("separate", "blocks of 0.5 s equal one 100 s block (no seams)", "correct result")
def test_blocks_have_no_seams(sep, song, music_model, tmp_path):
    s = song(folder=tmp_path, sr=22050, seconds=4.3)
    for name, block in (("small", "0.5"), ("big", "100")):
        r = sep(s, "--model", music_model, "--out", tmp_path / name, "--block-seconds", block)
        assert r.code == 0, r.err
    a = sf.read(str(tmp_path / "small" / "song_vocals.wav"))[0]
    b = sf.read(str(tmp_path / "big" / "song_vocals.wav"))[0]
    err = float(np.max(np.abs(a - b)))
    assert err < 1e-5 * max(1e-9, float(np.max(np.abs(b)))), f"max difference {err:.1e}"


@pytest.mark.fault("separate", "writing fails midway (file size limit, as a full disk)", "clear error")
def test_write_fails_midway(sep, song, music_model, tmp_path):
    s = song(folder=tmp_path, seconds=3.0)
    old_sig = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20000, old[1]))
    try:
        r = sep(s, "--model", music_model, "--out", tmp_path / "o")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_sig)
    no_temporaries(tmp_path)
    assert not _files(tmp_path / "o") if (tmp_path / "o").exists() else True, "half-written outputs left"
    expect_error(r, "failed.*not written")


@pytest.mark.fault("separate", "not enough free space is found before any work", "clear error")
def test_not_enough_space(sep, song, music_model, tmp_path, monkeypatch):
    import npvae.files.guard as fg
    monkeypatch.setattr(fg.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    r = sep(song(folder=tmp_path), "--model", music_model, "--out", tmp_path / "o")
    monkeypatch.undo()
    expect_error(r, "not enough free space")
    assert not (tmp_path / "o").exists()
