"""The page of a separation (``npvae separate SONGS --out DIR --html``): ``DIR/index.html``
with, for each song, a player and a spectrogram of the input and of each separated stem,
so that a listener can judge the separation before opening a DAW.

The players play the files themselves: the stems in ``DIR``, the inputs where they are
(by a relative link); an input a browser cannot play (a pipe, AIFF...) is copied as WAV
into ``DIR/page/``, beside the spectrograms. A song's spectrograms share one dB
reference (the input's loudest bin), so a stem's picture shows what was taken out of
the input. Reading is block-wise: memory stays flat however long a song is.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from ..errors import OutputError
from ..plotting import save_spectrogram
from . import html

PAGE_FILE = "index.html"
MEDIA_DIR = "page"
PLAYABLE = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3"}   # what a browser plays itself
N_FFT = 2048
MAX_COLUMNS = 1000           # spectrogram columns at most (a long song's frames are spread out)


def check_page_free(out, overwrite: bool) -> None:
    """Refuse, before any work, to replace an existing page without ``overwrite``."""
    page = Path(out) / PAGE_FILE
    if page.exists() and not overwrite:
        raise OutputError(f"{page} exists; pass --overwrite to replace it (and the separation's other files), "
                          "or another --out")


def spectrogram(sound: sf.SoundFile, n_fft: int = N_FFT, max_columns: int = MAX_COLUMNS) -> np.ndarray:
    """Magnitudes (n_fft // 2 + 1, T) of ``sound`` (channels averaged), one Hann-windowed
    frame per column: every n_fft / 4 samples, or spread evenly over a long sound so that
    T <= ``max_columns``. Reads one frame at a time."""
    n = sound.frames
    hop = max(n_fft // 4, int(np.ceil(max(n - n_fft, 0) / max(1, max_columns - 1))))
    starts = range(0, max(n - n_fft, 0) + 1, hop)
    window = np.hanning(n_fft).astype(np.float32)
    columns = []
    for start in starts:
        sound.seek(start)
        x = sound.read(n_fft, dtype="float32", always_2d=True).mean(axis=1)
        x = np.pad(x, (0, n_fft - len(x)))
        columns.append(np.abs(np.fft.rfft(x * window)))
    return np.stack(columns, axis=1)


def _picture(png: Path, mag: np.ndarray, ref: float, seconds: float, sr: int, title: str) -> Path:
    db = 20 * np.log10(np.maximum(mag, 1e-8 * ref) / ref)
    return save_spectrogram(png, db, seconds, sr, title)


def _playable_input(job, media: Path) -> Path:
    """The input itself, or (a pipe, a format a browser does not play) a WAV copy in ``media``."""
    if job.data is None and job.input.suffix.lower() in PLAYABLE:
        return job.input
    copy = media / f"{job.input.stem}_input.wav"
    copy.parent.mkdir(parents=True, exist_ok=True)
    with job.open() as src, sf.SoundFile(str(copy), "w", src.samplerate, src.channels, subtype="FLOAT") as dst:
        for block in src.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
            dst.write(block)
    return copy


def song_section(job, out: Path, stems) -> list[str]:
    """The parts of one song: a heading, then the input and each stem with player and spectrogram."""
    folder = job.outputs[stems[0]].parent
    media = out / MEDIA_DIR / folder.relative_to(out)
    name = job.input.stem
    with job.open() as sound:
        seconds, sr = sound.frames / sound.samplerate, sound.samplerate
        mix = spectrogram(sound)
    ref = float(mix.max()) or 1.0
    rows = [("input", _playable_input(job, media), mix)]
    for stem in stems:
        with sf.SoundFile(str(job.outputs[stem])) as sound:
            rows.append((stem, job.outputs[stem], spectrogram(sound)))
    parts = [html.heading(name), html.paragraph(
        f"{'standard input' if job.data is not None else job.input.name}: {seconds:.1f} s, {sr} Hz, "
        f"{job.channels or 'unknown'} channel(s)", "note")]
    for label, sound_path, mag in rows:
        png = _picture(media / f"{name}_{label}.png", mag, ref, seconds, sr, f"{name}: {label}")
        parts.append(html.row([html.audio(sound_path, out, label),
                               html.image(png, out, alt=f"spectrogram of {name} {label}")]))
    return parts


def write_separation_page(out, jobs, stems, model: str = "") -> Path:
    """Write ``out/index.html`` for the separated ``jobs`` (:class:`~npvae.separation.audio_files.SongJob`,
    their stems ``stems`` written); returns its path."""
    out = Path(out)
    parts = [html.paragraph(f"{len(jobs)} song(s) separated into {', '.join(stems)}"
                            + (f" by {model}" if model else "") + ". Each spectrogram is in dB below the "
                            "input's loudest bin (0 to -80 dB), time in seconds, frequency in kHz.", "note")]
    for job in jobs:
        parts += song_section(job, out, list(stems))
    return html.write_page(out / PAGE_FILE, "Separated songs", parts)


__all__ = ["write_separation_page", "check_page_free", "spectrogram", "PAGE_FILE"]
