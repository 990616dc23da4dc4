"""``npvae separate``: separate the singing voice from the accompaniment of songs.

    npvae separate SONG.wav [MORE.flac DIR ...] --out DIR          # the shipped music model
    npvae separate SONG.wav --model RUN_DIR_OR_FILE --out DIR
    cat song.wav | npvae separate - --out DIR                     # a pipe is read once, into memory

Each input song gives OUT/<name>_vocals.wav and OUT/<name>_accompaniment.wav at the
song's own sample rate, channel count and length (any rate, mono, stereo or more
channels). A stereo song's masks come from its mid signal and apply to both channels
(--stereo per-channel separates each channel on its own, as songs of other channel
counts are); the band above the model's 8 kHz is shared between the stems as the
voice's mask shares the top of the model's band (--high-band accompaniment gives it
all to the accompaniment). A folder is searched for audio
files recursively, and outputs keep the inputs' folder structure below the inputs'
common folder, so a/song.wav and b/song.wav give OUT/a/... and OUT/b/....

With --html, OUT/index.html gets a player and a spectrogram of each input and each
separated stem (it opens from disk in any browser; the pictures go in OUT/page/).

Nothing is overwritten without --overwrite, and all checks (readable inputs, outputs
that would collide or replace an input, a writable --out with enough free space) are
made before any work starts. Songs are read, separated and written in blocks
(--block-seconds), so memory stays flat however long the song is; each output is
written under a temporary name and renamed when whole, so a failure or Ctrl-C
leaves no partial file.

Formats read: whatever this machine's libsndfile reads (WAV, FLAC, OGG, AIFF, and
MP3 with libsndfile >= 1.1; `npvae separate --formats` lists them).
The same from Python: npvae.separation.audio_files.separate_files(songs, out, model=...).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .. import pretrained
from ..errors import FileFormatError
from ..files.model_file import load_separator
from ..separation.audio_files import output_bits, prepare, separate_song
from ..separation.separator import (DEFAULT_HIGH_BAND, DEFAULT_STEREO, HIGH_BAND_MODES, SOURCES, STEREO_MODES,
                                    shift_offsets)
from ..watch.separation_page import check_page_free, write_separation_page
from .common import HelpFormatter, UsageError, positive_float, positive_int, positive_multiple


def add_command(sub, name):
    p = sub.add_parser(name, help="separate songs into vocals and accompaniment", description=__doc__,
                       formatter_class=HelpFormatter)
    add_arguments(p)
    p.set_defaults(run=run, on_interrupt=interrupted)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("songs", nargs="*", help="audio files or folders of audio files; - (or /dev/stdin) reads standard input")
    p.add_argument("--model", default=pretrained.DEFAULT_MUSIC_MODEL,
                   help="run directory of `npvae train music`, its model.h5 / results.h5 / checkpoint.npz, "
                        "or the name of a shipped model (default: %(default)s, trained on MIR-1K; "
                        "npvae.list_models() lists them)")
    p.add_argument("--out", help="output folder (created if needed)")
    p.add_argument("--stems", nargs="+", choices=SOURCES, default=list(SOURCES),
                   help="which sources to write (default: all)")
    p.add_argument("--format", choices=("wav", "flac"), default="wav", help="output file format")
    p.add_argument("--bits", choices=("16", "24", "float"), default=None,
                   help="sample format: 16/24-bit PCM or 32-bit float (WAV only); default float for WAV, "
                        "24 for FLAC")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--wiener", action="store_true", help="Wiener-style (power ratio) refinement of the masks")
    p.add_argument("--shifts", type=positive_int, default=1, metavar="N",
                   help="average the masks over N time shifts of the input: N times slower, a little "
                        "better (docs/separation.md has the numbers); at most the model's DOWNSAMPLE")
    p.add_argument("--chunk-frames", type=positive_multiple(8), default=256,
                   help="STFT frames per network pass: a positive multiple of 8 and of the model's DOWNSAMPLE "
                        "(2 to the power of its levels: 8 for 3 levels, 32 for the shipped models), checked "
                        "when the model is loaded, before any work")
    p.add_argument("--stereo", choices=STEREO_MODES, default=DEFAULT_STEREO,
                   help="per-channel: every channel separated on its own; mid: the masks of a stereo song's mid "
                        "signal applied to both channels (one network pass; docs/separation.md has the numbers)")
    p.add_argument("--high-band", choices=HIGH_BAND_MODES, default=DEFAULT_HIGH_BAND,
                   help="where the band above the model's Nyquist frequency (8 kHz) goes: all to the "
                        "accompaniment, or shared in each frame as the voice's mask shares the top of the "
                        "model's band")
    p.add_argument("--block-seconds", type=positive_float, default=10.0,
                   help="seconds of audio read, separated and written at a time (bounds memory)")
    p.add_argument("--html", action="store_true",
                   help="also write OUT/index.html: a player and a spectrogram of each input and stem")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--formats", action="store_true", help="list the audio formats this machine reads, then exit")


def check_args(a: argparse.Namespace) -> argparse.Namespace:
    """Usage mistakes that argparse alone does not see (:class:`~.common.UsageError`,
    exit 2); stems in the model's order."""
    if a.formats:
        return a
    if not a.songs:
        raise UsageError("give at least one song or folder")
    if not a.out:
        raise UsageError("--out is required (the output folder)")
    try:
        a.bits = output_bits(a.format, a.bits)
    except ValueError as e:
        raise UsageError(str(e)) from None
    a.stems = [s for s in SOURCES if s in a.stems]        # the model's order, no repeats
    return a


