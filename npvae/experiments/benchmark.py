"""Training-step benchmark: npvae against PyTorch on the same models and weights.

Three cases (:data:`CASES`), each a full training step (forward, loss, backward,
Adam) on a fixed batch:

* ``dense_vae``: encoder 784-512-256-(mu, logvar), latent 32, two decoders
  32-256-512-784 (one per source), BCE-with-logits + KL, batch 128.
* ``conv_vae``: 1x28x28 -> conv 4x4/2 (32) -> conv 4x4/2 (64) -> (mu, logvar) of 32,
  decoder dense -> 64x7x7 -> transposed convs back to 1x28x28, BCE + KL, batch 64.
* ``spectrogram``: 1x512x128 magnitude patch -> three 5x5 stride-2 convs of 16/32/64
  channels and the mirrored transposed decoder to a mask, BCE on the mask, batch 16.

The PyTorch twin of each case (:mod:`npvae.experiments.torch_twin`) is built from the
npvae layers with the same initial weights.
:func:`run_benchmark` times the npvae steps (each backend) and the PyTorch step
interleaved in one process, so machine noise hits all of them alike.
"""
from __future__ import annotations

import os
import platform
import resource
import sys
import time

import numpy as np

import kernels

from .. import losses
from ..layers import Conv2d, ConvTranspose2d, Dense, Flatten, Layer, ReLU, Reshape, Sequential
from ..optim import Adam
from ..vae import GaussianHead, Reparameterize, kl_divergence
from .torch_twin import TorchCase, torch_available

CASES = ("dense_vae", "conv_vae", "spectrogram")

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


def build_case(name: str, size: str = "full", seed: int = 0, dtype=np.float32) -> Case:
    """Build case ``name`` (one of :data:`CASES`) at ``size`` "full" or "tiny"."""
    if name not in CONFIGS:
        raise ValueError(f"unknown case {name!r}; choose one of {CASES}")
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


# -- timing ------------------------------------------------------------------------------

