"""The matlab/ scripts in GNU Octave on files written by short real training runs.

* npvae_load gives the same arrays as Python (examples, history, metrics, parameters);
* npvae_forward reproduces ``npvae.load_model(file).separate(mixtures)`` for the dense,
  conv and U-Net models, and for random latent-map VAEs (14x14 and 7x7 maps);
* npvae_separate / npvae_separate_file run a random five-level music U-Net as
  ``Separator.separate`` does, with the model's own chunk context;
* npvae_show_mnist / npvae_show_music write their PNG and WAV files headless;
* damaged and wrong-kind files are refused clearly in Python and in Octave.

Octave saves what it computed to -v7 .mat files that scipy reads back in NumPy order.
"""
import struct

import h5py
import numpy as np
import pytest
import scipy.io
import soundfile

import npvae
from _octave import assert_octave_errors, needs_octave, octave, octave_ok
from npvae.errors import FileFormatError
from npvae.files.h5mat import read_tree

pytestmark = [needs_octave, pytest.mark.slow]     # an end-to-end file (CI runs it on the default backend only)

MODELS = {"dense": dict(hidden=(32, 16), epochs=2), "conv": dict(channels=(4, 8), hidden=(16,), epochs=1),
          "unet": dict(channels=(4, 4, 8), epochs=1),
          "unet_blocks2": dict(model="unet", channels=(4, 4, 8), blocks=2, epochs=1)}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def quiet(*args, **kwargs):
    pass


@pytest.fixture(scope="module")
def mnist_runs(tmp_path_factory, shared_data):
    """model -> run directory of a tiny real Part I run (model.h5, results.h5)."""
    root = tmp_path_factory.mktemp("mnist_runs")
    runs = {}
    for name, kw in MODELS.items():
        settings = {"model": name, "latent_dim": 4, "batch_size": 64, "train_limit": 256, "eval_limit": 64,
                    "n_examples": 6, "display_every": 5, "data_dir": str(shared_data), "out": str(root / name),
                    "progress": False, **kw}
        runs[name] = npvae.train("mnist", settings, log=quiet).run_dir
    return runs


@pytest.fixture(scope="module")
def music_run(tmp_path_factory, shared_data):
    """results.h5 of a tiny real Part II run: two MIR-1K clips, two epochs of two batches."""
    from npvae.audio.datasets import list_mir1k, mir1k_track
    from npvae.audio.stft import STFTConfig
    from npvae.models.music import SpectrogramUNetVAE
    from npvae.optim import Adam
    from npvae.files.model_file import save_music_results
    from npvae.tasks.music import LossConfig, MusicObjective, example, sample_batch
    from npvae.separation.separator import Normalizer, Separator
    from npvae.engine.loop import Trainer
    from npvae.vae import KLWeight
    out = tmp_path_factory.mktemp("music_run")
    tracks = [mir1k_track(p) for p in list_mir1k("train", shared_data)[:2]]
    cfg = STFTConfig.for_dataset("mir1k")
    rng = np.random.default_rng(0)
    model = SpectrogramUNetVAE((4, 4, 8), 4, rng=rng)
    sep = Separator(model, cfg, Normalizer.fit(tracks, cfg))
    objective = MusicObjective(sep, LossConfig())
    kl_weight = KLWeight(0.01, 1.0)
    trainer = Trainer(model, Adam(model), rng, out, config={}, display_every=1, progress=False, log=quiet)
    history = trainer.fit(2, lambda r: (sample_batch(tracks, r, 2, 16, cfg) for _ in range(2)), 2,
                          lambda batch, epoch: objective.terms(batch, beta=kl_weight(epoch)),
                          lambda: objective.on_tracks(tracks[:1], kl_weight(2), max_frames=64))
    examples = {"sample_rate": cfg.sample_rate, "clip0": example(sep, tracks[0], 1.0),
                "clip1": example(sep, tracks[1], 0.5)}
    return save_music_results(out / "results.h5", sep, {"dataset": "mir1k", "epochs": 2}, history,
                              {"train_seconds": 1.0}, examples)


