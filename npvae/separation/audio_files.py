"""Separating song files on disk: what ``npvae separate`` does, as functions.

    from npvae.separation.audio_files import separate_files
    jobs = separate_files(["song.wav", "album/"], "separated/")   # the shipped music model
    jobs[0].outputs      # {"vocals": Path("separated/song_vocals.wav"), "accompaniment": ...}

Each input song gives ``<out>/<name>_vocals.wav`` and ``<out>/<name>_accompaniment.wav``
at the song's own sample rate, channel count and length (a stereo song by the masks of
its mid signal, other channel counts a channel at a time; :meth:`Separator.separate`). Folders are searched recursively; outputs keep the inputs' folders below their
common folder. Songs are read, separated and written in blocks, so memory stays flat
however long a song is.

The steps, each usable alone: :func:`collect_inputs` (files and folders to a list of
songs), :func:`plan_outputs` (a :class:`SongJob` per song), :func:`check_jobs` (every
problem found before any work: unreadable inputs, outputs that exist, collide or would
replace an input, an unwritable ``out`` or too little space), :func:`prepare` (the
three together), :func:`separate_song` (one song, block by block, written atomically).

An input that is not a regular file (a pipe: ``/dev/stdin``, ``<(cat song.wav)``, a
``mkfifo`` file) is read once into memory by :func:`read_stream` and separated from
there; nothing waits more than :data:`PIPE_WAIT_SECONDS` for the first byte.
"""
from __future__ import annotations

import io
import os
import re
import select
import stat
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

from ..audio.stream import block_layout, iter_file_blocks, separate_blocks
from ..files.atomic import atomic_path
from ..errors import FileFormatError, NpvaeError, OutputError
from ..files.guard import Inputs, check_output_file, check_writable_dir, write_failure
from .separator import DEFAULT_HIGH_BAND, DEFAULT_STEREO, SOURCES
from ..inputs import as_audio_rate

SUBTYPES = {("wav", "16"): "PCM_16", ("wav", "24"): "PCM_24", ("wav", "float"): "FLOAT",
            ("flac", "16"): "PCM_16", ("flac", "24"): "PCM_24"}
BYTES = {"16": 2, "24": 3, "float": 4}          # bytes per output sample
DEFAULT_BITS = {"wav": "float", "flac": "24"}   # FLAC stores integer samples only
PIPE_WAIT_SECONDS = 10.0                        # for the first byte of a pipe
PIPE_MAX_BYTES = 2 << 30                        # a pipe is held in memory: at most this much
LOW_RATE_HZ = 8000                              # below this a song holds almost no voice band


@dataclass
class SongJob:
    """One input song and its output files (``outputs[stem]``); ``frames``, ``channels``
    and ``sr`` (Hz) once :func:`check_jobs` read its header; ``data``: the bytes of an
    input that is a pipe; ``warnings``: what is odd about the input (it is still separated)."""
    input: Path
    outputs: dict[str, Path]
    frames: int = 0
    channels: int = 0
    sr: int = 0
    data: bytes | None = None
    warnings: list[str] = field(default_factory=list)

    def open(self) -> sf.SoundFile:
        """The input as an open sound file (a pipe's bytes from memory)."""
        return sf.SoundFile(io.BytesIO(self.data) if self.data is not None else str(self.input))


def audio_extensions() -> set[str]:
    """File extensions searched for in folders: the formats libsndfile reads here."""
    formats = sf.available_formats()
    exts = {"." + f.lower() for f in formats if f not in ("RAW", "MAT4", "MAT5", "HTK", "SD2", "WVE")}
    if "AIFF" in formats:
        exts |= {".aif", ".aifc"}
    if "OGG" in formats:
        exts |= {".oga", ".opus"}
    return exts


def is_stream(path) -> bool:
    """True for an input that can be read only once: a pipe, a FIFO, a terminal, a socket."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _key(path: Path) -> Path:
    """What identifies an input: its real path; a pipe's name as given (its target is no path)."""
    return Path(os.path.abspath(path)) if is_stream(path) else path.resolve()


