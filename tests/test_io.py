"""npvae.files.model_file: model and results files round-trip exactly, and bad paths are explained.

No training here: freshly initialised tiny models are enough to prove that the
spec rebuilds the architecture and the parameters come back bit for bit.
"""
import json
import re
from pathlib import Path

import numpy as np
import pytest

import npvae
from npvae.files import h5mat, model_file as io
from npvae.errors import FileFormatError
from npvae.models.mnist import build_model

TINY = {"dense": dict(hidden=(6, 5), latent_dim=3), "conv": dict(channels=(2, 3), hidden=5, latent_dim=2),
        "unet": dict(channels=(2, 2, 3), latent_dim=2)}


def mixtures(rng, n=5):
    return rng.uniform(size=(n, 28, 28)).astype(np.float32)


@pytest.mark.parametrize("output", ["sources", "split"])
@pytest.mark.parametrize("name", sorted(TINY))
def test_model_file_rebuilds_the_model_exactly(tmp_path, rng, name, output):
    model = build_model(name, rng=rng, output=output, rule="sum", **TINY[name])
    path = io.save_model(tmp_path / "model.h5", model, {"lr": 1e-3, "hidden": (6, 5), "out": tmp_path,
                                                        "unused": None})
    loaded = npvae.load_model(path)
    assert type(loaded) is type(model) and loaded.spec() == model.spec()
    assert not loaded.training
    state, back = model.state_dict(), loaded.state_dict()
    assert set(state) == set(back)
    for k in state:
        assert back[k].dtype == state[k].dtype
        np.testing.assert_array_equal(back[k], state[k], err_msg=k)
    m = mixtures(rng)
    for a, b in zip(model.separate(m), loaded.separate(m)):
        np.testing.assert_array_equal(a, b)
    _, config = io.read_model_file(path)
    assert config["lr"] == 1e-3 and config["out"] == str(tmp_path) and "unused" not in config
    np.testing.assert_array_equal(config["hidden"], [6, 5])


def test_float64_model_stays_float64(tmp_path, rng):
    model = build_model("dense", rng=rng, dtype=np.float64, **TINY["dense"])
    loaded = npvae.load_model(io.save_model(tmp_path / "m.h5", model))
    assert loaded.dtype == np.float64
    assert all(p.dtype == np.float64 for _, p, _ in loaded.named_parameters())


def test_model_group_follows_the_schema(tmp_path, rng):
    model = build_model("unet", rng=rng, **TINY["unet"])
    tree = h5mat.read_tree(io.save_model(tmp_path / "m.h5", model), expected_kind="model")
    m = tree["model"]
    assert m["type"] == "UNetSeparationVAE" and m["dtype"] == "float32" and m["latent_dim"] == 2
    assert set(m["params"]) == set(model.state_dict())
    assert any(line.startswith("enc1 Conv2d ") for line in m["layers"])


@pytest.mark.parametrize("kind", ["mnist_results", "music_results"])
def test_results_file_is_generic_and_loads_as_a_model(tmp_path, rng, kind):
    model = build_model("dense", rng=rng, **TINY["dense"])
    m = mixtures(rng, 3)
    d, f, m_hat = model.separate(m)
    history = {"epoch": [1, 2], "train_total": [3.0, 2.0], "val_psnr": [10.0, 11.5]}
    metrics = {"mean_psnr": 11.5, "n_eval_pairs": 3}
    examples = {"mixture": m, "digit_hat": d, "fashion_hat": f, "mixture_hat": m_hat}
    path = io.save_results(tmp_path / "results.h5", kind, model, {"model": "dense"}, history, metrics, examples)
    tree = h5mat.read_tree(path, expected_kind=kind)
    assert tree["history"]["epoch"].dtype == np.int64 and tree["history"]["train_total"].dtype == np.float64
    np.testing.assert_array_equal(tree["history"]["val_psnr"], [10.0, 11.5])
    assert tree["metrics"] == metrics
    for key, value in examples.items():
        np.testing.assert_array_equal(tree["examples"][key], value)
    for a, b in zip(io.read_model_file(path)[0].separate(m), (d, f, m_hat)):
        np.testing.assert_array_equal(a, b)


