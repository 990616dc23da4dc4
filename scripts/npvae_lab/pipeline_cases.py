"""Benchmark cases built as the training engine builds them: the models users train.

Each case is one training step of a model exactly as ``npvae train`` builds it, from
the task's own config (with one of the task's presets), model builder, objective and
optimiser:

* ``mnist_dense``: ``npvae train mnist`` (the default: dense VAE), batch 128.
* ``mnist_unet``: ``npvae train mnist --model unet``, batch 128.
* ``mnist_unet_best``: ``npvae train mnist --preset best`` (U-Net VAE, 24-48-96
  channels, two 3x3 convolutions per level), batch 128.
* ``mnist_dense_best``: ``npvae train mnist --preset dense-best``, batch 128.
* ``music``: ``npvae train music`` (default: channels 16-32-64), batch 8 x 64 frames.
* ``music_best``: ``npvae train music --preset best`` (24-48-96-128-128, the shipped model).

A step is what the engine does per batch: ``objective.terms`` (forward, loss,
backward) then ``optimizer.step()`` (Adam, with the task's gradient clipping). The batch is fixed (synthetic images; for music, excerpts drawn by the
pipeline's own sampler from synthetic tracks, since timing does not depend on the
values) and so is the latent noise ``eps`` (:class:`FixedNoise`), so a PyTorch twin
(:mod:`.torch_pipelines`) can be checked equal on it. ``size="tiny"`` shrinks channels,
batch and (music) the STFT for tests.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from npvae.audio.datasets import Track
from npvae.audio.stft import STFTConfig
from npvae.layers import Conv2d, ConvTranspose2d, Dense
from npvae.models.mnist import build_model
from npvae.models.music import SpectrogramUNetVAE
from npvae.engine.run import make_config
from npvae.optim import Adam
from npvae.tasks.mnist import SeparationObjective
from npvae.tasks.music.batches import sample_batch
from npvae.tasks.music.objective import MusicObjective
from npvae.separation.separator import Normalizer, Separator
from npvae.tasks import TASKS
from npvae.vae import KLWeight, Reparameterize

# case -> (task, preset, flags on top of the preset)
PIPELINE_CASES = {
    "mnist_dense": ("mnist", "default", {}),
    "mnist_unet": ("mnist", "default", {"model": "unet"}),
    "mnist_unet_best": ("mnist", "best", {}),
    "mnist_dense_best": ("mnist", "dense-best", {}),
    "music": ("music", "default", {}),
    "music_best": ("music", "best", {}),
}
# Tiny sizes for tests: small channels and batch (and for music a 64-point STFT).
TINY = {
    "mnist": {"batch_size": 4, "latent_dim": 3, "hidden": (12, 10), "channels_unet": (2, 3, 4)},
    "music": {"batch_size": 2, "frames": 8, "channels": (2, 3, 4), "latent_channels": 2},
}
TINY_STFT = STFTConfig(sample_rate=16000, n_fft=64, hop=16, window="hann")


class FixedNoise(Reparameterize):
    """The model's reparameterisation with the noise fixed: ``z = mu + exp(logvar/2) * eps``
    with ``eps`` set by the benchmark (both frameworks then see the same z)."""

    def __init__(self, eps: np.ndarray):
        self.eps = eps

    def forward(self, mu, logvar, rng=None, sample: bool = True, eps=None):
        if sample and mu.shape != self.eps.shape:
            raise ValueError(f"fixed noise of shape {self.eps.shape} for a latent of shape {mu.shape}")
        return super().forward(mu, logvar, rng, sample, eps=self.eps if sample else None)

    __call__ = forward


def count_flops(model, run_forward) -> dict[int, int]:
    """Forward GEMM FLOPs of every Dense / Conv2d / ConvTranspose2d of ``model`` in one
    forward pass (``run_forward()``): ``{id(layer): flops}``. A transposed convolution
    costs what its adjoint convolution does."""
    counts, originals = {}, {}
    for _, layer in model.named_layers():
        if not isinstance(layer, (Dense, Conv2d, ConvTranspose2d)):
            continue

        def wrapped(x, *args, _layer=layer, _fwd=layer.forward, **kw):
            y = _fwd(x, *args, **kw)
            n = x.shape[0]
            if isinstance(_layer, Dense):
                counts[id(_layer)] = 2 * n * _layer.in_features * _layer.out_features
            else:
                kh, kw_ = _layer.kernel_size
                spatial = y.shape[2] * y.shape[3] if isinstance(_layer, Conv2d) else x.shape[2] * x.shape[3]
                counts[id(_layer)] = 2 * n * _layer.in_channels * _layer.out_channels * kh * kw_ * spatial
            return y
        originals[id(layer)] = layer
        layer.forward = wrapped
    try:
        run_forward()
    finally:
        for layer in originals.values():
            del layer.forward
    return counts


class PipelineCase:
    """One pipeline training step in npvae.

    model, optimizer, objective : as the pipeline builds them. ``forward_backward()``
    runs forward, loss and backward and returns the loss; ``step()`` adds the Adam
    update. ``eps`` is the fixed latent noise; ``input_layer`` the network's first
    layer (its input gradient is not useful work).
    """

    def __init__(self, name, task, cfg, model, optimizer, forward_backward, batch, eps, input_layer,
                 extra=None):
        self.name, self.task, self.cfg = name, task, cfg
        self.model, self.optimizer, self.batch, self.eps = model, optimizer, batch, eps
        self.forward_backward = forward_backward
        self.input_layer = input_layer
        self.extra = extra or {}
        self.layer_flops = count_flops(model, forward_backward)

    def step(self):
        loss = self.forward_backward()
        self.optimizer.step()
        return loss

    def flops(self) -> int:
        """GEMM FLOPs of one step: forward, weight gradients and input gradients, except
        the input gradient of the network's first layer (the data need none)."""
        return sum(f * (2 if lid == id(self.input_layer) else 3) for lid, f in self.layer_flops.items())


