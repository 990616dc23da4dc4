"""One contract for every model of both tasks (a conformance test each model class passes).

A model is a Layer: ``forward(x, sample=None) -> y``, with the Gaussian posterior's
``mu`` and ``logvar`` left on the model, and ``backward(dy, dmu=None, dlogvar=None) -> dx``
filling every parameter's gradient. Checked on a tiny float64 instance of each class:
shapes, centred finite differences through the sampled latent (parameters and input),
the spec round trip and the model-file round trip.
"""
import inspect

import numpy as np
import pytest

import npvae
from npvae import models
from npvae.files import model_file as io
from npvae.layers.base import Layer

# A tiny instance and an input for each model class. A new model class must add itself here.
CASES = {
    "dense-sources": (models.DenseSeparationVAE, dict(hidden=(6, 5), latent_dim=3), (2, 28, 28)),
    "dense-split-sum": (models.DenseSeparationVAE, dict(hidden=(5,), latent_dim=2, output="split", rule="sum"),
                        (2, 28, 28)),
    "conv-sources": (models.ConvSeparationVAE, dict(channels=(2, 3), hidden=5, latent_dim=2), (2, 28, 28)),
    "unet-split": (models.UNetSeparationVAE, dict(channels=(2, 2, 3), latent_dim=2), (2, 28, 28)),
    "unet-split-blocks3": (models.UNetSeparationVAE, dict(channels=(2, 2, 3), latent_dim=2, blocks=3), (2, 28, 28)),
    "unet-sources": (models.UNetSeparationVAE, dict(channels=(2, 2, 2), latent_dim=2, output="sources"),
                     (2, 28, 28)),
    "unet-options": (models.UNetSeparationVAE, dict(channels=(2, 2, 3, 2), latent_dim=2, blocks=2, norm="batch",
                                                    down="max", residual=True, dropout=0.2), (3, 28, 28)),
    "unet-group-avg": (models.UNetSeparationVAE, dict(channels=(2, 2, 2), latent_dim=2, norm="group", down="avg"),
                       (2, 28, 28)),
    "vae-latent-map": (models.LatentMapSeparationVAE, dict(channels=(2, 2, 3), latent_dim=2), (2, 28, 28)),
    "vae-latent-map-14": (models.LatentMapSeparationVAE, dict(channels=(2, 3), latent_dim=2, blocks=2), (2, 28, 28)),
    "vae-latent-map-split": (models.LatentMapSeparationVAE, dict(channels=(2, 2, 2), latent_dim=1, blocks=0,
                                                                 output="split"), (2, 28, 28)),
    "vae-latent-map-batchnorm": (models.LatentMapSeparationVAE, dict(channels=(2, 3), latent_dim=2, norm="batch"),
                                 (3, 28, 28)),
    "vae-latent-map-groupnorm": (models.LatentMapSeparationVAE, dict(channels=(2, 2, 4), latent_dim=1, norm="group",
                                                                     groups=2, norm_bias=True), (2, 28, 28)),
    "blind-images": (models.BlindSeparationVAE, dict(n_groups=2, latent_dim=2, hidden=(5,)), (2, 28, 28)),
    "blind-magnitudes": (models.BlindSeparationVAE, dict(n_groups=3, latent_dim=2, hidden=(4,), shape=(6, 5),
                                                          output="softplus", log_input=True), (2, 6, 5)),
    "spectrogram": (models.SpectrogramUNetVAE, dict(channels=(2, 2, 3), latent_channels=2), (2, 1, 16, 16)),
    "spectrogram-4-levels": (models.SpectrogramUNetVAE, dict(channels=(2, 2, 3, 2), latent_channels=2),
                             (2, 1, 16, 32)),
    "spectrogram-2-levels": (models.SpectrogramUNetVAE, dict(channels=(2, 3), latent_channels=1), (2, 1, 8, 4)),
    "spectrogram-options": (models.SpectrogramUNetVAE, dict(channels=(2, 3, 2), latent_channels=2, norm="batch",
                                                            down="max", residual=True, dropout=0.3, rnn_layers=1,
                                                            rnn_hidden=4, freq_bins=16), (2, 1, 16, 16)),
    "spectrogram-stacked": (models.StackedSpectrogramUNetVAE, dict(stacks=2, channels=(2, 3), latent_channels=1,
                                                                   norm="group", groups=2), (2, 1, 8, 8)),
}


def model_classes():
    return {c for _, c in inspect.getmembers(models, inspect.isclass) if issubclass(c, Layer)}


def test_every_model_class_has_a_case():
    assert model_classes() == {cls for cls, _, _ in CASES.values()}


def make(name, dtype=np.float64):
    cls, kw, shape = CASES[name]
    model = cls(rng=np.random.default_rng(1), dtype=dtype, **kw)
    rng = np.random.default_rng(2)
    x = rng.uniform(0.05, 0.95, shape) if len(shape) == 3 else rng.standard_normal(shape)
    return model, x.astype(dtype)


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_backward_shapes_and_finite_differences(name):
    model, x = make(name)
    model.train()

    def run(xx):
        model.rng = np.random.default_rng(7)          # the same noise every call: a smooth function
        return model.forward(xx, sample=True)

    y = run(x)
    assert y.dtype == np.float64 and y.shape[0] == x.shape[0]
    assert model.mu.shape == model.logvar.shape and model.mu.shape[0] == x.shape[0]
    r = np.random.default_rng(3)
    wy, wmu, wlv = r.standard_normal(y.shape), r.standard_normal(model.mu.shape), r.standard_normal(model.mu.shape)

    def scalar(xx=x):
        yy = run(xx)
        return float(np.sum(yy * wy) + np.sum(model.mu * wmu) + np.sum(model.logvar * wlv))

    run(x)
    dx = model.backward(wy, wmu, wlv)
    assert dx.shape == x.shape
    grads = {path: g.copy() for path, _, g in model.named_parameters()}
    assert all(grads[path].shape == p.shape for path, p, _ in model.named_parameters())

    def directional(array, analytic):
        # Round-off in the summed scalar spoils a small step, a leaky-ReLU kink a large
        # one, and which one depends on the convolution algorithm's rounding: a right
        # gradient agrees at one of two steps, a wrong one at neither.
        v = np.random.default_rng(4).standard_normal(array.shape)
        exact, tried = float(np.sum(analytic * v)), []
        for h in (1e-5, 1e-6):
            array += h * v
            up = scalar()
            array -= 2 * h * v
            down = scalar()
            array += h * v
            numeric = (up - down) / (2 * h)
            tried.append(numeric)
            if abs(numeric - exact) <= 1e-5 * max(abs(numeric) + abs(exact), 1e-3):
                return True, (numeric, exact)
        return False, (tried, exact)

    for path, p, _ in model.named_parameters():
        ok, nums = directional(p, grads[path])
        assert ok, (path, nums)
    ok, nums = directional(x, dx)
    assert ok, ("input", nums)


@pytest.mark.parametrize("name", sorted(CASES))
def test_spec_and_model_file_round_trips(name, tmp_path):
    model, x = make(name, np.float32)
    rebuilt = npvae.build_layer(model.spec())
    assert type(rebuilt) is type(model) and rebuilt.spec() == model.spec()
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    loaded, _ = io.read_model_file(io.save_model(tmp_path / "model.h5", model))
    assert loaded.spec() == model.spec() and not loaded.training
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[k], v, err_msg=k)
    model.eval()
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))
