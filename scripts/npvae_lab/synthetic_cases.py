"""The benchmark's synthetic cases: three small models of fixed shapes (the cases of the
first benchmark, kept so its numbers stay comparable).

* ``dense_vae``: encoder 784-512-256-(mu, logvar), latent 32, two decoders
  32-256-512-784 (one per source), BCE-with-logits + KL, batch 128.
* ``conv_vae``: 1x28x28 -> conv 4x4/2 (32) -> conv 4x4/2 (64) -> (mu, logvar) of 32,
  decoder dense -> 64x7x7 -> transposed convs back to 1x28x28, BCE + KL, batch 64.
* ``spectrogram``: 1x512x128 magnitude patch -> three 5x5 stride-2 convs of 16/32/64
  channels and the mirrored transposed decoder to a mask, BCE on the mask, batch 16.

Each is a full training step (forward, loss, backward, Adam) on a fixed batch; the
PyTorch twin of each (:mod:`.torch_twin`) is built from the npvae layers with the same
initial weights. The models users train are :mod:`.pipeline_cases`.
"""
from __future__ import annotations

import numpy as np

from npvae import losses
from npvae.layers import Conv2d, ConvTranspose2d, Dense, Flatten, Layer, ReLU, Reshape, Sequential
from npvae.optim import Adam
from npvae.vae import GaussianHead, Reparameterize, kl_divergence
SYNTHETIC_CASES = ("dense_vae", "conv_vae", "spectrogram")

# Shapes per case and size: "full" is what the benchmark times, "tiny" is for tests.
CONFIGS = {
    "dense_vae": {"full": dict(batch=128, sizes=(784, 512, 256), latent=32, decoders=2),
                  "tiny": dict(batch=6, sizes=(20, 12, 10), latent=3, decoders=2)},
    "conv_vae": {"full": dict(batch=64, hw=(28, 28), channels=(32, 64), latent=32),
                 "tiny": dict(batch=3, hw=(8, 8), channels=(2, 3), latent=2)},
    "spectrogram": {"full": dict(batch=16, hw=(512, 128), channels=(16, 32, 64)),
                    "tiny": dict(batch=2, hw=(16, 8), channels=(2, 3, 4))},
}


class Model(Layer):
    """An unregistered container: named sub-layers, so one optimiser walks them all."""

    def __init__(self, dtype=np.float32, **parts):
        super().__init__(dtype)
        self.parts = parts

    def children(self):
        return self.parts


class Case:
    """One benchmark case in npvae: ``step()`` runs a training step and returns the loss.

    ``model.parts`` holds the layers, ``batch`` the inputs and targets;
    ``forward_backward(eps)`` fills the gradients (``eps`` fixes the VAE noise).
    """

    def __init__(self, name, model, batch, forward_backward, layer_flops=None, lr=1e-3):
        self.name, self.model, self.batch = name, model, batch
        self.layer_flops = dict(layer_flops or {})   # id(layer) -> forward GEMM FLOPs
        self.forward_backward = forward_backward
        self.optimizer = Adam(model, lr=lr)
        self.rng = np.random.default_rng(0)

    def step(self):
        loss = self.forward_backward(None)
        self.optimizer.step()
        return loss

    def flops(self):
        """GEMM FLOPs of one step: forward, weight gradients, and input gradients for
        every layer but the first (whose input needs none)."""
        first = self.first_layer()
        total = 0
        for _, layer in self.model.named_layers():
            f = self.layer_flops.get(id(layer), 0)
            total += f * (2 if layer is first else 3)
        return total

    def first_layer(self):
        enc = self.model.parts["encoder"]
        return enc.layers[0]


def _count(counts: dict, layer, n, *out_hw):
    """Record in ``counts[id(layer)]`` the forward GEMM FLOPs of ``layer`` for a batch of ``n``."""
    if isinstance(layer, Dense):
        counts[id(layer)] = 2 * n * layer.in_features * layer.out_features
    else:
        kh, kw = layer.kernel_size
        per = layer.in_channels * layer.out_channels * kh * kw
        counts[id(layer)] = 2 * n * per * out_hw[0] * out_hw[1]


def _vae_forward_backward(case_parts, batch, rng_holder):
    enc, head, decs = case_parts["encoder"], case_parts["head"], [case_parts[k] for k in sorted(case_parts)
                                                                    if k.startswith("decoder")]
    rep = Reparameterize()
    x, targets = batch["x"], batch["targets"]

    def forward_backward(eps=None):
        h = enc.forward(x)
        mu, logvar = head.forward(h)
        z = rep.forward(mu, logvar, rng_holder.rng, eps=eps)
        total, dz = 0.0, None
        for dec, t in zip(decs, targets):
            rec, g = losses.bce_with_logits(dec.forward(z), t)
            total += rec
            d = dec.backward(g)
            dz = d if dz is None else dz + d
        kl, dmu_kl, dlv_kl = kl_divergence(mu, logvar)
        dmu, dlv = rep.backward(dz)
        dmu += dmu_kl
        dlv += dlv_kl
        enc.backward(head.backward(dmu, dlv))
        return total + kl
    return forward_backward


