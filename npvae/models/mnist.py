"""VAEs that separate a mixture of an MNIST digit and a Fashion-MNIST item.

All four models see only the mixture ``m`` (N, 28, 28) and return both sources;
they differ in how the decoder produces them:

* :class:`DenseSeparationVAE` -- dense encoder, Gaussian latent, dense decoder
  emitting two images (the assignment's plain VAE).
* :class:`ConvSeparationVAE` -- the same with strided convolutions.
* :class:`UNetSeparationVAE` -- convolutional encoder and decoder joined by skip
  connections, a Gaussian latent at the bottleneck, and a *consistent* mask-style
  output (below), so the decoder sees the mixture itself.
* :class:`LatentMapSeparationVAE` -- a convolutional VAE whose latent is a 7x7 map and
  whose decoder sees nothing but the latent: the separation lives in z.

Outputs. ``output="sources"`` decodes two logit images, ``digit = sigmoid(l_d)``
and ``fashion = sigmoid(l_f)``. ``output="split"`` decodes one logit image ``l``
that says how the mixture's total intensity ``T`` is shared: ``T = 2m`` for the
average rule (``T = m`` for the sum rule), ``digit = lo + sigmoid(l) (hi - lo)``
with ``lo = max(0, T - 1)``, ``hi = min(1, T)``, and ``fashion = T - digit``; both
stay in [0, 1] and mix back to the input exactly.

The reconstructed mixture is the mixing rule applied to the two estimates.

Every model follows the layer contract, as the music model does:
``forward(m (N, 28, 28)) -> y (N, 2, 28, 28)`` (digit and fashion estimates; the
posterior's ``mu``/``logvar`` and the decoder's ``logits`` stay on the model) and
``backward(dy, dmu=None, dlogvar=None, dlogits=None) -> dm (N, 28, 28)``. The loss is
not the model's: :class:`npvae.tasks.mnist.objective.SeparationObjective` computes it.
"""
from __future__ import annotations

import functools

import numpy as np

from ..layers.activations import LeakyReLU, sigmoid
from ..layers.base import Layer, backward_before_forward, default_rng, inference, register
from ..layers.conv import Conv2d, ConvTranspose2d
from ..layers.dense import Dense
from ..layers.fold import fold_batchnorm
from ..layers.sequential import Sequential
from ..layers.shape import Flatten, Reshape
from ..vae import GaussianHead, Reparameterize
from . import options
from ..inputs import as_batch_size, as_unit_images, check_finite_estimates

SIDE = 28
PIXELS = SIDE * SIDE
RULES = ("average", "sum")
OUTPUTS = ("sources", "split")