def test_results_kind_is_checked(tmp_path, rng):
    model = build_model("dense", rng=rng, **TINY["dense"])
    with pytest.raises(ValueError, match="results kind"):
        io.save_results(tmp_path / "r.h5", "model", model, {}, {"epoch": []}, {}, {})


def test_run_directory_prefers_the_model_file(tmp_path, rng):
    run = tmp_path / "run"
    run.mkdir()
    first = build_model("dense", rng=np.random.default_rng(1), **TINY["dense"])
    second = build_model("dense", rng=np.random.default_rng(2), **TINY["dense"])
    io.save_results(run / io.RESULTS_FILE, "mnist_results", first, {}, {"epoch": [1]}, {}, {})
    m = mixtures(rng)
    np.testing.assert_array_equal(npvae.load_model(run).separate(m)[0], first.separate(m)[0])
    io.save_model(run / io.MODEL_FILE, second)
    np.testing.assert_array_equal(npvae.load_model(run).separate(m)[0], second.separate(m)[0])


def test_bad_paths_are_explained(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match="run directory"):
        npvae.load_model(tmp_path / "missing.h5")
    with pytest.raises(FileFormatError, match="model.h5"):
        npvae.load_model(tmp_path)  # a directory without model.h5 or results.h5
    h5mat.write_tree(tmp_path / "study.h5", {"rows": {"a": 1.0}}, kind="loss_study")
    with pytest.raises(FileFormatError, match="expected a"):
        npvae.load_model(tmp_path / "study.h5")
    h5mat.write_tree(tmp_path / "nomodel.h5", {"config": {"lr": 0.1}}, kind="model")
    with pytest.raises(FileFormatError, match="no /model/spec"):
        npvae.load_model(tmp_path / "nomodel.h5")
    Path(tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(FileFormatError):
        npvae.load_model(tmp_path / "junk.h5")


def test_parameters_that_do_not_fit_the_spec_are_refused(tmp_path, rng):
    model = build_model("dense", rng=rng, **TINY["dense"])
    tree = {"model": io.model_tree(model), "config": {}}
    tree["model"]["params"].pop(next(iter(tree["model"]["params"])))
    h5mat.write_tree(tmp_path / "cut.h5", tree, kind="model")
    with pytest.raises(ValueError, match="missing"):
        npvae.load_model(tmp_path / "cut.h5")


# -- a model file is checked before anything is built (npvae.files.modelcheck) -------------------
from npvae.files import modelcheck  # noqa: E402
from npvae.layers import (GRU, LSTM, AvgPool2d, BatchNorm, Concat, Conv2d, ConvTranspose2d, Dense, Dropout,  # noqa: E402
                          FromSequence, GroupNorm, Identity, LeakyReLU, MaxPool2d, Reshape, Residual, Sequential,
                          ToSequence, Upsample)
from npvae.layers.base import _REGISTRY, build_layer  # noqa: E402
from npvae.models.blind import BlindSeparationVAE  # noqa: E402
from npvae.models.music import SpectrogramUNetVAE  # noqa: E402
from npvae.models.stacked import StackedSpectrogramUNetVAE  # noqa: E402
from npvae.vae import GaussianHead  # noqa: E402

SPECS = [
    *(build_model(name, output=out, **kw).spec() for name, kw in TINY.items() for out in ("sources", "split")),
    build_model("unet", channels=(2, 3, 4), latent_dim=2, blocks=3).spec(),
    build_model("vae", channels=(2, 3, 4), latent_dim=2, blocks=2).spec(),
    build_model("vae", channels=(3, 2), latent_dim=3, blocks=0, output="split").spec(),
    build_model("vae", channels=(2, 4), latent_dim=2, norm="batch").spec(),
    build_model("vae", channels=(2, 3, 4), latent_dim=2, norm="group", groups=2, norm_bias=True).spec(),
    SpectrogramUNetVAE(channels=(2, 3, 4, 3, 2), latent_channels=3, kernel_size=3).spec(),
    build_model("dense", hidden=(), latent_dim=2).spec(),
    SpectrogramUNetVAE(channels=(2, 3, 4), latent_channels=3, n_sources=3, kernel_size=3).spec(),
    StackedSpectrogramUNetVAE(3, channels=(2, 3), latent_channels=2, n_sources=3, kernel_size=3, norm="batch",
                              residual=True, rnn_layers=1, rnn_hidden=2, freq_bins=8).spec(),
    BlindSeparationVAE(n_groups=3, latent_dim=2, hidden=(7, 5), shape=(16, 4)).spec(),
    GaussianHead(6, 3).spec(), Dense(4, 3, activation="leaky_relu", alpha=0.3).spec(),
    Conv2d(2, 3, (3, 5), stride=(1, 2), padding=(1, 0)).spec(), ConvTranspose2d(3, 2, 4, 2, 1, 1).spec(),
    Sequential(Dense(4, 3), LeakyReLU(0.2), Sequential(Reshape((3, 1)), Conv2d(3, 1, 1))).spec(),
    Sequential(Residual(Sequential(Conv2d(2, 3, 3), Dropout(0.3, channels=True)), Conv2d(2, 3, (1, 2))),
               Concat(Identity(), Sequential(MaxPool2d(3, 2, 1), Conv2d(3, 2, 1), Upsample(size=(7, 7))), axis=1),
               AvgPool2d((2, 3), stride=1), Dropout(0.1), Upsample((2, 1.5), "bilinear")).spec(),
    Residual(Identity()).spec(),
    Sequential(Conv2d(2, 4, 3), BatchNorm(4, eps=1e-3, momentum=0.2), GroupNorm(2, 4)).spec(),
    Sequential(ToSequence(), LSTM(6, 3, num_layers=3, bidirectional=True), GRU(6, 2, num_layers=2), LSTM(2, 4),
               GRU(4, 3, bidirectional=True), FromSequence(2, 3)).spec(),
]


def test_every_layer_type_has_a_shape_rule():
    """A new layer type needs its rule in npvae.files.modelcheck.RULES (else its files are loaded
    without the size checks)."""
    assert set(_REGISTRY) <= set(modelcheck.RULES), sorted(set(_REGISTRY) - set(modelcheck.RULES))
    types = set(re.findall(r'"type": "(\w+)"', json.dumps(SPECS)))
    assert types >= {name for name, cls in _REGISTRY.items() if cls is not type and name not in
                     ("Flatten", "Identity", "ReLU", "Sigmoid", "Tanh", "Softplus")}


@pytest.mark.parametrize("spec", SPECS, ids=[s["type"] for s in SPECS])
def test_shapes_from_the_spec_equal_the_built_model(spec):
    built = {path: a.shape for path, a in build_layer(spec).state_arrays().items()}
    assert modelcheck.param_shapes(spec) == built


def test_shipped_models_pass_the_checks():
    for name in npvae.list_models():
        model, _ = io.read_model_file(name)
        assert modelcheck.param_shapes(model.spec()) == {k: a.shape for k, a in model.state_arrays().items()}


def _dense_tree(rng):
    return {"model": io.model_tree(build_model("dense", rng=rng, **TINY["dense"])), "config": {}}


@pytest.mark.parametrize("change, match", [
    ({"hidden": [100_000, 100_000]}, r"asks for 20,236,501,574 parameters, more than the 50,000,000"),
    ({"hidden": [6, True]}, r"hidden must be a whole number >= 1, got True"),
    ({"latent_dim": "3"}, r"latent_dim must be a whole number >= 1, got '3'"),
    ({"output": "both"}, r"output must be one of"),
    ({"hidden": {"a": 1}}, r"hidden must be a list"),
])
def test_specs_that_cannot_describe_a_model_are_refused_before_building(tmp_path, rng, change, match):
    tree = _dense_tree(rng)
    tree["model"]["spec"] = json.dumps({**json.loads(tree["model"]["spec"]), **change})
    h5mat.write_tree(tmp_path / "m.h5", tree, kind="model")
    with pytest.raises(FileFormatError, match=r"m\.h5: its model spec .*" + match):
        npvae.load_model(tmp_path / "m.h5")


def test_spec_depth_is_capped(tmp_path, rng):
    assert modelcheck.spec_depth({"a": [1, {"b": []}]}) == 3 and modelcheck.spec_depth(5) == 0
    tree = _dense_tree(rng)
    deep = modelcheck.MAX_SPEC_DEPTH // 2 + 1
    tree["model"]["spec"] = '{"type": "Sequential", "layers": [' * deep + "]}" * deep
    h5mat.write_tree(tmp_path / "m.h5", tree, kind="model")
    with pytest.raises(FileFormatError, match=rf"nests {2 * deep - 1} levels deep, more than the "
                                              rf"{modelcheck.MAX_SPEC_DEPTH}"):
        npvae.load_model(tmp_path / "m.h5")


@pytest.mark.parametrize("value, match", [(np.nan, r"1 NaN or infinite value\(s\) \(the first at index \(2, 1\)\)"),
                                          (-np.inf, "1 NaN or infinite"), (3e7, r"3e\+07 at index \(2, 1\)")])
def test_tensor_values_are_checked(tmp_path, rng, value, match):
    tree = _dense_tree(rng)
    tree["model"]["params"]["encoder.1.W"][2, 1] = value
    h5mat.write_tree(tmp_path / "m.h5", tree, kind="model")
    with pytest.raises(FileFormatError, match=r"m\.h5: parameter tensor encoder\.1\.W holds " + match):
        npvae.load_model(tmp_path / "m.h5")


def test_declared_shape_and_dtype_are_checked_before_reading(tmp_path, rng):
    tree = _dense_tree(rng)
    tree["model"]["params"]["encoder.1.W"] = tree["model"]["params"]["encoder.1.W"].T.copy()
    h5mat.write_tree(tmp_path / "m.h5", tree, kind="model")
    with pytest.raises(FileFormatError, match=r"tensor encoder\.1\.W has shape \(6, 784\), the spec makes it "
                                              r"\(784, 6\)"):
        npvae.load_model(tmp_path / "m.h5")
    tree = _dense_tree(rng)
    tree["model"]["params"]["head.mu.b"] = np.zeros(3, np.int16)
    h5mat.write_tree(tmp_path / "m.h5", tree, kind="model")
    with pytest.raises(FileFormatError, match=r"head\.mu\.b holds dtype int16"):
        npvae.load_model(tmp_path / "m.h5")


def test_checkpoint_specs_are_checked_too(tmp_path, rng):
    from npvae.engine.checkpoint import model_arrays, save_checkpoint
    model = build_model("dense", rng=rng, **TINY["dense"])
    spec = {**model.spec(), "hidden": [6, 50_000, 50_000]}
    save_checkpoint(tmp_path / "checkpoint.npz", model_arrays(model.state_dict()), {"model_spec": spec})
    with pytest.raises(FileFormatError, match=r"checkpoint\.npz: its model spec asks for"):
        npvae.load_model(tmp_path / "checkpoint.npz")


def test_separator_settings_are_checked(tmp_path):
    from npvae.audio.stft import STFTConfig
    from npvae.separation.separator import Normalizer, Separator
    model = SpectrogramUNetVAE(channels=(2, 2, 4), latent_channels=2)
    sep = Separator(model, STFTConfig(8000, 256, 64), Normalizer(mean=np.zeros(128), std=np.ones(128)))
    good = io.save_separator(tmp_path / "good.h5", sep)
    assert npvae.load_model(good).source == str(good)
    for edit, match in [(lambda c: c["normalizer"].update(mean=np.zeros(64, np.float32), std=np.ones(64, np.float32)),
                         r"normalizer\.mean has shape \(64,\), but its STFT \(n_fft 256\) gives 128 bins"),
                        (lambda c: c["normalizer"].__setitem__("mean", np.zeros(64, np.float32)),
                         r"normalizer\.mean has shape \(64,\)"),
                        (lambda c: c["normalizer"].__setitem__("std", np.ones((128, 2), np.float32)),
                         r"normalizer\.std has shape \(128, 2\)"),
                        (lambda c: c["normalizer"].__setitem__("mag_scale", 0.0),
                         "mag_scale must be a positive finite number, got 0.0"),
                        (lambda c: c["normalizer"].pop("std"), r"lacks \['std'\]"),
                        (lambda c: c.__setitem__("n_fft", 2.5), "n_fft must be a positive whole number"),
                        (lambda c: c.__setitem__("window", "nope"), "STFT settings cannot be used")]:
        tree = h5mat.read_tree(good)
        edit(tree["config"])
        h5mat.write_tree(tmp_path / "bad.h5", tree, kind="model")
        with pytest.raises(FileFormatError, match=r"bad\.h5: .*" + match):
            npvae.load_model(tmp_path / "bad.h5")