def build_synthetic_case(name: str, size: str = "full", seed: int = 0, dtype=np.float32) -> Case:
    """Build case ``name`` (one of :data:`SYNTHETIC_CASES`) at ``size`` "full" or "tiny"."""
    if name not in CONFIGS:
        raise ValueError(f"unknown case {name!r}; choose one of {SYNTHETIC_CASES}")
    cfg = CONFIGS[name][size]
    rng = np.random.default_rng(seed)
    data = np.random.default_rng(seed + 1)
    n = cfg["batch"]
    counts: dict[int, int] = {}
    if name == "dense_vae":
        d_in, h1, h2 = cfg["sizes"]
        lat = cfg["latent"]
        enc = Sequential(Dense(d_in, h1, "relu", rng=rng, dtype=dtype), Dense(h1, h2, "relu", rng=rng, dtype=dtype))
        parts = {"encoder": enc, "head": GaussianHead(h2, lat, rng=rng, dtype=dtype)}
        for k in range(cfg["decoders"]):
            parts[f"decoder{k}"] = Sequential(Dense(lat, h2, "relu", rng=rng, dtype=dtype),
                                              Dense(h2, h1, "relu", rng=rng, dtype=dtype),
                                              Dense(h1, d_in, rng=rng, dtype=dtype))
        targets = [data.uniform(size=(n, d_in)).astype(dtype) for _ in range(cfg["decoders"])]
        batch = {"x": np.clip(sum(targets), 0, 1).astype(dtype), "targets": targets}
        for _, layer in Model(**parts).named_layers():
            if isinstance(layer, Dense):
                _count(counts, layer, n)
    elif name == "conv_vae":
        (hh, ww), (c1, c2), lat = cfg["hw"], cfg["channels"], cfg["latent"]
        h4, w4 = hh // 4, ww // 4
        conv1 = Conv2d(1, c1, 4, 2, 1, rng=rng, dtype=dtype)
        conv2 = Conv2d(c1, c2, 4, 2, 1, rng=rng, dtype=dtype)
        enc = Sequential(conv1, ReLU(dtype=dtype), conv2, ReLU(dtype=dtype), Flatten(dtype=dtype))
        dense = Dense(lat, c2 * h4 * w4, "relu", rng=rng, dtype=dtype)
        up1 = ConvTranspose2d(c2, c1, 4, 2, 1, rng=rng, dtype=dtype)
        up2 = ConvTranspose2d(c1, 1, 4, 2, 1, rng=rng, dtype=dtype)
        dec = Sequential(dense, Reshape((c2, h4, w4), dtype=dtype), up1, ReLU(dtype=dtype), up2,
                         Flatten(dtype=dtype))
        parts = {"encoder": enc, "head": GaussianHead(c2 * h4 * w4, lat, rng=rng, dtype=dtype), "decoder0": dec}
        target = data.uniform(size=(n, hh * ww)).astype(dtype)
        batch = {"x": target.reshape(n, 1, hh, ww).copy(), "targets": [target]}
        _count(counts, conv1, n, hh // 2, ww // 2)
        _count(counts, conv2, n, h4, w4)
        for layer in (dense, parts["head"].mu, parts["head"].logvar):
            _count(counts, layer, n)
        _count(counts, up1, n, h4, w4)           # a transposed conv costs what its adjoint conv does
        _count(counts, up2, n, hh // 2, ww // 2)
    elif name == "spectrogram":
        (hh, ww), chans = cfg["hw"], cfg["channels"]
        layers, down, up = [], [], []
        c_prev, h, w = 1, hh, ww
        for c in chans:
            conv = Conv2d(c_prev, c, 5, 2, 2, rng=rng, dtype=dtype)
            h, w = conv.output_shape(h, w)
            _count(counts, conv, n, h, w)
            layers += [conv, ReLU(dtype=dtype)]
            down.append((c_prev, c, h, w))
            c_prev = c
        enc = Sequential(*layers)
        layers = []
        for k, (c_out, c_in, h, w) in enumerate(reversed(down)):
            up_layer = ConvTranspose2d(c_in, c_out, 5, 2, 2, output_padding=1, rng=rng, dtype=dtype)
            _count(counts, up_layer, n, h, w)
            layers.append(up_layer)
            if k < len(down) - 1:
                layers.append(ReLU(dtype=dtype))
        parts = {"encoder": enc, "decoder0": Sequential(*layers)}
        mag = data.gamma(1.0, size=(n, 1, hh, ww)).astype(dtype)
        batch = {"x": np.log1p(mag), "targets": [data.uniform(size=(n, 1, hh, ww)).astype(dtype)]}
    else:  # pragma: no cover
        raise AssertionError(name)

    model = Model(dtype=dtype, **parts)
    # The input batch needs no gradient (PyTorch skips it too).
    parts["encoder"].layers[0].needs_input_grad = False
    holder = type("RngHolder", (), {})()
    holder.rng = np.random.default_rng(seed + 2)
    if name == "spectrogram":
        enc, dec = parts["encoder"], parts["decoder0"]
        x, t = batch["x"], batch["targets"][0]

        def forward_backward(eps=None):
            loss, g = losses.bce_with_logits(dec.forward(enc.forward(x)), t)
            enc.backward(dec.backward(g))
            return loss
    else:
        forward_backward = _vae_forward_backward(parts, batch, holder)
    case = Case(name, model, batch, forward_backward, counts)
    case.rng = holder.rng
    return case