class SeparationVAE(Layer):
    """Shared machinery: the output transform, forward and backward, ``separate``.

    Subclasses build ``children()`` and implement ``_encode(x) -> features (N, F)``,
    ``_encode_backward(dfeatures) -> dx``, ``_decode(z) -> logits (N, S, 28, 28)`` and
    ``_decode_backward(dlogits) -> dz`` where S = 2 for "sources" and 1 for "split".
    ``x`` is the mixture as (N, 1, 28, 28). Sampling in training draws from ``self.rng``
    (the construction generator unless the caller sets another, e.g. the trainer's).
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
        self.rng = None
        self.mu = self.logvar = self.logits = None

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
    def _posterior(self, features):
        """The encoder's features -> (mu, logvar) of the Gaussian posterior."""
        return self.head.forward(features)

    def _posterior_backward(self, dmu, dlogvar):
        return self.head.backward(dmu, dlogvar)

    def _prepare(self, mixtures):
        m = np.asarray(mixtures)
        if m.ndim != 3 or m.shape[1:] != (SIDE, SIDE):
            raise ValueError(f"{type(self).__name__} expects mixtures of shape (N, 28, 28), got {m.shape}")
        return m.astype(self.dtype, copy=False)

    def forward(self, mixtures, sample: bool | None = None):
        """mixtures (N, 28, 28) in [0, 1] -> y (N, 2, 28, 28): the digit and fashion estimates.

        ``sample`` (default: ``self.training``) draws z from the posterior; otherwise z = mu.
        """
        m = self._prepare(mixtures)
        sample = self.training if sample is None else sample
        self.mu, self.logvar = self._posterior(self._encode(m[:, None]))
        z = self.reparam.forward(self.mu, self.logvar, rng=self.rng, sample=sample)
        self.logits = self._decode(z)
        self._m = m
        self._digit, self._fashion = self._sources(self.logits, m)
        return np.stack([self._digit, self._fashion], axis=1)

    def backward(self, dy=None, dmu=None, dlogvar=None, dlogits=None):
        """Gradients for the estimates ``dy`` (N, 2, 28, 28), and optionally for the posterior
        parameters (the KL term's) and for the decoder's logits directly (N, S, 28, 28: a
        loss taken on the logits, like BCE from logits, is steadier than one through the
        sigmoid). Fills every parameter's gradient; returns dm (N, 28, 28)."""
        if dy is None and dlogits is None:
            raise ValueError("backward needs dy, dlogits or both")
        if not hasattr(self, "_digit"):
            raise backward_before_forward(self)
        g = None if dy is None else self._sources_backward(dy[:, 0], dy[:, 1], self._digit, self._fashion)
        if dlogits is not None:
            g = dlogits if g is None else dlogits + g
        dz = self._decode_backward(g.astype(self.dtype, copy=False))
        gmu, glv = self.reparam.backward(dz)
        if dmu is not None:
            gmu = gmu + dmu
        if dlogvar is not None:
            glv = glv + dlogvar
        dm = self._encode_backward(self._posterior_backward(gmu, glv))[:, 0]
        if dy is not None and self.output == "split":
            dm = dm + self._split_input_grad(dy[:, 0], dy[:, 1])
        return dm

    def _split_input_grad(self, ddigit, dfashion):
        """What the "split" output adds to dm: digit and fashion depend on the total T itself."""
        t = self._total(self._m)
        dlo, dhi = (t > 1).astype(self.dtype), (t < 1).astype(self.dtype)
        s = self._split[0]
        d_digit_dt = dlo + s * (dhi - dlo)
        dt = ddigit * d_digit_dt + dfashion * (1 - d_digit_dt)
        return dt * self.dtype.type(2.0) if self.rule == "average" else dt

    def separate(self, mixtures, batch_size: int = 500):
        """Deterministic separation (posterior mean), in batches to bound memory.

        mixtures (N, 28, 28) float in [0, 1], or uint8 0..255 (divided by 255, as
        ``npvae.data.mnist.load_images`` returns them) -> digit, fashion, mixture_hat, each
        (N, 28, 28) float in [0, 1]. Anything else (NaN, values outside [0, 1], an empty
        batch, flat or single images) is refused with a ValueError naming the fix.
        """
        batch_size = as_batch_size(batch_size)
        m = as_unit_images(mixtures, SIDE, self.dtype)
        was_training = self.training
        self.eval()
        outs = []
        net = fold_batchnorm(self)              # itself when it has no BatchNorm to fold
        with inference():                       # the layers keep nothing for backward
            for i in range(0, len(m), batch_size):
                y = net.forward(m[i:i + batch_size], sample=False)
                outs.append((y[:, 0], y[:, 1], self.mix(y[:, 0], y[:, 1])))
        self.train(was_training)
        out = tuple(np.concatenate([o[k] for o in outs]) for k in range(3))
        check_finite_estimates(self, out[0], out[1])
        return out

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
        rng = self.rng = default_rng(rng)
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
        return self.encoder.backward(dfeat)

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
        rng = self.rng = default_rng(rng)
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
class UNetSeparationVAE(options.DropoutNoise, SeparationVAE):
    """A small U-Net whose bottleneck is a Gaussian latent, with the "split" output.

    With the defaults (three levels, strided convolutions, no normalisation)::

        x  (N, 1, 28, 28)   the mixture
        e1 = lrelu(conv3x3(x))             (N, c1, 28, 28)
        e2 = lrelu(conv4x4/2(e1))          (N, c2, 14, 14)
        e3 = lrelu(conv4x4/2(e2))          (N, c3, 7, 7)
        mu, logvar = dense(flatten(e3))    (N, latent_dim)
        d3 = lrelu(dense(z))               (N, c3, 7, 7)
        u2 = lrelu(convT4x4/2([d3, e3]))   (N, c2, 14, 14)
        u1 = lrelu(convT4x4/2([u2, e2]))   (N, c1, 28, 28)
        logits = conv3x3([u1, e1, x])      (N, S, 28, 28)

    ``channels`` of length n (2 to 5) builds n levels of sides 28, 14, 7, 3, 1 (each the
    floor of half the one above): layers ``enc1`` ... ``encn``, ``up(n-1)`` ... ``up1``.
    With ``blocks`` b > 1, each of ``enc1`` ... ``enc(n-1)`` and the ``up`` levels is
    followed by b - 1 more ``lrelu(conv3x3)`` of the same width (layers ``enc1_2``,
    ``enc1_3``, ...), the usual two convolutions per level of a U-Net when b = 2.

    Options (:mod:`npvae.models.options`; the defaults build the model above):

    * ``norm`` "batch" or "group": a BatchNorm / GroupNorm (``groups`` groups at most)
      after every convolution but the output one, before its activation (``enc1_norm``,
      ``enc1_2_norm``, ...); those convolutions have no bias unless ``norm_bias`` (see
      :mod:`npvae.models.options`).
    * ``down`` "max" or "avg": ``enc2`` ... ``encn`` are 3x3 convolutions after a 2x2
      pooling instead of strided 4x4 ones, and the bottom level gets its b - 1 extra
      convolutions too (a strided bottom level is its one convolution).
    * ``dropout`` p > 0: elementwise dropout (``up2_drop``, ...) on the output of every
      decoder level, drawn from ``self.rng`` in training, none in eval mode.
    * ``residual``: each level with extra convolutions adds its first convolution's
      output to its last one's (``y = h + f(h)``); needs ``blocks`` >= 2.

    The skips carry the detail a bottleneck blurs; the latent carries the global
    structure (which digit, which garment) and is regularised by the KL term.
    """

    MAX_LEVELS = 5      # sides 28, 14, 7, 3, 1

    def __init__(self, latent_dim: int = 32, channels=(16, 32, 64), output: str = "split",
                 rule: str = "average", blocks: int = 1, norm: str = "none", down: str = "stride",
                 dropout: float = 0.0, residual: bool = False, groups: int = options.GROUPS,
                 norm_bias: bool = False, rng=None, dtype=np.float32):
        super().__init__(latent_dim, output, rule, dtype)
        if isinstance(blocks, bool) or not isinstance(blocks, (int, np.integer)) or blocks < 1:
            raise ValueError(f"blocks (3x3 convolutions per U-Net level) must be an integer >= 1, got {blocks!r}")
        options.check_options(type(self).__name__, norm, down, dropout, groups, norm_bias)
        if len(channels) < 2 or len(channels) > self.MAX_LEVELS or min(channels) <= 0:
            raise ValueError(f"channels must be 2 to {self.MAX_LEVELS} positive ints, one per level (28x28, 14x14, "
                             f"7x7, 3x3, 1x1), got {list(channels)}")
        if residual and blocks < 2:
            raise ValueError("residual levels add a level's first convolution to its last: they need blocks >= 2, "
                             f"got blocks={blocks}")
        rng = self.rng = default_rng(rng)
        c = self.channels = tuple(int(v) for v in channels)
        n = self.levels = len(c)
        self.blocks, self.norm, self.down = int(blocks), norm, down
        self.dropout, self.residual, self.groups = float(dropout), bool(residual), int(groups)
        self.norm_bias = bool(norm_bias)
        self.sides = [SIDE]
        for _ in range(n - 1):
            self.sides.append(self.sides[-1] // 2)
        kw = dict(rng=rng, dtype=dtype)
        normed = dict(kw, bias=options.conv_bias(norm, norm_bias))     # the convolutions a norm follows
        pooled = down != "stride"
        self.enc = [Conv2d(1, c[0], 3, padding=1, **normed)]
        for i in range(1, n):
            self.enc.append(Conv2d(c[i - 1], c[i], 3, padding=1, **normed) if pooled
                            else Conv2d(c[i - 1], c[i], 4, stride=2, padding=1, **normed))
        bottom = c[-1] * self.sides[-1] ** 2
        self.head = GaussianHead(bottom, latent_dim, **kw)
        self.expand = Dense(latent_dim, bottom, activation="leaky_relu", alpha=0.2, **kw)
        # ups[i] makes level i's decoder output (side sides[i]) from [level i+1's, enc(i+2)'s]
        self.ups = {i: ConvTranspose2d(2 * c[i + 1], c[i], 4, stride=2, padding=1,
                                       output_padding=self.sides[i] - 2 * self.sides[i + 1], **normed)
                    for i in reversed(range(n - 1))}
        self.out = Conv2d(2 * c[0] + 1, self.out_channels, 3, padding=1, **kw)
        for i in range(n):          # enc1, ..., up1 by name too
            setattr(self, f"enc{i + 1}", self.enc[i])
            if i < n - 1:
                setattr(self, f"up{i + 1}", self.ups[i])
        width = {f"enc{i + 1}": c[i] for i in range(n)}
        width.update({f"up{i + 1}": c[i] for i in range(n - 1)})
        # level -> its convolutions in order: "enc1", then "enc1_2", "enc1_3", ... (blocks > 1)
        levels = [f"enc{i + 1}" for i in range(n if pooled else n - 1)] + [f"up{i + 1}" for i in reversed(range(n - 1))]
        self.chains = {level: [level] + [f"{level}_{k}" for k in range(2, self.blocks + 1)] for level in levels}
        self.chains.setdefault(f"enc{n}", [f"enc{n}"])
        self.extra = {name: Conv2d(width[level], width[level], 3, padding=1, **normed)
                      for level in levels for name in self.chains[level][1:]}
        self.acts = {name: LeakyReLU(0.2) for chain in self.chains.values() for name in chain}
        self.norms = {}
        for level, chain in self.chains.items():
            for name in chain:
                layer = options.make_norm(norm, width[level], self.groups, dtype)
                if layer is not None:
                    self.norms[f"{name}_norm"] = layer
        self.pools = {}
        for i in range(1, n):
            layer = options.make_pool(down, dtype)
            if layer is not None:
                self.pools[f"pool{i + 1}"] = layer
        self.drops = {}
        for i in reversed(range(n - 1)):
            layer = options.make_dropout(self.dropout, dtype)
            if layer is not None:
                self.drops[f"up{i + 1}_drop"] = layer
        self.rng = rng         # and the dropout layers'

    def noise_parts(self):
        return getattr(self, "drops", {}).values()

    def children(self):
        n = self.levels
        return {**{f"enc{i + 1}": self.enc[i] for i in range(n)}, "head": self.head, "expand": self.expand,
                **{f"up{i + 1}": self.ups[i] for i in reversed(range(n - 1))}, "out": self.out, **self.extra,
                **self.norms, **self.pools, **self.drops}

    def _unit(self, name, x):
        """act(norm(conv(x))) of the convolution ``name``; without a norm, the activation
        is fused into the convolution in inference."""
        conv, norm, act = self._conv(name), self.norms.get(f"{name}_norm"), self.acts[name]
        if norm is None:
            return conv.forward(x, act=act)
        return act.forward(norm.forward(conv.forward(x)))

    def _unit_backward(self, name, dy):
        dy = self.acts[name].backward(dy)
        norm = self.norms.get(f"{name}_norm")
        if norm is not None:
            dy = norm.backward(dy)
        return self._conv(name).backward(dy)

    def _conv(self, name):
        return self.extra[name] if name in self.extra else getattr(self, name)

    def batchnorm_pairs(self):
        """``(convolution, BatchNorm, drop)`` for :func:`npvae.layers.fold_batchnorm`; with
        its BatchNorm dropped, a level's convolution applies the activation itself."""
        return options.batchnorm_pairs(self.norms, self._conv)

    def _level(self, level, x):
        """A level's convolutions (each act(norm(conv))), with its pooling before them,
        its residual sum and its dropout after them."""
        return options.level_forward({**self.pools, **self.drops}, level, functools.partial(self._chain, level), x)

    def _level_backward(self, level, dy):
        return options.level_backward({**self.pools, **self.drops}, level,
                                      functools.partial(self._chain_backward, level), dy)

    def _chain(self, level, x):
        """The level's convolutions, the first one's output added to the last's (residual)."""
        chain = self.chains[level]
        first = y = self._unit(chain[0], x)
        for name in chain[1:]:
            y = self._unit(name, y)
        return y + first if self.residual and len(chain) > 1 else y

    def _chain_backward(self, level, dy):
        chain = self.chains[level]
        g = dy
        for name in reversed(chain[1:]):
            g = self._unit_backward(name, g)
        if self.residual and len(chain) > 1:
            g = g + dy
        return self._unit_backward(chain[0], g)

    def _encode(self, x):
        self._x = x
        self._e = []
        h = x
        for i in range(self.levels):
            h = self._level(f"enc{i + 1}", h)
            self._e.append(h)
        return h.reshape(len(x), -1)

    def _decode(self, z):
        c, n, s = self.channels, self.levels, self.sides[-1]
        d = self.expand.forward(z).reshape(len(z), c[-1], s, s)
        for i in reversed(range(n - 1)):
            d = self._level(f"up{i + 1}", np.concatenate([d, self._e[i + 1]], axis=1))
        return self.out.forward(np.concatenate([d, self._e[0], self._x], axis=1))

    def _decode_backward(self, dlogits):
        c, n = self.channels, self.levels
        dcat = self.out.backward(dlogits)
        dd, self._de = dcat[:, :c[0]], [None] * n
        self._de[0], self._dx = dcat[:, c[0]:2 * c[0]], dcat[:, 2 * c[0]:]
        for i in range(n - 1):
            dcat = self._level_backward(f"up{i + 1}", dd)
            dd, self._de[i + 1] = dcat[:, :c[i + 1]], dcat[:, c[i + 1]:]
        return self.expand.backward(np.ascontiguousarray(dd).reshape(len(dd), -1))

    def _encode_backward(self, dfeat):
        g = dfeat.reshape(self._e[-1].shape)
        for i in reversed(range(self.levels)):
            g = self._level_backward(f"enc{i + 1}", g + self._de[i])
        return g + self._dx

    def hyper(self):
        out = {**super().hyper(), "channels": list(self.channels)}
        if self.blocks > 1:   # files of one-block models stay as they were
            out["blocks"] = self.blocks
        return {**out, **options.options_hyper(self.norm, self.down, self.dropout, self.groups, self.residual,
                                               self.norm_bias)}

    @classmethod
    def from_spec(cls, spec: dict, rng=None, dtype=None):
        return super().from_spec(options.spec_defaults(spec), rng=rng, dtype=dtype)


@register
class LatentMapSeparationVAE(SeparationVAE):
    """A convolutional VAE with a spatial Gaussian latent and no path around it.

    ::

        x  (N, 1, 28, 28)   the mixture
        lrelu(conv3x3(x))                          (N, c1, 28, 28)
        lrelu(conv4x4/2), blocks x lrelu(conv3x3)  (N, c2, 14, 14)
        lrelu(conv4x4/2), blocks x lrelu(conv3x3)  (N, c3, 7, 7)
        mu, logvar = conv1x1                       (N, L, 7, 7) each: L*49 latent numbers
        lrelu(conv3x3(z)), blocks x lrelu(conv3x3) (N, c3, 7, 7)
        lrelu(convT4x4/2), blocks x lrelu(conv3x3) (N, c2, 14, 14)
        lrelu(convT4x4/2), lrelu(conv3x3)          (N, c1, 28, 28)
        logits = conv3x3                           (N, 2, 28, 28): digit, fashion

    The decoder sees only z: no skip connection, and with the default
    ``output="sources"`` no use of the mixture either, so every bit of the
    separation passes through the latent (decoding the prior's mean gives the
    same two images for every mixture). ``latent_dim`` is L, the channels of the
    latent map (``latent_channels``); the posterior has L*49 dimensions. With two
    channel counts (c1, c2) the network stops at 14x14: a latent map of L*196 numbers.

    ``norm`` "batch" or "group" puts a BatchNorm / GroupNorm (``groups`` groups at most)
    after every convolution that a leaky ReLU follows, before it (in the encoder and the
    decoder; not after the 1x1 head or the output convolution); those convolutions have
    no bias unless ``norm_bias``. Inside the Sequentials each such unit is then
    [conv, norm, lrelu] instead of [conv, lrelu].
    """

    SIDE_LATENT = 7

    def __init__(self, latent_dim: int = 16, channels=(24, 48, 96), blocks: int = 1, output: str = "sources",
                 rule: str = "average", norm: str = "none", groups: int = options.GROUPS, norm_bias: bool = False,
                 rng=None, dtype=np.float32):
        super().__init__(latent_dim, output, rule, dtype)
        options.check_options(type(self).__name__, norm, "stride", 0.0, groups, norm_bias)
        self.norm, self.groups, self.norm_bias = norm, int(groups), bool(norm_bias)
        if isinstance(blocks, bool) or not isinstance(blocks, (int, np.integer)) or blocks < 0:
            raise ValueError(f"blocks (3x3 convolutions after each resampling) must be an integer >= 0, got {blocks!r}")
        rng = self.rng = default_rng(rng)
        c = self.channels = tuple(int(v) for v in channels)
        if len(c) not in (2, 3) or min(c) <= 0:
            raise ValueError(f"channels must be 2 or 3 positive ints (a 14x14 or a 7x7 latent map), got {channels}")
        self.blocks = int(blocks)
        self.latent_channels = self.latent_dim
        self.latent_side = SIDE >> (len(c) - 1)
        kw = dict(rng=rng, dtype=dtype)
        normed = dict(kw, bias=options.conv_bias(norm, norm_bias))

        def unit(conv):
            """conv, its norm (if any) and the leaky ReLU."""
            norm_layer = options.make_norm(norm, conv.out_channels, self.groups, dtype)
            return [conv, *([] if norm_layer is None else [norm_layer]), LeakyReLU(alpha=0.2)]

        def conv3(a, b):
            return unit(Conv2d(a, b, 3, padding=1, **normed))

        def extra(width):
            return [layer for _ in range(self.blocks) for layer in conv3(width, width)]

        encoder = conv3(1, c[0])
        for i in range(1, len(c)):
            encoder += [*unit(Conv2d(c[i - 1], c[i], 4, stride=2, padding=1, **normed)), *extra(c[i])]
        decoder = conv3(self.latent_dim, c[-1]) + extra(c[-1])
        for i in range(len(c) - 1, 0, -1):
            decoder += unit(ConvTranspose2d(c[i], c[i - 1], 4, stride=2, padding=1, **normed))
            decoder += extra(c[i - 1]) if i > 1 else conv3(c[0], c[0])
        self.encoder = Sequential(*encoder)
        self.head = Conv2d(c[-1], 2 * self.latent_dim, 1, **kw)
        self.decoder = Sequential(*decoder, Conv2d(c[0], self.out_channels, 3, padding=1, **kw))

    def _posterior(self, features):
        h = self.head.forward(features)
        latent = self.latent_dim
        return np.ascontiguousarray(h[:, :latent]), np.ascontiguousarray(h[:, latent:])

    def _posterior_backward(self, dmu, dlogvar):
        return self.head.backward(np.concatenate([dmu, dlogvar], axis=1))

    def hyper(self):
        return {**super().hyper(), "channels": list(self.channels), "blocks": self.blocks,
                **options.options_hyper(self.norm, "stride", 0.0, self.groups, norm_bias=self.norm_bias)}

    @classmethod
    def from_spec(cls, spec: dict, rng=None, dtype=None):
        return super().from_spec(options.spec_defaults(spec), rng=rng, dtype=dtype)

    # the encoder, head and decoder chain as in the dense model
    children = DenseSeparationVAE.children
    _encode, _encode_backward = DenseSeparationVAE._encode, DenseSeparationVAE._encode_backward
    _decode, _decode_backward = DenseSeparationVAE._decode, DenseSeparationVAE._decode_backward


MODELS = {"dense": DenseSeparationVAE, "conv": ConvSeparationVAE, "unet": UNetSeparationVAE,
          "vae": LatentMapSeparationVAE}


def build_model(name: str, rng=None, dtype=np.float32, **kwargs) -> SeparationVAE:
    """An image model by its command-line name ("dense", "conv", "unet", "vae")."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {sorted(MODELS)}")
    return MODELS[name](rng=rng, dtype=dtype, **kwargs)
