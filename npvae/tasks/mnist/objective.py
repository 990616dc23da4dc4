"""The images training objective: the negative ELBO of the separation, per sample
(sums over pixels, mean over the batch)::

    total = rec(digit) + rec(fashion) + mix_weight * rec(mixture) + beta * KL

``rec`` is BCE, MSE or L1 (:mod:`npvae.losses`); the reconstructed mixture is the
model's mixing rule applied to its two estimates, so the mixture term reaches both.
With BCE and the "sources" output the source terms are taken on the decoder's logits
(BCE from logits), which stays finite where a saturated sigmoid would not.
"""
from __future__ import annotations

import numpy as np

from ... import losses
from ...vae import kl_divergence

RECON_LOSSES = ("bce", "mse", "l1")


class SeparationObjective:
    """Loss terms of a batch, forward and backward, for an image model.

    ``terms(mixture, digit, fashion, beta, sample, backward)`` runs the model forward,
    returns the terms (total, digit, fashion, mixture, kl) as floats and, with
    ``backward=True``, fills the gradients of every parameter.
    """

    def __init__(self, model, recon: str = "bce", mix_weight: float = 1.0):
        if recon not in RECON_LOSSES:
            raise ValueError(f"unknown reconstruction loss {recon!r}: choose one of {RECON_LOSSES}")
        self.model, self.recon, self.mix_weight = model, recon, mix_weight

    def terms(self, mixture, digit, fashion, beta: float = 1.0, sample: bool = True,
              backward: bool = True) -> dict:
        model, dt = self.model, self.model.dtype
        y = model.forward(mixture, sample=sample)
        d_hat, f_hat = np.ascontiguousarray(y[:, 0]), np.ascontiguousarray(y[:, 1])
        m_hat = model.mix(d_hat, f_hat)
        digit, fashion = digit.astype(dt, copy=False), fashion.astype(dt, copy=False)
        on_logits = self.recon == "bce" and model.output == "sources"
        if on_logits:
            ld, gld = losses.bce_with_logits(model.logits[:, 0], digit)
            lf, glf = losses.bce_with_logits(model.logits[:, 1], fashion)
        else:
            fn = losses.probability_loss(self.recon)
            ld, gd = fn(d_hat, digit)
            lf, gf = fn(f_hat, fashion)
        lm, gm = losses.probability_loss(self.recon)(m_hat, mixture.astype(dt, copy=False))
        kl, dmu, dlogvar = kl_divergence(model.mu, model.logvar)
        # With beta = 0 the KL is only reported: an unconstrained latent can make it
        # overflow, and 0 * inf would turn the loss and the gradients into NaN.
        terms = {"total": ld + lf + self.mix_weight * lm + (beta * kl if beta else 0.0), "digit": ld,
                 "fashion": lf, "mixture": lm, "kl": kl}
        if not backward:
            return terms
        # the mixture term reaches both sources through the mixing rule
        gm = gm * self.mix_weight
        gm_src = gm * dt.type(0.5) if model.rule == "average" else gm * ((d_hat + f_hat) < 1)
        if on_logits:
            dy, dlogits = np.stack([gm_src, gm_src], axis=1), np.stack([gld, glf], axis=1)
        else:
            dy, dlogits = np.stack([gd + gm_src, gf + gm_src], axis=1), None
        model.backward(dy, beta * dmu if beta else None, beta * dlogvar if beta else None, dlogits=dlogits)
        return terms
