"""A trained blind spectrogram model with everything needed to use it on audio (blind music).

The blind twin of :class:`npvae.separation.separator.Separator`. For a mono mixture x at the
model's sample rate:

1. ``X = stft(x)``; the network sees ``|X|`` without the Nyquist bin (F - 1 bins),
   divided by the training mixtures' mean magnitude (``scale``), in patches of the
   model's ``frames`` frames side by side (:func:`patches`).
2. The shared decoder gives K non-negative magnitude patches; the masks
   ``y_k / sum_j y_j`` sum to one over the groups (the Nyquist bin takes the mask of
   the bin below).
3. The estimates are ``mask_k * X`` (the mixture's phase), ``istft`` back to the
   original length: they add up to the mixture.

The groups carry no names: which group holds the voice is found by listening, or from
the run's ``metrics.json`` (``fixed_assignment_vocals``: the group the voice went to
in most validation clips). :meth:`BlindMusicSeparator.config` is the separator's part
of a model file's /config (what ``npvae train blind-music`` writes);
:meth:`BlindMusicSeparator.from_config` reads it back (:func:`npvae.load_model`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..audio.io import resample
from ..audio.stft import STFTConfig, istft, stft
from ..errors import FileFormatError
from ..models.blind import BlindSeparationVAE
from .separator import check_finite_output, stft_config
from ..inputs import as_audio_rate, as_float_audio

MODE = "blind_music"
STFT_KEYS = ("sample_rate", "n_fft", "hop", "window")


def magnitudes(track_mixture: np.ndarray, stft_cfg: STFTConfig):
    """Complex STFT (F, T) of a mixture and its network-side magnitude (F - 1, T)."""
    X = stft(np.asarray(track_mixture, np.float32), stft_cfg)
    return X, np.abs(X[:-1]).astype(np.float32)


def patches(mag: np.ndarray, frames: int, hop: int) -> np.ndarray:
    """(F, T) -> (P, F, frames): windows of ``frames`` frames every ``hop`` frames
    (the end zero-padded so that every frame is covered)."""
    f, t = mag.shape
    n = max(1, -(-max(t - frames, 0) // hop) + 1)
    padded = np.zeros((f, (n - 1) * hop + frames), mag.dtype)
    padded[:, :t] = mag
    return np.stack([padded[:, i * hop:i * hop + frames] for i in range(n)])


@dataclass
class BlindMusicSeparator:
    """A trained blind model with its STFT settings and magnitude scale.

    model : a :class:`~npvae.models.blind.BlindSeparationVAE` on (F - 1, frames) patches.
    stft_cfg : the STFT it was trained with.
    scale : the mean training mixture magnitude the network's inputs are divided by.
    source : where it was loaded from (a model file), for error messages.
    """
    model: BlindSeparationVAE
    stft_cfg: STFTConfig
    scale: float
    source: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        s = self.scale
        if isinstance(s, bool) or not isinstance(s, (int, float, np.integer, np.floating)) or not np.isfinite(s) \
                or s <= 0:
            raise ValueError(f"the magnitude scale must be a positive finite number, got {s!r}")
        self.scale = float(s)

    @property
    def n_sources(self) -> int:
        """K, the number of groups (estimates) it returns."""
        return self.model.n_groups

    # -- masks ---------------------------------------------------------------
    def group_magnitudes(self, mag: np.ndarray) -> np.ndarray:
        """(F - 1, T) mixture magnitude -> (K, F - 1, T) decoded group magnitudes."""
        frames = self.model.shape[1]
        t = mag.shape[1]
        p = patches(mag / self.scale, frames, frames)                    # (P, F-1, frames), no overlap
        y = self.model.separate(p)                                       # (P, K, F-1, frames)
        y = y.transpose(1, 2, 0, 3).reshape(y.shape[1], y.shape[2], -1)[:, :, :t]
        return y * self.scale

    def masks(self, mix_mag: np.ndarray) -> np.ndarray:
        """Soft masks (K, F, T) summing to one over the groups, for a mixture magnitude
        (F, T) of any length (F = n_fft / 2 + 1)."""
        y = self.group_magnitudes(np.asarray(mix_mag, np.float32)[:-1])
        m = y / np.maximum(y.sum(axis=0, keepdims=True), 1e-12)
        return np.concatenate([m, m[:, -1:]], axis=1)                    # Nyquist takes the bin below

    # -- waveforms -----------------------------------------------------------
    def estimates(self, mixture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """mono mixture (n,) -> (waveforms (K, n) float32, masked magnitudes (K, F, T))."""
        x = np.asarray(mixture, np.float32)
        X = stft(x, self.stft_cfg)
        est = (self.masks(np.abs(X)) * X[None]).astype(np.complex64)
        out = istft(est, self.stft_cfg, length=len(mixture))
        check_finite_output(out, x, self.source)
        return out, np.abs(est)

    def separate_mono(self, x: np.ndarray) -> np.ndarray:
        """x : (n_samples,) at ``stft_cfg.sample_rate``. Returns float32 (K, n_samples)."""
        return self.estimates(x)[0]

    def separate(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """audio : (n_samples,) or (n_samples, n_channels) at ``sr`` Hz.

        As :meth:`npvae.separation.separator.Separator.separate` with ``stereo="per-channel"``:
        every channel separated on its own at the model's rate and resampled back; integer
        samples scaled to full scale 1.0;
        NaN, empty or channels-first audio refused. When ``sr`` is higher than the model's
        rate, the band the model cannot see goes to the group with the most energy in the
        top eighth of the band it sees, so the estimates still add up to the input.
        Returns float32 (K, n_samples, n_channels) (channel axis absent for 1-D input).
        """
        sr = as_audio_rate(sr)
        audio = as_float_audio(audio)
        mono = audio.ndim == 1
        chans = audio[:, None] if mono else audio
        n, rate = chans.shape[0], self.stft_cfg.sample_rate
        work = resample(chans, sr, rate)
        out = np.zeros((self.n_sources, n, chans.shape[1]), np.float32)
        back = resample(work, rate, sr)[:n] if sr > rate else None
        for c in range(chans.shape[1]):
            est, mags = self.estimates(work[:, c])
            top = int(np.argmax((mags[:, -mags.shape[1] // 8:] ** 2).sum(axis=(1, 2))))
            est = resample(est.T, rate, sr).T
            m = min(n, est.shape[1])
            out[:, :m, c] = est[:, :m]
            if back is not None:
                out[top, :back.shape[0], c] += chans[:back.shape[0], c] - back[:, c]
        check_finite_output(out, chans, self.source)
        return out[..., 0] if mono else out

    # -- storage -------------------------------------------------------------
    def config(self) -> dict:
        """``mode``, ``mag_scale`` and the STFT settings as ``stft_<name>``: the separator's
        part of a blind music run's /config."""
        return {"mode": MODE, "mag_scale": float(self.scale),
                **{f"stft_{k}": v for k, v in asdict(self.stft_cfg).items()}}

    @classmethod
    def from_config(cls, model, config: dict, source: str = "the configuration") -> "BlindMusicSeparator":
        """The separator of ``model`` with the scale and STFT settings of ``config`` (what
        :meth:`config` wrote)."""
        if not isinstance(model, BlindSeparationVAE):
            raise FileFormatError(f"{source} holds a {type(model).__name__}, not a blind separation model")
        missing = [k for k in ("mag_scale", *(f"stft_{k}" for k in STFT_KEYS)) if k not in config]
        if missing:
            raise FileFormatError(f"{source} lacks the blind separator settings {missing}; it was not written "
                                  "by train_blind_music.py")
        stft_cfg = stft_config(config, "stft_", source)
        if model.shape[0] != stft_cfg.n_freq - 1:
            raise FileFormatError(f"{source}: the model sees {model.shape[0]} bins but its STFT gives "
                                  f"{stft_cfg.n_freq - 1}; the file was edited or damaged")
        try:
            return cls(model, stft_cfg, config["mag_scale"], source)
        except ValueError as e:
            raise FileFormatError(f"{source}: {e}; the file was edited or damaged: use the model.h5 / "
                                  "results.h5 that training wrote, or train again") from None


def is_blind_music(model, config: dict) -> bool:
    """Whether ``(model, config)`` (:func:`npvae.files.model_file.read_model_file`) is a blind music model."""
    return isinstance(model, BlindSeparationVAE) and str(config.get("mode", "")) == MODE
