"""VAEs that separate a mixture of an MNIST digit and a Fashion-MNIST item.

All three models see only the mixture ``m`` (N, 28, 28) and return both sources;
they differ in how the decoder produces them:

* :class:`DenseSeparationVAE` -- dense encoder, Gaussian latent, dense decoder
  emitting two images (the assignment's plain VAE).
* :class:`ConvSeparationVAE` -- the same with strided convolutions.
* :class:`UNetSeparationVAE` -- convolutional encoder and decoder joined by skip
  connections, a Gaussian latent at the bottleneck, and a *consistent* mask-style
  output (below), so the decoder sees the mixture itself.

Outputs. ``output="sources"`` decodes two logit images, ``digit = sigmoid(l_d)``
and ``fashion = sigmoid(l_f)``. ``output="split"`` decodes one logit image ``l``
that says how the mixture's total intensity ``T`` is shared: ``T = 2m`` for the
average rule (``T = m`` for the sum rule), ``digit = lo + sigmoid(l) (hi - lo)``
with ``lo = max(0, T - 1)``, ``hi = min(1, T)``, and ``fashion = T - digit``; both
stay in [0, 1] and mix back to the input exactly.

The reconstructed mixture is the mixing rule applied to the two estimates.
:meth:`SeparationVAE.loss` returns every term (per-source reconstruction, mixture
reconstruction, KL) and fills the gradients of every parameter.
"""
from __future__ import annotations

import numpy as np

from .. import losses
from ..layers.activations import LeakyReLU, sigmoid
from ..layers.base import Layer, default_rng, register
from ..layers.conv import Conv2d, ConvTranspose2d
from ..layers.dense import Dense
from ..layers.sequential import Sequential
from ..layers.shape import Flatten, Reshape
from ..vae import GaussianHead, Reparameterize, kl_divergence
from ..validate import as_unit_images

SIDE = 28
PIXELS = SIDE * SIDE
RULES = ("average", "sum")
OUTPUTS = ("sources", "split")
RECON_LOSSES = ("bce", "mse", "l1")


