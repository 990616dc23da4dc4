"""Record-style stereo mixes: a dry mono voice and accompaniment treated the way records are made.

A MIR-1K clip is a dry mono voice and a mono accompaniment at 16 kHz; a record is a
44.1 kHz stereo mix in which the voice sits somewhere near the centre with a room around
it and the accompaniment is wide and equalised. :func:`make_record` turns the first into
the second, with random settings drawn by :func:`draw_settings` from a seeded generator:

1. both sources are resampled to 44.1 kHz (:func:`scipy.signal.resample_poly`);
2. an exciter (:func:`excite`) gives each source a band above the source's Nyquist
   frequency (8 kHz), derived from its own 3-8 kHz band, as mastering exciters do: a
   16 kHz source has nothing there, a record does (sibilants, cymbals);
3. the voice is panned with a constant-power law (:func:`pan_gains`, a position within
   +-0.3) and sent to a stereo reverb (:func:`room_impulse_response`: exponentially
   decaying noise, RT60 0.3-1.2 s, a pre-delay, a wet/dry mix);
4. the accompaniment is equalised (:func:`equalise`: a low shelf, a peak and a high
   shelf of a few dB) and widened (:func:`widen`: a delayed copy of it, 8-20 ms late,
   added to the left channel and taken from the right: the mono sum is untouched);
5. each treated stem is scaled back to its source's energy (summed over both channels),
   so the voice-to-accompaniment ratio is that of the source clip (0 dB in the MIR-1K
   protocol, :func:`npvae.audio.datasets.mix_at_snr`).

The stems are the sources as they sound in the mix, so ``mixture == vocals +
accompaniment`` exactly (float32), and scores against them are well defined.
"""
from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass

import numpy as np
from scipy.signal import butter, fftconvolve, resample_poly, sosfilt

from .io import resample

RECORD_RATE = 44100               # Hz, the rate of the mixes
PAN_RANGE = 0.3                   # voice positions in [-0.3, 0.3] (-1 hard left, +1 hard right)
RT60_RANGE = (0.3, 1.2)           # s, reverb time (60 dB of decay)
PREDELAY_RANGE = (0.01, 0.04)     # s, before the reverb's first reflection
WET_RANGE = (0.15, 0.35)          # share of the voice's energy in the reverb
WIDEN_RANGE = (0.008, 0.020)      # s, delay of the accompaniment's side signal
WIDTH_RANGE = (0.3, 0.6)          # gain of the accompaniment's side signal
EQ_DB = 3.0                       # each EQ band within +-3 dB
EXCITER_DB_RANGE = (-30.0, -22.0)  # dB, energy of the exciter's band relative to its stem


@dataclass(frozen=True)
class RecordSettings:
    """The treatment of one clip (all drawn by :func:`draw_settings`).

    pan : voice position in [-1, 1] (0 centre). rt60, predelay : reverb time and pre-delay, s.
    wet : share of the voice's energy in the reverb, [0, 1]. widen, width : delay (s) and
    gain of the accompaniment's side signal (:func:`widen`). low_shelf, peak,
    high_shelf : (frequency Hz, gain dB) of the accompaniment's EQ; peak_q : the peak's Q.
    exciter_db : energy of each stem's exciter band relative to the stem, dB (None: no exciter).
    noise_seed : seed of the reverb's noise.
    """
    pan: float
    rt60: float
    predelay: float
    wet: float
    widen: float
    width: float
    low_shelf: tuple[float, float]
    peak: tuple[float, float]
    peak_q: float
    high_shelf: tuple[float, float]
    exciter_db: float | None
    noise_seed: int

    def to_dict(self) -> dict:
        """The settings as plain numbers and lists (for a JSON manifest)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def clip_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of clip ``name``'s settings: the same for a name and seed whatever other
    clips are mixed with it."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def draw_settings(rng: np.random.Generator, exciter: bool = True) -> RecordSettings:
    """Random settings within the ranges of this module's constants."""
    u = rng.uniform
    return RecordSettings(
        pan=float(u(-PAN_RANGE, PAN_RANGE)), rt60=float(u(*RT60_RANGE)), predelay=float(u(*PREDELAY_RANGE)),
        wet=float(u(*WET_RANGE)), widen=float(u(*WIDEN_RANGE)), width=float(u(*WIDTH_RANGE)),
        low_shelf=(float(u(80, 250)), float(u(-EQ_DB, EQ_DB))),
        peak=(float(u(500, 4000)), float(u(-EQ_DB, EQ_DB))), peak_q=float(u(0.7, 1.5)),
        high_shelf=(float(u(6000, 12000)), float(u(-EQ_DB, EQ_DB))),
        exciter_db=float(u(*EXCITER_DB_RANGE)) if exciter else None,
        noise_seed=int(rng.integers(2 ** 31)))


