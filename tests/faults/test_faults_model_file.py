"""Fault cases of model files (npvae.load_model)."""
import h5py
import numpy as np
import pytest
from _faults import edited_model, lib_error, shape_changed

import npvae
from npvae.files import h5mat
from npvae.files.model_file import save_model


@pytest.mark.fault("model file", "load_model of a missing file", "clear error")
def test_missing(tmp_path):
    with lib_error("does not exist"):
        npvae.load_model(tmp_path / "nope.h5")


@pytest.mark.fault("model file", "load_model of a text file named model.h5", "clear error")
def test_text_file(tmp_path):
    p = tmp_path / "model.h5"
    p.write_text("x" * 2000)
    with lib_error("not a readable HDF5"):
        npvae.load_model(p)


@pytest.mark.fault("model file", "load_model of a truncated model file", "clear error")
def test_truncated(tmp_path, music_model):
    p = tmp_path / "model.h5"
    p.write_bytes(music_model.read_bytes()[:3000])
    with lib_error("not a readable HDF5|corrupt|truncated"):
        npvae.load_model(p)


@pytest.mark.fault("model file", "load_model of an HDF5 file that npvae did not write", "clear error")
def test_foreign_hdf5(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f["x"] = np.zeros(3)
    with lib_error("not an npvae file"):
        npvae.load_model(p)


@pytest.mark.fault("model file", "load_model of a folder without a model", "clear error")
def test_folder_without_model(tmp_path):
    with lib_error("holds no model.h5"):
        npvae.load_model(tmp_path)


def _drop_first_param(tree):
    tree["model"]["params"].pop(sorted(tree["model"]["params"])[0])


EDITS = [
    ("a model file with one parameter's shape changed", shape_changed, "do not fit the architecture"),
    ("a model file with a parameter missing", _drop_first_param, "do not fit the architecture"),
    ("a model file whose spec is not JSON", lambda t: t["model"].__setitem__("spec", "{not json"), "spec"),
    ("a model file whose spec names an unknown layer",
     lambda t: t["model"].__setitem__("spec", '{"type": "Nope"}'), "unknown layer type"),
]


@pytest.mark.fault("model file", "{description}", "clear error")
@pytest.mark.parametrize("description, edit, match", EDITS, ids=[e[0] for e in EDITS])
def test_edited_model(tmp_path, mnist_model, description, edit, match):
    p = edited_model(mnist_model, edit, tmp_path)
    with lib_error(match):
        npvae.load_model(p)


@pytest.mark.fault("model file", "a model file of random bytes (seed {seed})", "clear error")
@pytest.mark.parametrize("seed", range(5))
def test_random_bytes(tmp_path, seed):
    p = tmp_path / "model.h5"
    p.write_bytes(np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with lib_error("not a readable HDF5"):
        npvae.load_model(p)


@pytest.mark.fault("model file", "a results file of the wrong kind where a model is wanted", "clear error")
def test_wrong_kind(tmp_path):
    p = tmp_path / "r.h5"
    h5mat.write_tree(p, {"metrics": {"x": 1.0}}, kind="study")
    with lib_error("expected a"):
        npvae.load_model(p)


@pytest.mark.fault("model file", "load_model round trip gives identical outputs", "correct result")
def test_round_trip(tmp_path, mnist_model):
    m = npvae.load_model(mnist_model)
    p = save_model(tmp_path / "again.h5", m, {})
    x = np.random.default_rng(0).uniform(size=(3, 28, 28)).astype(np.float32)
    for a, b in zip(m.separate(x), npvae.load_model(p).separate(x)):
        assert np.array_equal(a, b)
