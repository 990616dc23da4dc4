"""Singing-voice separation with the spectrogram VAE (Part II): features, training,
separation of whole files and evaluation.

The flow, for a mono mixture x at the model's sample rate:

1. ``X = stft(x)`` (F = n_fft/2 + 1 bins); the network sees the first F - 1 bins
   (the Nyquist bin is dropped so F - 1 = 512 is divisible by 8).
2. Features: ``c(|X|)`` with ``c`` = log1p or a power law, then standardised per
   frequency with the training set's mean and standard deviation (a
   :class:`Normalizer`, stored with the model).
3. The network gives one soft mask per source; estimates are ``mask * X``, so they
   reuse the mixture's phase (optionally a Wiener-style power-ratio refinement).
   The Nyquist bin takes the mask of the bin below it.
4. ``istft`` with the original length gives the waveforms.

Training loss (per time-frequency bin, on magnitudes divided by the training
set's mean mixture magnitude ``mag_scale``)::

    total = D(M_v|X|, |V|) + D(M_a|X|, |A|) + w_mix D(M_v|X| + M_a|X|, |X|) + beta KL

with D one of :mod:`npvae.spectral_losses` and KL the latent's nats per bin.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import spectral_losses
from ..audio.io import resample
from ..audio.remix import sample_remix_batch
from ..audio.stft import STFTConfig, ideal_ratio_mask, istft, stft
from ..errors import FileFormatError
from ..layers.base import build_layer
from ..metrics.audio import gnsdr, separation_scores, si_sdr, weighted_mean
from ..models.music import SpectrogramUNetVAE
from ..plotting import plot_example, plot_history
from ..schedules import lr_at
from ..vae import KLWeight, kl_divergence
from ..validate import as_float_audio, check_settings

SOURCES = ("vocals", "accompaniment")


# ----------------------------------------------------------------------------- features

@dataclass
class Normalizer:
    """How a mixture magnitude becomes the network's input.

    compression : "log" (``log1p(|X|)``) or "power" (``|X|^power``).
    power : exponent of the power law.
    mean, std : per-bin statistics (n_bins,) of the compressed training mixtures.
    mag_scale : mean training mixture magnitude; losses see magnitudes divided by it.
    """
    compression: str = "log"
    power: float = 0.3
    mean: np.ndarray = field(default_factory=lambda: np.zeros(512, np.float32))
    std: np.ndarray = field(default_factory=lambda: np.ones(512, np.float32))
    mag_scale: float = 1.0

    def __post_init__(self):
        if self.compression not in ("log", "power"):
            raise ValueError(f"compression must be 'log' or 'power', got {self.compression!r}")
        self.mean = np.asarray(self.mean, np.float32)
        self.std = np.asarray(self.std, np.float32)

    @property
    def n_bins(self) -> int:
        return self.mean.shape[0]

    def compress(self, mag: np.ndarray) -> np.ndarray:
        return np.log1p(mag) if self.compression == "log" else mag ** self.power

    def __call__(self, mag: np.ndarray) -> np.ndarray:
        """mag : (..., F, T) mixture magnitudes (F >= n_bins). Returns float32
        (..., n_bins, T) standardised features."""
        c = self.compress(mag[..., :self.n_bins, :].astype(np.float32, copy=False))
        return ((c - self.mean[:, None]) / self.std[:, None]).astype(np.float32, copy=False)

    def to_dict(self) -> dict:
        return {"compression": self.compression, "power": float(self.power),
                "mean": self.mean.tolist(), "std": self.std.tolist(), "mag_scale": float(self.mag_scale)}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        return cls(d["compression"], float(d["power"]), np.asarray(d["mean"]), np.asarray(d["std"]),
                   float(d["mag_scale"]))

    @classmethod
    def fit(cls, tracks, stft_cfg: STFTConfig, compression: str = "log", power: float = 0.3,
            n_bins: int | None = None) -> "Normalizer":
        """Statistics of the tracks' mixtures (the order of ``tracks`` does not matter)."""
        n_bins = n_bins or stft_cfg.n_freq - 1
        probe = cls(compression, power)
        s1 = np.zeros(n_bins)
        s2 = np.zeros(n_bins)
        total_mag, count = 0.0, 0
        for t in tracks:
            mag = np.abs(stft(t.mixture(), stft_cfg))[:n_bins]
            c = probe.compress(mag).astype(np.float64)
            s1 += c.sum(axis=1)
            s2 += (c * c).sum(axis=1)
            total_mag += float(mag.sum(dtype=np.float64))
            count += mag.shape[1]
        if count == 0:
            raise ValueError("cannot fit a Normalizer to no tracks")
        mean = s1 / count
        std = np.sqrt(np.maximum(s2 / count - mean ** 2, 1e-8))
        return cls(compression, power, mean, std, total_mag / (count * n_bins))