def gemm_gflops(n: int = 1024, repeats: int = 7, dtype=np.float32) -> float:
    """Median GFLOP/s of an ``n x n`` by ``n x n`` BLAS GEMM in ``dtype``."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)).astype(dtype), rng.standard_normal((n, n)).astype(dtype)
    c = np.empty((n, n), dtype=dtype)
    np.matmul(a, b, out=c)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / float(np.median(times)) / 1e9


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (``getrusage``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _stats(times_s):
    t = np.asarray(times_s) * 1e3
    return {"median_ms": float(np.median(t)), "min_ms": float(t.min()), "max_ms": float(t.max()),
            "steps": int(t.size)}


def time_case(name: str, backends=("numba", "numpy"), steps: int = 30, warmup: int = 3,
              with_torch: bool = True, size: str = "full", log=None, block: int = 5,
              settle_s: float = 0.25) -> dict:
    """Time case ``name``: one npvae model per backend and the PyTorch twin, run in
    turn in blocks of ``block`` timed steps (the order rotates every round, so that
    load spikes hit all of them).

    Before each block the process sleeps ``settle_s`` and runs one untimed step: the
    previous framework's idle threads stop spinning and this one's are awake again.
    Without the pause, OpenBLAS's workers, which spin for about 0.1 s after every
    GEMM, took a core from PyTorch's next steps (its dense VAE step measured 24.5 ms
    that way and 12.5 ms when OpenBLAS's threads did not spin), and PyTorch's OpenMP threads slowed
    npvae's steps likewise.
    """
    runners = {}
    original = kernels.backend()
    for b in backends:
        runners[b] = build_case(name, size)
    case0 = next(iter(runners.values())) if runners else build_case(name, size)
    if with_torch:
        runners["torch"] = TorchCase(case0)
    names = list(runners)
    times = {k: [] for k in names}
    flops = case0.flops()

    def run(k, n_steps, record):
        if k != "torch":
            kernels.set_backend(k)
        for _ in range(n_steps):
            t0 = time.perf_counter()
            runners[k].step()
            if record:
                times[k].append(time.perf_counter() - t0)

    try:
        for k in names:
            run(k, warmup, record=False)
        for r in range(-(-steps // block)):
            order = names[r % len(names):] + names[:r % len(names)]
            for k in order:
                time.sleep(settle_s)
                run(k, 1, record=False)
                run(k, min(block, steps - r * block), record=True)
    finally:
        kernels.set_backend(original)
    out = {"case": name, "gflop_per_step": flops / 1e9}
    for k in names:
        s = _stats(times[k])
        s["gflops"] = flops / (s["median_ms"] / 1e3) / 1e9
        out[k] = s
    if log:
        log(f"  {name}: " + ", ".join(f"{k} {out[k]['median_ms']:.1f} ms" for k in names))
    return out


DEFAULT_STEPS = {"dense_vae": 60, "conv_vae": 60, "spectrogram": 20}
BLOCK = {"dense_vae": 10, "conv_vae": 10, "spectrogram": 4}


def run_benchmark(cases=CASES, backends=None, steps: int | None = None, warmup: int = 3, threads: int | None = None,
                  use_torch: bool = True, size: str = "full", log=print) -> dict:
    """Time every case (``steps`` timed steps each, default :data:`DEFAULT_STEPS`); returns
    the report dict (see :func:`format_table`, ``--json``)."""
    backends = list(backends or kernels.available_backends())
    unknown = [c for c in cases if c not in CASES] + [b for b in backends if b not in kernels.BACKENDS]
    if unknown:
        raise ValueError(f"unknown case or backend {unknown}; cases: {CASES}, backends: {kernels.BACKENDS}")
    torch_ok, torch_info = torch_available() if use_torch else (False, "disabled with --no-torch")
    threads = threads or os.cpu_count()
    if torch_ok:
        import torch
        torch.set_num_threads(threads)
    report = {"machine": machine(), "threads": threads, "numpy": np.__version__,
              "backends": backends, "torch": torch_info if torch_ok else None,
              "torch_missing_reason": None if torch_ok else torch_info,
              "gemm_gflops": gemm_gflops(), "cases": []}
    primary = "numba" if "numba" in backends else backends[0]
    for name in cases:
        r = time_case(name, backends, steps or DEFAULT_STEPS[name], warmup, torch_ok, size, log=log,
                      block=BLOCK[name])
        entry = {"case": name, "npvae_ms": r[primary]["median_ms"],
                 "torch_ms": r["torch"]["median_ms"] if torch_ok else None,
                 "ratio": r[primary]["median_ms"] / r["torch"]["median_ms"] if torch_ok else None,
                 "npvae_backend": primary, "gflop_per_step": r["gflop_per_step"],
                 "peak_rss_mb": peak_rss_mb()}
        for k in (*backends, *(["torch"] if torch_ok else [])):
            entry[k] = r[k]
        report["cases"].append(entry)
    report["peak_rss_mb"] = peak_rss_mb()
    report["gemm_gflops_after"] = gemm_gflops()
    return report


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} logical CPUs, {platform.system()}"


def format_table(report: dict) -> str:
    """The report as a plain-text table."""
    backends = report["backends"]
    torch_ok = report["torch"] is not None
    head = ["case", "GFLOP"] + [f"npvae-{b} ms (min-max)" for b in backends]
    if torch_ok:
        head += ["torch ms (min-max)", "ratio"]
    head += [f"GFLOP/s {b}" for b in backends] + (["GFLOP/s torch"] if torch_ok else [])
    rows = []
    for c in report["cases"]:
        row = [c["case"], f"{c['gflop_per_step']:.2f}"]
        for k in backends + (["torch"] if torch_ok else []):
            s = c[k]
            row.append(f"{s['median_ms']:.1f} ({s['min_ms']:.1f}-{s['max_ms']:.1f})")
        if torch_ok:
            row.append(f"{c['ratio']:.2f}")
        row += [f"{c[k]['gflops']:.0f}" for k in backends + (["torch"] if torch_ok else [])]
        rows.append(row)
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths))  # noqa: E731
    lines = [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
    lines.append("")
    lines.append(f"machine: {report['machine']}; threads: {report['threads']} (BLAS, Numba"
                 + (", torch.set_num_threads" if torch_ok else "") + ")")
    lines.append(f"BLAS GEMM 1024^3 float32: {report['gemm_gflops']:.0f} GFLOP/s before, "
                 f"{report['gemm_gflops_after']:.0f} after; peak memory {report['peak_rss_mb']:.0f} MiB")
    if torch_ok:
        lines.append(f"ratio = npvae ({'numba' if 'numba' in backends else backends[0]}) median / "
                     f"torch {report['torch']} median, same weights, interleaved steps")
    else:
        lines.append(f"no PyTorch comparison: {report['torch_missing_reason']}")
    return "\n".join(lines)
