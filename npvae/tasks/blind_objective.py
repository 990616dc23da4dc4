"""The blind separation objective: the mixture is the only target.

For decoded groups ``y`` (N, K, ...) of a mixture ``m`` (N, ...), the negative ELBO
per sample is

    rec(remix(y), m) + beta * sum_k KL(q(z_k | m) || N(0, I))

where ``remix`` is the mixing rule applied to the K groups (mixture consistency):

* ``"average"``: the data are ``(a + b) / n_mixed`` (n_mixed = 2 sources), so
  ``remix(y) = sum_k y_k / n_mixed``; each y_k estimates a source at full scale.
* ``"sum"``: the data are ``clip(a + b, 0, 1)``, so ``remix(y) = sum_k y_k``, clipped
  at 1 only where the observed pixel is saturated: a pixel observed below 1 says the
  sources sum to exactly that value, a pixel observed at 1 only that they sum to at
  least 1 (a censored observation). The loss compares ``min(sum_k y_k, 1)`` with 1
  there, so a bright overlap costs nothing, and everywhere else the gradient never
  vanishes behind the clip.
* ``"additive"``: ``remix(y) = sum_k y_k``, unclipped (magnitude spectrograms, where
  the sources' magnitudes add up approximately).

``rec`` is ``"l1"`` (a Laplace likelihood, as in Neri et al. 2021) or ``"mse"``
(Gaussian), summed over pixels and averaged over the batch. No source image
enters this objective.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import losses
from ..engine.config import RunConfig
from ..inputs import check_settings
from ..vae import kl_divergence

RULES = ("average", "sum", "additive")
RECON = ("l1", "mse")


def remix(y: np.ndarray, rule: str, n_mixed: int = 2) -> np.ndarray:
    """The mixing rule applied to K decoded groups: y (N, K, ...) -> (N, ...), unclipped."""
    if rule not in RULES:
        raise ValueError(f"unknown mixing rule {rule!r}; choose one of {RULES}")
    total = y.sum(axis=1)
    return total / y.dtype.type(n_mixed) if rule == "average" else total


def consistent_sources(y: np.ndarray, mixtures: np.ndarray, rule: str, n_mixed: int = 2,
                       eps: float = 1e-6) -> np.ndarray:
    """Masked estimates that mix back to the mixture: ``mask_k * T`` with masks
    ``y_k / sum_j y_j`` summing to one over the K groups and T the mixture's total
    intensity (``n_mixed * m`` for the average rule, ``m`` for the others).

    y (N, K, ...) decoded groups, mixtures (N, ...) -> (N, K, ...)."""
    if rule not in RULES:
        raise ValueError(f"unknown mixing rule {rule!r}; choose one of {RULES}")
    masks = y / np.maximum(y.sum(axis=1, keepdims=True), eps)
    total = mixtures * n_mixed if rule == "average" else mixtures
    return (masks * total[:, None]).astype(y.dtype, copy=False)


def group_kl(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """KL of each group in nats, averaged over the batch: mu, logvar (N, K, L) -> (K,)."""
    mu, logvar = np.asarray(mu, np.float64), np.asarray(logvar, np.float64)
    return -0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar), axis=2).mean(axis=0)


@dataclass
class BlindLossConfig:
    """Settings of the blind objective (the loss settings of ``npvae train blind-mnist`` and ``blind-music``)."""
    rule: str = "average"
    loss: str = "l1"
    n_mixed: int = 2          # sources per mixture in the data's mixing rule

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"unknown mixing rule {self.rule!r}; choose one of {RULES}")
        if self.loss not in RECON:
            raise ValueError(f"unknown reconstruction loss {self.loss!r}; choose one of {RECON}")
        if self.n_mixed < 1:
            raise ValueError(f"n_mixed must be at least 1, got {self.n_mixed}")


@dataclass
class BlindConfig(RunConfig):
    """The settings both blind tasks have: K latent groups (``groups``) of ``latent_dim``
    each, the encoder's widths ``hidden`` (the decoder mirrors them) and the mixture's
    reconstruction ``loss`` ("l1", a Laplace likelihood, or "mse", a Gaussian one)."""
    groups: int = 2
    latent_dim: int = 20
    hidden: tuple = (512, 256)
    loss: str = "l1"

    def __post_init__(self):
        super().__post_init__()
        check_settings(self, positive_int=("groups", "latent_dim", "hidden"), choices={"loss": RECON})
        self.hidden = tuple(int(h) for h in (self.hidden if isinstance(self.hidden, (list, tuple)) else [self.hidden]))

    def mixing_rule(self) -> str:
        """How the sources of the data mix (one of :data:`RULES`)."""
        raise NotImplementedError

    def loss_config(self) -> "BlindLossConfig":
        return BlindLossConfig(rule=self.mixing_rule(), loss=self.loss)


class BlindObjective:
    """Negative ELBO of a blind model on mixtures alone.

    ``terms(mixtures, epoch, rng)`` runs the model forward, and with ``backward=True``
    backward, filling every parameter's gradient; it returns the terms as floats:
    ``total``, ``mixture`` (reconstruction of the mixture), ``kl`` (sum over groups)
    and ``kl_<k>`` per group.
    """

    def __init__(self, model, cfg: BlindLossConfig):
        self.model, self.cfg = model, cfg

    def reconstruction(self, y: np.ndarray, m: np.ndarray):
        """(value, dy): the mixture term and its gradient for the decoded groups y (N, K, ...)."""
        cfg = self.cfg
        m_hat = remix(y, cfg.rule, cfg.n_mixed)
        saturated = None
        if cfg.rule == "sum":
            saturated = (m >= 1) & (m_hat > 1)   # censored pixels whose sum already reaches 1
            m_hat = np.where(saturated, m.dtype.type(1), m_hat)
        value, dm = losses.probability_loss(cfg.loss)(m_hat, m)
        if saturated is not None:
            dm = np.where(saturated, 0, dm).astype(y.dtype, copy=False)
        scale = 1.0 / cfg.n_mixed if cfg.rule == "average" else 1.0
        dy = np.broadcast_to((dm * y.dtype.type(scale))[:, None], y.shape)
        return value, np.ascontiguousarray(dy)

    def terms(self, mixtures, *, beta: float, rng: np.random.Generator | None = None,
              sample: bool | None = None, backward: bool = True) -> dict:
        """The loss terms of a batch of mixtures; ``beta`` is the KL weight (the engine's
        schedule, :class:`npvae.vae.KLWeight`)."""
        model = self.model
        m = model._prepare(mixtures)
        y = model.forward(m, rng=rng, sample=sample)
        rec, dy = self.reconstruction(y, m)
        kl, dmu, dlogvar = kl_divergence(model.mu, model.logvar)
        # With beta = 0 the KL is only reported (0 * inf would make the loss NaN).
        out = {"total": rec + (beta * kl if beta else 0.0), "mixture": rec, "kl": kl}
        out.update({f"kl_{k}": float(v) for k, v in enumerate(group_kl(model.mu, model.logvar))})
        if backward:   # backward overwrites every gradient, no zeroing needed
            if beta:
                model.backward(dy, beta * dmu, beta * dlogvar)
            else:
                model.backward(dy)
        return out
