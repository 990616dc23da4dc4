"""Blind Part I runs end to end on real MNIST / Fashion-MNIST subsets: the training
never depends on a source image, resume is exact, files load in Python and Octave."""
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

import npvae
import npvae.tasks.blind_mnist.task as pipe
from _octave import needs_octave, octave_ok
from npvae import cli
from npvae.files.guard import LOCK_FILE
from npvae.files.h5mat import read_tree
from npvae.models.blind import BlindSeparationVAE
from npvae.tasks import TASKS

pytestmark = pytest.mark.slow     # an end-to-end file (CI runs it on the default backend only)


def quiet(*args, **kwargs):
    pass


def config(tmp_path, shared_data, name, **kw):
    """A tiny run's settings: two MNIST digits, clipped sum, three groups, two epochs of 256 mixtures."""
    base = dict(pair="mnist-mnist", rule="sum", groups=3, hidden=(32, 16), latent_dim=4, batch_size=64, epochs=2,
                train_limit=256, eval_limit=64, n_examples=6, display_every=2, data_dir=str(shared_data),
                out=str(tmp_path / name), progress=False)
    return {**base, **kw}


def train(settings, **kw):
    return npvae.train("blind-mnist", settings, log=quiet, **kw)


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_data):
    return train(config(tmp_path_factory.mktemp("blind"), shared_data, "run"))


def test_run_writes_scores_figures_and_a_loadable_model(run):
    d = run.run_dir
    for name in ("checkpoint.npz", "config.json", "history.json", "metrics.json", "model.h5", "results.h5",
                 "grid.png", "loss_curves.png", "latent_groups.png", "figures/epoch_002.png"):
        assert (d / name).exists(), name
    metrics = json.loads((d / "metrics.json").read_text())
    for key in ("digit_a_psnr", "digit_b_ssim", "mean_psnr", "mean_ssim", "masked_mean_psnr", "group_agreement",
                "mixture_as_estimate_mean_psnr"):
        assert np.isfinite(metrics[key]), key
    assert metrics["n_eval_pairs"] == 64
    history = json.loads((d / "history.json").read_text())
    assert history["epoch"] == [1, 2] and {"train_kl_0", "train_kl_2", "val_psnr"} <= set(history)
    model = npvae.load_model(d)
    assert isinstance(model, BlindSeparationVAE) and model.n_groups == 3
    tree = read_tree(d / "results.h5", "blind_results")
    y = model.separate(tree["examples"]["mixture"])
    np.testing.assert_array_equal(y[:, 0], tree["examples"]["group_0"])


def test_training_never_reads_a_source(run, tmp_path, shared_data, monkeypatch):
    """Replace every source image the scoring side holds by noise: the trained
    parameters stay bit-identical (only the scores change), and the training data
    object holds mixtures alone."""
    real = pipe.load_blind_data
    seen = {}

    def load_with_fake_sources(*args, **kwargs):
        train, scoring = real(*args, **kwargs)
        seen["train"], seen["scoring"] = train, scoring
        assert len(scoring.digit_train) == len(scoring.fashion_train) == 0   # training images dropped
        noise = np.random.default_rng(9)
        for key in ("val", "eval"):
            m = (scoring.validation_set if key == "val" else scoring.evaluation_set)()[0]
            scoring._cache[key] = (m, noise.uniform(size=m.shape).astype(np.float32),
                                   noise.uniform(size=m.shape).astype(np.float32))
        return train, scoring

    first = run
    monkeypatch.setattr(pipe, "load_blind_data", load_with_fake_sources)
    second = train(config(tmp_path, shared_data, "fake"))
    a = npvae.load_model(first.run_dir).state_dict()
    b = npvae.load_model(second.run_dir).state_dict()
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert first.history["train_total"] == second.history["train_total"]
    assert first.metrics["mean_psnr"] != second.metrics["mean_psnr"]
    arrays = [v for v in vars(seen["train"]).values() if isinstance(v, np.ndarray)]
    assert len(arrays) == 1 and arrays[0].shape == (256, 28, 28)


def test_resume_is_exact(run, tmp_path, shared_data):
    straight = run
    train(config(tmp_path, shared_data, "halves", epochs=1))
    # the run's own settings are kept: only the change is named
    resumed = train({"out": str(tmp_path / "halves"), "epochs": 2}, resume=True)
    assert resumed.config == pipe.BlindMnistConfig(**config(tmp_path, shared_data, "halves"))
    a = npvae.load_model(straight.run_dir).state_dict()
    b = npvae.load_model(resumed.run_dir).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert straight.history["train_total"] == resumed.history["train_total"]
    assert "digit_a_psnr" in resumed.metrics


