"""Separating audio of any length in blocks, with memory flat in the file's length.

A separator's output at a sample depends only on the input around it (the STFT
window, the network's receptive field, the resampling filter). So a long signal is
cut into blocks of ``block`` samples, each separated together with ``context``
samples of real input on both sides, and only the block itself is kept. Block
starts are multiples of a *quantum* chosen so that, at the model's rate, they fall
on the STFT frame grid and on the network's stride grid (multiples of
``hop * DOWNSAMPLE``) and, at the input rate, on the resampler's phase grid. The
blocks then see exactly the frames a single pass over the whole signal sees, and
the result equals that single pass up to float rounding (a test checks every join).

:func:`separate_blocks` yields the output block by block from any reader of input
blocks; :func:`iter_file_blocks` is such a reader over a sound file (soundfile's
block reads), so neither the input nor the output is ever held whole.
"""
from __future__ import annotations

from math import ceil, gcd
from typing import Callable, Iterator

import numpy as np


def block_quantum(sr: int, model_rate: int, hop: int, downsample: int) -> int:
    """Smallest step in input samples that keeps blocks on every grid (see module doc)."""
    g = gcd(int(sr), int(model_rate))
    up, down = model_rate // g, sr // g
    grid = hop * downsample
    return down * (grid // gcd(up, grid))


def block_layout(sr: int, model_rate: int, hop: int, downsample: int, n_fft: int,
                 block_seconds: float = 30.0, context_frames: int = 48) -> tuple[int, int]:
    """``(block, context)`` in input samples, both multiples of :func:`block_quantum`.

    ``context`` covers the network's context (``context_frames``), one STFT window and
    the resampling filter, with a margin.
    """
    q = block_quantum(sr, model_rate, hop, downsample)
    ctx_model = (context_frames + downsample + 2 * ceil(n_fft / hop) + 4) * hop   # model samples
    ctx_in = ctx_model * sr / model_rate + 64
    context = int(ceil(ctx_in / q)) * q
    block = max(1, int(round(block_seconds * sr / q))) * q
    return block, context


def separate_blocks(separate: Callable[[np.ndarray], np.ndarray], read: Callable[[int, int], np.ndarray],
                    n_samples: int, block: int, context: int) -> Iterator[tuple[int, np.ndarray]]:
    """Run ``separate`` over a long signal block by block.

    separate : (m, channels) float32 -> (n_sources, m, channels), any ``m``.
    read : ``read(start, stop)`` returns input samples [start, stop) as (stop - start, channels).
    n_samples : the signal's length; block, context : from :func:`block_layout`.
    Yields ``(start, out)`` with ``out`` of shape (n_sources, n, channels) for samples
    [start, start + n), in order, covering [0, n_samples) once.
    """
    if block <= 0 or context < 0:
        raise ValueError(f"block ({block}) must be positive and context ({context}) non-negative")
    for start in range(0, n_samples, block):
        stop = min(n_samples, start + block)
        lo, hi = max(0, start - context), min(n_samples, stop + context)
        est = separate(read(lo, hi))
        yield start, est[:, start - lo:stop - lo]


def iter_file_blocks(sound_file) -> Callable[[int, int], np.ndarray]:
    """A ``read(start, stop)`` for :func:`separate_blocks` over an open ``soundfile.SoundFile``."""
    def read(start: int, stop: int) -> np.ndarray:
        sound_file.seek(start)
        x = sound_file.read(stop - start, dtype="float32", always_2d=True)
        if x.shape[0] != stop - start:
            raise OSError(f"{sound_file.name}: expected {stop - start} samples at {start}, read "
                          f"{x.shape[0]} (the file is truncated or changed while being read)")
        ok = np.isfinite(x)
        if not ok.all():
            first = start + int(np.argmin(ok.all(axis=1)))
            raise ValueError(f"{sound_file.name} holds NaN or infinite samples, the first at sample {first}; "
                             "re-export it from a clean source")
        return x
    return read
