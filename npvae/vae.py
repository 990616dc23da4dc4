"""The pieces that make an autoencoder variational.

* :class:`GaussianHead` maps features to the posterior's mean and log-variance.
* :class:`Reparameterize` draws ``z = mu + exp(0.5 * logvar) * eps`` and routes the
  gradient back to both.
* :func:`kl_divergence` is KL(q(z|x) || N(0, I)) in closed form, with its gradient.
* :class:`KLWeight` is the weight beta on that term, with an optional linear warm-up.
"""
from __future__ import annotations

import numpy as np

from ._kernels import kernels

from .layers.base import Layer, check_dtype, default_rng, register
from .layers.dense import Dense


@register
class GaussianHead(Layer):
    """Two parallel dense maps: ``mu = x @ W_mu + b_mu``, ``logvar = x @ W_lv + b_lv``.

    forward(x (N, in_features)) -> (mu, logvar), each (N, latent_dim);
    backward(dmu, dlogvar) -> dx (N, in_features).
    """

    def __init__(self, in_features: int, latent_dim: int, rng=None, dtype=np.float32):
        super().__init__(dtype)
        rng = default_rng(rng)
        self.in_features, self.latent_dim = int(in_features), int(latent_dim)
        self.mu = Dense(in_features, latent_dim, rng=rng, dtype=dtype)
        self.logvar = Dense(in_features, latent_dim, rng=rng, dtype=dtype)

    def children(self):
        return {"mu": self.mu, "logvar": self.logvar}

    def forward(self, x):
        return self.mu.forward(x), self.logvar.forward(x)

    def backward(self, dmu, dlogvar):
        return self.mu.backward(dmu) + self.logvar.backward(dlogvar)

    def hyper(self):
        return {"in_features": self.in_features, "latent_dim": self.latent_dim}


class Reparameterize:
    """``z = mu + exp(0.5 * logvar) * eps`` with ``eps ~ N(0, I)``.

    In training mode eps is drawn from ``rng`` (or given as ``eps``); with
    ``sample=False`` (evaluation) ``z = mu``, the posterior mean. Sampling with neither
    ``rng`` nor ``eps`` is an error: a silent default generator would draw the same noise
    at every step. Shapes: mu, logvar, z all (N, latent_dim).
    """

    def forward(self, mu, logvar, rng: np.random.Generator | None = None, sample: bool = True, eps=None):
        if mu.shape != logvar.shape:
            raise ValueError(f"mu and logvar must have the same shape, got {mu.shape} and {logvar.shape}")
        if not sample:
            self._eps = None
            return mu
        if eps is None:
            if not isinstance(rng, np.random.Generator):
                raise ValueError("Reparameterize.forward samples (sample=True) but got no random generator "
                                 f"(rng={rng!r}); pass rng=np.random.default_rng(seed), or sample=False "
                                 "to take z = mu")
            eps = rng.standard_normal(mu.shape, dtype=mu.dtype)
        self._eps = eps
        z, self._std = kernels.reparameterize(mu, logvar, eps)
        return z

    __call__ = forward

    def backward(self, dz):
        """Returns ``(dmu, dlogvar)``."""
        if self._eps is None:
            return dz, np.zeros_like(dz)
        return dz, dz * (0.5 * self._std * self._eps)


def kl_divergence(mu, logvar, reduction: str = "batch"):
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) = -0.5 * sum(1 + logvar - mu^2 - exp(logvar)).

    mu, logvar : (N, latent_dim). ``reduction="batch"`` sums over the latent axis and
    averages over the batch (nats per sample); ``"sum"`` sums everything.
    Returns ``(value, dmu, dlogvar)``.
    """
    kl, dmu, dlogvar = kernels.kl_terms(mu, logvar)
    if reduction == "batch":
        scale = 1.0 / mu.shape[0]
    elif reduction == "sum":
        scale = 1.0
    else:
        raise ValueError(f"reduction must be 'batch' or 'sum', got {reduction!r}")
    if scale != 1.0:
        dmu *= scale
        dlogvar *= scale
    return kl * scale, dmu, dlogvar


class KLWeight:
    """beta, optionally ramped linearly from 0 over ``warmup_epochs`` (fractional epochs allowed)."""

    def __init__(self, beta: float = 1.0, warmup_epochs: float = 0.0):
        if beta < 0 or warmup_epochs < 0:
            raise ValueError(f"beta and warmup_epochs must be >= 0, got {beta}, {warmup_epochs}")
        self.beta, self.warmup_epochs = float(beta), float(warmup_epochs)

    def __call__(self, epoch: float) -> float:
        if self.warmup_epochs <= 0:
            return self.beta
        return self.beta * min(1.0, max(0.0, epoch) / self.warmup_epochs)

    def __repr__(self):
        return f"KLWeight(beta={self.beta}, warmup_epochs={self.warmup_epochs})"


def sample_prior(n: int, latent_dim: int, rng: np.random.Generator | None = None, dtype=np.float32):
    """n draws from the prior N(0, I): shape (n, latent_dim)."""
    return default_rng(rng).standard_normal((n, latent_dim), dtype=check_dtype(dtype))
