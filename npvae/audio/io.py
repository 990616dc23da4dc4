"""Reading and writing audio files.

Everything libsndfile reads (WAV, FLAC, OGG, AIFF...) comes back as float32
samples of shape ``(n_samples, n_channels)`` in [-1, 1], optionally mixed down
to one channel and resampled with a polyphase filter.
"""
from __future__ import annotations

import os
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from npvae.checkpoint import atomic_path
from npvae.errors import DatasetError, FileFormatError

_CONVERT_HINT = "convert it to WAV or FLAC (e.g. `ffmpeg -i in.mp3 out.wav`) or remove it"


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample ``x`` (n_samples, ...) along axis 0 from ``sr_in`` Hz to ``sr_out`` Hz.

    Uses a polyphase filter with the rational factor ``sr_out/sr_in`` reduced by
    their gcd (44100 -> 16000 is up 160, down 441). The result has
    ``ceil(n_samples * sr_out / sr_in)`` samples and the dtype of ``x``.
    """
    sr_in, sr_out = int(sr_in), int(sr_out)
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_in} Hz -> {sr_out} Hz")
    if sr_in == sr_out:
        return x
    g = gcd(sr_in, sr_out)
    y = resample_poly(x, sr_out // g, sr_in // g, axis=0)
    return y.astype(x.dtype, copy=False)


def read_audio(path: str | os.PathLike, sr: int | None = None,
               mono: bool = False) -> tuple[np.ndarray, int]:
    """Read an audio file.

    Parameters
    ----------
    path : file name; any format libsndfile reads.
    sr : target sample rate in Hz, or None to keep the file's rate.
    mono : if True, average the channels (the result then has one channel).

    Returns
    -------
    samples : float32 ndarray of shape (n_samples, n_channels), full scale = 1.0.
    sr : the sample rate of ``samples`` in Hz.

    Raises
    ------
    DatasetError : the file does not exist.
    FileFormatError : the file is unreadable, holds no samples, or holds NaN/inf.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"audio file not found: {path}. Check the path or the data folder "
                           "(--data-dir / NPVAE_DATA).")
    try:
        x, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise FileFormatError(f"cannot read audio file {path}: {e}. The file is corrupt or not "
                              f"audio; {_CONVERT_HINT}.") from None
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise FileFormatError(f"audio file {path} holds no samples; re-export it or remove it.")
    if not np.all(np.isfinite(x)):
        raise FileFormatError(f"audio file {path} holds NaN or infinite samples; re-export it "
                              "from a clean source or remove it.")
    if mono and x.shape[1] > 1:
        x = x.mean(axis=1, keepdims=True, dtype=np.float32)
    if sr is not None and int(sr) != file_sr:
        x = resample(x, file_sr, int(sr))
        file_sr = int(sr)
    return np.ascontiguousarray(x, dtype=np.float32), int(file_sr)


def write_audio(path: str | os.PathLike, samples: np.ndarray, sr: int,
                subtype: str | None = None) -> Path:
    """Write ``samples`` (n_samples,) or (n_samples, n_channels) at ``sr`` Hz to ``path``.

    The format comes from the extension (``.wav``, ``.flac``, ``.ogg``...); ``subtype``
    is libsndfile's (``"PCM_16"``, ``"FLOAT"``...), None for the format's default
    (16-bit PCM for WAV and FLAC). The file is written to a temporary name in the
    same folder and then renamed, so a crash never leaves half a file behind.
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").upper()
    formats = sf.available_formats()
    if fmt not in formats:
        raise FileFormatError(f"cannot write {path}: unknown audio extension '{path.suffix}'. "
                              f"Use one of: {', '.join('.' + f.lower() for f in sorted(formats))}.")
    x = np.asarray(samples)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"samples must have shape (n_samples,) or (n_samples, n_channels) with "
                         f"n_samples > 0, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"refusing to write {path}: samples hold NaN or inf")
    subtype = subtype or sf.default_subtype(fmt)
    peak = float(np.max(np.abs(x)))
    if subtype and subtype.startswith("PCM") and peak > 1.0:
        raise ValueError(f"refusing to write {path}: peak {peak:.3f} > 1 would clip in {subtype}; "
                         "scale the samples down or pass subtype='FLOAT'")
    with atomic_path(path, path.suffix) as tmp:
        sf.write(str(tmp), x, int(sr), subtype=subtype, format=fmt)
    return path