# ----------------------------------------------------------------------------- batches

def sample_batch(tracks, rng: np.random.Generator, batch_size: int, frames: int,
                 stft_cfg: STFTConfig, remix_prob: float = 0.5, gain_db: float = 0.0,
                 part: slice | None = None) -> dict:
    """Random training excerpts as spectrograms.

    Each item takes a random track (chance proportional to its length) and a random
    segment of ``frames`` STFT frames; with probability ``remix_prob`` the accompaniment
    comes from another random position of the same track (circular shift), and its level
    is changed by a random gain in [-gain_db, gain_db] dB.
    Returns complex64 "voice", "accompaniment" and "mixture" of shape (N, F, frames).
    ``part`` (a slice of range(batch_size): one MPI rank's shard) makes only those items,
    N = its length; the random draws are those of the whole batch, so the parts of all
    ranks make up the batch one process would get.
    """
    part = slice(0, batch_size) if part is None else part
    keep = range(batch_size)[part]
    lengths = np.array([t.n_samples for t in tracks], dtype=np.float64)
    hop, n_fft = stft_cfg.hop, stft_cfg.n_fft
    seg = (frames - 1) * hop + n_fft          # enough samples for `frames` full frames
    voice = np.zeros((len(keep), seg), np.float32)
    acc = np.zeros((len(keep), seg), np.float32)
    for i, k in enumerate(rng.choice(len(tracks), size=batch_size, p=lengths / lengths.sum())):
        t = tracks[k]
        n = t.n_samples
        start = int(rng.integers(0, max(1, n - seg + 1)))
        shift = int(rng.integers(1, n)) if rng.random() < remix_prob else 0
        g = 10.0 ** (rng.uniform(-gain_db, gain_db) / 20.0) if gain_db > 0 else 1.0
        if i not in keep:
            continue
        j = i - keep.start
        v = t.voice[start:start + seg]
        voice[j, :len(v)] = v
        a_src = np.roll(t.accompaniment, shift) if shift else t.accompaniment
        a = a_src[start:start + seg]
        acc[j, :len(a)] = a * g
    # Keep only frames whose window lies wholly inside the segment.
    V = stft(voice, stft_cfg)
    A = stft(acc, stft_cfg)
    k0 = _first_full_frame(stft_cfg)
    V, A = V[..., k0:k0 + frames], A[..., k0:k0 + frames]
    return {"voice": V, "accompaniment": A, "mixture": V + A}


def _first_full_frame(cfg: STFTConfig) -> int:
    """Index of the first frame whose window starts at or after sample 0."""
    # frame k is centred on (k + first_frame) * hop and spans +- n_fft / 2
    return int(math.ceil((cfg.n_fft / 2) / cfg.hop)) - cfg.first_frame


# ----------------------------------------------------------------------------- the model bundle