def check_model_args(a: argparse.Namespace, model) -> None:
    """The usage mistakes (before any work) that need the model: ``--shifts`` beyond its
    DOWNSAMPLE, and ``--chunk-frames`` that is not a multiple of it (the rule the
    network's chunks must follow)."""
    d = int(model.DOWNSAMPLE)
    try:
        shift_offsets(d, a.shifts)
    except ValueError as e:
        raise UsageError(f"--shifts: {e}") from None
    if a.chunk_frames % d:
        up = -(-a.chunk_frames // d) * d
        raise UsageError(f"--chunk-frames {a.chunk_frames} must be a multiple of {d} for this model (its "
                         f"DOWNSAMPLE: 2 to the power of its {int(np.log2(d))} levels); use {up}"
                         + (f" or {up - d}" if up > d else ""))


def run(a: argparse.Namespace) -> int:
    import soundfile as sf
    check_args(a)
    if a.formats:
        print("\n".join(f"{k.lower():6s} {v}" for k, v in sorted(sf.available_formats().items())))
        return 0
    jobs = prepare(a.songs, Path(a.out), a.stems, a.format, a.bits, a.overwrite)
    if a.html:
        check_page_free(a.out, a.overwrite)
    if a.model == pretrained.DEFAULT_MUSIC_MODEL and not pretrained.is_name(a.model) and not Path(a.model).exists():
        raise FileFormatError(f"this installation has no shipped model {a.model!r}; pass --model RUN_DIR "
                              "(a run of `npvae train music`)")
    sep = load_separator(pretrained.path(a.model) if pretrained.is_name(a.model) else a.model)
    check_model_args(a, sep.model)
    a.progress_state = {"done": 0, "total": len(jobs), "current": None}
    for job in jobs:
        a.progress_state["current"] = job.input
        for w in job.warnings:
            print(f"warning: {w}", file=sys.stderr)
        clipped = separate_song(sep, job, a.stems, a.format, a.bits, a.wiener, a.chunk_frames, a.block_seconds,
                                progress=not a.no_progress, shifts=a.shifts, stereo=a.stereo,
                                high_band=a.high_band)
        a.progress_state["done"] += 1
        for path in job.outputs.values():
            print(path, flush=True)
        if clipped:
            print(f"warning: {clipped} sample(s) of {job.input.name}'s estimates exceeded full scale and "
                  f"were clipped in {a.bits}-bit output; use --bits float to keep them", file=sys.stderr)
    if a.html:
        print(write_separation_page(a.out, jobs, a.stems, model=str(a.model)), flush=True)
    return 0


def interrupted(a: argparse.Namespace) -> str:
    """The hint after Ctrl-C: what was finished and what was not written."""
    state = getattr(a, "progress_state", None)
    if not state or state["current"] is None:
        return "nothing was separated"
    done = f"{state['done']} of {state['total']} song(s) finished before it" if state["done"] else "no song finished"
    return f"the outputs of {state['current']} were not written ({done})"


def main(argv=None) -> int:
    """``npvae separate ARGV`` (for callers that ran the old script's ``main``)."""
    from . import main as npvae_main
    return npvae_main(["separate", *(argv or [])])
