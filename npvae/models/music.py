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

Options (:mod:`npvae.models.options`; the defaults build the network above): a BatchNorm
or GroupNorm after every convolution but the last (``norm``), pooling instead of strided
convolutions (``down``), dropout in the decoder (``dropout``), a residual block after
every level (``residual``) and a recurrent bottleneck over the frames (``rnn_layers``).
"""
from __future__ import annotations

import functools

import numpy as np

from ..layers.activations import LeakyReLU, Sigmoid
from ..layers.base import Layer, default_rng, expect_input, register
from ..layers.conv import Conv2d, ConvTranspose2d
from ..layers.dense import Dense
from ..layers.recurrent import LSTM
from ..layers.shape import FromSequence, ToSequence
from ..vae import Reparameterize
from . import options


@register
class SpectrogramUNetVAE(options.DropoutNoise, Layer):
    """Mask network: forward(x (N, 1, F, T)) -> masks (N, n_sources, F, T) in (0, 1).

    Parameters
    ----------
    channels : channels of the encoder levels (c1, ..., cn), n >= 2; each level halves
        F and T, so F and T must be multiples of ``DOWNSAMPLE = 2**n``.
    latent_channels : channels L of the Gaussian latent map at F/2**n x T/2**n.
    n_sources : number of masks (2: voice, accompaniment).
    kernel_size : odd size of the strided (transposed) convolutions.
    alpha : slope of the leaky ReLUs.
    norm : "none", "batch" or "group" (at most ``groups`` groups): a normalisation after
        every convolution but the last, before its activation (``enc1_norm``, ``decn_norm``...).
        The convolutions it follows have no bias unless ``norm_bias`` (see
        :mod:`npvae.models.options`).
    down : "stride" (the encoder's convolutions are strided), "max" or "avg" (each encoder
        convolution keeps the size and a 2x2 pooling ``pool1``... halves its output).
    dropout : p > 0 zeroes decoder features (elementwise, after every decoder level but
        the last: ``decn_drop`` ... ``dec2_drop``) in training, from ``self.rng``.
    residual : a residual block after every level but the last decoder one:
        ``h + act(norm(conv k x k (h)))`` (``enc1_res``, ..., ``dec2_res``).
    rnn_layers, rnn_hidden, freq_bins : a recurrent bottleneck (0 layers: none). The
        bottom encoder's map (N, cn, F', T'), F' = freq_bins / 2**n, is read as a sequence
        of T' frames of cn*F' features, projected to ``rnn_hidden`` (``rnn_in``, tanh),
        run through a bidirectional LSTM of ``rnn_layers`` layers (``rnn``, rnn_hidden / 2
        units each way), projected back (``rnn_out``) and added to the map: the latent
        then sees the whole excerpt. The input's F must then be ``freq_bins``.
    in_channels : channels of the input (1: the mixture's features; more where a model
        feeds it extra maps, as :mod:`npvae.models.stacked` feeds the masks before).

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
                 kernel_size: int = 5, alpha: float = 0.2, norm: str = "none", down: str = "stride",
                 dropout: float = 0.0, residual: bool = False, rnn_layers: int = 0, rnn_hidden: int = 256,
                 freq_bins: int | None = None, groups: int = options.GROUPS, norm_bias: bool = False,
                 in_channels: int = 1, rng=None, dtype=np.float32):
        super().__init__(dtype)
        rng = default_rng(rng)
        if len(channels) < 2 or min(channels) <= 0:
            raise ValueError(f"channels must be two or more positive ints (c1, c2, ...), one per level, got {channels}")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if isinstance(in_channels, bool) or not isinstance(in_channels, (int, np.integer)) or in_channels < 1:
            raise ValueError(f"SpectrogramUNetVAE: in_channels must be a whole number >= 1, got {in_channels!r}")
        self.in_channels = int(in_channels)
        options.check_options(type(self).__name__, norm, down, dropout, groups, norm_bias)
        self.channels = tuple(int(c) for c in channels)
        self.levels = len(self.channels)
        self.DOWNSAMPLE = 2 ** self.levels
        self.latent_channels, self.n_sources = int(latent_channels), int(n_sources)
        self.kernel_size, self.alpha = int(kernel_size), float(alpha)
        self.norm, self.down, self.dropout, self.residual = norm, down, float(dropout), bool(residual)
        self.groups, self.norm_bias = int(groups), bool(norm_bias)
        self.rnn_layers, self.rnn_hidden = _check_rnn(rnn_layers, rnn_hidden, freq_bins, self.DOWNSAMPLE)
        self.freq_bins = None if freq_bins is None else int(freq_bins)
        c, n = self.channels, self.levels
        k, p = self.kernel_size, self.kernel_size // 2
        kw = dict(rng=rng, dtype=dtype)
        normed = dict(kw, bias=options.conv_bias(norm, norm_bias))     # the convolutions a norm follows
        stride = 1 if down != "stride" else 2
        self.encoders = [Conv2d(self.in_channels if i == 0 else c[i - 1], c[i], k, stride=stride, padding=p, **normed)
                         for i in range(n)]
        self.head = Conv2d(c[-1], 2 * self.latent_channels, 1, **kw)
        # decoders[i] makes level i's output (i = n-1 ... 0): from z at the bottom, from
        # [decoders[i+1]'s output, encoders[i]'s output] above it
        self.decoders = [ConvTranspose2d(self.latent_channels if i == n - 1 else 2 * c[i],
                                         self.n_sources if i == 0 else c[i - 1], k, stride=2, padding=p,
                                         output_padding=1, **(kw if i == 0 else normed)) for i in range(n)]
        for name, layer in self.children().items():    # enc1, ..., head, ..., dec1 by name too
            setattr(self, name, layer)
        self.acts = [LeakyReLU(self.alpha, dtype=dtype) for _ in range(2 * n - 1)]
        self.out = Sigmoid(dtype=dtype)
        # the options' layers, by name; none with the defaults
        width = {f"enc{i + 1}": c[i] for i in range(n)}
        width.update({f"dec{i + 1}": c[i - 1] for i in range(1, n)})
        self.extra = {}
        if self.residual:
            for name in width:
                self.extra[f"{name}_res"] = Conv2d(width[name], width[name], k, padding=p, **normed)
        self.res_acts = {name: LeakyReLU(self.alpha, dtype=dtype) for name in self.extra}
        for name in [*width, *self.extra]:
            layer = options.make_norm(norm, width[name.split("_")[0]], self.groups, dtype)
            if layer is not None:
                self.extra[f"{name}_norm"] = layer
        for i in range(n):
            layer = options.make_pool(down, dtype)
            if layer is not None:
                self.extra[f"pool{i + 1}"] = layer
        for i in range(n - 1, 0, -1):
            layer = options.make_dropout(self.dropout, dtype)
            if layer is not None:
                self.extra[f"dec{i + 1}_drop"] = layer
        if self.rnn_layers:
            features = c[-1] * (self.freq_bins // self.DOWNSAMPLE)
            self.extra["rnn_in"] = Dense(features, self.rnn_hidden, activation="tanh", **kw)
            self.extra["rnn"] = LSTM(self.rnn_hidden, self.rnn_hidden // 2, self.rnn_layers, bidirectional=True, **kw)
            self.extra["rnn_out"] = Dense(self.rnn_hidden, features, **kw)
            self._to_seq, self._from_seq = ToSequence(dtype=dtype), FromSequence(c[-1], self.freq_bins // self.DOWNSAMPLE,
                                                                                 dtype=dtype)
        self.reparam = Reparameterize()
        self.rng = rng
        self.mu = self.logvar = self.logits = None

    def noise_parts(self):
        return [layer for name, layer in getattr(self, "extra", {}).items() if name.endswith("_drop")]

    @property
    def context_frames(self) -> int:
        """Frames of input a separated chunk needs on each side: at least 48 and the
        receptive-field radius of the convolutions (bounded by (k // 2) * (2**n - 1) frames
        for the encoder and as much for the decoder; three times that with residual
        blocks, one frame more per level and resolution with pooling), rounded up to a
        multiple of ``DOWNSAMPLE``. A recurrent bottleneck sees the whole chunk."""
        per_level = (self.kernel_size // 2) * (3 if self.residual else 1) + (self.down != "stride")
        radius = 2 * per_level * (2 ** self.levels - 1)
        d = self.DOWNSAMPLE
        return -(-max(48, radius) // d) * d

    def children(self):
        n = self.levels
        return {**{f"enc{i + 1}": self.encoders[i] for i in range(n)}, "head": self.head,
                **{f"dec{i + 1}": self.decoders[i] for i in reversed(range(n))}, **getattr(self, "extra", {})}

    def batchnorm_pairs(self):
        """``(convolution, BatchNorm, drop)`` for :func:`npvae.layers.fold_batchnorm`; with
        its BatchNorm dropped, a convolution applies the activation itself."""
        return options.batchnorm_pairs(self.extra, lambda name: self.extra.get(name) or getattr(self, name))

    def _unit(self, conv, name, act, x):
        """act(norm(conv(x))) with the norm of ``name`` if there is one; without, the
        activation is fused into the convolution in inference."""
        norm = self.extra.get(f"{name}_norm")
        if norm is None:
            return conv.forward(x, act=act)
        return act.forward(norm.forward(conv.forward(x)))

    def _unit_backward(self, conv, name, act, dy):
        dy = act.backward(dy)
        norm = self.extra.get(f"{name}_norm")
        return conv.backward(dy if norm is None else norm.backward(dy))

    def _after(self, name, h):
        """What follows level ``name``'s convolution: its pooling, residual block, dropout."""
        return options.level_forward(self.extra, name, functools.partial(self._residual, name), h)

    def _after_backward(self, name, dy):
        return options.level_backward(self.extra, name, functools.partial(self._residual_backward, name), dy)

    def _residual(self, name, h):
        """h plus level ``name``'s residual block, if it has one."""
        res = f"{name}_res"
        return h + self._unit(self.extra[res], res, self.res_acts[res], h) if res in self.extra else h

    def _residual_backward(self, name, dy):
        res = f"{name}_res"
        return dy + self._unit_backward(self.extra[res], res, self.res_acts[res], dy) if res in self.extra else dy

    def _recurrent(self, h):
        """h + the recurrent bottleneck's output, (N, cn, F', T') both."""
        seq = self.extra["rnn_in"].forward(self._to_seq.forward(h))
        seq = self.extra["rnn_out"].forward(self.extra["rnn"].forward(seq))
        return h + self._from_seq.forward(seq)

    def _recurrent_backward(self, dy):
        g = self.extra["rnn_out"].backward(self._from_seq.backward(dy))
        g = self.extra["rnn_in"].backward(self.extra["rnn"].backward(g))
        return dy + self._to_seq.backward(g)

    def forward(self, x, sample: bool | None = None):
        """x : (N, 1, F, T) with F, T multiples of ``DOWNSAMPLE`` (F = ``freq_bins`` with a
        recurrent bottleneck). ``sample`` defaults to ``self.training``."""
        expect_input(self, x, 4, f"(N, {self.in_channels}, F, T)", 1, self.in_channels)
        f, t = x.shape[2:]
        d = self.DOWNSAMPLE
        if f % d or t % d:
            raise ValueError(f"SpectrogramUNetVAE needs F and T divisible by {d}, "
                             f"got input of shape {x.shape}; pad the spectrogram first")
        if self.rnn_layers and f != self.freq_bins:
            raise ValueError(f"SpectrogramUNetVAE with a recurrent bottleneck was built for {self.freq_bins} frequency "
                             f"bins, got input of shape {x.shape}; use the STFT the model was trained with")
        a, n = self.acts, self.levels
        skips = []
        h = x
        for i in range(n):
            # conv(h, act=a) is a.forward(conv(h)); in inference, one pass over the output
            h = self._after(f"enc{i + 1}", self._unit(self.encoders[i], f"enc{i + 1}", a[i], h))
            skips.append(h)
        if self.rnn_layers:
            h = self._recurrent(h)
        h = self.head.forward(h)
        L = self.latent_channels
        self.mu, self.logvar = h[:, :L], h[:, L:]
        sample = self.training if sample is None else sample
        z = self.reparam.forward(self.mu, self.logvar, self.rng, sample=sample)
        h = self._after(f"dec{n}", self._unit(self.decoders[n - 1], f"dec{n}", a[n], np.ascontiguousarray(z)))
        for i in range(n - 2, 0, -1):
            h = self._unit(self.decoders[i], f"dec{i + 1}", a[2 * n - 1 - i], np.concatenate([h, skips[i]], axis=1))
            h = self._after(f"dec{i + 1}", h)
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
        for act in (*self.acts, *self.res_acts.values(), self.out):
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
            dh = self._after_backward(f"dec{i + 1}", dh)
            g = self._unit_backward(self.decoders[i], f"dec{i + 1}", a[2 * n - 1 - i], dh)   # (N, 2*c(i+1), ...)
            dh, dskips[i] = g[:, :c[i]], g[:, c[i]:]
        dz = self._unit_backward(self.decoders[n - 1], f"dec{n}", a[n], self._after_backward(f"dec{n}", dh))
        gmu, glv = self.reparam.backward(dz)
        if dmu is not None:
            gmu = gmu + dmu
        if dlogvar is not None:
            glv = glv + dlogvar
        dh = self.head.backward(np.concatenate([gmu, glv], axis=1))
        if self.rnn_layers:
            dh = self._recurrent_backward(dh)
        for i in range(n - 1, -1, -1):
            if dskips[i] is not None:
                dh = dh + dskips[i]
            dh = self._unit_backward(self.encoders[i], f"enc{i + 1}", a[i], self._after_backward(f"enc{i + 1}", dh))
        return dh

    @classmethod
    def from_spec(cls, spec: dict, rng=None, dtype=None):
        return super().from_spec(options.spec_defaults(spec), rng=rng, dtype=dtype)

    def hyper(self):
        out = {"channels": list(self.channels), "latent_channels": self.latent_channels,
               "n_sources": self.n_sources, "kernel_size": self.kernel_size, "alpha": self.alpha}
        out.update(options.options_hyper(self.norm, self.down, self.dropout, self.groups, self.residual,
                                         self.norm_bias))
        if self.in_channels != 1:   # likewise: only a stacked model's later hourglasses have more
            out["in_channels"] = self.in_channels
        if self.rnn_layers:     # files of models without one stay as they were
            out.update(rnn_layers=self.rnn_layers, rnn_hidden=self.rnn_hidden, freq_bins=self.freq_bins)
        return out


def _check_rnn(layers, hidden, freq_bins, downsample: int) -> tuple[int, int]:
    """The recurrent bottleneck's (layers, hidden) after checking them, and freq_bins."""
    for key, value, low in (("rnn_layers", layers, 0), ("rnn_hidden", hidden, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"SpectrogramUNetVAE: {key} must be a whole number >= {low}, got {value!r}")
    if layers and hidden % 2:
        raise ValueError(f"SpectrogramUNetVAE: rnn_hidden is split between the LSTM's two directions: it must be "
                         f"even, got {hidden}")
    if layers and (freq_bins is None or isinstance(freq_bins, bool) or not isinstance(freq_bins, (int, np.integer))
                   or freq_bins < downsample or freq_bins % downsample):
        raise ValueError(f"SpectrogramUNetVAE: a recurrent bottleneck needs freq_bins, the input's frequency bins, a "
                         f"multiple of {downsample} (2**levels), got {freq_bins!r}")
    return int(layers), int(hidden)