def test_octave_arrays_equal_python_arrays(mnist_runs, tmp_path):
    names = list(mnist_runs)
    code = "".join(f"S = npvae_load('{mnist_runs[n] / 'results.h5'}', 'mnist_results');"
                   f"save('-v7', '{n}.mat', '-struct', 'S', 'examples', 'history', 'metrics');"
                   f"P = S.model.params; save('-v7', '{n}_params.mat', '-struct', 'P');" for n in names)
    octave_ok(code, tmp_path)
    for name in names:
        tree = read_tree(mnist_runs[name] / "results.h5", "mnist_results")
        got = scipy.io.loadmat(tmp_path / f"{name}.mat")
        for group in ("examples", "history"):
            have = got[group][0, 0]
            assert set(have.dtype.names) == set(tree[group]), (name, group)
            for key, want in tree[group].items():
                value = have[key]
                if want.ndim == 1:                      # 1-D arrays are n x 1 columns in MATLAB
                    assert value.shape == (want.size, 1), (name, key, value.shape)
                    value = value[:, 0]
                assert value.shape == want.shape and value.dtype == want.dtype, (name, key, value.shape)
                np.testing.assert_array_equal(value, want, err_msg=f"{name} {group}/{key}")
        metrics = got["metrics"][0, 0]
        for key, want in tree["metrics"].items():
            np.testing.assert_array_equal(np.ravel(metrics[key]), np.ravel(want), err_msg=f"{name} metrics/{key}")
        params = scipy.io.loadmat(tmp_path / f"{name}_params.mat")
        state = npvae.load_model(mnist_runs[name] / "results.h5").state_dict()
        assert len(state) == len([k for k in params if not k.startswith("__")])
        for path, want in state.items():
            value = params[npvae.files.h5mat.matlab_name(path)]
            value = value[:, 0] if want.ndim == 1 else value
            assert value.dtype == np.float32 and value.shape == want.shape, (name, path, value.shape)
            np.testing.assert_array_equal(value, want, err_msg=f"{name} {path}")


def test_npvae_forward_equals_python_separate(mnist_runs, tmp_path, rng):
    fresh = rng.random((5, 28, 28), dtype=np.float32)       # not only the mixtures the file holds
    scipy.io.savemat(tmp_path / "fresh.mat", {"fresh": fresh})
    code = ""
    for name, run in mnist_runs.items():
        # results.h5 by path, model.h5 by path, and the struct from npvae_load
        code += (f"S = npvae_load('{run / 'results.h5'}', 'mnist_results');"
                 f"[d, f, m] = npvae_forward('{run / 'results.h5'}', S.examples.mixture);"
                 f"save('-v7', '{name}_examples.mat', 'd', 'f', 'm');"
                 f"load('fresh.mat'); [d, f, m] = npvae_forward('{run / 'model.h5'}', fresh);"
                 f"save('-v7', '{name}_fresh.mat', 'd', 'f', 'm');"
                 f"[d, f, m] = npvae_forward(S, squeeze(fresh(1, :, :)));"
                 f"save('-v7', '{name}_one.mat', 'd', 'f', 'm');")
    octave_ok(code, tmp_path)
    for name, run in mnist_runs.items():
        model = npvae.load_model(run / "model.h5")
        examples = read_tree(run / "results.h5", "mnist_results")["examples"]
        for which, mixtures in (("examples", examples["mixture"]), ("fresh", fresh), ("one", fresh[:1])):
            want = model.separate(mixtures)
            got = scipy.io.loadmat(tmp_path / f"{name}_{which}.mat")
            for key, w in zip("dfm", want):
                have = got[key].reshape(-1, 28, 28) if which == "one" else got[key]
                assert have.shape == w.shape and have.dtype == np.float32, (name, which, key, have.shape)
                np.testing.assert_allclose(have, w, atol=1e-5, rtol=0, err_msg=f"{name} {which} {key}")
        # the file's own estimates are what separate gives (so the check above is the one the user sees)
        np.testing.assert_allclose(examples["digit_hat"], model.separate(examples["mixture"])[0], atol=1e-6)


LATENT_MAP_VAES = {   # tiny LatentMapSeparationVAEs: both latent-map sizes, both outputs, 0-2 blocks, norms
    "map14_sources": dict(latent_dim=3, channels=(4, 6), blocks=1, output="sources"),
    "map14_split_sum": dict(latent_dim=2, channels=(3, 5), blocks=2, output="split", rule="sum"),
    "map7_split": dict(latent_dim=2, channels=(3, 4, 5), blocks=0, output="split"),
    "map7_sources_sum": dict(latent_dim=2, channels=(3, 4, 5), blocks=2, output="sources", rule="sum"),
    "map14_batch": dict(latent_dim=2, channels=(4, 6), blocks=1, norm="batch"),
    "map7_group_bias": dict(latent_dim=2, channels=(4, 4, 6), blocks=1, norm="group", groups=2, norm_bias=True),
}