class SeparationVAE(Layer):
    """Shared machinery: the output transform, the loss with its backward, ``separate``.

    Subclasses build ``children()`` and implement ``_encode(x) -> features (N, F)``,
    ``_encode_backward(dfeatures) -> None``, ``_decode(z) -> logits (N, S, 28, 28)`` and
    ``_decode_backward(dlogits) -> dz`` where S = 2 for "sources" and 1 for "split".
    ``x`` is the mixture as (N, 1, 28, 28).
    """

    def __init__(self, latent_dim: int, output: str, rule: str, dtype):
        super().__init__(dtype)
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        if latent_dim <= 0:
            raise ValueError(f"latent_dim must be positive, got {latent_dim}")
        self.latent_dim, self.output, self.rule = int(latent_dim), output, rule
        self.reparam = Reparameterize()

    @property
    def out_channels(self) -> int:
        return 2 if self.output == "sources" else 1

    # -- the two sources from the decoder's logits ------------------------------------
    def _total(self, m):
        return 2 * m if self.rule == "average" else m

    def mix(self, digit, fashion):
        """The mixing rule applied to two images (N, 28, 28)."""
        if self.rule == "average":
            return (digit + fashion) * self.dtype.type(0.5)
        return np.clip(digit + fashion, 0, 1)

    def _sources(self, logits, m):
        """logits (N, S, 28, 28), mixture m (N, 28, 28) -> digit, fashion (N, 28, 28)."""
        if self.output == "sources":
            return sigmoid(logits[:, 0]).astype(self.dtype), sigmoid(logits[:, 1]).astype(self.dtype)
        t = self._total(m)
        lo, hi = np.maximum(t - 1, 0), np.minimum(t, 1)
        s = sigmoid(logits[:, 0]).astype(self.dtype)
        self._split = (s, hi - lo)
        digit = lo + s * (hi - lo)
        return digit, t - digit

    def _sources_backward(self, ddigit, dfashion, digit, fashion):
        """Gradient of the logits from the gradients of both source images."""
        if self.output == "sources":
            return np.stack([ddigit * digit * (1 - digit), dfashion * fashion * (1 - fashion)], axis=1)
        s, width = self._split
        return ((ddigit - dfashion) * s * (1 - s) * width)[:, None]

    # -- forward pieces ----------------------------------------------------------------
    def _prepare(self, mixtures):
        m = np.asarray(mixtures)
        if m.ndim != 3 or m.shape[1:] != (SIDE, SIDE):
            raise ValueError(f"{type(self).__name__} expects mixtures of shape (N, 28, 28), got {m.shape}")
        return m.astype(self.dtype, copy=False)

    def forward(self, mixtures, rng=None, sample=True):
        """mixtures (N, 28, 28) in [0, 1] -> (digit, fashion, mixture_hat), each (N, 28, 28).

        With ``sample=True`` z is drawn from the posterior (training); otherwise z = mu.
        """
        m = self._prepare(mixtures)
        self._mu, self._logvar = self.head.forward(self._encode(m[:, None]))
        z = self.reparam.forward(self._mu, self._logvar, rng=rng, sample=sample)
        self._logits = self._decode(z)
        digit, fashion = self._sources(self._logits, m)
        return digit, fashion, self.mix(digit, fashion)

    def separate(self, mixtures, batch_size: int = 500):
        """Deterministic separation (posterior mean), in batches to bound memory.

        mixtures (N, 28, 28) float in [0, 1], or uint8 0..255 (divided by 255, as
        ``npvae.data.mnist.load_images`` returns them) -> digit, fashion, mixture_hat, each
        (N, 28, 28) float in [0, 1]. Anything else (NaN, values outside [0, 1], an empty
        batch, flat or single images) is refused with a ValueError naming the fix.
        """
        m = as_unit_images(mixtures, SIDE, self.dtype)
        was_training = self.training
        self.eval()
        outs = [self.forward(m[i:i + batch_size], sample=False) for i in range(0, len(m), batch_size)]
        self.train(was_training)
        return tuple(np.concatenate([o[k] for o in outs]) for k in range(3))

    # -- the objective --------------------------------------------------------------------
    def loss(self, mixture, digit, fashion, beta: float = 1.0, recon: str = "bce", mix_weight: float = 1.0,
             rng=None, sample: bool = True, backward: bool = True) -> dict:
        """Negative ELBO of the separation, per sample (sums over pixels, mean over the batch):

        ``rec(digit) + rec(fashion) + mix_weight * rec(mixture) + beta * KL``.

        ``recon`` is "bce", "mse" or "l1". With ``backward=True`` the gradients of every
        parameter are filled. Returns the terms as floats: total, digit, fashion,
        mixture, kl.
        """
        if recon not in RECON_LOSSES:
            raise ValueError(f"unknown reconstruction loss {recon!r}: choose one of {RECON_LOSSES}")
        d_hat, f_hat, m_hat = self.forward(mixture, rng=rng, sample=sample)
        digit, fashion = digit.astype(self.dtype, copy=False), fashion.astype(self.dtype, copy=False)
        if recon == "bce" and self.output == "sources":
            ld, gld = losses.bce_with_logits(self._logits[:, 0], digit)
            lf, glf = losses.bce_with_logits(self._logits[:, 1], fashion)
        else:
            fn = losses.probability_loss(recon)
            ld, gd = fn(d_hat, digit)
            lf, gf = fn(f_hat, fashion)
        lm, gm = losses.probability_loss(recon)(m_hat, mixture.astype(self.dtype, copy=False))
        kl, dmu, dlogvar = kl_divergence(self._mu, self._logvar)
        # With beta = 0 the KL is only reported: an unconstrained latent can make it
        # overflow, and 0 * inf would turn the loss and the gradients into NaN.
        terms = {"total": ld + lf + mix_weight * lm + (beta * kl if beta else 0.0), "digit": ld, "fashion": lf,
                 "mixture": lm, "kl": kl}
        if not backward:
            return terms
        # the mixture term reaches both sources through the mixing rule
        gm = gm * mix_weight
        if self.rule == "average":
            gm_src = gm * self.dtype.type(0.5)
        else:
            gm_src = gm * ((d_hat + f_hat) < 1)
        if recon == "bce" and self.output == "sources":
            dlogits = np.stack([gld, glf], axis=1)
            dlogits += self._sources_backward(gm_src, gm_src, d_hat, f_hat)
        else:
            dlogits = self._sources_backward(gd + gm_src, gf + gm_src, d_hat, f_hat)
        dz = self._decode_backward(dlogits.astype(self.dtype, copy=False))
        dmu_rep, dlogvar_rep = self.reparam.backward(dz)
        if beta:
            dmu_rep, dlogvar_rep = dmu_rep + beta * dmu, dlogvar_rep + beta * dlogvar
        dfeat = self.head.backward(dmu_rep, dlogvar_rep)
        self._encode_backward(dfeat)
        return terms

    def hyper(self):
        return {"latent_dim": self.latent_dim, "output": self.output, "rule": self.rule}


