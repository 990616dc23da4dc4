"""A trained spectrogram network with everything needed to use it on audio (music).

For a mono mixture x at the model's sample rate:

1. ``X = stft(x)`` (F = n_fft/2 + 1 bins); the network sees the first F - 1 bins
   (the Nyquist bin is dropped so F - 1 = 512 is divisible by 8).
2. Features: ``c(|X|)`` with ``c`` = log1p or a power law, then standardised per
   frequency with the training set's mean and standard deviation (a
   :class:`Normalizer`, stored with the model).
3. The network gives one soft mask per source (:func:`predict_masks`, in chunks);
   estimates are ``mask * X``, so they reuse the mixture's phase (optionally with
   power-ratio masks, :func:`wiener_masks`). The Nyquist bin takes the mask of the bin
   below it.
4. ``istft`` with the original length gives the waveforms.

:meth:`Separator.config` is the one serialisation of the STFT settings and the
normaliser (the ``/config`` of model files, also in checkpoints);
:meth:`Separator.from_config` reads it back. Files are :mod:`npvae.files.model_file`'s job.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.signal import get_window

from .. import threads
from ..audio.io import resample
from ..audio.stft import STFTConfig, istft, stft
from ..errors import FileFormatError
from ..layers.base import inference
from ..layers.fold import fold_batchnorm
from ..models.music import SpectrogramUNetVAE
from ..inputs import as_audio_rate, as_float_audio
from ..models.stacked import MASK_NETWORKS, StackedSpectrogramUNetVAE

SOURCES = ("vocals", "accompaniment")
STEREO_MODES = ("per-channel", "mid")          # how Separator.separate uses a stereo input's channels
HIGH_BAND_MODES = ("accompaniment", "mask")    # where the band above the model's Nyquist frequency goes
DEFAULT_STEREO, DEFAULT_HIGH_BAND = "mid", "mask"   # they score better on record-style mixes (docs/separation.md)
TOP_BAND = 0.75                                # the top band: from 3/4 of the model's Nyquist frequency up
STFT_KEYS = ("sample_rate", "n_fft", "hop", "window")


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
        # A std of 0 or a NaN here turns every feature into NaN and every output into NaN.
        if self.mean.ndim != 1 or self.std.shape != self.mean.shape or self.mean.size == 0:
            raise ValueError(f"normaliser mean and std must be two (n_bins,) arrays, got shapes {self.mean.shape} "
                             f"and {self.std.shape}")
        for name, value in (("mean", self.mean), ("std", self.std)):
            ok = np.isfinite(value)
            if not ok.all():
                raise ValueError(f"normaliser {name} holds {int(value.size - ok.sum())} NaN or infinite value(s), "
                                 f"the first at bin {int(np.argmin(ok))}")
        if not (self.std > 0).all():
            raise ValueError(f"normaliser std must be positive, got {float(self.std.min()):g} at bin "
                             f"{int(np.argmin(self.std))}")
        for name in ("power", "mag_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not np.isfinite(value) or value <= 0:
                raise ValueError(f"normaliser {name} must be a positive finite number, got {value!r}")

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
        """compression, power, mean and std (float32 copies), mag_scale."""
        return {"compression": self.compression, "power": float(self.power), "mean": self.mean.copy(),
                "std": self.std.copy(), "mag_scale": float(self.mag_scale)}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        """The normaliser :meth:`to_dict` wrote; a missing or unusable entry is a ValueError."""
        missing = [k for k in ("compression", "power", "mean", "std", "mag_scale") if k not in d]
        if missing:
            raise ValueError(f"the normaliser lacks {missing}")
        try:
            mean, std = np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32)
            power, mag_scale = float(d["power"]), float(d["mag_scale"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"the normaliser holds a value that is not a number ({e})") from None
        return cls(str(d["compression"]), power, mean, std, mag_scale)

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


@dataclass
class Separator:
    """A trained network with everything needed to use it: STFT and feature settings.

    ``source`` names where it was loaded from (a model file), for error messages.
    """
    model: SpectrogramUNetVAE | StackedSpectrogramUNetVAE
    stft_cfg: STFTConfig
    norm: Normalizer
    source: str | None = field(default=None, compare=False, repr=False)

    # -- masks ---------------------------------------------------------------
    def masks(self, mix_mag: np.ndarray, chunk_frames: int = 512, context: int | None = None,
              shifts: int = 1) -> np.ndarray:
        """Soft masks (n_sources, F, T) for a mixture magnitude (F, T) of any length.

        The network runs on chunks of ``chunk_frames`` frames, each with ``context``
        frames of real input on both sides (multiples of the model's ``DOWNSAMPLE``, so the
        strided layers keep their alignment); only a chunk's centre is kept. The default
        context, the model's ``context_frames``, covers its receptive-field radius, so this
        equals one pass over the whole file while memory stays bounded by the chunk size.

        ``shifts`` > 1 averages the masks of that many passes, the input delayed by
        offsets spread evenly over [0, DOWNSAMPLE) frames (:func:`shift_offsets`): the
        strided layers see each frame at another phase (the "shift trick" of Demucs). It
        costs ``shifts`` times the time; 1 is one plain pass.
        """
        feats = self.norm(mix_mag)
        n_freq = mix_mag.shape[0]
        offsets = shift_offsets(self.model.DOWNSAMPLE, shifts)
        model = fold_batchnorm(self.model)      # the model itself when it has no BatchNorm to fold
        total = None
        for o in offsets:
            if o:
                pad = np.pad(feats, ((0, 0), (o, 0)), mode="reflect" if feats.shape[1] > o else "edge")
                m = predict_masks(model, pad, n_freq, chunk_frames, context)[..., o:]
            else:
                m = predict_masks(model, feats, n_freq, chunk_frames, context)
            total = m if total is None else total + m
        return total if len(offsets) == 1 else total / np.float32(len(offsets))

    # -- waveforms -----------------------------------------------------------
    def spectra_and_masks(self, x: np.ndarray, wiener: bool = False, chunk_frames: int = 512,
                          context: int | None = None, shifts: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """x : (n_samples,) at ``stft_cfg.sample_rate``. Returns its STFT X (F, T) complex64 and
        the masks (n_sources, F, T) float32 the estimates ``M * X`` are made of (power-ratio
        masks with ``wiener``). ``shifts``: see :meth:`masks`."""
        X = stft(np.asarray(x, np.float32), self.stft_cfg)
        M = self.masks(np.abs(X), chunk_frames, context, shifts)
        if wiener:
            M = wiener_masks(M * np.abs(X)[None])
        return X, M

    def separate_mono(self, x: np.ndarray, wiener: bool = False, chunk_frames: int = 512,
                      context: int | None = None, shifts: int = 1) -> np.ndarray:
        """x : (n_samples,) at ``stft_cfg.sample_rate``. Returns float32 (n_sources, n_samples).
        ``shifts``: see :meth:`masks`."""
        x = np.asarray(x, np.float32)
        return self.waveforms(*self.spectra_and_masks(x, wiener, chunk_frames, context, shifts), x)

    def waveforms(self, X: np.ndarray, M: np.ndarray, x: np.ndarray) -> np.ndarray:
        """The estimates ``M * X`` as waveforms: X (..., F, T) the STFT of ``x`` (..., n_samples),
        M (n_sources, F, T). Returns float32 (n_sources, ..., n_samples); NaN or inf in them
        stops with an error (:func:`check_finite_output`)."""
        M = M.reshape(M.shape[:1] + (1,) * (X.ndim - 2) + M.shape[1:])
        out = istft((M * X[None]).astype(np.complex64, copy=False), self.stft_cfg, length=x.shape[-1])
        check_finite_output(out, x, self.source, SOURCES if len(out) == len(SOURCES) else None)
        return out

    def separate(self, audio: np.ndarray, sr: int, wiener: bool = False, chunk_frames: int = 512,
                 context: int | None = None, shifts: int = 1, stereo: str = DEFAULT_STEREO,
                 high_band: str = DEFAULT_HIGH_BAND) -> np.ndarray:
        """audio : (n_samples,) or (n_samples, n_channels) at ``sr`` Hz.

        The channels are separated at the model's rate and resampled back. ``stereo``:
        "per-channel" separates every channel on its own; "mid" computes the masks once,
        from the mid signal (the channels' mean) of a two-channel input, and applies them to
        each channel's own spectrogram (any other channel count is separated per channel).
        When ``sr`` is higher than the model's rate, the band the model cannot see (above
        its Nyquist frequency) goes, with ``high_band`` "accompaniment", all to the last
        source; with "mask" the voice takes in each frame the share it has of the top
        quarter of the band the model sees (:func:`top_band_share`), the accompaniment the
        rest. Either way the estimates of that band add up to the input's.
        Returns float32 (n_sources, n_samples, n_channels) (channel axis absent for 1-D input),
        the same length and rate as the input. Integer samples are scaled to full scale 1.0
        (:func:`npvae.inputs.as_float_audio`); NaN, empty or channels-first audio is refused,
        and so is a rate outside 1 to 384 kHz (:func:`npvae.inputs.as_audio_rate`).
        """
        check_choice("stereo", stereo, STEREO_MODES)
        check_choice("high_band", high_band, HIGH_BAND_MODES)
        sr = as_audio_rate(sr)
        audio = as_float_audio(audio)
        mono = audio.ndim == 1
        chans = audio[:, None] if mono else audio
        n, n_chans = chans.shape
        rate = self.stft_cfg.sample_rate
        work = resample(chans, sr, rate)
        out = np.zeros((self.model.n_sources, n, n_chans), np.float32)
        share = np.zeros((n_chans, self.stft_cfg.n_frames(work.shape[0])), np.float32)
        if stereo == "mid" and n_chans == 2:
            Xm, M = self.spectra_and_masks(work.mean(axis=1), wiener, chunk_frames, context, shifts)
            share[:] = top_band_share(M[0], np.abs(Xm), self.stft_cfg)
            both = np.ascontiguousarray(work.T, np.float32)                             # (2, n_work)
            est = self.waveforms(stft(both, self.stft_cfg), M, both)                     # (S, 2, n_work)
            per_channel = [est[:, c] for c in range(n_chans)]
        else:
            per_channel = []
            for c in range(n_chans):
                x = np.asarray(work[:, c], np.float32)
                X, M = self.spectra_and_masks(x, wiener, chunk_frames, context, shifts)
                share[c] = top_band_share(M[0], np.abs(X), self.stft_cfg)
                per_channel.append(self.waveforms(X, M, x))
        for c, est in enumerate(per_channel):
            est = resample(est.T, rate, sr).T
            m = min(n, est.shape[1])
            out[:, :m, c] = est[:, :m]
        if sr > rate:
            back = resample(work, rate, sr)[:n]
            high = chans[:back.shape[0]] - back
            if high_band == "mask":
                voice = high * frame_gains(share, self.stft_cfg, sr, high.shape[0])
                out[0, :back.shape[0]] += voice
                high = high - voice
            out[-1, :back.shape[0]] += high
        check_finite_output(out, chans, self.source, SOURCES if len(out) == len(SOURCES) else None)
        return out[..., 0] if mono else out

    # -- storage -------------------------------------------------------------
    def config(self) -> dict:
        """STFT settings (sample_rate, n_fft, hop, window) and ``normalizer`` (compression,
        power, mean (n_bins,) float32, std (n_bins,) float32, mag_scale): the separator's part
        of a model file's /config and of a checkpoint's config."""
        return {**asdict(self.stft_cfg), "normalizer": self.norm.to_dict()}

    @classmethod
    def from_config(cls, model, config: dict, source: str = "the configuration") -> "Separator":
        """The Separator of ``model`` with the STFT settings and normaliser of ``config``
        (what :meth:`config` wrote; also the ``normalizer_dict`` of npvae 0.1.0 checkpoints).
        Settings that cannot work (a std of 0, NaN statistics, a normaliser of another
        width than the STFT's bins) raise :class:`FileFormatError` naming ``source``."""
        if not isinstance(model, MASK_NETWORKS):
            raise FileFormatError(f"{source} holds a {type(model).__name__}, not a music separation model")
        missing = [k for k in STFT_KEYS if k not in config]
        norm = config.get("normalizer", config.get("normalizer_dict"))
        if missing or norm is None:
            raise FileFormatError(f"{source} lacks the separator settings {missing or ['normalizer']}; "
                                  "it was not written by train_music.py")
        stft_cfg = stft_config(config, "", source)
        try:
            norm = Normalizer.from_dict(json.loads(norm) if isinstance(norm, str) else norm)
        except (ValueError, TypeError, AttributeError) as e:
            raise FileFormatError(f"{source}: its normaliser cannot be used ({e}); {_DAMAGED}") from None
        if norm.n_bins != stft_cfg.n_freq - 1:
            raise FileFormatError(f"{source}: its normaliser has {norm.n_bins} bins but its STFT gives "
                                  f"{stft_cfg.n_freq - 1}; {_DAMAGED}")
        return cls(model, stft_cfg, norm, source)


_DAMAGED = "the file was edited or damaged: use the model.h5 / results.h5 that training wrote, or train again"
MAX_N_FFT = 1 << 16
MAX_SAMPLE_RATE = 1_000_000


def stft_config(config: dict, prefix: str, source: str) -> STFTConfig:
    """The STFT settings ``<prefix>sample_rate``, ``n_fft``, ``hop``, ``window`` of a stored
    configuration; values that cannot be meant raise :class:`FileFormatError` naming ``source``."""
    values = {k: config[prefix + k] for k in STFT_KEYS}
    for key in ("sample_rate", "n_fft", "hop"):
        v = values[key]
        if isinstance(v, (bool, str)) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not np.isfinite(v) or int(v) != v or v <= 0:
            raise FileFormatError(f"{source}: {prefix}{key} must be a positive whole number, got {v!r}; {_DAMAGED}")
    if values["n_fft"] > MAX_N_FFT or values["sample_rate"] > MAX_SAMPLE_RATE:
        raise FileFormatError(f"{source}: STFT settings {values} are beyond n_fft {MAX_N_FFT} / "
                              f"{MAX_SAMPLE_RATE} Hz; {_DAMAGED}")
    try:
        cfg = STFTConfig(int(values["sample_rate"]), int(values["n_fft"]), int(values["hop"]), str(values["window"]))
        get_window(cfg.window, cfg.n_fft)
    except ValueError as e:
        raise FileFormatError(f"{source}: its STFT settings cannot be used ({e}); {_DAMAGED}") from None
    return cfg


def check_finite_output(out: np.ndarray, x: np.ndarray, source: str | None, names=None) -> None:
    """Stop a separation whose output ``out`` (n_sources, ...) holds NaN or inf (from the
    input ``x``) with an error naming the problem: a damaged model, or an input far beyond
    full scale. Never hand back non-finite samples."""
    ok = np.isfinite(out)
    if ok.all():
        return
    per_source = ok.reshape(len(out), -1)
    k = int(np.argmin(per_source.all(axis=1)))
    bad = int(per_source.size - np.count_nonzero(per_source))
    which = f"'{names[k]}'" if names else str(k)
    peak = float(np.max(np.abs(x))) if np.size(x) else 0.0
    what = f"the model from {source}" if source else "the model"
    cause = (f"the input's peak is {peak:.3g} (full scale is 1.0): scale it down" if peak > 1e3 else
             f"{what} overflows on this input: its weights or normaliser are damaged; reload it from a clean "
             "model file")
    error = FileFormatError if source and peak <= 1e3 else ValueError
    raise error(f"separation produced {bad:,} NaN or infinite samples (source {which} among them); {cause}")


def predict_masks(model, feats: np.ndarray, n_freq: int, chunk_frames: int = 512,
                  context: int | None = None) -> np.ndarray:
    """Run ``model`` over normalised features (n_bins, T) in chunks; masks (S, n_freq, T).
    ``context`` None: the model's ``context_frames`` (48 when it has none).

    The model runs in eval mode inside :func:`npvae.layers.inference` (nothing kept for
    backward, activations fused into the convolutions: the masks of a plain forward, bit
    for bit). Chunks go through it together, as many as there are worker threads (the
    convolutions share a batch's samples among the threads; a batch of one keeps one
    core busy), so every chunk's input has the same width (:func:`chunk_windows`). Memory
    for the network stays that of one batch of chunks, whatever ``T``.
    """
    d = model.DOWNSAMPLE
    if context is None:
        context = getattr(model, "context_frames", 48)
    if chunk_frames % d or context % d or chunk_frames <= 0 or context < 0:
        raise ValueError(f"chunk_frames ({chunk_frames}) and context ({context}) must be "
                         f"non-negative multiples of {d}")
    model.eval()
    n_bins, T = feats.shape
    Tp = -(-T // d) * d
    x = np.zeros((1, 1, n_bins, Tp), model.dtype)
    x[0, 0, :, :T] = feats
    out = np.empty((model.n_sources, n_freq, Tp), np.float32)
    windows = chunk_windows(Tp, chunk_frames, context)
    per_call = threads.worker_count()
    with inference():
        for i in range(0, len(windows), per_call):
            group = windows[i:i + per_call]
            xb = np.concatenate([x[..., lo:hi] for _, _, lo, hi in group]) if len(group) > 1 else \
                x[..., group[0][2]:group[0][3]]
            m = model.forward(xb, sample=False)
            for k, (s, e, lo, hi) in enumerate(group):
                out[:, :n_bins, s:e] = m[k][:, :, s - lo:e - lo]
    out[:, n_bins:] = out[:, n_bins - 1:n_bins]      # bins the network does not see (Nyquist)
    return out[..., :T]


def shift_offsets(downsample: int, shifts: int) -> list[int]:
    """``shifts`` frame offsets spread evenly over [0, ``downsample``): ``[0, 8, 16, 24]``
    for 4 shifts of a model that downsamples time 32-fold. At most ``downsample``
    shifts: there are only that many distinct phases (ValueError beyond)."""
    if isinstance(shifts, bool) or not isinstance(shifts, (int, np.integer)) or shifts < 1:
        raise ValueError(f"shifts must be a whole number >= 1, got {shifts!r}")
    if shifts > downsample:
        raise ValueError(f"shifts ({shifts}) cannot exceed the model's {downsample} distinct frame phases "
                         f"(its DOWNSAMPLE); use at most {downsample}")
    return sorted({(k * downsample) // shifts for k in range(shifts)})


def chunk_windows(frames: int, chunk_frames: int, context: int) -> list[tuple[int, int, int, int]]:
    """The chunks of :func:`predict_masks` over ``frames`` frames: ``(start, stop, lo, hi)``
    for the kept frames [start, stop) (steps of ``chunk_frames``) and the network's input
    [lo, hi) around them, with at least ``context`` frames on each side inside the signal.

    Every input has the same width, ``min(frames, chunk_frames + 2 * context)``: a chunk at
    an edge takes more context on its inner side instead of a narrower input (which would
    go through the network alone, on one core). The layout depends on the frames only, not
    on the number of threads, so neither do the masks.
    """
    width = min(frames, chunk_frames + 2 * context)
    out = []
    for s in range(0, frames, chunk_frames):
        lo = max(0, min(s - context, frames - width))
        out.append((s, min(frames, s + chunk_frames), lo, lo + width))
    return out


def check_choice(name: str, value, choices) -> str:
    """``value`` if it is one of ``choices``, else a ValueError naming them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def top_band_share(voice_mask: np.ndarray, mix_mag: np.ndarray, cfg: STFTConfig) -> np.ndarray:
    """The voice's share of each frame's top band: ``sum m |X| / sum |X|`` over the bins from
    :data:`TOP_BAND` of the Nyquist frequency up (6-8 kHz at 16 kHz), where a voice's
    sibilants and breath begin. voice_mask, mix_mag : (F, T). Returns float32 (T,) in [0, 1]
    (0 in a silent frame). What a voice has above the model's band comes with what it has
    just below it, in the same frames."""
    lo = int(np.ceil(TOP_BAND * (cfg.n_freq - 1)))
    mag = mix_mag[lo:].astype(np.float64)
    total = mag.sum(axis=0)
    share = np.divide((np.clip(voice_mask[lo:], 0.0, 1.0) * mag).sum(axis=0), total,
                      out=np.zeros_like(total), where=total > 0)
    return share.astype(np.float32)


def frame_gains(values: np.ndarray, cfg: STFTConfig, sr: int, n: int) -> np.ndarray:
    """Per-frame values (channels, T) on the STFT frames of ``cfg`` as per-sample gains
    (n, channels) at ``sr`` Hz, linear between frame centres (frame k is centred on
    ``(k + first_frame) * hop`` samples at the model's rate)."""
    centres = (np.arange(values.shape[1]) + cfg.first_frame) * cfg.hop / cfg.sample_rate
    t = np.arange(n) / sr
    return np.stack([np.interp(t, centres, v) for v in values], axis=1).astype(np.float32)


def wiener_masks(mags: np.ndarray, power: float = 2.0, eps: float = 1e-10) -> np.ndarray:
    """Power-ratio masks from source magnitude estimates (S, F, T): ``m_j = |S_j|^p / sum_k |S_k|^p``.

    They sum to one, so the estimates add up to the mixture exactly.
    """
    p = mags.astype(np.float64) ** power
    return (p / (p.sum(axis=0, keepdims=True) + eps)).astype(np.float32)
