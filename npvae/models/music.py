"""A convolutional VAE that turns a mixture spectrogram into soft source masks.

:class:`SpectrogramUNetVAE` is a small U-Net (Jansson et al. 2017, scaled down)
whose bottleneck is a Gaussian latent, as in a VAE:

    x (N, 1, F, T)  normalised, compressed mixture magnitude
    enc1 = lrelu(conv5x5/2(x))            (N, c1, F/2, T/2)
    enc2 = lrelu(conv5x5/2(enc1))         (N, c2, F/4, T/4)
    enc3 = lrelu(conv5x5/2(enc2))         (N, c3, F/8, T/8)
    mu, logvar = conv1x1(enc3)            (N, L, F/8, T/8) each
    z = mu + exp(logvar / 2) * eps        (z = mu in eval mode)
    dec2 = lrelu(convT5x5/2(z))           (N, c2, F/4, T/4), then concatenated with enc2
    dec1 = lrelu(convT5x5/2([dec2,enc2])) (N, c1, F/2, T/2), then concatenated with enc1
    logits = convT5x5/2([dec1, enc1])     (N, S, F, T)
    masks = sigmoid(logits)               one soft mask per source (voice, accompaniment)

F and T must be multiples of 8. The skip connections carry the fine detail that
masks need; the latent carries the coarse structure and is regularised by the
KL term (:func:`npvae.vae.kl_divergence` on ``model.mu``/``model.logvar``).
"""
from __future__ import annotations

import numpy as np

from ..layers.activations import LeakyReLU, Sigmoid
from ..layers.base import Layer, default_rng, expect_input, register
from ..layers.conv import Conv2d, ConvTranspose2d
from ..vae import Reparameterize


@register
class SpectrogramUNetVAE(Layer):
    """Mask network: forward(x (N, 1, F, T)) -> masks (N, n_sources, F, T) in (0, 1).

    Parameters
    ----------
    channels : channels of the three encoder levels (c1, c2, c3).
    latent_channels : channels L of the Gaussian latent map at F/8 x T/8.
    n_sources : number of masks (2: voice, accompaniment).
    kernel_size : odd size of the strided (transposed) convolutions.
    alpha : slope of the leaky ReLUs.

    After ``forward`` the posterior parameters are in ``self.mu`` and ``self.logvar``
    (N, L, F/8, T/8); ``backward(dmasks, dmu=None, dlogvar=None)`` adds the KL
    gradients, if given, at the bottleneck and returns dx.
    """

    DOWNSAMPLE = 8

    def __init__(self, channels=(16, 32, 64), latent_channels: int = 32, n_sources: int = 2,
                 kernel_size: int = 5, alpha: float = 0.2, rng=None, dtype=np.float32):
        super().__init__(dtype)
        rng = default_rng(rng)
        if len(channels) != 3 or min(channels) <= 0:
            raise ValueError(f"channels must be three positive ints (c1, c2, c3), got {channels}")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.channels = tuple(int(c) for c in channels)
        self.latent_channels, self.n_sources = int(latent_channels), int(n_sources)
        self.kernel_size, self.alpha = int(kernel_size), float(alpha)
        c1, c2, c3 = self.channels
        k, p = self.kernel_size, self.kernel_size // 2
        kw = dict(rng=rng, dtype=dtype)
        self.enc1 = Conv2d(1, c1, k, stride=2, padding=p, **kw)
        self.enc2 = Conv2d(c1, c2, k, stride=2, padding=p, **kw)
        self.enc3 = Conv2d(c2, c3, k, stride=2, padding=p, **kw)
        self.head = Conv2d(c3, 2 * self.latent_channels, 1, **kw)
        self.dec3 = ConvTranspose2d(self.latent_channels, c2, k, stride=2, padding=p, output_padding=1, **kw)
        self.dec2 = ConvTranspose2d(2 * c2, c1, k, stride=2, padding=p, output_padding=1, **kw)
        self.dec1 = ConvTranspose2d(2 * c1, self.n_sources, k, stride=2, padding=p, output_padding=1, **kw)
        self.acts = [LeakyReLU(self.alpha, dtype=dtype) for _ in range(5)]
        self.out = Sigmoid(dtype=dtype)
        self.reparam = Reparameterize()
        self.rng = rng
        self.mu = self.logvar = None

    def children(self):
        return {"enc1": self.enc1, "enc2": self.enc2, "enc3": self.enc3, "head": self.head,
                "dec3": self.dec3, "dec2": self.dec2, "dec1": self.dec1}

    def forward(self, x, sample: bool | None = None):
        """x : (N, 1, F, T) with F, T multiples of 8. ``sample`` defaults to ``self.training``."""
        expect_input(self, x, 4, "(N, 1, F, T)", 1, 1)
        f, t = x.shape[2:]
        if f % self.DOWNSAMPLE or t % self.DOWNSAMPLE:
            raise ValueError(f"SpectrogramUNetVAE needs F and T divisible by {self.DOWNSAMPLE}, "
                             f"got input of shape {x.shape}; pad the spectrogram first")
        a = self.acts
        e1 = a[0].forward(self.enc1.forward(x))
        e2 = a[1].forward(self.enc2.forward(e1))
        e3 = a[2].forward(self.enc3.forward(e2))
        h = self.head.forward(e3)
        L = self.latent_channels
        self.mu, self.logvar = h[:, :L], h[:, L:]
        sample = self.training if sample is None else sample
        z = self.reparam.forward(self.mu, self.logvar, self.rng, sample=sample)
        d2 = a[3].forward(self.dec3.forward(np.ascontiguousarray(z)))
        d1 = a[4].forward(self.dec2.forward(np.concatenate([d2, e2], axis=1)))
        return self.out.forward(self.dec1.forward(np.concatenate([d1, e1], axis=1)))

    def backward(self, dy, dmu=None, dlogvar=None):
        """dy : (N, n_sources, F, T) gradient for the masks; dmu, dlogvar : optional
        extra gradients (the KL term's) for the posterior parameters. Returns dx."""
        a = self.acts
        c1, c2, _ = self.channels
        g = self.dec1.backward(self.out.backward(dy))                   # (N, 2*c1, F/2, T/2)
        dd1, de1 = g[:, :c1], g[:, c1:]
        g = self.dec2.backward(a[4].backward(dd1))                      # (N, 2*c2, F/4, T/4)
        dd2, de2 = g[:, :c2], g[:, c2:]
        dz = self.dec3.backward(a[3].backward(dd2))
        gmu, glv = self.reparam.backward(dz)
        if dmu is not None:
            gmu = gmu + dmu
        if dlogvar is not None:
            glv = glv + dlogvar
        dh = self.head.backward(np.concatenate([gmu, glv], axis=1))
        de2 = de2 + self.enc3.backward(a[2].backward(dh))
        de1 = de1 + self.enc2.backward(a[1].backward(de2))
        return self.enc1.backward(a[0].backward(de1))

    def hyper(self):
        return {"channels": list(self.channels), "latent_channels": self.latent_channels,
                "n_sources": self.n_sources, "kernel_size": self.kernel_size, "alpha": self.alpha}