@register
class DenseSeparationVAE(SeparationVAE):
    """784 -> hidden... -> Gaussian(latent_dim) -> ...hidden -> 2 x 784 (or 784 for "split").

    Leaky-ReLU hidden layers; the decoder mirrors the encoder's widths.
    """

    def __init__(self, latent_dim: int = 32, hidden=(512, 256), output: str = "sources",
                 rule: str = "average", rng=None, dtype=np.float32):
        super().__init__(latent_dim, output, rule, dtype)
        rng = default_rng(rng)
        self.hidden = tuple(int(h) for h in hidden)
        widths = (PIXELS,) + self.hidden
        self.encoder = Sequential(Flatten(), *(Dense(a, b, activation="leaky_relu", rng=rng, dtype=dtype)
                                               for a, b in zip(widths[:-1], widths[1:])))
        self.head = GaussianHead(widths[-1], latent_dim, rng=rng, dtype=dtype)
        back = (latent_dim,) + self.hidden[::-1]
        self.decoder = Sequential(*(Dense(a, b, activation="leaky_relu", rng=rng, dtype=dtype)
                                    for a, b in zip(back[:-1], back[1:])),
                                  Dense(back[-1], self.out_channels * PIXELS, rng=rng, dtype=dtype),
                                  Reshape((self.out_channels, SIDE, SIDE)))

    def children(self):
        return {"encoder": self.encoder, "head": self.head, "decoder": self.decoder}

    def _encode(self, x):
        return self.encoder.forward(x)

    def _encode_backward(self, dfeat):
        self.encoder.backward(dfeat)

    def _decode(self, z):
        return self.decoder.forward(z)

    def _decode_backward(self, dlogits):
        return self.decoder.backward(dlogits)

    def hyper(self):
        return {**super().hyper(), "hidden": list(self.hidden)}


@register
class ConvSeparationVAE(DenseSeparationVAE):
    """Strided-conv encoder (28 -> 14 -> 7), Gaussian latent, transposed-conv decoder.

    encoder: conv4x4/2 (1 -> c1), conv4x4/2 (c1 -> c2), flatten c2*7*7, dense -> hidden;
    decoder: dense latent -> hidden -> c2*7*7, convT4x4/2 (c2 -> c1), convT4x4/2 (c1 -> S).
    """

    def __init__(self, latent_dim: int = 32, channels=(32, 64), hidden: int = 256, output: str = "sources",
                 rule: str = "average", rng=None, dtype=np.float32):
        SeparationVAE.__init__(self, latent_dim, output, rule, dtype)
        rng = default_rng(rng)
        c1, c2 = self.channels = tuple(int(c) for c in channels)
        self.hidden = int(hidden)
        flat = c2 * 7 * 7
        act = dict(alpha=0.2)
        self.encoder = Sequential(
            Conv2d(1, c1, 4, stride=2, padding=1, rng=rng, dtype=dtype), LeakyReLU(**act),
            Conv2d(c1, c2, 4, stride=2, padding=1, rng=rng, dtype=dtype), LeakyReLU(**act),
            Flatten(), Dense(flat, self.hidden, activation="leaky_relu", alpha=0.2, rng=rng, dtype=dtype))
        self.head = GaussianHead(self.hidden, latent_dim, rng=rng, dtype=dtype)
        self.decoder = Sequential(
            Dense(latent_dim, self.hidden, activation="leaky_relu", alpha=0.2, rng=rng, dtype=dtype),
            Dense(self.hidden, flat, activation="leaky_relu", alpha=0.2, rng=rng, dtype=dtype),
            Reshape((c2, 7, 7)),
            ConvTranspose2d(c2, c1, 4, stride=2, padding=1, rng=rng, dtype=dtype), LeakyReLU(**act),
            ConvTranspose2d(c1, self.out_channels, 4, stride=2, padding=1, rng=rng, dtype=dtype))

    def hyper(self):
        return {"latent_dim": self.latent_dim, "channels": list(self.channels), "hidden": self.hidden,
                "output": self.output, "rule": self.rule}