def task_config(task: str, preset: str, settings: dict):
    """The config ``npvae train TASK --preset PRESET`` with ``settings`` runs with."""
    return TASKS[task].finalize(make_config(task, settings, preset))


def initial_weights_rng(task: str, cfg) -> np.random.Generator:
    """The generator the engine draws a new run's initial weights from."""
    return TASKS[task].seeds(SimpleNamespace(cfg=cfg))[0]


def _mnist_case(name, preset, flags, size, seed):
    cfg = task_config("mnist", preset, flags)
    if size == "tiny":
        t = TINY["mnist"]
        small = {"batch_size": t["batch_size"], "latent_dim": t["latent_dim"]}
        small["channels" if cfg.model == "unet" else "hidden"] = t["channels_unet"] if cfg.model == "unet" \
            else t["hidden"]
        cfg = task_config("mnist", preset, {**flags, **small})
    # as the engine and MnistTask build it
    model = build_model(cfg.model, rng=initial_weights_rng("mnist", cfg), **cfg.model_kwargs())
    optimizer = Adam(model, lr=cfg.lr, clip_norm=cfg.clip_norm or None)
    objective = SeparationObjective(model, cfg.loss, cfg.mix_weight)
    beta = KLWeight(cfg.beta, cfg.kl_warmup)(cfg.kl_warmup)        # after the warm-up: the full KL term
    data = np.random.default_rng(seed)
    n = cfg.batch_size
    digit = data.uniform(size=(n, 28, 28)).astype(np.float32) * (data.uniform(size=(n, 28, 28)) < 0.2)
    fashion = data.uniform(size=(n, 28, 28)).astype(np.float32)
    mixture = ((digit + fashion) / 2 if cfg.rule == "average" else np.clip(digit + fashion, 0, 1))
    batch = {"mixture": mixture.astype(np.float32), "digit": digit, "fashion": fashion, "beta": beta}
    eps = np.random.default_rng(seed + 1).standard_normal((n, cfg.latent_dim), dtype=np.float32)
    model.reparam = FixedNoise(eps)

    def forward_backward():
        return objective.terms(batch["mixture"], batch["digit"], batch["fashion"], beta=beta,
                               sample=cfg.sample)["total"]
    first = next(layer for layer in model.encoder.layers if layer.params) if hasattr(model, "encoder") \
        else model.enc1
    return PipelineCase(name, "mnist", cfg, model, optimizer, forward_backward, batch, eps, first,
                        {"objective": objective, "beta": beta})


