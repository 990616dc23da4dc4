"""Reparameterisation, KL, the Gaussian head, and the full loss of a small VAE."""
import numpy as np
import pytest

import npvae
from npvae import losses
from _gradcheck import numerical_gradient, rel_error

TOL = 1e-7


def test_reparameterize_gradients(rng):
    mu, logvar, eps = rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    r = rng.standard_normal((3, 4))
    rep = npvae.Reparameterize()

    def f():
        return float(np.sum(rep.forward(mu, logvar, eps=eps) * r))

    z = rep.forward(mu, logvar, eps=eps)
    np.testing.assert_allclose(z, mu + np.exp(0.5 * logvar) * eps)  # std is exp(0.5 * logvar)
    dmu, dlogvar = rep.backward(r)
    assert rel_error(dmu, numerical_gradient(f, mu)) < TOL
    assert rel_error(dlogvar, numerical_gradient(f, logvar)) < TOL


def test_reparameterize_eval_returns_mean_and_sampling_is_seeded(rng):
    mu, logvar = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    rep = npvae.Reparameterize()
    assert rep.forward(mu, logvar, sample=False) is mu
    a = rep.forward(mu, logvar, rng=np.random.default_rng(5))
    b = rep.forward(mu, logvar, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, mu)


def test_reparameterize_refuses_to_sample_without_a_generator(rng):
    mu = rng.standard_normal((2, 3))
    with pytest.raises(ValueError, match="random generator"):
        npvae.Reparameterize().forward(mu, mu)
    with pytest.raises(ValueError, match="random generator"):
        npvae.Reparameterize().forward(mu, mu, rng=5)


def test_kl_divergence_value_and_gradients(rng):
    mu, logvar = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    value, dmu, dlogvar = npvae.kl_divergence(mu, logvar)
    direct = -0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar)) / 4
    assert value == pytest.approx(direct, rel=1e-12)
    assert rel_error(dmu, numerical_gradient(lambda: npvae.kl_divergence(mu, logvar)[0], mu)) < TOL
    assert rel_error(dlogvar, numerical_gradient(lambda: npvae.kl_divergence(mu, logvar)[0], logvar)) < TOL
    zero, _, _ = npvae.kl_divergence(np.zeros((2, 3)), np.zeros((2, 3)))
    assert zero == 0.0


def test_kl_weight_warmup():
    w = npvae.KLWeight(beta=2.0, warmup_epochs=4)
    assert [w(e) for e in (0, 1, 2, 4, 10)] == [0.0, 0.5, 1.0, 2.0, 2.0]
    assert npvae.KLWeight(0.5)(0) == 0.5
    with pytest.raises(ValueError):
        npvae.KLWeight(beta=-1)


def test_sample_prior():
    z = npvae.sample_prior(1000, 4, np.random.default_rng(0))
    assert z.shape == (1000, 4) and z.dtype == np.float32
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1) < 0.1


def test_gaussian_head_gradients(rng):
    head = npvae.GaussianHead(5, 3, rng=rng, dtype=np.float64)
    x = rng.standard_normal((4, 5))
    rm, rl = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))

    def f():
        mu, lv = head.forward(x)
        return float(np.sum(mu * rm) + np.sum(lv * rl))

    head.forward(x)
    dx = head.backward(rm, rl)
    assert rel_error(dx, numerical_gradient(f, x)) < TOL
    for path, p, g in head.named_parameters():
        assert rel_error(g, numerical_gradient(f, p)) < TOL, path


class TinyVAE:
    """encoder -> Gaussian head -> z -> decoder (logits), loss = BCE + beta * KL."""

    def __init__(self, rng):
        d = np.float64
        self.encoder = npvae.Sequential(npvae.Dense(6, 5, activation="leaky_relu", rng=rng, dtype=d))
        self.head = npvae.GaussianHead(5, 2, rng=rng, dtype=d)
        self.decoder = npvae.Sequential(npvae.Dense(2, 5, activation="tanh", rng=rng, dtype=d),
                                        npvae.Dense(5, 6, rng=rng, dtype=d))
        self.rep = npvae.Reparameterize()

    def params(self):
        for name in ("encoder", "head", "decoder"):
            yield from getattr(self, name).named_parameters(name + ".")

    def loss(self, x, eps, beta=0.7, backward=False):
        mu, logvar = self.head.forward(self.encoder.forward(x))
        z = self.rep.forward(mu, logvar, eps=eps)
        logits = self.decoder.forward(z)
        rec, dlogits = losses.bce_with_logits(logits, x)
        kl, dmu_kl, dlv_kl = npvae.kl_divergence(mu, logvar)
        if backward:
            dmu, dlv = self.rep.backward(self.decoder.backward(dlogits))
            self.encoder.backward(self.head.backward(dmu + beta * dmu_kl, dlv + beta * dlv_kl))
        return rec + beta * kl


def test_full_vae_loss_gradient_for_every_parameter(rng):
    vae = TinyVAE(rng)
    x, eps = rng.uniform(size=(3, 6)), rng.standard_normal((3, 2))
    vae.loss(x, eps, backward=True)
    analytic = {path: g.copy() for path, _, g in vae.params()}
    assert len(analytic) == 10  # encoder 2, head 4, decoder 4
    for path, p, _ in vae.params():
        num = numerical_gradient(lambda: vae.loss(x, eps), p)
        assert rel_error(analytic[path], num) < 1e-6, path
