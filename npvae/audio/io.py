"""Reading and writing audio files.

Everything libsndfile reads (WAV, FLAC, OGG, AIFF...) comes back as float32
samples of shape ``(n_samples, n_channels)`` in [-1, 1], optionally mixed down
to one channel and resampled with a polyphase filter.
"""
from __future__ import annotations

import os
import warnings
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from npvae import threads
from npvae.files.atomic import atomic_path
from npvae.errors import DatasetError, FileFormatError
from npvae.inputs import as_sample_rate

_CONVERT_HINT = "convert it to WAV or FLAC (e.g. `ffmpeg -i in.mp3 out.wav`) or remove it"


# Signals at least this long (samples) are resampled a channel per thread
# (``npvae.threads``; scipy's polyphase filter releases the GIL). Each channel is
# filtered alone either way, so the numbers are the same.
PARALLEL_MIN_SAMPLES = 1 << 16


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample ``x`` (n_samples, ...) along axis 0 from ``sr_in`` Hz to ``sr_out`` Hz.

    Uses a polyphase filter with the rational factor ``sr_out/sr_in`` reduced by
    their gcd (44100 -> 16000 is up 160, down 441). The result has
    ``ceil(n_samples * sr_out / sr_in)`` samples and the dtype of ``x``. Long signals
    of several channels are resampled a channel per thread.
    """
    sr_in, sr_out = as_sample_rate(sr_in, "input sample rate"), as_sample_rate(sr_out, "output sample rate")
    if sr_in == sr_out:
        return x
    g = gcd(sr_in, sr_out)
    up, down = sr_out // g, sr_in // g
    columns = x.reshape(x.shape[0], -1) if x.ndim > 1 else None
    if columns is None or columns.shape[1] == 1 or x.shape[0] < PARALLEL_MIN_SAMPLES:
        return resample_poly(x, up, down, axis=0).astype(x.dtype, copy=False)
    out = np.empty((-(-x.shape[0] * up // down), columns.shape[1]), x.dtype)

    def work(part, worker):
        out[:, part] = resample_poly(columns[:, part], up, down, axis=0)

    threads.for_each_chunk(columns.shape[1], 1, work)
    return out.reshape(-1, *x.shape[1:])


LOW_SAMPLE_RATE = 4000     # Hz; below this a file's rate is more likely a damaged header than audio


def wav_declared_frames(path: str | os.PathLike) -> int | None:
    """The number of frames a RIFF/WAVE file's header declares (its ``data`` chunk size
    over the ``fmt`` chunk's block size), or None if ``path`` is not such a file or the
    header declares no usable size (a stream written with an unknown length)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block = None
            while True:
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return None
                cid, size = chunk[:4], int.from_bytes(chunk[4:], "little")
                if cid == b"fmt ":
                    fmt = fh.read(min(size, 16))
                    if len(fmt) < 14:
                        return None
                    block = int.from_bytes(fmt[12:14], "little")
                    fh.seek(size - len(fmt) + (size & 1), 1)
                elif cid == b"data":
                    if not block or size in (0, 0xFFFFFFFF):
                        return None
                    return size // block
                else:
                    fh.seek(size + (size & 1), 1)
    except OSError:
        return None


def warn_if_suspect(path: str | os.PathLike, frames: int, sr: int, stacklevel: int = 1) -> None:
    """A RuntimeWarning naming ``path`` if it is a truncated WAV (its header declares more
    frames than the ``frames`` read) or its rate ``sr`` is below ``LOW_SAMPLE_RATE``
    (see :func:`read_audio`); for readers that go through ``soundfile`` themselves.
    ``stacklevel`` as :func:`warnings.warn` counts it from the caller of this function."""
    declared = wav_declared_frames(path)
    if declared is not None and declared > frames:
        warnings.warn(f"audio file {path} is truncated: header says {declared} frames, {frames} read; "
                      "using the frames it holds (re-copy or re-export the file)", RuntimeWarning,
                      stacklevel=stacklevel + 1)
    if sr < LOW_SAMPLE_RATE:
        warnings.warn(f"audio file {path}: sample rate {sr} Hz is unusually low for audio (below "
                      f"{LOW_SAMPLE_RATE} Hz); its header may be damaged or wrongly written: check the file",
                      RuntimeWarning, stacklevel=stacklevel + 1)


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
    FileFormatError : the file is unreadable, holds no samples, or holds NaN/inf (the
        message gives the first bad sample).

    Warns
    -----
    RuntimeWarning : two kinds of file are read but not silently. A truncated WAV (its
        header declares more frames than the file holds: a copy cut short) gives the
        frames it holds, which are the start of the recording, with a warning naming the
        file and both counts. A file whose rate is below ``LOW_SAMPLE_RATE`` (4000 Hz)
        is read at that rate with a warning: it is more likely a damaged or wrongly
        written header than audio, and any model would hear it at the wrong speed.
        Other truncated formats (FLAC, OGG) fail to decode and raise FileFormatError.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"audio file not found: {path}. Check the path or the data folder "
                           "(--data-dir / NPVAE_DATA).")
    if sr is not None:
        sr = as_sample_rate(sr, "target sample rate")
    try:
        x, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise FileFormatError(f"cannot read audio file {path}: {e}. The file is corrupt or not "
                              f"audio; {_CONVERT_HINT}.") from None
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise FileFormatError(f"audio file {path} holds no samples; re-export it or remove it.")
    ok = np.isfinite(x)
    if not ok.all():
        first = int(np.argmin(ok.all(axis=1)))
        raise FileFormatError(f"audio file {path} holds {int(ok.size - np.count_nonzero(ok))} NaN or infinite "
                              f"samples, the first at sample {first}; re-export it from a clean source or "
                              "remove it.")
    warn_if_suspect(path, x.shape[0], file_sr, stacklevel=2)
    if mono and x.shape[1] > 1:
        x = x.mean(axis=1, keepdims=True, dtype=np.float32)
    if sr is not None and sr != file_sr:
        x = resample(x, file_sr, sr)
        file_sr = sr
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