def synthetic_tracks(n_tracks: int, seconds: float, sr: int, seed: int) -> list[Track]:
    """Tracks of noise-like 'voice' (a few partials, amplitude-modulated) and noise
    'accompaniment': enough for the pipeline's normaliser and batch sampler."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    tracks = []
    for k in range(n_tracks):
        f0 = rng.uniform(150, 400)
        voice = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * t))
        acc = rng.standard_normal(n) * 0.1
        tracks.append(Track(f"synthetic{k}", 0.2 * voice, acc, sr))
    return tracks


def _music_case(name, preset, flags, size, seed):
    settings = dict(flags)
    if size == "tiny":
        # as many levels as the full case, each tiny; an excerpt as wide as one bottleneck column
        levels = len(task_config("music", preset, settings).channels)
        settings.update(TINY["music"], channels=(2, 3, *[4] * (levels - 2)), frames=2 ** levels)
    cfg = task_config("music", preset, settings)
    stft_cfg = TINY_STFT if size == "tiny" else STFTConfig.for_dataset(cfg.dataset)
    # as the engine and MusicTask build it (the data are synthetic tracks)
    tracks = synthetic_tracks(4, 4.0 if size == "tiny" else 20.0, stft_cfg.sample_rate, seed)
    model = SpectrogramUNetVAE(cfg.channels, cfg.latent_channels, rng=initial_weights_rng("music", cfg))
    sep = Separator(model, stft_cfg, Normalizer.fit(tracks, stft_cfg, cfg.compression))
    loss_config = cfg.loss_config()
    objective = MusicObjective(sep, loss_config)
    optimizer = Adam(model, lr=cfg.lr, clip_norm=cfg.clip_norm or None)
    rng = np.random.default_rng(seed)
    batch = sample_batch(tracks, rng, cfg.batch_size, cfg.frames, stft_cfg, cfg.remix_prob, cfg.gain_db)
    d = model.DOWNSAMPLE
    shape = (cfg.batch_size, cfg.latent_channels, sep.norm.n_bins // d, cfg.frames // d)
    eps = np.random.default_rng(seed + 1).standard_normal(shape, dtype=np.float32)
    model.reparam = FixedNoise(eps)
    beta = KLWeight(cfg.beta, cfg.kl_warmup)(float(cfg.epochs))       # past the KL warm-up

    def forward_backward():
        return objective.terms(batch, beta=beta)["total"]
    return PipelineCase(name, "music", cfg, model, optimizer, forward_backward, batch, eps, model.enc1,
                        {"objective": objective, "separator": sep, "loss_config": loss_config, "beta": beta})


def build_pipeline_case(name: str, size: str = "full", seed: int = 0) -> PipelineCase:
    """Case ``name`` of :data:`PIPELINE_CASES` at ``size`` "full" or "tiny"."""
    if name not in PIPELINE_CASES:
        raise ValueError(f"unknown pipeline case {name!r}; choose one of {tuple(PIPELINE_CASES)}")
    if size not in ("full", "tiny"):
        raise ValueError(f"size must be 'full' or 'tiny', got {size!r}")
    task, preset, flags = PIPELINE_CASES[name]
    build = _mnist_case if task == "mnist" else _music_case
    return build(name, preset, flags, size, seed)


def describe(case: PipelineCase) -> str:
    """One line: the command whose model the case is, and its size."""
    task, preset, flags = PIPELINE_CASES[case.name]
    cmd = f"npvae train {task}" + ("" if preset == "default" else f" --preset {preset}") + \
        "".join(f" --{k} {v}" for k, v in flags.items())
    return f"{cmd}: {type(case.model).__name__}, {case.model.num_parameters():,} parameters"


__all__ = ["PIPELINE_CASES", "PipelineCase", "FixedNoise", "build_pipeline_case", "count_flops",
           "synthetic_tracks", "describe"]
