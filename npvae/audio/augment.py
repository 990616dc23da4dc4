"""Voices at another pitch: a training excerpt read at a random rate.

Two MIR-1K training singers are all a music network hears of singing voices. Reading a
voice excerpt ``ratio`` times faster raises its pitch by 12 log2(ratio) semitones (and
its tempo with it, as a tape played faster), which gives the network voices in registers
the two singers do not have. The excerpt is resampled with an anti-aliasing polyphase
filter (:func:`scipy.signal.resample_poly`, its default Kaiser window): partials that a
raise in pitch pushes above the Nyquist frequency are attenuated (at 16 kHz, a whole tone
up: 12 dB at 7.5 kHz, 25 dB at 7.9 kHz) rather than folded back at full level; at 16 kHz
a voice has little energy there.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

MAX_DENOMINATOR = 64      # the rate as a fraction down / up with up <= 64 (a short polyphase filter)


def draw_ratio(rng: np.random.Generator, semitones: float) -> float:
    """A playback rate for a pitch change uniform in [-semitones, semitones] semitones."""
    return float(2.0 ** (rng.uniform(-semitones, semitones) / 12.0))


def read_at_rate(signal: np.ndarray, start: int, seg: int, ratio: float = 1.0) -> np.ndarray:
    """``seg`` samples of ``signal`` from sample ``start`` on, played ``ratio`` times as
    fast (ratio 1: the plain excerpt). Past the end of ``signal`` the excerpt is zeros.

    signal : (n,) float samples. Returns (seg,) float32. The rate is taken as the nearest
    fraction with a denominator up to :data:`MAX_DENOMINATOR` (a pitch within 0.3 % of
    the one asked).
    """
    if ratio <= 0:
        raise ValueError(f"the playback rate must be positive, got {ratio}")
    rate = Fraction(ratio).limit_denominator(MAX_DENOMINATOR) if ratio != 1 else Fraction(1)
    out = np.zeros(seg, np.float32)
    if rate == 1:
        piece = signal[start:start + seg]
        out[:len(piece)] = piece
        return out
    down, up = rate.numerator, rate.denominator          # ``down`` input samples give ``up`` output ones
    n_in = -(-seg * down // up) + 1
    piece = np.zeros(n_in, np.float64)
    part = signal[start:start + n_in]
    piece[:len(part)] = part
    resampled = resample_poly(piece, up, down)
    out[:] = resampled[:seg]
    return out


__all__ = ["draw_ratio", "read_at_rate"]
