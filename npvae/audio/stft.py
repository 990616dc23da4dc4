"""Short-time Fourier transform and its inverse, as ``scipy.signal.ShortTimeFFT`` defines them.

Frame ``k`` (``k = 0 .. T-1``) is centred on sample ``(k + cfg.first_frame) * hop``
and the signal is zero-padded at both ends, so every frame that overlaps the
signal is kept (``first_frame`` is -1 for hop = n_fft / 4). ``istft`` with the
same config and the original length gives the signal back to float rounding. Spectra are unscaled sums: a full-scale sinusoid at a bin's centre has
magnitude ``sum(window) / 2``.

``ShortTimeFFT`` supplies the frame positions, the window and the dual window that
makes ``istft`` exact, but transforms one frame per Python call; :func:`stft` and
:func:`istft` do the same arithmetic on all frames at once (one batched FFT, an
overlap-add of ``ceil(n_fft / hop)`` array additions in ShortTimeFFT's order), which
gives ShortTimeFFT's numbers, bit for bit (tests/test_stft.py). In ``npvae bench``'s
separation of a 3-minute song, the time outside the network fell from about 4.9 s to
2.5-2.8 s with this change (docs/speed.md).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from scipy import fft as sp_fft
from scipy.signal import ShortTimeFFT, get_window


@dataclass(frozen=True)
class STFTConfig:
    """How a waveform becomes a spectrogram.

    Attributes
    ----------
    sample_rate : working sample rate in Hz; audio is resampled to it on loading.
    n_fft : frame and FFT length in samples (F = n_fft // 2 + 1 frequency bins).
    hop : frame advance in samples.
    window : a ``scipy.signal.get_window`` name, periodic ("hann", "hamming"...).

    The defaults are the MIR-1K setting: 16 kHz, 1024-sample (64 ms) Hann frames,
    hop 256 (16 ms), 513 bins. IRMAS (44.1 kHz) is resampled to the same 16 kHz so
    that one model serves both; see :data:`PRESETS` and :meth:`for_dataset`.
    """
    sample_rate: int = 16000
    n_fft: int = 1024
    hop: int = 256
    window: str = "hann"

    def __post_init__(self):
        if self.sample_rate <= 0 or self.n_fft <= 0 or self.hop <= 0:
            raise ValueError(f"sample_rate, n_fft and hop must be positive: {self}")
        if self.hop > self.n_fft:
            raise ValueError(f"hop ({self.hop}) larger than n_fft ({self.n_fft}) leaves gaps "
                             "and cannot be inverted; use hop <= n_fft (n_fft // 4 is usual)")

    @property
    def n_freq(self) -> int:
        """Number of frequency bins F = n_fft // 2 + 1."""
        return self.n_fft // 2 + 1

    @property
    def first_frame(self) -> int:
        """Index (in hops, <= 0) of the first frame's centre: frame k is centred on
        sample ``(k + first_frame) * hop``."""
        return _transform(self).p_min

    def n_frames(self, n_samples: int) -> int:
        """Number of frames T that :func:`stft` gives for ``n_samples`` samples."""
        sft = _transform(self)
        return sft.p_max(max(int(n_samples), _min_len(self))) - sft.p_min

    def frequencies(self) -> np.ndarray:
        """Centre frequency of each bin in Hz, shape (F,)."""
        return np.fft.rfftfreq(self.n_fft, d=1.0 / self.sample_rate)

    @classmethod
    def for_dataset(cls, name: str, **overrides) -> "STFTConfig":
        """The documented default for ``name`` ("mir1k", "irmas", "stems"), with ``overrides``."""
        key = name.lower().replace("-", "").replace("_", "")
        if key not in PRESETS:
            raise ValueError(f"no STFT preset for dataset '{name}'; known: {', '.join(PRESETS)}")
        return replace(PRESETS[key], **overrides)


#: Default STFT per dataset. MIR-1K is recorded at 16 kHz. IRMAS (44.1 kHz) and
#: stems folders (often 44.1 kHz) are resampled to 16 kHz: singing voice has little
#: energy above 8 kHz and a shared rate lets one model train on all three.
PRESETS: dict[str, STFTConfig] = {
    "mir1k": STFTConfig(sample_rate=16000, n_fft=1024, hop=256, window="hann"),
    "irmas": STFTConfig(sample_rate=16000, n_fft=1024, hop=256, window="hann"),
    "stems": STFTConfig(sample_rate=16000, n_fft=1024, hop=256, window="hann"),
}


@lru_cache(maxsize=16)
def _transform(cfg: STFTConfig) -> ShortTimeFFT:
    # The window is periodic (fftbins=True), the right choice for spectral analysis;
    # ShortTimeFFT works out the dual window that makes istft exact.
    win = get_window(cfg.window, cfg.n_fft, fftbins=True)
    try:
        sft = ShortTimeFFT(win, hop=cfg.hop, fs=cfg.sample_rate, mfft=cfg.n_fft,
                           fft_mode="onesided")
        sft.dual_win  # computed lazily; fail here, not in the middle of istft
        return sft
    except ValueError as e:
        raise ValueError(f"{cfg} cannot be inverted ({e}); use a smaller hop") from None


def _min_len(cfg: STFTConfig) -> int:
    # ShortTimeFFT needs at least half a window of signal; shorter ones are zero-padded.
    return (cfg.n_fft + 1) // 2


def stft(x: np.ndarray, cfg: STFTConfig = STFTConfig()) -> np.ndarray:
    """Spectrogram of ``x``.

    x : real ndarray of shape (n_samples,) or (..., n_samples).
    Returns complex ndarray of shape (F, T) or (..., F, T), F = cfg.n_freq,
    T = cfg.n_frames(n_samples); complex64 for float32 input, else complex128.
    """
    x = np.asarray(x)
    if x.shape[-1] == 0:
        raise ValueError("stft of an empty signal")
    if x.shape[-1] < _min_len(cfg):
        pad = [(0, 0)] * (x.ndim - 1) + [(0, _min_len(cfg) - x.shape[-1])]
        x = np.pad(x, pad)
    X = _stft_all_frames(x, _transform(cfg))
    return X.astype(np.complex64) if x.dtype == np.float32 else X


def istft(X: np.ndarray, cfg: STFTConfig = STFTConfig(), length: int | None = None) -> np.ndarray:
    """Waveform from a spectrogram.

    X : complex ndarray of shape (F, T) or (..., F, T).
    length : number of samples to return (the original length); None to stop at
        the centre of the last frame, ``(T - 1 + cfg.first_frame) * hop + 1`` samples.
    Returns real ndarray of shape (length,) or (..., length); float32 for
    complex64 input, else float64.
    """
    X = np.asarray(X)
    if X.shape[-2] != cfg.n_freq:
        raise ValueError(f"spectrogram has {X.shape[-2]} bins but {cfg} expects {cfg.n_freq}")
    sft = _transform(cfg)
    if length is None:
        length = (X.shape[-1] - 1 + sft.p_min) * cfg.hop + 1
    length = int(length)
    x = _istft_all_frames(X, sft, max(length, _min_len(cfg)))[..., :length]
    return x.astype(np.float32) if X.dtype == np.complex64 else x


def _phase_roll(sft: ShortTimeFFT) -> int:
    # ShortTimeFFT rolls each frame so that its centre sample comes first (phase_shift 0)
    return (sft.phase_shift + sft.m_num_mid) % sft.m_num


def _stft_all_frames(x: np.ndarray, sft: ShortTimeFFT) -> np.ndarray:
    """``sft.stft(x, axis=-1)`` (zero padding, every frame from p_min to p_max(n)):
    x (..., n) real -> complex128 (..., F, T)."""
    n, m, hop = x.shape[-1], sft.m_num, sft.hop
    p0, p1 = sft.p_min, sft.p_max(n)
    k0 = p0 * hop - sft.m_num_mid           # first frame's first sample (negative: padding)
    k1 = k0 + (p1 - p0) * hop + m
    pad = [(0, 0)] * (x.ndim - 1) + [(-min(k0, 0), max(k1 - n, 0))]
    padded = np.pad(x[..., max(k0, 0):min(k1, n)], pad)
    frames = np.lib.stride_tricks.sliding_window_view(padded, m, axis=-1)[..., :(p1 - p0) * hop:hop, :]
    frames = np.roll(frames * sft.win.conj(), -_phase_roll(sft), axis=-1)
    return np.swapaxes(sp_fft.rfft(frames, n=sft.mfft, axis=-1), -1, -2)


def _istft_all_frames(S: np.ndarray, sft: ShortTimeFFT, k1: int) -> np.ndarray:
    """``sft.istft(S, k1=k1)``: S (..., F, T) complex -> float64 (..., min(k1, n_pts))."""
    m, hop, mid = sft.m_num, sft.hop, sft.m_num_mid
    q0, q_max = sft.p_min, S.shape[-1] + sft.p_min
    k_max = (q_max - 1) * hop + m - mid
    if k1 > k_max:
        raise ValueError(f"a spectrogram of {S.shape[-1]} frames gives at most {k_max} samples, not {k1}")
    q1 = min(sft.p_max(k1), q_max)
    n_pts = sft.nearest_k_p(k1, left=False) - sft.nearest_k_p(0) + m - mid
    length = min(n_pts, k1)
    x = np.zeros(S.shape[:-2] + (length,))
    n_frames = q1 - q0
    if n_frames <= 0:
        return x
    frames = sp_fft.irfft(np.swapaxes(S[..., :n_frames], -1, -2), n=sft.mfft, axis=-1)
    frames = np.roll(frames, _phase_roll(sft), axis=-1)[..., :m] * sft.dual_win
    # Overlap-add in blocks of one hop: block r of frame j lands in output block j + r.
    # Adding r from the last down to 0 sums each sample's frames in increasing order,
    # as ShortTimeFFT does, so the sums round the same.
    reach = -(-m // hop)
    blocks = np.zeros(frames.shape[:-1] + (reach * hop,))
    blocks[..., :m] = frames
    blocks = blocks.reshape(frames.shape[:-1] + (reach, hop))
    out = np.zeros(S.shape[:-2] + (n_frames + reach - 1, hop))
    for r in range(reach - 1, -1, -1):
        out[..., r:r + n_frames, :] += blocks[..., r, :]
    out = out.reshape(S.shape[:-2] + (-1,))
    start = q0 * hop - mid                  # the sample out[..., 0] stands for
    lo, hi = max(0, start), min(length, start + out.shape[-1])
    if hi > lo:
        x[..., lo:hi] = out[..., lo - start:hi - start]
    return x


def magnitude(X: np.ndarray) -> np.ndarray:
    """|X|, same shape as ``X``, real."""
    return np.abs(X)


def phase(X: np.ndarray) -> np.ndarray:
    """Phase angle of ``X`` in radians, in (-pi, pi], same shape."""
    return np.angle(X)


def polar(mag: np.ndarray, ph: np.ndarray) -> np.ndarray:
    """Complex spectrogram from magnitude and phase (radians): ``mag * exp(1j * ph)``."""
    return mag * np.exp(1j * ph)


def ideal_ratio_mask(voice_spec: np.ndarray, acc_spec: np.ndarray, power: float = 1.0,
                     eps: float = 1e-12) -> np.ndarray:
    """Oracle soft mask for the voice, ``|V|^p / (|V|^p + |A|^p)``, values in [0, 1].

    voice_spec, acc_spec : spectrograms (complex or magnitude) of the same shape (F, T).
    power : 1 for magnitude ratio, 2 for power (Wiener-like) ratio.
    The accompaniment mask is ``1 - mask``. Bins where both are silent get 0.5.
    """
    v = np.abs(voice_spec) ** power
    a = np.abs(acc_spec) ** power
    if v.shape != a.shape:
        raise ValueError(f"voice and accompaniment spectra differ in shape: {v.shape} vs {a.shape}")
    return (v + 0.5 * eps) / (v + a + eps)
