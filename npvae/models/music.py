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

That is the default of three levels; ``channels`` of length n builds n levels (F and T
then multiples of 2**n), each one more halving and one more skip. The skip connections
carry the fine detail that masks need; the latent carries the coarse structure and is regularised by the
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
    channels : channels of the encoder levels (c1, ..., cn), n >= 2; each level halves
        F and T, so F and T must be multiples of ``DOWNSAMPLE = 2**n``.
    latent_channels : channels L of the Gaussian latent map at F/2**n x T/2**n.
    n_sources : number of masks (2: voice, accompaniment).
    kernel_size : odd size of the strided (transposed) convolutions.
    alpha : slope of the leaky ReLUs.

    With n levels: ``enc1..encn`` (conv k x k / 2), ``head`` (conv1x1 to [mu, logvar]),
    ``decn`` (convT from z to c(n-1)), ``dec(k)`` (convT from [dec(k+1), enc(k)] to c(k-1))
    down to ``dec1`` (to the masks' logits); three levels are the layout drawn above.

    After ``forward`` the posterior parameters are in ``self.mu`` and ``self.logvar``
    (N, L, F/2**n, T/2**n), and in training mode the masks' logits in ``self.logits``
    (N, n_sources, F, T); ``backward(dmasks, dmu=None, dlogvar=None, dlogits=None)`` adds
    the KL gradients, if given, at the bottleneck (and a loss's gradient on the logits at
    the top) and returns dx. Inside
    ``npvae.layers.inference()`` the layers keep nothing for backward and each
    convolution applies its activation to its output in place: the same masks.
    """

    DOWNSAMPLE = 8   # of the default three levels; an instance's own is 2**len(channels)

    def __init__(self, channels=(16, 32, 64), latent_channels: int = 32, n_sources: int = 2,
                 kernel_size: int = 5, alpha: float = 0.2, rng=None, dtype=np.float32):
        super().__init__(dtype)
        rng = default_rng(rng)
        if len(channels) < 2 or min(channels) <= 0:
            raise ValueError(f"channels must be two or more positive ints (c1, c2, ...), one per level, got {channels}")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.channels = tuple(int(c) for c in channels)
        self.levels = len(self.channels)
        self.DOWNSAMPLE = 2 ** self.levels
        self.latent_channels, self.n_sources = int(latent_channels), int(n_sources)
        self.kernel_size, self.alpha = int(kernel_size), float(alpha)
        c, n = self.channels, self.levels
        k, p = self.kernel_size, self.kernel_size // 2
        kw = dict(rng=rng, dtype=dtype)
        self.encoders = [Conv2d(1 if i == 0 else c[i - 1], c[i], k, stride=2, padding=p, **kw) for i in range(n)]
        self.head = Conv2d(c[-1], 2 * self.latent_channels, 1, **kw)
        # decoders[i] makes level i's output (i = n-1 ... 0): from z at the bottom, from
        # [decoders[i+1]'s output, encoders[i]'s output] above it
        self.decoders = [ConvTranspose2d(self.latent_channels if i == n - 1 else 2 * c[i],
                                         self.n_sources if i == 0 else c[i - 1], k, stride=2, padding=p,
                                         output_padding=1, **kw) for i in range(n)]
        for name, layer in self.children().items():    # enc1, ..., head, ..., dec1 by name too
            setattr(self, name, layer)
        self.acts = [LeakyReLU(self.alpha, dtype=dtype) for _ in range(2 * n - 1)]
        self.out = Sigmoid(dtype=dtype)
        self.reparam = Reparameterize()
        self.rng = rng
        self.mu = self.logvar = self.logits = None

    @property
    def context_frames(self) -> int:
        """Frames of input a separated chunk needs on each side: at least 48 and the
        receptive-field radius (bounded by (k // 2) * (2**n - 1) frames for the encoder and
        as much for the decoder), rounded up to a multiple of ``DOWNSAMPLE``."""
        radius = 2 * (self.kernel_size // 2) * (2 ** self.levels - 1)
        d = self.DOWNSAMPLE
        return -(-max(48, radius) // d) * d

    def children(self):
        n = self.levels
        return {**{f"enc{i + 1}": self.encoders[i] for i in range(n)}, "head": self.head,
                **{f"dec{i + 1}": self.decoders[i] for i in reversed(range(n))}}

    def forward(self, x, sample: bool | None = None):
        """x : (N, 1, F, T) with F, T multiples of ``DOWNSAMPLE``. ``sample`` defaults to ``self.training``."""
        expect_input(self, x, 4, "(N, 1, F, T)", 1, 1)
        f, t = x.shape[2:]
        d = self.DOWNSAMPLE
        if f % d or t % d:
            raise ValueError(f"SpectrogramUNetVAE needs F and T divisible by {d}, "
                             f"got input of shape {x.shape}; pad the spectrogram first")
        a, n = self.acts, self.levels
        skips = []
        h = x
        for i in range(n):
            # conv(h, act=a) is a.forward(conv(h)); in inference, one pass over the output
            h = self.encoders[i].forward(h, act=a[i])
            skips.append(h)
        h = self.head.forward(h)
        L = self.latent_channels
        self.mu, self.logvar = h[:, :L], h[:, L:]
        sample = self.training if sample is None else sample
        z = self.reparam.forward(self.mu, self.logvar, self.rng, sample=sample)
        h = self.decoders[n - 1].forward(np.ascontiguousarray(z), act=a[n])
        for i in range(n - 2, 0, -1):
            h = self.decoders[i].forward(np.concatenate([h, skips[i]], axis=1), act=a[2 * n - 1 - i])
        h = np.concatenate([h, skips[0]], axis=1)
        if not self.training:
            self.logits = None
            return self.decoders[0].forward(h, act=self.out)
        # training keeps the logits for a loss taken on them (see backward's dlogits)
        self.logits = self.decoders[0].forward(h)
        return self.out.forward(self.logits)

    def forget(self):
        super().forget()
        self.logits = None
        for act in (*self.acts, self.out):
            act.forget()

    def backward(self, dy, dmu=None, dlogvar=None, dlogits=None):
        """dy : (N, n_sources, F, T) gradient for the masks; dmu, dlogvar : optional
        extra gradients (the KL term's) for the posterior parameters; dlogits : optional
        extra gradient (N, n_sources, F, T) for the masks' logits (a loss taken on them,
        training mode only: the logits are kept in ``self.logits``). Returns dx."""
        a, n, c = self.acts, self.levels, self.channels
        dskips = [None] * n
        g = self.out.backward(dy)
        if dlogits is not None:
            if self.logits is None:
                raise ValueError("dlogits needs the logits of a forward pass in training mode (model.train())")
            g = g + dlogits
        g = self.decoders[0].backward(g)                                  # (N, 2*c1, F/2, T/2)
        dh, dskips[0] = g[:, :c[0]], g[:, c[0]:]
        for i in range(1, n - 1):
            g = self.decoders[i].backward(a[2 * n - 1 - i].backward(dh))  # (N, 2*c(i+1), ...)
            dh, dskips[i] = g[:, :c[i]], g[:, c[i]:]
        dz = self.decoders[n - 1].backward(a[n].backward(dh))
        gmu, glv = self.reparam.backward(dz)
        if dmu is not None:
            gmu = gmu + dmu
        if dlogvar is not None:
            glv = glv + dlogvar
        dh = self.head.backward(np.concatenate([gmu, glv], axis=1))
        for i in range(n - 1, -1, -1):
            if dskips[i] is not None:
                dh = dh + dskips[i]
            dh = self.encoders[i].backward(a[i].backward(dh))
        return dh

    def hyper(self):
        return {"channels": list(self.channels), "latent_channels": self.latent_channels,
                "n_sources": self.n_sources, "kernel_size": self.kernel_size, "alpha": self.alpha}