# ----------------------------------------------------------------------------- the treatments

def pan_gains(position: float) -> np.ndarray:
    """Constant-power pan: (left, right) gains for ``position`` in [-1, 1] (-1 hard left).
    The squares of the two gains add up to 1 at every position; at 0 both are 1/sqrt(2)."""
    if not -1.0 <= position <= 1.0:
        raise ValueError(f"a pan position must be in [-1, 1], got {position}")
    angle = (position + 1.0) * np.pi / 4.0
    return np.array([np.cos(angle), np.sin(angle)])


def room_impulse_response(rt60: float, predelay: float, sr: int, rng: np.random.Generator,
                          channels: int = 2) -> np.ndarray:
    """A synthetic room: ``predelay`` seconds of silence, then Gaussian noise whose amplitude
    decays by 60 dB in ``rt60`` seconds (it ends there). One independent noise per channel
    (a stereo reverb's decorrelated outputs). Returns float64 (n_taps, channels), each
    channel of unit energy."""
    if rt60 <= 0 or predelay < 0:
        raise ValueError(f"rt60 must be positive and predelay non-negative, got {rt60} and {predelay}")
    t = np.arange(int(round(rt60 * sr))) / sr
    tail = rng.standard_normal((t.size, channels)) * np.exp(-3.0 * np.log(10.0) * t / rt60)[:, None]
    tail /= np.sqrt(np.sum(tail ** 2, axis=0, keepdims=True))
    return np.concatenate([np.zeros((int(round(predelay * sr)), channels)), tail])