def test_npvae_forward_runs_latent_map_vaes(tmp_path, rng):
    """Random LatentMapSeparationVAEs (weights scaled by 3 so that the estimates spread
    over (0, 1) rather than sit at 1/2; running statistics moved by two training passes)
    give in Octave what ``separate`` gives, to 1e-5."""
    from npvae.files.model_file import save_model
    from npvae.models.mnist import LatentMapSeparationVAE
    mixtures = rng.random((4, 28, 28), dtype=np.float32)
    scipy.io.savemat(tmp_path / "mixtures.mat", {"mixtures": mixtures})
    code = "load('mixtures.mat');"
    for i, (name, kw) in enumerate(LATENT_MAP_VAES.items()):
        model = LatentMapSeparationVAE(rng=np.random.default_rng(i), **kw)
        for path, p, _ in model.named_parameters():
            if path.endswith(".W"):                    # the norms' scales as built: the errors not grown 3x a layer
                p *= 3
        for _ in range(2):                             # running statistics away from 0 and 1
            model.backward(np.ones_like(model.forward(mixtures)))
        if kw.get("norm") == "batch":
            assert max(np.abs(b).max() for path, b in model.named_buffers() if path.endswith("running_mean")) > 0.1
        save_model(tmp_path / f"{name}.h5", model)
        code += f"[d, f, m] = npvae_forward('{name}.h5', mixtures); save('-v7', '{name}.mat', 'd', 'f', 'm');"
    octave_ok(code, tmp_path)
    for name in LATENT_MAP_VAES:
        model = npvae.load_model(tmp_path / f"{name}.h5")
        want = model.separate(mixtures)
        assert want[0].std() > 0.05                      # estimates that depend on the weights
        got = scipy.io.loadmat(tmp_path / f"{name}.mat")
        for key, w in zip("dfm", want):
            assert got[key].shape == w.shape and got[key].dtype == np.float32, (name, key, got[key].shape)
            np.testing.assert_allclose(got[key], w, atol=1e-5, rtol=0, err_msg=f"{name} {key}")