def collect_inputs(songs, out) -> tuple[list[Path], list[str]]:
    """Input files (given, or found in the given folders; ``-`` is standard input) and
    notes about files left out."""
    exts, files, notes = audio_extensions(), [], []
    out_abs = Path(out).resolve()
    for s in songs:
        p = Path("/dev/stdin") if str(s) == "-" else Path(s)        # "-": standard input
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts
                           and not f.name.startswith("."))
            inside = [f for f in found if out_abs in f.resolve().parents]
            if inside:
                notes.append(f"{len(inside)} file(s) in {p} lie inside --out {out} and are left out")
            found = [f for f in found if f not in inside]
            if not found and not inside:
                notes.append(f"folder {p} holds no audio files ({', '.join(sorted(exts))})")
            files += found
        else:
            files.append(p)
    unique, seen = [], set()
    for f in files:                                      # the same file named twice: once
        key = _key(f)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, notes


def plan_outputs(files: list[Path], out, stems=SOURCES, ext: str = "wav") -> list[SongJob]:
    """A :class:`SongJob` per input: outputs in the input's folder below the inputs' common
    folder (pipes straight into ``out``)."""
    out = Path(out)
    parents = [f.resolve().parent for f in files if not is_stream(f)]
    common = Path(os.path.commonpath([str(p) for p in parents])) if parents else Path(".")
    jobs = []
    for f in files:
        folder = out if is_stream(f) else out / f.resolve().parent.relative_to(common)
        jobs.append(SongJob(f, {s: folder / f"{f.stem}_{s}.{ext}" for s in stems}))
    return jobs