@dataclass
class Separator:
    """A trained network with everything needed to use it: STFT and feature settings."""
    model: SpectrogramUNetVAE
    stft_cfg: STFTConfig
    norm: Normalizer

    # -- masks ---------------------------------------------------------------
    def masks(self, mix_mag: np.ndarray, chunk_frames: int = 512, context: int = 48) -> np.ndarray:
        """Soft masks (n_sources, F, T) for a mixture magnitude (F, T) of any length.

        The network runs on chunks of ``chunk_frames`` frames, each with ``context``
        frames of real input on both sides (multiples of 8, so the strided layers keep
        their alignment); only a chunk's centre is kept. With a context at least the
        network's receptive-field radius this equals one pass over the whole file, while
        memory stays bounded by the chunk size.
        """
        return predict_masks(self.model, self.norm(mix_mag), mix_mag.shape[0], chunk_frames, context)

    # -- waveforms -----------------------------------------------------------
    def separate_mono(self, x: np.ndarray, wiener: bool = False, chunk_frames: int = 512,
                      context: int = 48) -> np.ndarray:
        """x : (n_samples,) at ``stft_cfg.sample_rate``. Returns float32 (n_sources, n_samples)."""
        x = np.asarray(x, np.float32)
        X = stft(x, self.stft_cfg)
        M = self.masks(np.abs(X), chunk_frames, context)
        if wiener:
            M = wiener_masks(M * np.abs(X)[None])
        return istft((M * X[None]).astype(np.complex64), self.stft_cfg, length=len(x))

    def separate(self, audio: np.ndarray, sr: int, wiener: bool = False, chunk_frames: int = 512,
                 context: int = 48) -> np.ndarray:
        """audio : (n_samples,) or (n_samples, n_channels) at ``sr`` Hz.

        Every channel is separated on its own at the model's rate and resampled back.
        When ``sr`` is higher than the model's rate, the band the model cannot see (above
        its Nyquist frequency, where singing voice has little energy) goes to the last
        source, the accompaniment, so the estimates still add up to the input.
        Returns float32 (n_sources, n_samples, n_channels) (channel axis absent for 1-D input),
        the same length and rate as the input. Integer samples are scaled to full scale 1.0
        (:func:`npvae.validate.as_float_audio`); NaN, empty or channels-first audio is refused.
        """
        if int(sr) != sr or sr <= 0:
            raise ValueError(f"sample rate must be a positive whole number of Hz, got {sr}")
        audio = as_float_audio(audio)
        mono = audio.ndim == 1
        chans = audio[:, None] if mono else audio
        n = chans.shape[0]
        rate = self.stft_cfg.sample_rate
        work = resample(chans, sr, rate)
        out = np.zeros((self.model.n_sources, n, chans.shape[1]), np.float32)
        for c in range(chans.shape[1]):
            est = self.separate_mono(work[:, c], wiener, chunk_frames, context)   # (S, n_work)
            est = resample(est.T, rate, sr).T
            m = min(n, est.shape[1])
            out[:, :m, c] = est[:, :m]
        if sr > rate:
            back = resample(work, rate, sr)[:n]
            out[-1, :back.shape[0]] += chans[:back.shape[0]] - back
        return out[..., 0] if mono else out

    # -- storage -------------------------------------------------------------
    def config(self) -> dict:
        """STFT settings (sample_rate, n_fft, hop, window) and the normaliser (a group:
        compression, power, mean (n_bins,), std (n_bins,), mag_scale) for the HDF5 /config."""
        n = self.norm
        return {**asdict(self.stft_cfg), "normalizer": {
            "compression": n.compression, "power": float(n.power), "mean": n.mean.copy(),
            "std": n.std.copy(), "mag_scale": float(n.mag_scale)}}