@register
class UNetSeparationVAE(SeparationVAE):
    """A small U-Net whose bottleneck is a Gaussian latent, with the "split" output.

    ::

        x  (N, 1, 28, 28)   the mixture
        e1 = lrelu(conv3x3(x))             (N, c1, 28, 28)
        e2 = lrelu(conv4x4/2(e1))          (N, c2, 14, 14)
        e3 = lrelu(conv4x4/2(e2))          (N, c3, 7, 7)
        mu, logvar = dense(flatten(e3))    (N, latent_dim)
        d3 = lrelu(dense(z))               (N, c3, 7, 7)
        u2 = lrelu(convT4x4/2([d3, e3]))   (N, c2, 14, 14)
        u1 = lrelu(convT4x4/2([u2, e2]))   (N, c1, 28, 28)
        logits = conv3x3([u1, e1, x])      (N, S, 28, 28)

    The skips carry the detail a bottleneck blurs; the latent carries the global
    structure (which digit, which garment) and is regularised by the KL term.
    """

    def __init__(self, latent_dim: int = 32, channels=(16, 32, 64), output: str = "split",
                 rule: str = "average", rng=None, dtype=np.float32):
        super().__init__(latent_dim, output, rule, dtype)
        rng = default_rng(rng)
        c1, c2, c3 = self.channels = tuple(int(c) for c in channels)
        kw = dict(rng=rng, dtype=dtype)
        self.enc1 = Conv2d(1, c1, 3, padding=1, **kw)
        self.enc2 = Conv2d(c1, c2, 4, stride=2, padding=1, **kw)
        self.enc3 = Conv2d(c2, c3, 4, stride=2, padding=1, **kw)
        self.head = GaussianHead(c3 * 49, latent_dim, **kw)
        self.expand = Dense(latent_dim, c3 * 49, activation="leaky_relu", alpha=0.2, **kw)
        self.up2 = ConvTranspose2d(2 * c3, c2, 4, stride=2, padding=1, **kw)
        self.up1 = ConvTranspose2d(2 * c2, c1, 4, stride=2, padding=1, **kw)
        self.out = Conv2d(2 * c1 + 1, self.out_channels, 3, padding=1, **kw)
        self.acts = {name: LeakyReLU(0.2) for name in ("enc1", "enc2", "enc3", "up2", "up1")}

    def children(self):
        return {"enc1": self.enc1, "enc2": self.enc2, "enc3": self.enc3, "head": self.head,
                "expand": self.expand, "up2": self.up2, "up1": self.up1, "out": self.out}

    def _act(self, name, layer, x):
        return self.acts[name].forward(layer.forward(x))

    def _encode(self, x):
        self._x = x
        self._e1 = self._act("enc1", self.enc1, x)
        self._e2 = self._act("enc2", self.enc2, self._e1)
        self._e3 = self._act("enc3", self.enc3, self._e2)
        return self._e3.reshape(len(x), -1)

    def _decode(self, z):
        c1, c2, c3 = self.channels
        d3 = self.expand.forward(z).reshape(len(z), c3, 7, 7)
        u2 = self._act("up2", self.up2, np.concatenate([d3, self._e3], axis=1))
        u1 = self._act("up1", self.up1, np.concatenate([u2, self._e2], axis=1))
        return self.out.forward(np.concatenate([u1, self._e1, self._x], axis=1))

    def _decode_backward(self, dlogits):
        c1, c2, c3 = self.channels
        dcat1 = self.out.backward(dlogits)
        du1, self._de1 = dcat1[:, :c1], dcat1[:, c1:2 * c1]
        dcat2 = self.up1.backward(self.acts["up1"].backward(du1))
        du2, self._de2 = dcat2[:, :c2], dcat2[:, c2:]
        dcat3 = self.up2.backward(self.acts["up2"].backward(du2))
        dd3, self._de3 = dcat3[:, :c3], dcat3[:, c3:]
        return self.expand.backward(np.ascontiguousarray(dd3).reshape(len(dd3), -1))

    def _encode_backward(self, dfeat):
        de3 = dfeat.reshape(self._e3.shape) + self._de3
        de2 = self.enc3.backward(self.acts["enc3"].backward(de3)) + self._de2
        de1 = self.enc2.backward(self.acts["enc2"].backward(de2)) + self._de1
        self.enc1.backward(self.acts["enc1"].backward(de1))

    def hyper(self):
        return {**super().hyper(), "channels": list(self.channels)}


MODELS = {"dense": DenseSeparationVAE, "conv": ConvSeparationVAE, "unet": UNetSeparationVAE}


def build_model(name: str, rng=None, dtype=np.float32, **kwargs) -> SeparationVAE:
    """A Part I model by its command-line name ("dense", "conv", "unet")."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {sorted(MODELS)}")
    return MODELS[name](rng=rng, dtype=dtype, **kwargs)
