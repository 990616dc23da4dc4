"""A VAE that separates images it has only ever seen mixed (Neri et al., EUSIPCO 2021).

:class:`BlindSeparationVAE` encodes a mixture into K Gaussian latent groups and
decodes every group with **one shared decoder**::

    m (N, 28, 28)                       the mixture, the only input and the only target
    h = encoder(m)                      dense 784 -> hidden... (leaky ReLU)
    mu, logvar = head(h)                (N, K * L) each, read as (N, K, L): K groups of L
    z_k = mu_k + exp(logvar_k / 2) eps  one draw per group (z = mu in evaluation)
    y_k = sigmoid(decoder(z_k))         (N, K, 28, 28): the same decoder for every group

Nothing says which group is which source: the training objective
(:class:`npvae.tasks.blind_objective.BlindObjective`) only asks that the K
decoded images mix back to the mixture and that each group's posterior stays near
the prior. Because the decoder is shared, a group can only hold what one decoder
can draw from one latent code: a single digit or garment, not a superposition.

The model follows the layer contract: ``forward`` returns the decoded groups and
keeps ``mu`` and ``logvar`` (N, K, L); ``backward(dy, dmu, dlogvar)`` takes the
gradient of the decoded groups plus the KL term's gradients and fills every
parameter's gradient.
"""
from __future__ import annotations

import numpy as np

from ..layers.activations import sigmoid
from ..layers.base import Layer, backward_before_forward, default_rng, inference, register
from ..layers.dense import Dense
from ..layers.sequential import Sequential
from ..layers.shape import Flatten
from ..vae import GaussianHead, Reparameterize
from ..inputs import as_batch_size, check_finite_estimates

OUTPUTS = ("sigmoid", "softplus")