def reverberate(x: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """``x`` (n,) through each channel of ``ir`` (n_taps, channels); (n, channels), the tail
    past the clip's end cut."""
    return fftconvolve(x[:, None], ir, axes=0)[:x.shape[0]]


def _biquad(b: np.ndarray, a: np.ndarray) -> np.ndarray:
    return np.concatenate([b / a[0], a / a[0]])[None, :]


def shelf_sos(kind: str, freq: float, gain_db: float, sr: int) -> np.ndarray:
    """A low or high shelf ("low" / "high") of ``gain_db`` at ``freq`` Hz, slope 1 (the audio
    EQ cookbook's biquad, R. Bristow-Johnson). Returns sos (1, 6) for :func:`scipy.signal.sosfilt`."""
    A = 10.0 ** (gain_db / 40.0)
    w = 2.0 * np.pi * freq / sr
    cw, alpha = np.cos(w), np.sin(w) / 2.0 * np.sqrt(2.0)
    s = 1.0 if kind == "low" else -1.0
    b = A * np.array([(A + 1) - s * (A - 1) * cw + 2 * np.sqrt(A) * alpha,
                      s * 2 * ((A - 1) - s * (A + 1) * cw),
                      (A + 1) - s * (A - 1) * cw - 2 * np.sqrt(A) * alpha])
    a = np.array([(A + 1) + s * (A - 1) * cw + 2 * np.sqrt(A) * alpha,
                  -s * 2 * ((A - 1) + s * (A + 1) * cw),
                  (A + 1) + s * (A - 1) * cw - 2 * np.sqrt(A) * alpha])
    return _biquad(b, a)


def peak_sos(freq: float, gain_db: float, q: float, sr: int) -> np.ndarray:
    """A peaking EQ of ``gain_db`` at ``freq`` Hz with quality ``q`` (the cookbook's biquad); sos (1, 6)."""
    A = 10.0 ** (gain_db / 40.0)
    w = 2.0 * np.pi * freq / sr
    alpha = np.sin(w) / (2.0 * q)
    b = np.array([1 + alpha * A, -2 * np.cos(w), 1 - alpha * A])
    a = np.array([1 + alpha / A, -2 * np.cos(w), 1 - alpha / A])
    return _biquad(b, a)


def equalise(x: np.ndarray, s: RecordSettings, sr: int) -> np.ndarray:
    """``x`` (n, ...) through the settings' low shelf, peak and high shelf (along axis 0)."""
    sos = np.concatenate([shelf_sos("low", *s.low_shelf, sr), peak_sos(*s.peak, s.peak_q, sr),
                          shelf_sos("high", *s.high_shelf, sr)])
    return sosfilt(sos, x, axis=0)


def widen(x: np.ndarray, delay: float, width: float, sr: int) -> np.ndarray:
    """Mono ``x`` (n,) as two channels (n, 2): ``x + width * d`` and ``x - width * d``, ``d``
    being ``x`` delayed by ``delay`` seconds (a side-delay widener: the part is heard wide,
    not identical in both channels, and the mono sum, the mid signal, is ``x`` itself)."""
    k = int(round(delay * sr))
    side = width * np.concatenate([np.zeros(min(k, x.shape[0])), x[:max(0, x.shape[0] - k)]])
    return np.stack([x + side, x - side], axis=1)


def excite(x: np.ndarray, level_db: float, sr: int, source_rate: int) -> np.ndarray:
    """``x`` (n,) at ``sr`` Hz with a band above ``source_rate`` / 2 added: its 3 kHz to
    Nyquist band full-wave rectified (which doubles its frequencies) and high-passed above
    the source's Nyquist frequency, at ``level_db`` dB of ``x``'s energy. The band follows the
    source's own high partials and noises in time (a voice's sibilants give its loudest part)."""
    nyquist = source_rate / 2.0
    if sr <= 2 * nyquist * 1.1:
        return x
    band = sosfilt(butter(4, 3000.0, "highpass", fs=sr, output="sos"), x)
    gen = sosfilt(butter(8, nyquist * 1.05, "highpass", fs=sr, output="sos"), np.abs(band))
    e_gen, e_x = float(np.sum(gen ** 2)), float(np.sum(x ** 2))
    if e_gen == 0.0 or e_x == 0.0:
        return x
    return x + gen * np.sqrt(e_x / e_gen * 10.0 ** (level_db / 10.0))


# ----------------------------------------------------------------------------- one record

@dataclass
class Record:
    """A stereo mix and its stems at ``sr`` Hz: float32 (n_samples, 2) each, ``mixture ==
    vocals + accompaniment`` exactly; ``settings``: how it was made."""
    mixture: np.ndarray
    vocals: np.ndarray
    accompaniment: np.ndarray
    sr: int
    settings: RecordSettings


def _energy_of(x: np.ndarray, energy: float) -> np.ndarray:
    e = float(np.sum(x ** 2))
    return x * np.sqrt(energy / e) if e > 0 else x


def make_record(voice: np.ndarray, accompaniment: np.ndarray, sr: int, settings: RecordSettings,
                out_rate: int = RECORD_RATE) -> Record:
    """The record of a dry mono ``voice`` and ``accompaniment`` ((n,) each, ``sr`` Hz, full
    scale 1.0) with ``settings``, at ``out_rate`` Hz: (n * out_rate / sr rounded up, 2) float32
    stems and mixture. Each stem has its source's energy (both channels together)."""
    voice, accompaniment = np.asarray(voice, np.float64), np.asarray(accompaniment, np.float64)
    if voice.ndim != 1 or voice.shape != accompaniment.shape or voice.size == 0:
        raise ValueError(f"voice and accompaniment must be two non-empty (n_samples,) arrays of one length, "
                         f"got {voice.shape} and {accompaniment.shape}")
    s = settings
    v, a = resample(voice, sr, out_rate), resample(accompaniment, sr, out_rate)
    e_v, e_a = float(np.sum(v ** 2)), float(np.sum(a ** 2))
    if s.exciter_db is not None:
        v, a = excite(v, s.exciter_db, out_rate, sr), excite(a, s.exciter_db, out_rate, sr)
    rng = np.random.default_rng(s.noise_seed)
    wet = reverberate(v, room_impulse_response(s.rt60, s.predelay, out_rate, rng)) / np.sqrt(2.0)
    vocals = np.sqrt(1.0 - s.wet) * v[:, None] * pan_gains(s.pan)[None, :] + np.sqrt(s.wet) * wet
    acc = widen(equalise(a, s, out_rate), s.widen, s.width, out_rate)
    vocals = _energy_of(vocals, e_v).astype(np.float32)
    acc = _energy_of(acc, e_a).astype(np.float32)
    return Record(vocals + acc, vocals, acc, out_rate, s)


def record_of_track(track, seed: int = 0, exciter: bool = True, out_rate: int = RECORD_RATE) -> Record:
    """The record of a :class:`~npvae.audio.datasets.Track` with settings drawn for its name
    and ``seed`` (:func:`clip_rng`): the same clip and seed give the same record."""
    return make_record(track.voice, track.accompaniment, track.sr,
                       draw_settings(clip_rng(seed, track.name), exciter), out_rate)


__all__ = ["RECORD_RATE", "RecordSettings", "Record", "draw_settings", "clip_rng", "pan_gains",
           "room_impulse_response", "reverberate", "shelf_sos", "peak_sos", "equalise", "widen", "excite",
           "make_record", "record_of_track"]