def predict_masks(model, feats: np.ndarray, n_freq: int, chunk_frames: int = 512,
                  context: int = 48) -> np.ndarray:
    """Run ``model`` over normalised features (n_bins, T) in chunks; masks (S, n_freq, T)."""
    d = model.DOWNSAMPLE
    if chunk_frames % d or context % d or chunk_frames <= 0 or context < 0:
        raise ValueError(f"chunk_frames ({chunk_frames}) and context ({context}) must be "
                         f"non-negative multiples of {d}")
    model.eval()
    n_bins, T = feats.shape
    Tp = -(-T // d) * d
    x = np.zeros((1, 1, n_bins, Tp), model.dtype)
    x[0, 0, :, :T] = feats
    out = np.empty((model.n_sources, n_freq, Tp), np.float32)
    for s in range(0, Tp, chunk_frames):
        e = min(Tp, s + chunk_frames)
        lo, hi = max(0, s - context), min(Tp, e + context)
        m = model.forward(x[..., lo:hi], sample=False)[0]
        out[:, :n_bins, s:e] = m[:, :, s - lo:e - lo]
    out[:, n_bins:] = out[:, n_bins - 1:n_bins]      # bins the network does not see (Nyquist)
    return out[..., :T]


def wiener_masks(mags: np.ndarray, power: float = 2.0, eps: float = 1e-10) -> np.ndarray:
    """Power-ratio masks from source magnitude estimates (S, F, T): ``m_j = |S_j|^p / sum_k |S_k|^p``.

    They sum to one, so the estimates add up to the mixture exactly.
    """
    p = mags.astype(np.float64) ** power
    return (p / (p.sum(axis=0, keepdims=True) + eps)).astype(np.float32)


# ----------------------------------------------------------------------------- training

@dataclass
class LossConfig:
    """The training objective (see the module docstring)."""
    loss: str = "l1"
    compression: str = "none"
    power: float = 0.5
    mix_weight: float = 0.5
    beta: float = 0.01
    kl_warmup: float = 1.0
    sample: bool = True       # False: the latent is taken at its mean in training too


class MusicObjective:
    """Loss terms of a batch, forward and backward: ``__call__(batch, epoch) -> terms``."""

    def __init__(self, sep: Separator, cfg: LossConfig):
        self.sep, self.cfg = sep, cfg
        self.loss = spectral_losses.get_loss(cfg.loss, cfg.compression, cfg.power)
        self.kl_weight = KLWeight(cfg.beta, cfg.kl_warmup)

    def _inputs(self, batch):
        norm, dt = self.sep.norm, self.sep.model.dtype
        nb = norm.n_bins
        mix = np.abs(batch["mixture"])
        x = norm(mix)[:, None].astype(dt, copy=False)                   # (N, 1, nb, T)
        s = 1.0 / norm.mag_scale
        mags = [(np.abs(batch[k])[:, :nb] * s).astype(dt, copy=False) for k in ("voice", "accompaniment")]
        return x, (mix[:, :nb] * s).astype(dt, copy=False), mags

    def terms(self, batch, epoch: float = 0.0, backward: bool = True) -> dict:
        model, cfg = self.sep.model, self.cfg
        x, mix, (v, a) = self._inputs(batch)
        masks = model.forward(x, sample=model.training and cfg.sample)
        est_v, est_a = masks[:, 0] * mix, masks[:, 1] * mix
        lv, gv = self.loss(est_v, v)
        la, ga = self.loss(est_a, a)
        lm, gm = self.loss(est_v + est_a, mix)
        n, _, f, t = x.shape
        kl, dmu, dlv = kl_divergence(model.mu.reshape(n, -1), model.logvar.reshape(n, -1))
        kl_bin = kl / (f * t)                                           # nats per T-F bin
        beta = self.kl_weight(epoch)
        # With beta = 0 the KL is only reported: the deterministic net's latent is
        # unconstrained, its KL can overflow, and 0 * inf would make the loss NaN.
        total = lv + la + cfg.mix_weight * lm + (beta * kl_bin if beta else 0.0)
        if backward:
            w = cfg.mix_weight
            dmask = np.stack([(gv + w * gm) * mix, (ga + w * gm) * mix], axis=1).astype(x.dtype)
            k = np.float32(beta / (f * t))
            dmu, dlv = (dmu * k, dlv * k) if beta else (np.zeros_like(dmu), np.zeros_like(dlv))
            model.backward(dmask, dmu.reshape(model.mu.shape), dlv.reshape(model.logvar.shape))
        return {"total": total, "vocals": lv, "accompaniment": la, "mixture": lm, "kl": kl_bin,
                "beta": beta}

    def on_tracks(self, tracks, max_frames: int = 1024) -> dict:
        """Mean loss terms over whole tracks (eval mode, no gradients), weighted by frames."""
        sums, frames = {}, 0
        d = self.sep.model.DOWNSAMPLE
        for tr in tracks:
            V = stft(tr.voice, self.sep.stft_cfg)
            A = stft(tr.accompaniment, self.sep.stft_cfg)
            T = min(V.shape[1] // d * d, max_frames)
            batch = {"voice": V[None, :, :T], "accompaniment": A[None, :, :T]}
            batch["mixture"] = batch["voice"] + batch["accompaniment"]
            for k, val in self.terms(batch, 1e9, backward=False).items():
                sums[k] = sums.get(k, 0.0) + val * T
            frames += T
        return {k: v / frames for k, v in sums.items() if k != "beta"}


# ----------------------------------------------------------------------------- evaluation

def _scores(refs, ests, mix):
    s = separation_scores(refs, ests, mix)
    s["si_sdr"] = si_sdr(refs, ests)
    return s


def oracle_estimates(track, stft_cfg: STFTConfig) -> np.ndarray:
    """Ideal-ratio-mask (magnitude ratio) estimates of voice and accompaniment, (2, n)."""
    V, A = stft(track.voice, stft_cfg), stft(track.accompaniment, stft_cfg)
    m = ideal_ratio_mask(V, A, power=1.0)
    X = V + A
    return istft(np.stack([m * X, (1 - m) * X]).astype(np.complex64), stft_cfg, length=track.n_samples)


def evaluate(sep: Separator, tracks, wiener: bool = False, baselines: bool = True,
             progress=None) -> dict:
    """Separation scores over ``tracks`` for the model, the IRM oracle and the mixture.

    Returns ``{"clip_names": [...], "clip_seconds": (C,), "<system>_<metric>": (C, 2)}``
    for systems "model", "oracle", "mixture" and metrics sdr, sir, sar, nsdr, si_sdr
    (columns: vocals, accompaniment), plus the summaries of :func:`summarize`.
    """
    systems = ("model", "oracle", "mixture") if baselines else ("model",)
    per: dict[str, list] = {}
    names, seconds, skipped = [], [], []
    for tr in tracks:
        mix = tr.mixture()
        refs = tr.sources()
        silent = [SOURCES[j] for j in range(len(refs)) if not np.any(refs[j])]
        if silent:
            # BSS Eval has no SDR for a silent reference: leave the clip out, and say so.
            skipped.append(f"{tr.name} (silent {' and '.join(silent)})")
            if progress:
                progress(f"{tr.name}: skipped, its {' and '.join(silent)} reference is silent")
            continue
        ests = {"model": sep.separate_mono(mix, wiener=wiener)}
        if baselines:
            ests["oracle"] = oracle_estimates(tr, sep.stft_cfg)
            ests["mixture"] = np.stack([mix, mix])
        for sysname in systems:
            for metric, val in _scores(refs, ests[sysname], mix).items():
                if metric == "mixture_sdr":      # the floor row carries it as its own sdr
                    continue
                per.setdefault(f"{sysname}_{metric}", []).append(np.asarray(val, np.float64))
        names.append(tr.name)
        seconds.append(tr.duration)
        if progress:
            progress(tr.name)
    if not names:
        raise ValueError(f"no clip can be scored: every clip has a silent reference source "
                         f"({', '.join(skipped)}); BSS Eval needs both sources to have energy")
    out = {"clip_names": names, "clip_seconds": np.asarray(seconds), "skipped_clips": skipped}
    out.update({k: np.stack(v) for k, v in per.items()})
    out.update(summarize(out, systems))
    return out


def summarize(per_clip: dict, systems=("model", "oracle", "mixture")) -> dict:
    """Length-weighted summaries per system and source: ``<system>_<source>_gnsdr``,
    ``_gsir``, ``_gsar``, ``_gsdr`` and the plain means ``_mean_sdr``, ``_mean_si_sdr``."""
    w = per_clip["clip_seconds"]
    out = {}
    for sysname in systems:
        for j, src in enumerate(SOURCES):
            p = f"{sysname}_{src}_"
            out[p + "gnsdr"] = float(gnsdr(per_clip[f"{sysname}_nsdr"][:, j], w))
            out[p + "gsir"] = float(weighted_mean(per_clip[f"{sysname}_sir"][:, j], w))
            out[p + "gsar"] = float(weighted_mean(per_clip[f"{sysname}_sar"][:, j], w))
            out[p + "gsdr"] = float(weighted_mean(per_clip[f"{sysname}_sdr"][:, j], w))
            out[p + "mean_sdr"] = float(np.mean(per_clip[f"{sysname}_sdr"][:, j]))
            out[p + "mean_si_sdr"] = float(np.mean(per_clip[f"{sysname}_si_sdr"][:, j]))
    return out


def format_table(summary: dict, systems=("model", "oracle", "mixture")) -> str:
    """A plain-text table of the summaries, one row per system and source."""
    labels = {"model": "VAE (this model)", "oracle": "ideal ratio mask (ceiling)",
              "mixture": "unprocessed mixture (floor)"}
    head = f"{'system':30s} {'source':14s} {'GNSDR':>7s} {'GSIR':>7s} {'GSAR':>7s} {'GSDR':>7s} {'SI-SDR':>7s}"
    lines = [head, "-" * len(head)]
    for sysname in systems:
        for src in SOURCES:
            p = f"{sysname}_{src}_"
            if p + "gnsdr" not in summary:
                continue
            lines.append(f"{labels.get(sysname, sysname):30s} {src:14s} {summary[p + 'gnsdr']:7.2f} "
                         f"{summary[p + 'gsir']:7.2f} {summary[p + 'gsar']:7.2f} "
                         f"{summary[p + 'gsdr']:7.2f} {summary[p + 'mean_si_sdr']:7.2f}")
    return "\n".join(lines) + "\n(dB; G* = length-weighted means over clips, SI-SDR = plain mean)"


def quick_validation(sep: Separator, tracks) -> dict:
    """Cheap per-epoch check: mean SI-SDR improvement (dB) of the vocals and accompaniment."""
    imp = []
    for tr in tracks:
        mix = tr.mixture()
        refs = tr.sources()
        est = sep.separate_mono(mix)
        if not np.any(est[0]) or not np.any(est[1]):
            imp.append([-np.inf, -np.inf])
            continue
        imp.append(si_sdr(refs, est) - si_sdr(refs, np.stack([mix, mix])))
    imp = np.asarray(imp)
    return {"vocals_si_sdri": float(np.mean(imp[:, 0])), "accompaniment_si_sdri": float(np.mean(imp[:, 1]))}


# ----------------------------------------------------------------------------- examples, figures

def example(sep: Separator, track, seconds: float | None = None, wiener: bool = False) -> dict:
    """Waveforms and magnitude spectrograms of one clip and its estimates (schema's /examples)."""
    n = track.n_samples if seconds is None else min(track.n_samples, int(seconds * track.sr))
    mix = track.mixture()[:n]
    est = sep.separate_mono(mix, wiener=wiener)
    waves = {"mixture": mix, "vocals": track.voice[:n], "accompaniment": track.accompaniment[:n],
             "vocals_hat": est[0], "accompaniment_hat": est[1]}
    ex = {"name": track.name}
    for k, w in waves.items():
        ex[k] = np.asarray(w, np.float32)
        ex[k + "_mag"] = np.abs(stft(np.asarray(w, np.float32), sep.stft_cfg)).astype(np.float32)
    return ex


# ----------------------------------------------------------------------------- files

MODEL_FILE = "model.h5"
RESULTS_FILE = "results.h5"


def save_separator(path, sep: Separator, config: dict | None = None) -> Path:
    """Write the model file (kind "model"): /model and /config with the STFT settings and normaliser."""
    from ..io import save_model
    return save_model(path, sep.model, {**(config or {}), **sep.config()})


def save_music_results(path, sep: Separator, config: dict, history: dict, metrics: dict,
                       examples: dict) -> Path:
    """Write the results file (kind "music_results"): model, config, history, metrics, examples."""
    from ..io import save_results
    return save_results(path, "music_results", sep.model, {**config, **sep.config()}, history, metrics, examples)


def load_separator(path, dtype=np.float32) -> Separator:
    """A Separator from a run directory, a model/results HDF5 file or a checkpoint.npz."""
    path = Path(path)
    if path.is_dir():
        for name in (MODEL_FILE, RESULTS_FILE, "checkpoint.npz"):
            if (path / name).exists():
                return load_separator(path / name, dtype)
        raise FileFormatError(f"{path} holds no {MODEL_FILE}, {RESULTS_FILE} or checkpoint.npz; "
                              "pass the run directory that train_music.py wrote (--out)")
    if not path.exists():
        raise FileFormatError(f"model file {path} does not exist")
    if path.suffix == ".npz":
        from ..checkpoint import load_checkpoint
        arrays, meta = load_checkpoint(path)
        spec, config = meta["model_spec"], meta["config"]
        state = {k[6:]: v for k, v in arrays.items() if k.startswith("model/")}
    else:
        from .. import h5mat
        tree = h5mat.read_tree(path, expected_kind=("model", "music_results"))
        from ..io import parse_spec
        spec, config, state = parse_spec(path, tree["model"]["spec"]), tree["config"], tree["model"]["params"]
    model = build_layer(spec, dtype=dtype)
    if not isinstance(model, SpectrogramUNetVAE):
        raise FileFormatError(f"{path} holds a {type(model).__name__}, not a music separation model")
    from ..io import load_parameters
    load_parameters(path, model, state)
    stft_cfg = STFTConfig(int(config["sample_rate"]), int(config["n_fft"]), int(config["hop"]),
                          str(config["window"]))
    norm = config["normalizer"] if "normalizer" in config else config["normalizer_dict"]
    norm = Normalizer.from_dict(json.loads(norm) if isinstance(norm, str) else norm)
    return Separator(model, stft_cfg, norm)


# ----------------------------------------------------------------------------- the whole run

@dataclass
class TrainConfig:
    """Settings of :func:`train` (the options of ``scripts/train_music.py``)."""
    dataset: str = "mir1k"
    data_dir: str | None = None
    out: str | None = None                # None: a new folder runs/music-<dataset>-<time>
    epochs: int = 50
    batch_size: int = 8
    frames: int = 64
    lr: float = 1e-3
    seed: int = 0
    channels: tuple = (16, 32, 64)
    latent_channels: int = 32
    compression: str = "log"
    loss: str = "l1"
    loss_compression: str = "none"
    mix_weight: float = 0.5
    beta: float = 0.01
    kl_warmup: float = 1.0
    remix_prob: float = 0.5
    gain_db: float = 3.0
    remix: str = "shift"                  # "cross": accompaniment from another clip (npvae.audio.remix)
    display_every: int = 5
    snippet_seconds: float = 4.0
    max_val_tracks: int = 24
    max_train_tracks: int | None = None   # first N training clips only (quick runs, tests)
    sample: bool = True                   # False: no latent sampling in training (deterministic net)
    progress: bool = True

    def __post_init__(self):
        check_settings(self, positive_int=("epochs", "batch_size", "frames", "channels", "latent_channels",
                                           "display_every", "max_val_tracks", "max_train_tracks"),
                       nonneg_int=("seed",), positive=("lr", "snippet_seconds"),
                       nonneg=("mix_weight", "beta", "kl_warmup", "remix_prob", "gain_db"),
                       choices={"dataset": ("mir1k", "irmas", "stems"), "compression": ("log", "power"),
                                "loss": tuple(spectral_losses.LOSSES),
                                "loss_compression": ("none", "log", "power"), "remix": ("shift", "cross")},
                       optional=("max_train_tracks",))
        d = SpectrogramUNetVAE.DOWNSAMPLE
        if self.frames % d:
            raise ValueError(f"--frames must be a multiple of {d} (the network halves the time axis "
                             f"{d.bit_length() - 1} times), got {self.frames}")
        if len(self.channels) != 3:
            raise ValueError(f"--channels takes 3 numbers, got {list(self.channels)}")
        if self.remix_prob > 1:
            raise ValueError(f"remix_prob is a probability in [0, 1], got {self.remix_prob}")


def _split_tracks(dataset: str, data_dir, split: str):
    from ..audio.datasets import load_tracks
    return load_tracks(dataset, split, data_dir)


def train(cfg: TrainConfig, resume: bool = False, log=print, overwrite: bool = False) -> dict:
    """Train a separator as ``cfg`` says; writes into ``cfg.out``:

    checkpoint.npz (every epoch, atomically), figures/epoch_XXX.png and
    snippets/epoch_XXX_{vocals,accompaniment}.wav every ``display_every`` epochs,
    loss_curves.png, model.h5 and results.h5 at the end. Returns a dict with the
    Separator, the history and the run's wall time.
    """
    from .. import distributed
    from ..audio.io import write_audio
    from ..optim import Adam
    from ..training import Trainer

    if cfg.remix not in ("shift", "cross"):
        raise ValueError(f"remix must be 'shift' (same clip, shifted) or 'cross' (another clip), got {cfg.remix!r}")
    from ..audio.datasets import dataset_folder
    from ..fileguard import prepare_run_dir, unique_run_dir

    t_start = time.perf_counter()
    comm = distributed.world()
    if cfg.batch_size < comm.size:
        raise ValueError(f"--batch-size {cfg.batch_size} is smaller than the {comm.size} MPI ranks that share "
                         "each batch; use a batch size of at least the number of ranks")
    if not comm.is_root:
        log = lambda text: None  # noqa: E731 - rank 0 alone speaks
    if cfg.out is None and resume:
        raise ValueError("--resume needs --out RUN_DIR (the run to continue)")
    out = None
    if comm.is_root:      # rank 0 checks (or creates) the one run folder; the others use it
        out = unique_run_dir(Path("runs") / f"music-{cfg.dataset}") if cfg.out is None else \
            prepare_run_dir(cfg.out, resume=resume, overwrite=overwrite)
    out = Path(comm.bcast_object(out))
    cfg = replace(cfg, out=str(out))
    folder = dataset_folder(cfg.dataset, cfg.data_dir)
    log(f"data: {folder}")
    out.mkdir(parents=True, exist_ok=True)
    stft_cfg = STFTConfig.for_dataset(cfg.dataset)
    train_tracks = _split_tracks(cfg.dataset, cfg.data_dir, "train")[:cfg.max_train_tracks]
    val_tracks = _split_tracks(cfg.dataset, cfg.data_dir, "validation")[:cfg.max_val_tracks]
    log(f"{cfg.dataset}: {len(train_tracks)} training clips ({sum(t.duration for t in train_tracks):.0f} s), "
        f"{len(val_tracks)} validation clips ({sum(t.duration for t in val_tracks):.0f} s)")

    rng = np.random.default_rng(cfg.seed)
    model = SpectrogramUNetVAE(tuple(cfg.channels), cfg.latent_channels, rng=np.random.default_rng(cfg.seed + 1))
    model.rng = comm.noise(rng)    # rng itself when training alone
    run_config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    run_config["data_folder"] = str(folder)
    ckpt = out / "checkpoint.npz"
    if resume and ckpt.exists():
        from ..checkpoint import load_checkpoint
        _, meta = load_checkpoint(ckpt)
        norm = Normalizer.from_dict(meta["config"]["normalizer_dict"])
    else:
        norm = Normalizer.fit(train_tracks, stft_cfg, cfg.compression)
    norm = comm.bcast_object(norm)    # rank 0's, also where only it can read the checkpoint
    run_config["normalizer_dict"] = norm.to_dict()
    run_config.update(asdict(stft_cfg))
    sep = Separator(model, stft_cfg, norm)
    objective = MusicObjective(sep, LossConfig(cfg.loss, cfg.loss_compression, 0.5, cfg.mix_weight,
                                               cfg.beta, cfg.kl_warmup, cfg.sample))
    opt = Adam(model, lr=cfg.lr, clip_norm=5.0)
    trainer = Trainer(model, opt, rng, out, config=run_config, display_every=cfg.display_every,
                      progress=cfg.progress, log=log, comm=comm)
    if resume and trainer.resume():
        log(f"resumed from {ckpt} after epoch {trainer.epoch}")
    log(f"model: {model.num_parameters()} parameters; {asdict(stft_cfg)}")
    if comm.parallel:
        log(f"data-parallel over {comm.size} MPI ranks, {cfg.batch_size // comm.size}+ excerpts of each batch "
            f"of {cfg.batch_size} per rank, {comm.threads} thread(s) each")

    total_frames = sum(stft_cfg.n_frames(t.n_samples) for t in train_tracks)
    n_batches = max(1, total_frames // (cfg.batch_size * cfg.frames))

    sampler = {"shift": sample_batch, "cross": sample_remix_batch}[cfg.remix]

    def batches(r):
        for _ in range(n_batches):
            yield sampler(train_tracks, r, cfg.batch_size, cfg.frames, stft_cfg, cfg.remix_prob, cfg.gain_db,
                          part=comm.shard(cfg.batch_size))

    def step(batch, epoch):
        opt.lr = lr_at(epoch, cfg.epochs, cfg.lr)
        return objective.terms(batch, epoch)

    def validate():
        terms = objective.on_tracks(val_tracks)
        terms.update(quick_validation(sep, val_tracks))
        terms["lr"] = opt.lr
        return terms

    show = val_tracks[0] if val_tracks else train_tracks[0]

    def on_display(epoch, history):
        ex = example(sep, show, cfg.snippet_seconds)
        plot_example(ex, out / "figures" / f"epoch_{epoch:03d}.png", stft_cfg,
                     f"{show.name}, epoch {epoch}")
        for key in ("vocals_hat", "accompaniment_hat"):
            write_audio(out / "snippets" / f"epoch_{epoch:03d}_{key.replace('_hat', '')}.wav",
                        ex[key], stft_cfg.sample_rate)

    history = trainer.fit(cfg.epochs, batches, n_batches, step, validate, on_display)
    train_seconds = time.perf_counter() - t_start
    if not comm.is_root:   # rank 0 writes the files
        return {"separator": sep, "history": history, "seconds": train_seconds}
    plot_history(history, out / "loss_curves.png")
    save_separator(out / MODEL_FILE, sep, _flat_config(run_config))
    examples = {"sample_rate": stft_cfg.sample_rate,
                "clip0": example(sep, show, cfg.snippet_seconds)}
    metrics = {f"final_val_{k}": float(v[-1]) for k, v in history.items() if k.startswith("val_")}
    metrics["train_seconds"] = train_seconds
    save_music_results(out / RESULTS_FILE, sep, _flat_config(run_config), history, metrics, examples)
    log(f"wrote {out / MODEL_FILE}, {out / RESULTS_FILE}, {out / 'loss_curves.png'} "
        f"({train_seconds / 60:.1f} min)")
    return {"separator": sep, "history": history, "seconds": train_seconds}


def _flat_config(run_config: dict) -> dict:
    from .. import __version__
    cfg = {k: v for k, v in run_config.items() if k != "normalizer_dict"}
    cfg["npvae_version"] = __version__
    return cfg