@register
class BlindSeparationVAE(Layer):
    """forward(m (N, H, W)) -> y (N, K, H, W); one shared decoder for K groups.

    Parameters
    ----------
    n_groups : K, the number of latent groups (sources assumed), 2 to 4 in practice.
    latent_dim : L, the size of each group's latent code.
    hidden : encoder widths; the decoder mirrors them (L -> reversed(hidden) -> H * W).
    out_bias : initial bias of the decoder's output logits. Negative (default -2) so that
        the K decoded images start dim (sigmoid(-2) = 0.12) and their sum starts below
        1, where the clipped-sum mixing rule still passes gradients.
    shape : (H, W) of one mixture: (28, 28) for images, (bins, frames) for a
        spectrogram patch.
    output : "sigmoid" (intensities in (0, 1), images) or "softplus" (non-negative,
        unbounded: magnitudes).
    log_input : the encoder sees ``log1p(m)`` instead of ``m`` (magnitudes span
        decades; the target stays ``m``).
    """

    def __init__(self, n_groups: int = 2, latent_dim: int = 20, hidden=(512, 256), out_bias: float = -2.0,
                 shape=(28, 28), output: str = "sigmoid", log_input: bool = False, rng=None, dtype=np.float32):
        super().__init__(dtype)
        if int(n_groups) < 1:
            raise ValueError(f"n_groups must be at least 1, got {n_groups}")
        if int(latent_dim) < 1:
            raise ValueError(f"latent_dim must be positive, got {latent_dim}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"shape must be two positive sizes (H, W), got {shape}")
        rng = default_rng(rng)
        self.shape = tuple(int(s) for s in shape)
        self.output, self.log_input = output, bool(log_input)
        self.n_groups, self.latent_dim = int(n_groups), int(latent_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.out_bias = float(out_bias)
        pixels = self.shape[0] * self.shape[1]
        widths = (pixels,) + self.hidden
        kw = dict(activation="leaky_relu", alpha=0.2, rng=rng, dtype=dtype)
        self.encoder = Sequential(Flatten(), *(Dense(a, b, **kw) for a, b in zip(widths[:-1], widths[1:])))
        self.head = GaussianHead(widths[-1], self.n_groups * self.latent_dim, rng=rng, dtype=dtype)
        back = (self.latent_dim,) + self.hidden[::-1]
        out = Dense(back[-1], pixels, rng=rng, dtype=dtype)
        out.params["b"][...] += self.out_bias
        self.decoder = Sequential(*(Dense(a, b, **kw) for a, b in zip(back[:-1], back[1:])), out)
        self.reparam = Reparameterize()
        self.mu = self.logvar = None
        self.rng = None        # the latent's noise when forward gets no rng (the model contract)

    def children(self):
        return {"encoder": self.encoder, "head": self.head, "decoder": self.decoder}

    def _prepare(self, mixtures):
        m = np.asarray(mixtures)
        if m.ndim != 3 or m.shape[1:] != self.shape:
            raise ValueError(f"{type(self).__name__} expects mixtures of shape (N, {self.shape[0]}, {self.shape[1]}), "
                             f"got {m.shape}")
        return m.astype(self.dtype, copy=False)

    def _activate(self, logits, keep: bool = True):
        """The output activation; with ``keep`` its derivative is kept for backward."""
        s = sigmoid(logits).astype(self.dtype, copy=False)
        if self.output == "sigmoid":
            if keep:
                self._dact = s * (1 - s)
            return s
        if keep:
            self._dact = s                       # softplus' = sigmoid
        return np.logaddexp(0, logits).astype(self.dtype, copy=False)

    def forward(self, mixtures, rng: np.random.Generator | None = None, sample: bool | None = None):
        """mixtures (N, H, W) -> decoded groups (N, K, H, W).

        ``sample`` defaults to ``self.training``; sampling draws the noise from ``rng``
        (default: ``self.rng``), which is then required (the same noise every step would be
        a silent bug).
        """
        rng = self.rng if rng is None else rng
        m = self._prepare(mixtures)
        n, k, L = len(m), self.n_groups, self.latent_dim
        sample = self.training if sample is None else sample
        if sample and rng is None:
            raise ValueError("sampling the latent needs rng=np.random.default_rng(seed); "
                             "pass sample=False (or call model.eval()) for the posterior mean")
        self._m = m
        mu, logvar = self.head.forward(self.encoder.forward(np.log1p(m) if self.log_input else m))
        self.mu, self.logvar = mu.reshape(n, k, L), logvar.reshape(n, k, L)
        z = self.reparam.forward(mu, logvar, rng=rng, sample=sample)
        logits = self.decoder.forward(np.ascontiguousarray(z).reshape(n * k, L))
        self._y = self._activate(logits).reshape(n, k, *self.shape)
        return self._y

    def backward(self, dy, dmu=None, dlogvar=None):
        """dy (N, K, H, W): gradient for the decoded groups; dmu, dlogvar (N, K, L):
        optional extra gradients (the KL term's). Returns the mixture's gradient (N, H, W)."""
        if getattr(self, "_y", None) is None:
            raise backward_before_forward(self)
        n, k, L = self._y.shape[0], self.n_groups, self.latent_dim
        if dy.shape != self._y.shape:
            raise ValueError(f"dy must have the output's shape {self._y.shape}, got {dy.shape}")
        dlogits = (dy.reshape(self._dact.shape) * self._dact).astype(self.dtype, copy=False)
        dz = self.decoder.backward(dlogits).reshape(n, k * L)
        gmu, glv = self.reparam.backward(dz)
        if dmu is not None:
            gmu = gmu + dmu.reshape(n, k * L)
        if dlogvar is not None:
            glv = glv + dlogvar.reshape(n, k * L)
        dx = self.encoder.backward(self.head.backward(gmu, glv)).reshape(self._m.shape)
        return dx / (1 + self._m) if self.log_input else dx

    def decode(self, z):
        """Latent codes z (..., L) -> images (..., H, W) through the shared decoder."""
        z = np.asarray(z, dtype=self.dtype)
        lead = z.shape[:-1]
        logits = self.decoder.forward(z.reshape(-1, self.latent_dim))
        return self._activate(logits, keep=False).reshape(*lead, *self.shape)

    def separate(self, mixtures, batch_size: int = 500):
        """Posterior-mean decoding in batches: mixtures (N, H, W) -> groups (N, K, H, W)."""
        batch_size = as_batch_size(batch_size)
        m = self._prepare(mixtures)
        was_training = self.training
        self.eval()
        with inference():                       # the layers keep nothing for backward
            out = np.concatenate([self.forward(m[i:i + batch_size], sample=False).copy()
                                  for i in range(0, len(m), batch_size)])
        self.train(was_training)
        check_finite_estimates(self, out)
        return out

    def hyper(self):
        return {"n_groups": self.n_groups, "latent_dim": self.latent_dim, "hidden": list(self.hidden),
                "out_bias": self.out_bias, "shape": list(self.shape), "output": self.output,
                "log_input": self.log_input}