@pytest.mark.parametrize("name", ["blind-mnist", "blind-music"])
def test_a_used_run_folder_is_refused_without_resume_or_overwrite(name, tmp_path, capsys):
    """A new run never writes into a folder that holds files: the command stops with the
    fix before loading any data (the data folder given does not even exist)."""
    out = tmp_path / "old"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    argv = ["train", name, "--out", str(out), "--data-dir", str(tmp_path / "nowhere"), "--no-progress"]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 1 and "is not empty" in err and "--resume" in err and "--overwrite" in err
    assert "Traceback" not in err
    assert (out / "metrics.json").read_text() == "{}"
    # --overwrite passes the folder check (clearing the old run's files, not the user's), then
    # stops at the missing data
    code = cli.main(argv + ["--overwrite"])
    err = capsys.readouterr().err
    assert code == 1 and "is not empty" not in err and "nowhere" in err
    assert not (out / "metrics.json").exists() and (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("name", ["blind-mnist", "blind-music"])
def test_default_run_folders_are_unique(name, tmp_path, monkeypatch):
    """Without --out each run gets a new folder runs/blind-...; the run stops here right
    after the engine made and locked it."""
    class Stop(Exception):
        pass

    def stop(self, *args):
        raise Stop

    monkeypatch.setattr(TASKS[name], "setup", stop)
    monkeypatch.chdir(tmp_path)
    folders = []
    for _ in range(2):
        with pytest.raises(Stop):
            npvae.train(name, {"progress": False}, log=quiet, started=folders.append)
    a, b = folders
    assert a != b and a.is_dir() and b.is_dir() and a.parent == b.parent == Path("runs")
    assert a.name.startswith("blind-") and b.name.startswith("blind-")
    assert not (a / LOCK_FILE).exists() and not (b / LOCK_FILE).exists()      # the stopped runs left them unlocked


@needs_octave
def test_octave_loads_the_results_file(run, tmp_path):
    path = run.run_dir / "results.h5"
    octave_ok(f"S = npvae_load('{path}', 'blind_results');"
              "save('-v7', 'blind.mat', '-struct', 'S', 'examples', 'metrics', 'history');", tmp_path)
    got = scipy.io.loadmat(tmp_path / "blind.mat")
    tree = read_tree(path, "blind_results")
    for group in ("examples", "history"):
        have = got[group][0, 0]
        assert set(have.dtype.names) == set(tree[group])
        for key, want in tree[group].items():
            value = have[key][:, 0] if want.ndim == 1 else have[key]
            np.testing.assert_array_equal(value, want, err_msg=f"{group}/{key}")
    for key, want in tree["metrics"].items():
        np.testing.assert_array_equal(np.ravel(got["metrics"][0, 0][key]), np.ravel(want), err_msg=key)


@needs_octave
def test_octave_blind_forward_on_the_trained_run(run, tmp_path):
    """npvae_blind_forward on the run's model.h5 and results.h5 gives the groups Python
    gives (and the file's own group images), within 1e-4."""
    d = run.run_dir
    octave_ok(f"S = npvae_load('{d / 'results.h5'}', 'blind_results');"
              f"[g, r, k] = npvae_blind_forward('{d / 'model.h5'}', S.examples.mixture);"
              f"g2 = npvae_blind_forward(S, S.examples.mixture);"
              "save('-v7', 'fwd.mat', 'g', 'r', 'k', 'g2');", tmp_path)
    got = scipy.io.loadmat(tmp_path / "fwd.mat")
    tree = read_tree(d / "results.h5", "blind_results")
    mix = tree["examples"]["mixture"]
    y = npvae.load_model(d).separate(mix)
    assert got["g"].shape == y.shape == (len(mix), 3, 28, 28)
    np.testing.assert_allclose(got["g"], y, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(got["g2"], got["g"])
    np.testing.assert_allclose(got["g"][:, 2], tree["examples"]["group_2"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["r"], np.clip(y.sum(axis=1), 0, 1), atol=1e-4, rtol=0)     # the run's rule: sum
    from npvae.tasks.blind_objective import consistent_sources
    np.testing.assert_allclose(got["k"], consistent_sources(y, mix, "sum"), atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def music_run(tmp_path_factory, shared_data):
    settings = dict(hidden=(16,), latent_dim=4, frames=8, epochs=1, batch_size=32, train_limit=2, eval_limit=1,
                    data_dir=str(shared_data), out=str(tmp_path_factory.mktemp("blind-music") / "music"),
                    progress=False)
    return npvae.train("blind-music", settings, log=quiet)


def test_blind_music_run_trains_on_mixture_patches_and_scores(music_run, shared_data):
    from npvae.tasks import blind_music
    res = music_run
    m = res.metrics
    for key in ("best_vocals_gnsdr", "best_accompaniment_gsir", "fixed_vocals_gnsdr", "fixed_accompaniment_gsar"):
        assert np.isfinite(m[key]), key
    assert m["fixed_assignment_vocals"] != m["fixed_assignment_accompaniment"]
    tree = read_tree(res.run_dir / "results.h5", "blind_results")
    assert tree["examples"]["group_1_mag"].shape == tree["examples"]["mixture_mag"].shape
    assert (res.run_dir / "example.png").exists() and (res.run_dir / "loss_curves.png").exists()
    # its page plays the mixture, the true sources and each group's estimate (the display's 4 s)
    import soundfile as sf
    sounds = sorted(p.name for p in (res.run_dir / "page").glob("*.wav"))
    groups = [f"group_{k}" for k in range(res.config.groups)]
    assert [s for s in sounds if not s.startswith(tuple(groups))] == ["mixture.wav", "true_accompaniment.wav",
                                                                     "true_vocals.wav"]
    assert all(any(s == f"{g}.wav" or s.startswith(f"{g}_as_") for s in sounds) for g in groups), sounds
    assert {sf.info(str(res.run_dir / "page" / s)).frames for s in sounds} == {4 * 16000}
    # the training data are the mixtures' patches and nothing else
    from npvae.audio.datasets import load_tracks
    from npvae.audio.stft import STFTConfig
    tracks = load_tracks("mir1k", "train", shared_data)[:2]
    data, scale = blind_music.training_mixtures(tracks, STFTConfig.for_dataset("mir1k"), 8)
    arrays = [v for v in vars(data).values() if isinstance(v, np.ndarray)]
    assert len(arrays) == 1 and arrays[0].shape[1:] == (512, 8)
    assert scale == pytest.approx(json.loads((res.run_dir / "config.json").read_text())["mag_scale"])


def test_a_blind_music_run_loads_as_a_separator(music_run, shared_data):
    """npvae.load_model gives what a supervised music run gives: an object that separates
    audio at any rate, here with the run's own STFT settings and scale."""
    from npvae.audio.datasets import load_tracks
    from npvae.separation.blind_separator import BlindMusicSeparator
    from npvae.audio.io import resample
    trained = music_run.task.sep
    track = load_tracks("mir1k", "validation", shared_data)[0]
    mix = track.mixture()[:16000]
    for source in (music_run.run_dir, music_run.run_dir / "results.h5", music_run.run_dir / "checkpoint.npz"):
        sep = npvae.load_model(source)
        assert isinstance(sep, BlindMusicSeparator), source
        assert sep.stft_cfg == trained.stft_cfg and sep.scale == pytest.approx(trained.scale)
        assert sep.n_sources == 2
    np.testing.assert_array_equal(sep.separate(mix, 16000), trained.estimates(mix)[0])
    est = sep.separate(mix, 16000)
    assert est.shape == (2, len(mix)) and est.dtype == np.float32
    assert np.abs(est.sum(axis=0) - mix).max() < 1e-3 * np.abs(mix).max()       # masks sum to one
    m = sep.masks(np.abs(np.fft.rfft(np.zeros((8, 1024)), axis=1).T) + 1.0)
    np.testing.assert_allclose(m.sum(axis=0), 1.0, rtol=1e-5)
    # stereo at 44.1 kHz: per channel, back at the input's rate, the estimates add up to the input
    stereo = np.stack([resample(mix, 16000, 44100), 0.5 * resample(mix, 16000, 44100)], axis=1)
    out = sep.separate(stereo, 44100)
    assert out.shape == (2, len(stereo), 2)
    assert np.abs(out.sum(axis=0) - stereo).max() < 1e-2 * np.abs(stereo).max()
    with pytest.raises(ValueError, match="channels"):
        sep.separate(stereo.T, 44100)
    # the supervised loader refuses this one clearly
    with pytest.raises(npvae.errors.FileFormatError, match="not a music separation model"):
        npvae.files.model_file.load_separator(music_run.run_dir)


def test_report_has_a_blind_section_read_from_the_file(run, tmp_path):
    from npvae.lab.report import build_report
    out = build_report([run.run_dir], tmp_path / "report", log=quiet)
    text = out["markdown"].read_text()
    assert "## Blind separation: trained on mixtures alone" in text
    assert f"{run.metrics['mean_psnr']:.2f}" in text and f"{run.metrics['group_agreement']:.3f}" in text
    assert (tmp_path / "report" / "figures" / "run_latent_groups.png").exists()


def test_report_compares_with_the_shipped_supervised_scores(music_run, tmp_path, shared_data):
    """No supervised run given: the supervised-vs-blind tables take the scores the shipped
    models record (/provenance/scores) and say where they come from."""
    from npvae.lab.report import build_report
    fashion = train(config(tmp_path, shared_data, "fashion", pair="mnist-fashion", rule="average", groups=2,
                           epochs=1))
    out = build_report([fashion.run_dir, music_run.run_dir], tmp_path / "report", log=quiet)
    text = out["markdown"].read_text()
    assert "Supervised against blind" in text and "/provenance/scores" in text
    assert "except the supervised rows of the blind section" in text
    for name in npvae.list_models():
        info = npvae.pretrained.info(name)
        s = info["scores"]
        assert f"npvae/pretrained/{name}.h5" in text and info["command"] in text, name
        key = "mean_psnr" if info["task"] == "mnist" else "vocals_gnsdr"
        assert f"{s[key]:.2f}" in text, name
    assert f"{fashion.metrics['masked_mean_psnr']:.2f}" in text


def test_the_old_image_pair_flag_names_the_new_one(capsys):
    from npvae.cli import main
    assert main(["train", "blind-mnist", "--task", "mnist-mnist", "--epochs", "1"]) == 2
    assert "--task is now --pair" in capsys.readouterr().err