def test_npvae_separate_runs_a_five_level_unet(tmp_path):
    """A random five-level SpectrogramUNetVAE (DOWNSAMPLE 32, context_frames 128; weights
    scaled by 3 so that far frames matter) separates in Octave as in Python, to 1e-5: the
    array form on 11.025 kHz stereo (resampled to the model's 8 kHz), whole and in chunks
    of 32 frames, with the defaults (the mid signal's masks, the high band shared) and
    channel by channel with the high band to the accompaniment, and the file form. With chunks of 32, a context of 64 frames instead of
    the model's 128 changes Python's result by far more than the tolerance."""
    from npvae.audio.stft import STFTConfig
    from npvae.files.model_file import load_separator, save_separator
    from npvae.models.music import SpectrogramUNetVAE
    from npvae.separation.separator import Normalizer, Separator
    rng = np.random.default_rng(5)
    model = SpectrogramUNetVAE((2, 3, 3, 4, 4), latent_channels=2, rng=np.random.default_rng(1))
    assert model.DOWNSAMPLE == 32 and model.context_frames == 128
    for _, p, _ in model.named_parameters():
        p *= 3
    bins = 32                                        # n_fft 64: 33 bins, the network sees 32
    norm = Normalizer("log", 0.3, rng.random(bins).astype(np.float32), (0.5 + rng.random(bins)).astype(np.float32))
    save_separator(tmp_path / "music5.h5", Separator(model, STFTConfig(8000, 64, 16, "hann"), norm))
    sep = load_separator(tmp_path / "music5.h5")
    stereo = (0.3 * rng.standard_normal((11025 + 77, 2))).astype(np.float32)
    mono = (0.3 * rng.standard_normal(8000 + 5)).astype(np.float32)
    scipy.io.savemat(tmp_path / "in.mat", {"stereo": stereo.astype(np.float64)})
    soundfile.write(tmp_path / "mono.wav", mono, 8000, subtype="FLOAT")
    octave_ok("load('in.mat'); [v, a] = npvae_separate('music5.h5', stereo, 11025);"
              "[v32, a32] = npvae_separate('music5.h5', stereo, 11025, 'chunk_frames', 32);"
              "[v64, a64] = npvae_separate('music5.h5', stereo, 11025, 'chunk_frames', 32, 'context', 64);"
              "[vpc, apc] = npvae_separate('music5.h5', stereo, 11025, 'stereo', 'per-channel', 'high_band', 'accompaniment');"
              "save('-v7', 'out.mat', 'v', 'a', 'v32', 'a32', 'v64', 'a64', 'vpc', 'apc');"
              "npvae_separate_file('music5.h5', 'mono.wav', 'sep', 'chunk_frames', 32);", tmp_path)
    got = scipy.io.loadmat(tmp_path / "out.mat")
    want = sep.separate(stereo, 11025)
    want32 = sep.separate(stereo, 11025, chunk_frames=32)
    # less context than the receptive field: the chunks' layout shows, and is the same on both sides
    want64 = sep.separate(stereo, 11025, chunk_frames=32, context=64)
    assert np.abs(want64 - want32).max() > 1e-4         # far beyond rounding (1e-6)
    # each channel on its own, the band above the model's 4 kHz all to the accompaniment
    want_pc = sep.separate(stereo, 11025, stereo="per-channel", high_band="accompaniment")
    assert np.abs(want_pc - want).max() > 1e-3
    for tag, w in (("", want), ("32", want32), ("64", want64), ("pc", want_pc)):
        for key, ws in zip(("v", "a"), w):
            assert got[key + tag].shape == ws.shape, (key + tag, got[key + tag].shape)
            np.testing.assert_allclose(got[key + tag], ws, atol=1e-5, rtol=0, err_msg=key + tag)
    for name, ws in zip(("vocals", "accompaniment"), sep.separate(mono, 8000, chunk_frames=32)):
        have, sr = soundfile.read(tmp_path / "sep" / f"mono_{name}.wav", dtype="float32")
        assert sr == 8000 and have.shape == ws.shape
        np.testing.assert_allclose(have, ws, atol=1e-5, rtol=0, err_msg=name)
    assert_octave_errors({"npvae_separate('music5.h5', zeros(800, 1), 8000, 'chunk_frames', 16)":
                          ("npvae:badOption", "multiples of 32"),
                          "npvae_separate('music5.h5', zeros(800, 1), 8000, 'context', 48)":
                          ("npvae:badOption", "multiples of 32")}, tmp_path)


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_show_mnist_writes_pngs_headless(mnist_runs, tmp_path):
    out = octave_ok(f"files = npvae_show_mnist('{mnist_runs['unet'] / 'results.h5'}', 'figs');"
                    "fprintf('%s\\n', files{:});", tmp_path)
    assert out.split() == ["figs/mnist_grid.png", "figs/mnist_loss_curves.png"]
    width, height = _png_size(tmp_path / "figs" / "mnist_grid.png")
    assert width > 6 * 28 and height > 6 * 28
    width, height = _png_size(tmp_path / "figs" / "mnist_loss_curves.png")
    assert width > 300 and height > 150


def test_show_music_writes_pngs_and_wavs_headless(music_run, tmp_path):
    out = octave_ok(f"files = npvae_show_music('{music_run}', 'figs'); fprintf('%s\\n', files{{:}});", tmp_path)
    written = out.split()
    examples = read_tree(music_run, "music_results")["examples"]
    for clip in ("clip0", "clip1"):
        assert f"figs/music_{clip}_spectrograms.png" in written
        width, height = _png_size(tmp_path / "figs" / f"music_{clip}_spectrograms.png")
        assert width > 5 * 100 and height > 100
        for key in ("vocals_hat", "accompaniment_hat"):
            assert f"figs/{clip}_{key}.wav" in written
            audio, sr = soundfile.read(tmp_path / "figs" / f"{clip}_{key}.wav")
            want = examples[clip][key]
            assert sr == examples["sample_rate"] == 16000 and audio.shape == want.shape
            np.testing.assert_allclose(audio, np.clip(want, -1, 1), atol=2.0 / 32768)   # 16-bit PCM
    assert "figs/music_loss_curves.png" in written
    _png_size(tmp_path / "figs" / "music_loss_curves.png")


