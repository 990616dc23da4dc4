"""Songs separated in GNU Octave with matlab/npvae_separate*.m equal `npvae separate`.

Two models: the shipped music model (npvae/pretrained/music-mir1k.h5, `npvae separate`'s
default) and a tiny one trained for two short epochs by scripts/train_music.py on a
stems folder cut from real MIR-1K clips (singers abjones and amy). A real clip of an
unseen singer (16 kHz, mono) and a 44.1 kHz stereo song made from it (odd length,
with a band above 8 kHz that the model cannot see) are separated by `npvae separate`
and by npvae_separate_file in Octave, and the files compared sample by sample. The STFT, inverse STFT and resampler written in MATLAB are also checked
against scipy on their own, on settings the model files do not use.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import soundfile as sf
from scipy.signal import resample_poly

from _octave import assert_octave_errors, needs_octave, octave_ok
from npvae.files import h5mat

pytestmark = [needs_octave, pytest.mark.slow]     # an end-to-end file (CI runs it on the default backend only)

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-4                       # the bar; the measured difference is ~1e-7
SECONDS = 3.0


def run_script(script, *args):
    """``python scripts/SCRIPT ARGS``, or ``npvae SCRIPT ARGS`` for a subcommand name."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}
    command = [str(REPO / "scripts" / script)] if script.endswith(".py") else ["-m", "npvae", script]
    res = subprocess.run([sys.executable, *command, *map(str, args)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, f"{script} failed:\n{res.stderr}\n{res.stdout}"
    return res.stdout


def mir1k_clip(shared_data, name):
    """(accompaniment, voice) float32 arrays of a MIR-1K clip at 16 kHz (left, right channel)."""
    x, sr = sf.read(shared_data / "MIR-1K" / "Wavfile" / name, dtype="float32")
    assert sr == 16000 and x.shape[1] == 2
    return x[:, 0], x[:, 1]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, shared_data):
    """model.h5 of scripts/train_music.py after two short epochs on ten real MIR-1K clips (4 s each)."""
    root = tmp_path_factory.mktemp("matlab_sep")
    stems = root / "stems"
    names = sorted(p.name for p in (shared_data / "MIR-1K" / "Wavfile").glob("*.wav")
                   if p.name.startswith(("abjones_", "amy_")))[::17][:10]
    assert len(names) == 10
    for name in names:
        acc, voice = mir1k_clip(shared_data, name)
        for folder, x in (("vocals", voice), ("accompaniment", acc)):
            (stems / folder).mkdir(parents=True, exist_ok=True)
            sf.write(stems / folder / name, x[:4 * 16000], 16000, subtype="PCM_16")
    out = root / "run"
    run_script("train_music.py", "--dataset", "stems", "--data-dir", stems, "--epochs", 2, "--lr", 3e-3,
               "--display-every", 2,
               "--channels", 4, 4, 8, "--latent-channels", 4, "--batch-size", 4, "--frames", 32,
               "--out", out, "--seed", 0, "--no-progress")
    assert (out / "model.h5").is_file()
    return out / "model.h5"


@pytest.fixture(scope="module")
def songs(tmp_path_factory, shared_data):
    """name -> (path, samples as read back in float32, sample rate) of the two test songs."""
    folder = tmp_path_factory.mktemp("songs")
    acc, voice = mir1k_clip(shared_data, "annar_1_01.wav")       # a singer never trained on
    n = int(SECONDS * 16000)
    mix = 0.5 * (acc[:n] + voice[:n])
    sf.write(folder / "annar_1_01.wav", mix, 16000, subtype="PCM_16")
    # 44.1 kHz stereo, odd length: two different mixes of the clip, plus a band around
    # 12 kHz the 16 kHz model never sees (it must end up in the accompaniment) and a tone
    # at 7995 Hz, in the model's Nyquist bin (which takes the mask of the bin below).
    up = np.stack([resample_poly(0.5 * (acc[:n] + voice[:n]), 441, 160),
                   resample_poly(0.6 * acc[:n] + 0.3 * voice[:n], 441, 160)], axis=1)
    m = up.shape[0] - 1234
    t = np.arange(m) / 44100
    hiss = 0.05 * np.sin(2 * np.pi * 12000 * t) * (1 + np.sin(2 * np.pi * 2 * t)) + 0.05 * np.sin(2 * np.pi * 7995 * t)
    stereo = up[:m] + np.stack([hiss, -hiss], axis=1)
    sf.write(folder / "my song.wav", (0.9 * stereo / np.abs(stereo).max()).astype(np.float32), 44100,
             subtype="PCM_16")
    out = {}
    for name in ("annar_1_01", "my song"):
        x, sr = sf.read(folder / f"{name}.wav", dtype="float32")
        out[name] = (folder / f"{name}.wav", x, sr)
    return out


@pytest.fixture(scope="module")
def separated(model_file, songs, tmp_path_factory):
    """Both songs separated by `npvae separate` and by Octave: with the shipped model, and with
    the tiny model (plain, with --wiener / small chunks, and with --shifts)."""
    from npvae import pretrained
    work = tmp_path_factory.mktemp("separated")
    paths = [p for p, _, _ in songs.values()]
    shipped = pretrained.path("music-mir1k")
    # the defaults (a stereo song's masks from its mid signal, the band above 8 kHz shared),
    # and once each channel on its own with that band to the accompaniment
    per_channel = ("--stereo", "per-channel", "--high-band", "accompaniment")
    run_script("separate", *paths, "--out", work / "py_shipped")          # no --model: the shipped one
    run_script("separate", *paths, "--model", model_file, "--out", work / "py")
    run_script("separate", songs["my song"][0], "--model", model_file, "--out", work / "py_wiener",
               "--wiener", "--chunk-frames", 16, *per_channel)
    run_script("separate", songs["my song"][0], "--model", model_file, "--out", work / "py_shifts", "--shifts", 3)
    code = "".join(f"npvae_separate_file('{model_file}', '{p}', 'oct');"
                   f"npvae_separate_file('{shipped}', '{p}', 'oct_shipped');" for p in paths)
    code += (f"npvae_separate_file('{model_file}', '{songs['my song'][0]}', 'oct_wiener', 'wiener', true, "
             f"'chunk_frames', 16, 'stereo', 'per-channel', 'high_band', 'accompaniment');"
             f"npvae_separate_file('{model_file}', '{songs['my song'][0]}', 'oct_shifts', 'shifts', 3);"
             # the array form, on what audioread gives
             f"[x, fs] = audioread('{songs['annar_1_01'][0]}'); [v, a] = npvae_separate('{model_file}', x, fs);"
             f"save('-v7', 'arrays.mat', 'v', 'a', 'fs');")
    octave_ok(code, work, timeout=600)
    return work


def read_pair(folder, name):
    out = []
    for source in ("vocals", "accompaniment"):
        x, sr = sf.read(folder / f"{name}_{source}.wav", dtype="float32")
        assert sf.info(folder / f"{name}_{source}.wav").subtype == "FLOAT"
        out.append((x, sr))
    return out


@pytest.mark.parametrize("name,py,oc", [("annar_1_01", "py_shipped", "oct_shipped"),
                                        ("my song", "py_shipped", "oct_shipped"),
                                        ("annar_1_01", "py", "oct"), ("my song", "py", "oct"),
                                        ("my song", "py_wiener", "oct_wiener"),
                                        ("my song", "py_shifts", "oct_shifts")])
def test_octave_files_equal_separate_py(separated, songs, name, py, oc):
    _, mix, sr = songs[name]
    want = read_pair(separated / py, name)
    got = read_pair(separated / oc, name)
    for (w, w_sr), (g, g_sr) in zip(want, got):
        assert g_sr == w_sr == sr and g.shape == w.shape == mix.shape
        assert np.abs(w).max() > 1e-3                              # a real separation, not silence
        np.testing.assert_allclose(g, w, atol=TOL, rtol=0, err_msg=f"{name}: {oc} vs {py}")
    vocals, acc = got[0][0], got[1][0]
    rms = lambda x: np.sqrt(np.mean(x ** 2))                       # noqa: E731
    assert rms(vocals - acc) > 0.1 * rms(mix)                      # the masks are far from 1/2: the net matters
    if "wiener" in oc:
        # Wiener masks sum to one and the band above 8 kHz goes to the accompaniment:
        # the estimates add up to the input.
        err = vocals + acc - mix
        assert np.sqrt(np.mean(err ** 2)) < 0.01 * np.sqrt(np.mean(mix ** 2))


def test_shifts_change_the_estimates(separated):
    # the shifted passes are not copies of the plain one: --shifts averages something
    plain = read_pair(separated / "py", "my song")
    shifted = read_pair(separated / "py_shifts", "my song")
    for (p, _), (q, _) in zip(plain, shifted):
        assert 1e-5 < np.abs(p - q).max() < 0.5 * np.abs(p).max()


def test_octave_array_form_equals_separate_py(separated, songs):
    got = scipy.io.loadmat(separated / "arrays.mat")
    _, mix, sr = songs["annar_1_01"]
    assert got["fs"].item() == sr
    for key, (want, _) in zip(("v", "a"), read_pair(separated / "py", "annar_1_01")):
        have = got[key]
        assert have.dtype == np.float64 and have.shape == (mix.size, 1)     # audioread: n x 1
        np.testing.assert_allclose(have[:, 0], want, atol=TOL, rtol=0)


def test_stft_istft_resample_match_scipy(tmp_path):
    from npvae.audio.io import resample
    from npvae.audio.stft import STFTConfig, istft, stft
    rng = np.random.default_rng(7)
    configs = [STFTConfig(16000, 1024, 256, "hann"), STFTConfig(22050, 1000, 300, "hamming"),
               STFTConfig(8000, 511, 128, "hann")]
    lengths = [300, 1024, 4097, 12345]
    tiny = [1, 2, 3]                                               # a single output sample, a single row
    signals = {f"x{n}": rng.standard_normal(n) for n in lengths + tiny}
    spectra = {f"S{i}_{n}": rng.standard_normal((c.n_freq, c.n_frames(n)))
               + 1j * rng.standard_normal((c.n_freq, c.n_frames(n))) for i, c in enumerate(configs) for n in lengths}
    scipy.io.savemat(tmp_path / "in.mat", {**signals, **spectra})
    rates = [(16000, 44100), (44100, 16000), (22050, 16000), (16000, 48000)]
    code = "load('in.mat'); out = struct();"
    for i, c in enumerate(configs):
        code += f"cfg = struct('n_fft', {c.n_fft}, 'hop', {c.hop}, 'window', '{c.window}');"
        for n in lengths:
            code += (f"out.X{i}_{n} = npvae_stft(x{n}, cfg); out.y{i}_{n} = npvae_istft(S{i}_{n}, cfg, {n});"
                     f"out.z{i}_{n} = npvae_istft(npvae_stft(x{n}, cfg), cfg, {n});")
    for a, b in rates:
        code += "".join(f"out.r{a}_{b}_{n} = npvae_resample([x{n}(:) -x{n}(:)], {a}, {b});" for n in lengths + tiny)
    octave_ok(code + "save('-v7', 'out.mat', '-struct', 'out');", tmp_path)
    got = scipy.io.loadmat(tmp_path / "out.mat")
    for i, c in enumerate(configs):
        for n in lengths:
            x = signals[f"x{n}"]
            X = stft(x, c)
            assert got[f"X{i}_{n}"].shape == X.shape, (c, n)
            np.testing.assert_allclose(got[f"X{i}_{n}"], X, atol=1e-10, rtol=0, err_msg=f"stft {c} {n}")
            np.testing.assert_allclose(got[f"y{i}_{n}"][:, 0], istft(spectra[f"S{i}_{n}"], c, n), atol=1e-10,
                                       rtol=0, err_msg=f"istft {c} {n}")
            np.testing.assert_allclose(got[f"z{i}_{n}"][:, 0], x, atol=1e-10, rtol=0)
    for a, b in rates:
        for n in lengths + tiny:
            x = np.stack([signals[f"x{n}"], -signals[f"x{n}"]], axis=1).astype(np.float32)
            want = resample(x, a, b)                               # float32, as npvae separate uses it
            have = got[f"r{a}_{b}_{n}"]
            assert have.shape == want.shape, (a, b, n)
            np.testing.assert_allclose(have, want, atol=1e-5, rtol=0, err_msg=f"resample {a}->{b} {n}")


def test_show_music_plots_a_separated_song_headless(separated, songs, model_file):
    path = songs["my song"][0]
    out = octave_ok(f"[x, fs] = audioread('{path}'); v = audioread('oct/my song_vocals.wav');"
                    f"a = audioread('oct/my song_accompaniment.wav');"
                    "files = npvae_show_music(x, v, a, fs, 'figs', 'name', 'mysong'); fprintf('%s\\n', files{:});",
                    separated)
    assert out.split() == ["figs/mysong_spectrograms.png"]
    data = (separated / "figs" / "mysong_spectrograms.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 3 * 200 and height > 200


def test_separate_refuses_bad_input_clearly(model_file, songs, tmp_path):
    spec = {"type": "DenseSeparationVAE", "hidden": [8], "latent_dim": 2}
    h5mat.write_tree(tmp_path / "mnist_model.h5", {"model": {"spec": json.dumps(spec), "params": {}}, "config": {}},
                     "model")
    song = songs["annar_1_01"][0]
    (tmp_path / "sep").mkdir()
    (tmp_path / "sep" / "annar_1_01_vocals.wav").write_bytes(b"keep me")
    cases = {
        "npvae_separate('mnist_model.h5', zeros(100, 1), 16000)": ("npvae:notMusicModel", "DenseSeparationVAE"),
        f"npvae_separate('{model_file}', uint16([1; 2; 3]), 16000)": ("npvae:badAudio", "uint16"),
        f"npvae_separate('{model_file}', [0; NaN], 16000)": ("npvae:badAudio", "NaN"),
        f"npvae_separate('{model_file}', zeros(100, 1), 0)": ("npvae:badRate", "positive integer"),
        f"npvae_separate('{model_file}', zeros(100, 1), 16000, 'chunk_frames', 7)": ("npvae:badOption", "multiples of 8"),
        f"npvae_separate('{model_file}', zeros(100, 1), 16000, 'shifts', 9)": ("npvae:badOption", "from 1 to 8"),
        f"npvae_separate_file('{model_file}', '{song}', 'sep')": ("npvae:outputExists", "'overwrite', true"),
        f"npvae_separate_file('{model_file}', 'nowhere.wav', 'sep')": ("npvae:fileNotFound", "nowhere.wav"),
    }
    assert_octave_errors(cases, tmp_path)
    assert (tmp_path / "sep" / "annar_1_01_vocals.wav").read_bytes() == b"keep me"


def test_integer_audio_is_scaled_as_python_scales_it(model_file, songs, tmp_path):
    """int16 and uint8 samples (audioread's 'native' output) give what Python gives for them."""
    from npvae.files.model_file import load_model
    from npvae.inputs import as_float_audio
    _, mix, sr = songs["annar_1_01"]
    x16 = np.round(np.clip(mix[:sr], -1, 1) * 32767).astype(np.int16)
    x8 = (np.round(np.clip(mix[:sr], -1, 1) * 127) + 128).astype(np.uint8)
    scipy.io.savemat(tmp_path / "in.mat", {"x16": x16[:, None], "x8": x8[:, None]})
    octave_ok(f"load('in.mat'); [v16, a16] = npvae_separate('{model_file}', x16, {sr});"
              f"[v8, a8] = npvae_separate('{model_file}', x8, {sr});"
              "c16 = class(x16); save('-v7', 'out.mat', 'v16', 'a16', 'v8', 'a8', 'c16');", tmp_path)
    got = scipy.io.loadmat(tmp_path / "out.mat")
    assert got["c16"][0] == "int16"                                 # loadmat kept the integer type
    sep = load_model(model_file)
    for x, tag in ((x16, "16"), (x8, "8")):
        want_v, want_a = sep.separate(x, sr)[[0, -1]]
        np.testing.assert_allclose(as_float_audio(x), x / 32768 if tag == "16" else (x - 128.0) / 128, atol=1e-7)
        np.testing.assert_allclose(got["v" + tag][:, 0], want_v, atol=TOL, rtol=0)
        np.testing.assert_allclose(got["a" + tag][:, 0], want_a, atol=TOL, rtol=0)
