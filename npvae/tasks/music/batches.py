"""Random training excerpts of music as spectrograms."""
from __future__ import annotations

import math

import numpy as np

from ...audio.augment import draw_ratio, read_at_rate
from ...audio.stft import STFTConfig, stft


def sample_batch(tracks, rng: np.random.Generator, batch_size: int, frames: int,
                 stft_cfg: STFTConfig, remix_prob: float = 0.5, gain_db: float = 0.0,
                 part: slice | None = None, voice_pitch: float = 0.0) -> dict:
    """Random training excerpts as spectrograms.

    Each item takes a random track (chance proportional to its length) and a random
    segment of ``frames`` STFT frames; with probability ``remix_prob`` the accompaniment
    comes from another random position of the same track (circular shift), and its level
    is changed by a random gain in [-gain_db, gain_db] dB. ``voice_pitch`` > 0 reads each
    voice excerpt at a random rate, a pitch change within that many semitones
    (:mod:`npvae.audio.augment`; 0 draws nothing, so the batches are those without it).
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
        ratio = draw_ratio(rng, voice_pitch) if voice_pitch > 0 else 1.0
        if i not in keep:
            continue
        j = i - keep.start
        voice[j] = read_at_rate(t.voice, start, seg, ratio)
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