def test_damaged_and_wrong_kind_files_are_refused_on_both_sides(mnist_runs, music_run, tmp_path):
    good = (mnist_runs["dense"] / "results.h5").read_bytes()
    (tmp_path / "truncated.h5").write_bytes(good[:len(good) // 2])
    (tmp_path / "noise.h5").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    music = str(music_run)
    # Python
    for bad in ("truncated.h5", "noise.h5"):
        with pytest.raises(FileFormatError, match="not a readable HDF5 file"):
            npvae.load_model(tmp_path / bad)
    with pytest.raises(FileFormatError, match="expected a mnist_results file, got music_results"):
        read_tree(music, "mnist_results")
    with pytest.raises(FileFormatError, match="not a music separation model"):
        from npvae.files.model_file import load_separator
        load_separator(mnist_runs["dense"] / "model.h5")
    # Octave
    cases = {
        "npvae_show_mnist('truncated.h5', 'figs')": ("npvae:notHdf5", "truncated, corrupt or another format"),
        "npvae_forward('noise.h5', zeros(2, 28, 28))": ("npvae:notHdf5", "truncated, corrupt or another format"),
        f"npvae_show_mnist('{music}', 'figs')": ("npvae:wrongKind", "expected a mnist_results file, got music_results"),
        f"npvae_show_music('{mnist_runs['dense'] / 'results.h5'}', 'figs')":
            ("npvae:wrongKind", "expected a music_results file, got mnist_results"),
        f"npvae_forward('{music}', zeros(2, 28, 28))":
            ("npvae:wrongKind", "expected a model or mnist_results file, got music_results"),
        f"npvae_forward('{mnist_runs['dense'] / 'model.h5'}', zeros(2, 14, 14))": ("npvae:shape", "N x 28 x 28"),
        f"npvae_show_mnist('{mnist_runs['dense'] / 'results.h5'}', 'figs', 'renderer', 'svg')":
            ("npvae:badOption", "renderer must be 'auto', 'figure' or 'raster'"),
    }
    assert_octave_errors(cases, tmp_path)


def test_npvae_forward_refuses_a_music_model(music_run, tmp_path):
    from npvae.files.model_file import model_tree
    from npvae.files.h5mat import write_tree
    model = npvae.load_model(music_run).model
    write_tree(tmp_path / "music_model.h5", {"model": model_tree(model), "config": {}}, "model")
    res = octave("try, npvae_forward('music_model.h5', zeros(1, 28, 28)); "
                 "catch err, fprintf('%s|%s\\n', err.identifier, err.message); end", tmp_path)
    assert "npvae:notMnistModel|" in res.stdout and "SpectrogramUNetVAE" in res.stdout, res.stdout


def test_real_results_file_has_mat_header_and_classes(mnist_runs):
    path = mnist_runs["conv"] / "results.h5"
    head = path.read_bytes()[:128]
    assert head.startswith(b"MATLAB 7.3 MAT-file") and head[124:128] == b"\x00\x02IM"
    with h5py.File(path, "r") as f:
        assert f.userblock_size == 512
        cls = lambda p: f[p].attrs["MATLAB_class"].decode()  # noqa: E731
        assert cls("examples") == cls("model/params") == cls("history") == "struct"
        assert cls("examples/digit_hat") == cls("model/params/encoder_0_W") == "single"
        assert cls("history/epoch") == "int64" and cls("history/train_total") == "double"
        assert cls("model/spec") == "char"


UNET_OPTIONS = {  # Part I U-Nets with the options (npvae.models.options), a few training steps behind them
    "unet_plain": dict(channels=(2, 3, 4)),
    "unet_bn_max4": dict(channels=(2, 3, 3, 4), blocks=2, norm="batch", down="max"),
    "unet_gn_avg_res": dict(channels=(4, 4, 6), blocks=2, norm="group", down="avg", residual=True, groups=2),
    "unet_five_dropout": dict(channels=(2, 2, 3, 3, 4), dropout=0.3, norm="batch"),
    "unet_bn_biased": dict(channels=(2, 3, 4), blocks=2, norm="batch", norm_bias=True),    # the older layout
}


def test_npvae_forward_runs_unets_with_the_options(tmp_path, rng):
    """Random U-Nets with normalisation, pooling, residual levels, dropout and 4 or 5
    levels (weights scaled by 3, running statistics moved by two training passes) give in
    Octave what Python gives in float64 to 1e-6, and what ``separate`` gives to 3e-4 (float32
    rounding: unet_bn_max4's logits reach 5.8e3, whose float32 spacing is 5e-4; its
    estimates differ from float64 by up to 1.4e-4, the other models' by 1.5e-5 at most)."""
    from npvae.files.model_file import save_model
    from npvae.models.mnist import UNetSeparationVAE
    mixtures = rng.random((4, 28, 28), dtype=np.float32)
    scipy.io.savemat(tmp_path / "mixtures.mat", {"mixtures": mixtures})
    code = "load('mixtures.mat');"
    for i, (name, kw) in enumerate(UNET_OPTIONS.items()):
        model = UNetSeparationVAE(latent_dim=3, rng=np.random.default_rng(i), **kw)
        for _, p, _ in model.named_parameters():
            p *= 3
        for _ in range(2):
            model.rng = np.random.default_rng(2)
            y = model.forward(mixtures)
            model.backward(np.ones_like(y))
        save_model(tmp_path / f"{name}.h5", model)
        code += f"[d, f, m] = npvae_forward('{name}.h5', mixtures); save('-v7', '{name}.mat', 'd', 'f', 'm');"
    octave_ok(code, tmp_path)
    for name in UNET_OPTIONS:
        exact = npvae.load_model(tmp_path / f"{name}.h5", dtype=np.float64).separate(mixtures.astype(np.float64))
        want = npvae.load_model(tmp_path / f"{name}.h5").separate(mixtures)
        assert want[0].std() > 0.05                      # estimates that depend on the weights
        got = scipy.io.loadmat(tmp_path / f"{name}.mat")
        for key, e, w in zip("dfm", exact, want):
            assert got[key].shape == w.shape and got[key].dtype == np.float32, (name, key, got[key].shape)
            np.testing.assert_allclose(got[key], e, atol=1e-6, rtol=0, err_msg=f"{name} {key}")
            np.testing.assert_allclose(got[key], w, atol=3e-4, rtol=0, err_msg=f"{name} {key}")


def test_npvae_separate_runs_music_unets_with_the_options(tmp_path):
    """Random spectrogram U-Nets with BatchNorm or GroupNorm, pooling, residual blocks and
    a recurrent bottleneck, and two stacked U-Nets, separate in Octave as in Python
    (float64) to 1e-5, with the model's own context (residual blocks, pooling and stacks
    widen it)."""
    from npvae.audio.stft import STFTConfig
    from npvae.files.model_file import load_separator, save_separator
    from npvae.models.stacked import mask_network
    from npvae.separation.separator import Normalizer, Separator
    rng = np.random.default_rng(5)
    bins = 32                                        # n_fft 64: 33 bins, the network sees 32
    norm = Normalizer("log", 0.3, rng.random(bins).astype(np.float32), (0.5 + rng.random(bins)).astype(np.float32))
    cases = {"bn_res_rnn": dict(norm="batch", residual=True, rnn_layers=2, rnn_hidden=6, freq_bins=bins),
             "gn_max": dict(norm="group", down="max", groups=2, dropout=0.5, norm_bias=True),
             "stacked_bn_res_rnn": dict(stacks=2, norm="batch", residual=True, rnn_layers=1, rnn_hidden=4,
                                        freq_bins=bins)}
    mono = (0.3 * rng.standard_normal(8000 + 5)).astype(np.float32)
    scipy.io.savemat(tmp_path / "in.mat", {"mono": mono.astype(np.float64)})
    code = "load('in.mat');"
    for i, (name, kw) in enumerate(cases.items()):
        model = mask_network(channels=(2, 4, 4), latent_channels=2, rng=np.random.default_rng(i), **kw)
        x = rng.standard_normal((4, 1, bins, 16)).astype(np.float32)
        for _ in range(2):                             # running statistics away from 0 and 1
            model.rng = np.random.default_rng(3)
            model.backward(np.ones_like(model.forward(x)))
        save_separator(tmp_path / f"{name}.h5", Separator(model, STFTConfig(8000, 64, 16, "hann"), norm))
        code += (f"[v, a] = npvae_separate('{name}.h5', mono, 8000, 'chunk_frames', 32);"
                 f"save('-v7', '{name}.mat', 'v', 'a');")
    octave_ok(code, tmp_path)
    for name in cases:
        sep = load_separator(tmp_path / f"{name}.h5", dtype=np.float64)
        got = scipy.io.loadmat(tmp_path / f"{name}.mat")
        for key, want in zip("va", sep.separate(mono.astype(np.float64), 8000, chunk_frames=32)):
            assert np.abs(want).max() > 0.01
            np.testing.assert_allclose(got[key].ravel(), want.ravel(), atol=1e-5, rtol=0, err_msg=f"{name} {key}")
