"""npvae.io: model and results files round-trip exactly, and bad paths are explained.

No training here: freshly initialised tiny models are enough to prove that the
spec rebuilds the architecture and the parameters come back bit for bit.
"""
from pathlib import Path

import numpy as np
import pytest

import npvae
from npvae import h5mat, io
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
