"""npvae_blind_forward (matlab/) reproduces ``BlindSeparationVAE.separate`` in GNU Octave:
random models of every output kind and dtype, written as the blind scripts write them
(a model file whose /config holds the mixing rule); the remix and masked estimates are
those of npvae.tasks.blind_objective. A trained run is checked in test_blind_training."""
import numpy as np
import pytest
import scipy.io

from _octave import assert_octave_errors, needs_octave, octave_ok
from npvae.files.h5mat import write_tree
from npvae.files.model_file import model_tree, save_model
from npvae.models.blind import BlindSeparationVAE
from npvae.models.mnist import DenseSeparationVAE
from npvae.tasks.blind_objective import consistent_sources, remix

pytestmark = needs_octave

CASES = {   # name: model settings, mixing rule stored in /config
    "images_average": (dict(n_groups=2, latent_dim=5, hidden=(24, 12)), {"rule": "average", "mode": "blind"}),
    "images_sum_k3_f64": (dict(n_groups=3, latent_dim=3, hidden=(16,), dtype=np.float64),
                          {"rule": "sum", "mode": "blind"}),
    "spectrogram": (dict(n_groups=2, latent_dim=4, hidden=(20, 10), shape=(16, 4), output="softplus",
                         log_input=True), {"mode": "blind_music", "mag_scale": 0.5}),
}


def _model(kw, seed):
    model = BlindSeparationVAE(rng=np.random.default_rng(seed), **kw)
    # larger weights than the initialisation's, so that the groups differ visibly
    model.load_state_dict({k: v * 4 for k, v in model.state_dict().items()})
    return model


def test_blind_forward_equals_python(tmp_path):
    rng = np.random.default_rng(0)
    code, want = "", {}
    for i, (name, (kw, config)) in enumerate(CASES.items()):
        model = _model(kw, i)
        save_model(tmp_path / f"{name}.h5", model, config)
        h, w = model.shape
        x = rng.random((5, h, w)) * (3.0 if model.output == "softplus" else 1.0)
        scipy.io.savemat(tmp_path / f"{name}_in.mat", {"x": x})
        y = model.separate(x)
        rule = config.get("rule", "additive")
        want[name] = {"g": y, "r": np.clip(remix(y, rule), 0, 1) if rule == "sum" else remix(y, rule),
                      "k": consistent_sources(y, x.astype(model.dtype), rule),
                      "one": y[:1]}
        code += (f"load('{name}_in.mat'); [g, r, k] = npvae_blind_forward('{name}.h5', x);"
                 f"one = npvae_blind_forward(npvae_load('{name}.h5'), squeeze(x(1, :, :)));"
                 f"save('-v7', '{name}_out.mat', 'g', 'r', 'k', 'one');")
    octave_ok(code, tmp_path)
    for name, expect in want.items():
        got = scipy.io.loadmat(tmp_path / f"{name}_out.mat")
        for key, w in expect.items():
            have = got[key].reshape(w.shape)
            assert got[key].dtype == w.dtype, (name, key, got[key].dtype)
            assert got[key].shape[0] == w.shape[0] and np.prod(got[key].shape) == w.size, (name, key)
            np.testing.assert_allclose(have, w, atol=1e-4, rtol=0, err_msg=f"{name} {key}")
        assert np.ptp(expect["g"][:, 0] - expect["g"][:, 1]) > 0.1        # the groups really differ


def test_rule_override_and_clear_refusals(tmp_path):
    model = _model(CASES["images_average"][0], 0)
    save_model(tmp_path / "norule.h5", model, {})
    write_tree(tmp_path / "dense.h5", {"model": model_tree(DenseSeparationVAE(hidden=(8,), latent_dim=2)),
                                        "config": {}}, "model")
    x = np.random.default_rng(1).random((2, 28, 28))
    scipy.io.savemat(tmp_path / "x.mat", {"x": x})
    octave_ok("load('x.mat'); [g, r] = npvae_blind_forward('norule.h5', x, 'sum'); save('-v7', 'o.mat', 'r');",
              tmp_path)
    y = model.separate(x)
    np.testing.assert_allclose(scipy.io.loadmat(tmp_path / "o.mat")["r"], np.clip(y.sum(axis=1), 0, 1), atol=1e-4)
    load = "load('x.mat'); "
    assert_octave_errors({
        load + "npvae_blind_forward('norule.h5', x)": ("npvae:noRule", "pass it"),
        load + "npvae_blind_forward('norule.h5', x, 'product')": ("npvae:badOption", "rule must be"),
        load + "npvae_blind_forward('norule.h5', zeros(2, 14, 14), 'sum')": ("npvae:shape", "N x 28 x 28"),
        load + "npvae_blind_forward('dense.h5', x)": ("npvae:notBlindModel", "use npvae_forward"),
        load + "npvae_forward('norule.h5', x)": ("npvae:notMnistModel", "use npvae_blind_forward"),
    }, tmp_path)