def read_stream(path, wait: float | None = None, limit: int = PIPE_MAX_BYTES) -> bytes:
    """All bytes of a pipe, FIFO or other stream ``path``, read once.

    Waits at most ``wait`` seconds (default :data:`PIPE_WAIT_SECONDS`) for the first
    byte, so a FIFO that nothing writes into is refused instead of blocking; refuses a
    terminal, an empty stream, and more than ``limit`` bytes. Raises FileFormatError.
    """
    wait = PIPE_WAIT_SECONDS if wait is None else wait
    path = Path(path)
    kind = "a named pipe" if stat.S_ISFIFO(os.stat(path).st_mode) else "a stream"
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if os.isatty(fd):
            raise FileFormatError(f"{path} is a terminal; pipe a song into it "
                                  f"(cat song.wav | npvae separate {path}) or pass the song's file")
        chunks, size, deadline = [], 0, time.monotonic() + wait
        while True:
            timeout = None if size else max(0.0, deadline - time.monotonic())
            if not select.select([fd], [], [], timeout)[0]:
                raise FileFormatError(f"{path} is {kind} and nothing wrote into it within {wait:g} s; start "
                                      "the program that writes into it first, or save the song to a file "
                                      "and pass that")
            try:
                chunk = os.read(fd, 1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise FileFormatError(f"more than {limit / 2 ** 30:.0f} GiB arrived from {path} ({kind}); "
                                      "save the song to a file and pass that")
    finally:
        os.close(fd)
    if not size:
        raise FileFormatError(f"no data arrived from {path} ({kind}); pipe a song into it "
                              f"(cat song.wav | npvae separate {path})")
    return b"".join(chunks)


def _truncation(info) -> str | None:
    """How much of a WAV/AIFF file its header promises but the file lacks, from
    libsndfile's header report (``data : 64000 (should be 31978)``)."""
    m = re.search(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", info.extra_info or "", re.M)
    if not m:
        return None
    promised, held = int(m.group(1)), int(m.group(2))
    if held >= promised or promised in (0, 0xFFFFFFFF, 0x7FFFFFFF):   # streamed headers give no length
        return None
    return f"{held:,} of the {promised:,} bytes of samples its header promises"


def inspect_input(job: SongJob) -> list[str]:
    """Read ``job``'s header (a pipe: all of it) into ``job``; returns the problems that
    rule it out (no samples, a sample rate outside 1 to 384 kHz) and adds warnings (truncated
    file, low sample rate) to ``job.warnings``."""
    f = job.input
    if not f.exists():
        return [f"{f}: no such file"]
    try:
        if is_stream(f):
            job.data = read_stream(f)
        info = sf.info(io.BytesIO(job.data) if job.data is not None else str(f))
    except NpvaeError as e:
        return [str(e)]
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        return [f"{f}: not readable audio ({e}); convert it to WAV or FLAC "
                "(e.g. `ffmpeg -i in.m4a out.wav`) or leave it out"]
    except OSError as e:
        return [f"{f}: cannot be read ({e.strerror or e})"]
    job.frames, job.channels, job.sr = info.frames, info.channels, info.samplerate
    if info.frames <= 0 or info.channels <= 0:
        return [f"{f}: holds no samples"]
    cut = _truncation(info) if job.data is None else None
    if cut:
        job.warnings.append(f"{f} is truncated: it holds {cut} ({info.frames / info.samplerate:.2f} s); "
                            "separating what it holds (download or export it again for the whole song)")
    try:
        as_audio_rate(info.samplerate, f"{f}: its sample rate")
    except ValueError as e:
        return [str(e)]
    if info.samplerate < LOW_RATE_HZ:
        job.warnings.append(f"{f} has a sample rate of {info.samplerate} Hz: it holds nothing above "
                            f"{info.samplerate / 2:g} Hz, where little of a voice lies; separating it as it is "
                            "(is its rate set wrong in the header?)")
    return []


def check_jobs(jobs: list[SongJob], out, stems=SOURCES, bits: str = "float", overwrite: bool = False) -> list[str]:
    """Every problem that would stop or spoil separating ``jobs`` into ``out``, found before
    any work (reads each input's header; see :func:`inspect_input`)."""
    problems = []
    for job in jobs:
        problems += inspect_input(job)
    inputs = Inputs(j.input for j in jobs)
    owner: dict[Path, Path] = {}
    folders: dict[Path, str | None] = {}
    for job in jobs:
        for path in job.outputs.values():
            try:
                inputs.check(path)
            except OutputError as e:
                problems.append(str(e))
                continue
            key = path.resolve()
            if key in owner:
                problems.append(f"{owner[key]} and {job.input} would both write {path}; rename one "
                                "or separate them into different --out folders")
                continue
            owner[key] = job.input
            if path.parent not in folders:
                try:
                    check_writable_dir(path.parent)
                    folders[path.parent] = None
                except OutputError as e:
                    folders[path.parent] = str(e)
                    problems.append(str(e))
            if folders[path.parent] is None:
                try:
                    check_output_file(path, overwrite)
                except OutputError as e:
                    problems.append(str(e))
    need = sum(j.frames * j.channels * BYTES[bits] * len(stems) for j in jobs)
    if not any(folders.values()):
        try:
            check_writable_dir(out, need_bytes=int(need * 1.05) + (1 << 20))
        except OutputError as e:
            problems.append(str(e))
    return problems


def _errno(exc: BaseException) -> int | None:
    """The system error behind ``exc``: an OSError's own, or for libsndfile's "System
    error" the errno its failed call left (soundfile's cffi records it)."""
    if isinstance(exc, OSError):
        return exc.errno
    if isinstance(exc, sf.LibsndfileError) and getattr(exc, "code", None) == 2:
        ffi = getattr(sf, "_ffi", None)
        return getattr(ffi, "errno", None) or None
    return None


def _write_error(path: Path, exc: BaseException) -> OutputError:
    code = _errno(exc)
    return write_failure(path, code if code else exc, flag="--out")


def separate_song(sep, job: SongJob, stems=SOURCES, fmt: str = "wav", bits: str = "float", wiener: bool = False,
                  chunk_frames: int = 256, block_seconds: float = 10.0, progress: bool = False,
                  shifts: int = 1, stereo: str = DEFAULT_STEREO, high_band: str = DEFAULT_HIGH_BAND) -> int:
    """Separate one song block by block into ``job.outputs`` (written to temporary names,
    renamed when whole: a failure or Ctrl-C leaves none of them). Returns how many
    samples exceeded full scale and were clipped (16/24-bit output only). ``shifts``:
    masks averaged over that many time shifts (:meth:`Separator.masks`); ``stereo``,
    ``high_band``: how the channels and the band above the model's are used
    (:meth:`Separator.separate`).

    A damaged input raises FileFormatError naming it; a failed write raises OutputError
    naming the file, the cause (no space left, ...) and the fix.
    """
    from tqdm.auto import tqdm
    stems = [s for s in SOURCES if s in stems]
    subtype = SUBTYPES[(fmt, bits)]
    block, context = block_layout(job.sr, sep.stft_cfg.sample_rate, sep.stft_cfg.hop, sep.model.DOWNSAMPLE,
                                  sep.stft_cfg.n_fft, block_seconds, getattr(sep.model, "context_frames", 48))
    keep = [SOURCES.index(s) for s in stems]
    clip = subtype.startswith("PCM")
    clipped, writing = 0, None
    try:
        with ExitStack() as stack:
            src = stack.enter_context(job.open())
            sinks = []
            for s in stems:
                writing = job.outputs[s]
                tmp = stack.enter_context(atomic_path(writing, writing.suffix))
                sinks.append((writing, stack.enter_context(
                    sf.SoundFile(str(tmp), "w", job.sr, job.channels, subtype=subtype, format=fmt.upper()))))
            writing = None
            bar = tqdm(total=round(job.frames / job.sr, 1), desc=job.input.name, unit="s", leave=False,
                       disable=not progress, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
            def separate(x):
                if x.shape[0] < x.shape[1]:
                    # fewer samples than channels would read as channels-first audio; a
                    # file's layout is known: a block this short is separated a channel at a time
                    return np.stack([separate(x[:, c:c + 1])[..., 0] for c in range(x.shape[1])], axis=-1)
                return sep.separate(x, job.sr, wiener=wiener, chunk_frames=chunk_frames, shifts=shifts,
                                    stereo=stereo, high_band=high_band)
            blocks = separate_blocks(separate, iter_file_blocks(src), job.frames, block, context)
            while True:
                try:
                    _, est = next(blocks)
                except StopIteration:
                    break
                except (OSError, sf.LibsndfileError) as e:
                    raise FileFormatError(f"reading {job.input} failed ({e}); its outputs were not written") from None
                for (path, sink), k in zip(sinks, keep):
                    y = est[k]
                    if clip:
                        over = np.abs(y) > 1.0
                        if over.any():
                            clipped += int(over.sum())
                            y = np.clip(y, -1.0, 1.0)
                    writing = path
                    sink.write(y)
                writing = None
                bar.update(round(est.shape[1] / job.sr, 1))
            bar.close()
            for path, sink in sinks:
                writing = path
                sink.close()                         # before atomic_path renames it
            writing = job.outputs[stems[-1]]         # the renames, as the stack unwinds
    except (OSError, sf.LibsndfileError) as e:
        if writing is None:
            raise FileFormatError(f"reading {job.input} failed ({e}); its outputs were not written") from None
        raise _write_error(writing, e) from None
    return clipped


def output_bits(fmt: str, bits: str | None = None) -> str:
    """The sample format of ``fmt`` output files: ``bits`` ("16", "24" or "float") if the
    format stores it, else a ValueError saying which it takes; None gives the format's
    default (:data:`DEFAULT_BITS`: float for WAV, 24-bit for FLAC)."""
    if fmt not in DEFAULT_BITS:
        raise ValueError(f"output format must be one of {', '.join(DEFAULT_BITS)}, got {fmt!r}")
    if bits is None:
        return DEFAULT_BITS[fmt]
    bits = str(bits)
    if (fmt, bits) not in SUBTYPES:
        takes = [b for f, b in SUBTYPES if f == fmt]
        raise ValueError(f"--bits {bits} is not available in {fmt.upper()} files, which take --bits "
                         f"{' or '.join(takes)} (the default is {DEFAULT_BITS[fmt]}); for {bits} use --format "
                         + " or ".join(f for f in DEFAULT_BITS if (f, bits) in SUBTYPES))
    return bits


def prepare(songs, out, stems=SOURCES, fmt: str = "wav", bits: str = "float", overwrite: bool = False,
            log: Callable[[str], None] = lambda text: print(text, file=sys.stderr)) -> list[SongJob]:
    """The checked jobs of separating ``songs`` (files and folders) into ``out``:
    :func:`collect_inputs`, :func:`plan_outputs`, :func:`check_jobs`. Raises
    OutputError listing every problem before any work; ``log`` gets the notes."""
    files, notes = collect_inputs(songs, out)
    for note in notes:
        log(f"note: {note}")
    if not files:
        raise FileFormatError("no audio files to separate")
    jobs = plan_outputs(files, out, stems, fmt)
    problems = check_jobs(jobs, out, stems, bits, overwrite)
    if problems:
        raise OutputError("nothing was separated, because:\n  " + "\n  ".join(problems))
    return jobs


def separate_files(songs, out, model=None, stems=SOURCES, fmt: str = "wav", bits: str | None = None,
                   overwrite: bool = False, wiener: bool = False, chunk_frames: int = 256,
                   block_seconds: float = 10.0, progress: bool = False,
                   log: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
                   shifts: int = 1, html: bool = False, stereo: str = DEFAULT_STEREO,
                   high_band: str = DEFAULT_HIGH_BAND) -> list[SongJob]:
    """Separate songs and folders of songs into ``out``; returns the jobs done.
    ``shifts`` > 1 averages the masks over that many time shifts (slower, a little better).
    ``stereo`` ("per-channel" or "mid") and ``high_band`` ("accompaniment" or "mask"): how a
    song's channels and the band above the model's are used (:meth:`Separator.separate`).
    ``bits``: "16", "24" or "float" (:func:`output_bits`; None: float for WAV, 24 for FLAC).
    ``html``: also write ``out/index.html``, a player and a spectrogram of each input and
    stem (:mod:`npvae.watch.separation_page`).

    ``model``: a run directory, model file, shipped model name, or a loaded
    :class:`~npvae.separation.separator.Separator` (default: the shipped music model). Checks
    everything first (:func:`prepare`); ``log`` gets notes and warnings.
    """
    from .. import pretrained
    from ..files.model_file import load_separator
    stems = [s for s in SOURCES if s in stems]
    bits = output_bits(fmt, bits)
    jobs = prepare(songs, out, stems, fmt, bits, overwrite, log)
    if html:
        from ..watch.separation_page import check_page_free
        check_page_free(out, overwrite)
    sep = model if hasattr(model, "separate") else load_separator(model or pretrained.DEFAULT_MUSIC_MODEL)
    for job in jobs:
        for w in job.warnings:
            log(f"warning: {w}")
        separate_song(sep, job, stems, fmt, bits, wiener, chunk_frames, block_seconds, progress, shifts,
                      stereo, high_band)
    if html:
        from ..watch.separation_page import write_separation_page
        named = "" if hasattr(model, "separate") else str(model or pretrained.DEFAULT_MUSIC_MODEL)
        write_separation_page(out, jobs, stems, model=named)
    return jobs


__all__ = ["SongJob", "SUBTYPES", "collect_inputs", "plan_outputs", "check_jobs", "inspect_input", "read_stream",
           "prepare", "output_bits", "separate_song", "separate_files", "audio_extensions", "is_stream"]
