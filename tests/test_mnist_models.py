"""Part I models and their objective: gradients of the whole separation loss, output
constraints, separate()."""
import numpy as np
import pytest

from npvae.models.mnist import build_model
from npvae.pipelines.mnist.objective import SeparationObjective

TINY = {"dense": dict(hidden=(6, 5), latent_dim=3), "conv": dict(channels=(2, 3), hidden=5, latent_dim=2),
        "unet": dict(channels=(2, 2, 3), latent_dim=2), "unet-blocks2": dict(channels=(2, 3, 3), latent_dim=2, blocks=2),
        "vae": dict(channels=(2, 2, 3), latent_dim=2, blocks=1), "vae-14": dict(channels=(2, 3), latent_dim=1)}


def pairs(rng, n=3):
    d, f = rng.uniform(size=(n, 28, 28)), rng.uniform(size=(n, 28, 28))
    d[d < 0.5] = 0
    f[f < 0.6] = 0
    return d, f


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("output,recon,rule", [("sources", "bce", "average"), ("sources", "mse", "sum"),
                                               ("split", "bce", "average"), ("split", "l1", "sum"),
                                               ("split", "mse", "average")])
def test_loss_gradient_for_every_parameter(rng, name, output, recon, rule):
    """Directional centred differences (float64) of the full loss along a random
    direction per parameter tensor, against the analytic gradient."""
    model = build_model(name.split("-")[0], rng=np.random.default_rng(1), dtype=np.float64, output=output, rule=rule,
                        **TINY[name])
    d, f = pairs(rng)
    m = (d + f) / 2 if rule == "average" else np.clip(d + f, 0, 1)

    objective = SeparationObjective(model, recon, mix_weight=0.8)

    def loss(backward=False):
        model.rng = np.random.default_rng(5)
        return objective.terms(m, d, f, beta=0.7, backward=backward)["total"]

    def agrees(p, g, v, h):
        p += h * v
        up = loss()
        p -= 2 * h * v
        down = loss()
        p += h * v
        numeric, analytic = (up - down) / (2 * h), float(np.sum(g * v))
        return abs(numeric - analytic) <= 1e-4 * max(abs(numeric) + abs(analytic), 1e-3)

    loss(backward=True)
    for path, p, g in model.named_parameters():
        v = np.random.default_rng(3).standard_normal(p.shape)
        # No one step suits every tensor: a leaky-ReLU, clip or L1 kink within +-h spoils a
        # large step, round-off on a large loss (BCE sums 784 pixels) a small one. A right
        # gradient agrees at one of three steps; a wrong one agrees at none.
        assert any(agrees(p, g, v, h) for h in (1e-5, 1e-6, 1e-7)), path


@pytest.mark.parametrize("name", sorted(TINY))
def test_split_output_mixes_back_exactly_and_stays_in_range(rng, name):
    model = build_model(name.split("-")[0], rng=rng, output="split", **TINY[name])
    d, f = pairs(rng, 4)
    m = ((d + f) / 2).astype(np.float32)
    digit, fashion, m_hat = model.separate(m)
    assert digit.shape == fashion.shape == m_hat.shape == (4, 28, 28)
    assert digit.min() >= 0 and digit.max() <= 1 and fashion.min() >= -1e-6 and fashion.max() <= 1 + 1e-6
    np.testing.assert_allclose(m_hat, m, atol=1e-6)


def test_separate_is_deterministic_and_batched(rng):
    model = build_model("dense", rng=rng, **TINY["dense"])
    m = rng.uniform(size=(7, 28, 28)).astype(np.float32)
    a = model.separate(m, batch_size=3)
    b = model.separate(m, batch_size=7)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a[2], (a[0] + a[1]) / 2, atol=1e-6)
    assert model.training  # separate() restores the mode it found


@pytest.mark.parametrize("bad", [np.zeros((2, 784)), np.zeros((2, 1, 28, 28)), np.zeros((2, 28, 27))])
def test_wrong_input_shape_is_explained(rng, bad):
    model = build_model("dense", rng=rng, **TINY["dense"])
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        model.separate(bad.astype(np.float32))


def test_bad_settings(rng):
    with pytest.raises(ValueError, match="unknown model"):
        build_model("transformer")
    with pytest.raises(ValueError, match="output"):
        build_model("dense", output="masks")
    model = build_model("dense", rng=rng, **TINY["dense"])
    with pytest.raises(ValueError, match="reconstruction loss"):
        SeparationObjective(model, "hinge")


def test_beta_zero_ignores_an_overflowing_kl(rng):
    """Beta 0 (the plain autoencoder): an overflowing KL is reported, not added (0 * inf = NaN)."""
    model = build_model("dense", rng=np.random.default_rng(1), **TINY["dense"])
    model.head.logvar.params["b"][:] = 100.0                 # exp(100) overflows float32
    d, f = pairs(rng)
    terms = SeparationObjective(model).terms((d + f) / 2, d, f, beta=0.0, sample=False)
    assert not np.isfinite(terms["kl"])
    assert np.isfinite(terms["total"])
    for path, p, g in model.named_parameters():
        assert np.all(np.isfinite(g)), path
