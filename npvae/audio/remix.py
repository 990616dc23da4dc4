"""Training excerpts with the accompaniment of another clip (cross-clip remixing).

MIR-1K's training split has 175 clips of two singers; pairing each voice only with
its own accompaniment gives the network 175 distinct mixtures. Drawing the
accompaniment from a random *other* clip, at a random offset and gain, gives
mixtures the training set does not hold, which is what unseen singers and songs
look like to the model.
"""
from __future__ import annotations

import math

import numpy as np

from .augment import draw_ratio, read_at_rate
from .stft import STFTConfig, stft


def _excerpt(signal: np.ndarray, rng: np.random.Generator, seg: int) -> np.ndarray:
    """A random ``seg``-sample excerpt of ``signal`` (zero-padded when shorter)."""
    out = np.zeros(seg, np.float32)
    start = int(rng.integers(0, max(1, len(signal) - seg + 1)))
    piece = signal[start:start + seg]
    out[:len(piece)] = piece
    return out


def first_full_frame(cfg: STFTConfig) -> int:
    """Index of the first STFT frame whose window starts at or after sample 0."""
    return int(math.ceil((cfg.n_fft / 2) / cfg.hop)) - cfg.first_frame


def sample_remix_batch(tracks, rng: np.random.Generator, batch_size: int, frames: int,
                       stft_cfg: STFTConfig, remix_prob: float = 0.5, gain_db: float = 0.0,
                       part: slice | None = None, voice_pitch: float = 0.0) -> dict:
    """Random training excerpts as spectrograms, remixed across clips.

    Each item takes a voice excerpt of ``frames`` STFT frames from a random track
    (chance proportional to length). With probability ``remix_prob`` its
    accompaniment is an excerpt of another random track (else the same track's,
    time-aligned); the accompaniment's level changes by a random gain in
    [-gain_db, gain_db] dB. ``voice_pitch`` > 0 reads each voice excerpt at a random
    rate, a pitch change within that many semitones (:mod:`.augment`; 0 draws nothing,
    so the batches are those without it).

    Returns complex64 "voice", "accompaniment" and "mixture" of shape (N, F, frames)
    (F = n_fft / 2 + 1), the same layout as ``npvae.tasks.music.sample_batch``.
    ``part`` (one MPI rank's slice of the batch) keeps only those items, N = its length;
    the draws are the whole batch's, so the ranks' parts make up one process's batch.
    """
    if not 0.0 <= remix_prob <= 1.0:
        raise ValueError(f"remix_prob must be in [0, 1], got {remix_prob}")
    if batch_size < 1 or frames < 1:
        raise ValueError(f"batch_size and frames must be >= 1, got {batch_size} and {frames}")
    lengths = np.array([t.n_samples for t in tracks], dtype=np.float64)
    p = lengths / lengths.sum()
    seg = (frames - 1) * stft_cfg.hop + stft_cfg.n_fft
    voice = np.zeros((batch_size, seg), np.float32)
    acc = np.zeros((batch_size, seg), np.float32)
    for i, k in enumerate(rng.choice(len(tracks), size=batch_size, p=p)):
        t = tracks[k]
        if len(tracks) > 1 and rng.random() < remix_prob:
            other = int(rng.integers(0, len(tracks) - 1))
            other += other >= k                      # any track but k
            start = int(rng.integers(0, max(1, len(t.voice) - seg + 1)))
            acc[i] = _excerpt(tracks[other].accompaniment, rng, seg)
        else:
            start = int(rng.integers(0, max(1, t.n_samples - seg + 1)))
            a = t.accompaniment[start:start + seg]
            acc[i, :len(a)] = a
        if gain_db > 0:
            acc[i] *= 10.0 ** (rng.uniform(-gain_db, gain_db) / 20.0)
        voice[i] = read_at_rate(t.voice, start, seg, draw_ratio(rng, voice_pitch) if voice_pitch > 0 else 1.0)
    if part is not None:      # only this rank's excerpts go through the STFT
        voice, acc = voice[part], acc[part]
    k0 = first_full_frame(stft_cfg)
    V = stft(voice, stft_cfg)[..., k0:k0 + frames]
    A = stft(acc, stft_cfg)[..., k0:k0 + frames]
    return {"voice": V, "accompaniment": A, "mixture": V + A}
