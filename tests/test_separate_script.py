"""End to end on a fixture in IRMAS layout: train_music.py (and --resume),
`npvae evaluate` and `npvae separate` on a stereo file of odd length."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from npvae.files import h5mat

pytestmark = pytest.mark.slow     # an end-to-end file (CI runs it on the default backend only)

REPO = Path(__file__).resolve().parents[1]
SR = 44100


def run(script, *args):
    """``python scripts/SCRIPT ARGS``, or ``npvae SCRIPT ARGS`` for a subcommand name."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}
    command = [str(REPO / "scripts" / script)] if script.endswith(".py") else ["-m", "npvae", script]
    return subprocess.run([sys.executable, *command, *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)


def voice_like(rng, n, sr=SR):
    t = np.arange(n) / sr
    f0 = rng.uniform(180, 400) * (1 + 0.03 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(0.4 / k * np.sin(k * phase) for k in range(1, 8)) * (np.sin(2 * np.pi * 1.1 * t) > -0.2)
    return x


def music_like(rng, n, sr=SR):
    t = np.arange(n) / sr
    notes = rng.uniform(80, 160, 3)
    x = sum(0.2 * np.sign(np.sin(2 * np.pi * f * t)) for f in notes) * np.exp(-3 * (t % 0.5))
    return x + 0.02 * rng.standard_normal(n)


def stereo(x, rng):
    return np.stack([x, 0.8 * x + 0.01 * rng.standard_normal(x.size)], axis=1).astype(np.float32) * 0.5


@pytest.fixture(scope="module")
def irmas_root(tmp_path_factory):
    """10 voice and 10 instrument excerpts (1.5 s, 44.1 kHz stereo) named as IRMAS names them."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("data")
    base = root / "IRMAS-TrainingData"
    n = int(1.5 * SR)
    for i in range(10):
        (base / "voi").mkdir(parents=True, exist_ok=True)
        sf.write(base / "voi" / f"[voi][pop_roc]{2000 + i:04d}__{i % 3 + 1}.wav", stereo(voice_like(rng, n), rng), SR)
        inst = ("cla", "flu")[i % 2]
        (base / inst).mkdir(parents=True, exist_ok=True)
        sf.write(base / inst / f"{i:03d}__[{inst}][nod][cla]{1000 + i:04d}__1.wav",
                 stereo(music_like(rng, n), rng), SR)
    return root


@pytest.fixture(scope="module")
def trained_run(irmas_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "irmas"
    args = ("--dataset", "irmas", "--data-dir", irmas_root, "--epochs", 2, "--display-every", 1,
            "--channels", 4, 4, 8, "--latent-channels", 4, "--batch-size", 4, "--frames", 32,
            "--out", out, "--seed", 3, "--no-progress")
    r = run("train_music.py", *args)
    assert r.returncode == 0, r.stderr + r.stdout
    return out, args, r.stdout


def test_train_music_writes_every_artefact(trained_run):
    out, _, log = trained_run
    assert "valid:" in log and "epoch   2" in log
    for name in ("checkpoint.npz", "model.h5", "results.h5", "loss_curves.png", "figures/epoch_001.png",
                 "figures/epoch_002.png", "snippets/epoch_002_vocals.wav",
                 "snippets/epoch_002_accompaniment.wav"):
        assert (out / name).is_file(), name
    tree = h5mat.read_tree(out / "results.h5", expected_kind="music_results")
    assert list(tree["history"]["epoch"]) == [1, 2]
    assert np.all(np.isfinite(tree["history"]["train_total"]))
    assert tree["config"]["sample_rate"] == 16000 and tree["config"]["dataset"] == "irmas"
    clip = tree["examples"]["clip0"]
    assert clip["vocals_hat"].shape == clip["vocals"].shape
    assert clip["mixture_mag"].shape[0] == 513
    assert "params" in tree["model"]


def test_train_music_resumes(trained_run):
    out, args, _ = trained_run
    args = list(args)
    args[args.index("--epochs") + 1] = 3
    r = run("train_music.py", *args, "--resume")
    assert r.returncode == 0, r.stderr
    assert "resumed" in r.stdout and "epoch   3" in r.stdout
    tree = h5mat.read_tree(out / "results.h5", expected_kind="music_results")
    assert list(tree["history"]["epoch"]) == [1, 2, 3]


def test_evaluate_music_prints_model_oracle_and_floor(trained_run, irmas_root, tmp_path):
    out, _, _ = trained_run
    res = tmp_path / "eval.h5"
    r = run("evaluate", out, "--dataset", "irmas", "--data-dir", irmas_root,
            "--split", "validation", "--results", res, "--figure", tmp_path / "fig.png", "--label", "irmas-few")
    assert r.returncode == 0, r.stderr
    for text in ("GNSDR", "VAE (this model)", "ideal ratio mask", "unprocessed mixture"):
        assert text in r.stdout
    tree = h5mat.read_tree(res, expected_kind="music_results")
    metrics = tree["metrics"]
    assert tree["config"]["label"] == "irmas-few"
    assert metrics["oracle_vocals_gnsdr"] > metrics["mixture_vocals_gnsdr"]
    assert (tmp_path / "fig.png").is_file()
    again = run("evaluate", "--model", out, "--dataset", "irmas", "--data-dir", irmas_root,
                "--results", res)
    assert again.returncode != 0 and "--overwrite" in again.stderr and "exists" in again.stderr


def test_evaluation_files_are_named_per_option(tmp_path):
    from npvae.cli.evaluate import results_path
    plain = results_path(tmp_path, "mir1k", "validation")
    wiener = results_path(tmp_path, "mir1k", "validation", wiener=True)
    assert plain != wiener and plain.parent == wiener.parent == tmp_path
    assert results_path(tmp_path / "model.h5", "irmas", "all").parent == tmp_path
    shifted = results_path(tmp_path, "mir1k", "validation", shifts=8)
    assert shifted.name == "eval_mir1k_validation_shifts8.h5"
    labelled = results_path(tmp_path, "mir1k", "validation", shifts=8, label="more-singers")
    assert labelled.name == "eval_mir1k_validation_shifts8_more-singers.h5"


@pytest.mark.parametrize("label", ["more singers", "../x", "", "-x", "a" * 41])
def test_a_label_that_cannot_be_part_of_a_file_name_is_refused(label, tmp_path):
    r = run("evaluate", tmp_path, f"--label={label}")
    assert r.returncode == 2 and "--label" in r.stderr and "is not a label" in r.stderr


def test_shifts_are_checked_against_the_model(trained_run, irmas_root, tmp_path):
    out, _, _ = trained_run
    r = run("evaluate", out, "--dataset", "irmas", "--data-dir", irmas_root, "--shifts", "0",
            "--results", tmp_path / "e.h5")
    assert r.returncode == 2 and "--shifts: must be at least 1, not 0" in r.stderr
    r = run("evaluate", out, "--dataset", "irmas", "--data-dir", irmas_root, "--shifts", "1000",
            "--results", tmp_path / "e.h5")
    assert r.returncode != 0 and "--shifts" in r.stderr and "DOWNSAMPLE" in r.stderr
    assert not (tmp_path / "e.h5").exists()
    song = tmp_path / "song.wav"
    sf.write(song, (0.1 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32), SR)
    r = run("separate", song, "--model", out, "--out", tmp_path / "sep", "--shifts", "1000")
    assert r.returncode == 2 and "DOWNSAMPLE" in r.stderr and not (tmp_path / "sep" / "song_vocals.wav").exists()
    # a good --shifts: the file holds what the separator gives with the same shifts
    r = run("separate", song, "--model", out, "--out", tmp_path / "sep", "--shifts", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    from npvae.files.model_file import load_separator
    x = sf.read(song, dtype="float32")[0]
    expected = load_separator(out).separate(x, SR, shifts=2)
    got = sf.read(tmp_path / "sep" / "song_vocals.wav", dtype="float32")[0]
    np.testing.assert_allclose(got, expected[0], atol=1e-4)
    plain = load_separator(out).separate(x, SR)
    assert np.abs(got - plain[0]).max() > 1e-6


def test_separate_stereo_file_of_odd_length(trained_run, tmp_path):
    out, _, _ = trained_run
    rng = np.random.default_rng(5)
    n = 2 * SR + 1235                                     # odd
    song = np.stack([voice_like(rng, n) + music_like(rng, n),
                     0.5 * voice_like(rng, n) - music_like(rng, n)], axis=1).astype(np.float32) * 0.4
    path = tmp_path / "my song.wav"
    sf.write(path, song, SR, subtype="PCM_16")
    song = sf.read(path, dtype="float32")[0]
    r = run("separate", path, "--model", out / "model.h5", "--out", tmp_path / "sep", "--wiener",
            "--chunk-frames", 16)
    assert r.returncode == 0, r.stderr
    parts = []
    for name in ("vocals", "accompaniment"):
        x, sr = sf.read(tmp_path / "sep" / f"my song_{name}.wav", dtype="float32")
        assert sr == SR and x.shape == (n, 2) and np.all(np.isfinite(x))
        parts.append(x)
    # Wiener masks add up to one and the band above 8 kHz goes to the accompaniment,
    # so the two estimates add up to the input, each channel its own.
    err = parts[0] + parts[1] - song
    assert np.sqrt(np.mean(err ** 2)) < 0.01 * np.sqrt(np.mean(song ** 2))
    assert not np.allclose(parts[0][:, 0], parts[0][:, 1], atol=1e-3)


def test_separate_reports_unreadable_files(trained_run, tmp_path):
    out, _, _ = trained_run
    bad = tmp_path / "not_audio.wav"
    bad.write_text("hello")
    r = run("separate", bad, "--model", out, "--out", tmp_path / "sep")
    assert r.returncode != 0 and "not_audio.wav" in r.stderr
    r = run("separate", bad, "--model", tmp_path / "nowhere", "--out", tmp_path / "sep")
    assert r.returncode != 0 and "error" in r.stderr
