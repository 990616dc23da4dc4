#!/usr/bin/env python
"""Separate the singing voice from the accompaniment of songs or folders of songs.

    python scripts/separate.py SONG.wav [MORE.flac DIR ...] --out DIR      # the shipped music model
    python scripts/separate.py SONG.wav --model RUN_DIR_OR_FILE --out DIR

Each input song gives OUT/<name>_vocals.wav and OUT/<name>_accompaniment.wav at the
song's own sample rate, channel count and length (any rate, mono, stereo or more
channels: every channel is separated on its own). A folder is searched for audio
files recursively, and outputs keep the inputs' folder structure below the inputs'
common folder, so a/song.wav and b/song.wav give OUT/a/... and OUT/b/....

Nothing is overwritten without --overwrite, and all checks (readable inputs, outputs
that would collide or replace an input, a writable --out with enough free space) are
made before any work starts. Songs are read, separated and written in blocks
(--block-seconds), so memory stays flat however long the song is.

Formats read: whatever this machine's libsndfile reads (WAV, FLAC, OGG, AIFF, and
MP3 with libsndfile >= 1.1; `python scripts/separate.py --formats` lists them).
"""
import argparse
import os
import sys
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from npvae import pretrained
from npvae.audio.stream import block_layout, iter_file_blocks, separate_blocks
from npvae.checkpoint import atomic_path
from npvae.errors import NpvaeError
from npvae.fileguard import check_writable_dir
from npvae.io import load_separator
from npvae.separator import SOURCES

SUBTYPES = {("wav", "16"): "PCM_16", ("wav", "24"): "PCM_24", ("wav", "float"): "FLOAT",
            ("flac", "16"): "PCM_16", ("flac", "24"): "PCM_24"}
BYTES = {"16": 2, "24": 3, "float": 4}


def positive_float(text):
    v = float(text)
    if not v > 0 or not np.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return v


def chunk_frames(text):
    v = int(text)
    if v <= 0 or v % 8:
        raise argparse.ArgumentTypeError(f"must be a positive multiple of 8, got {text}")
    return v


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("songs", nargs="*", help="audio files or folders of audio files")
    p.add_argument("--model", default=pretrained.DEFAULT_MUSIC_MODEL,
                   help="run directory of train_music.py, its model.h5 / results.h5 / checkpoint.npz, or the "
                        "name of a shipped model (default: %(default)s, trained on MIR-1K; "
                        "npvae.list_models() lists them)")
    p.add_argument("--out", help="output folder (created if needed)")
    p.add_argument("--stems", nargs="+", choices=SOURCES, default=list(SOURCES),
                   help="which sources to write (default: all)")
    p.add_argument("--format", choices=("wav", "flac"), default="wav", help="output file format")
    p.add_argument("--bits", choices=("16", "24", "float"), default="float",
                   help="sample format: 16/24-bit PCM or 32-bit float (WAV only); default float")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--wiener", action="store_true", help="Wiener-style (power ratio) refinement of the masks")
    p.add_argument("--chunk-frames", type=chunk_frames, default=256,
                   help="STFT frames per network pass (a positive multiple of 8)")
    p.add_argument("--block-seconds", type=positive_float, default=10.0,
                   help="seconds of audio read, separated and written at a time (bounds memory)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--formats", action="store_true", help="list the audio formats this machine reads, then exit")
    a = p.parse_args(argv)
    if a.formats:
        return a
    if not a.songs:
        p.error("give at least one song or folder")
    if not a.out:
        p.error("--out is required (the output folder)")
    if (a.format, a.bits) not in SUBTYPES:
        p.error(f"--bits {a.bits} is not available in {a.format.upper()} files; use 16 or 24, "
                "or --format wav for float")
    a.stems = [s for s in SOURCES if s in a.stems]        # the model's order, no repeats
    return a


def audio_extensions() -> set[str]:
    """File extensions searched for in folders: the formats libsndfile reads here."""
    formats = sf.available_formats()
    exts = {"." + f.lower() for f in formats if f not in ("RAW", "MAT4", "MAT5", "HTK", "SD2", "WVE")}
    if "AIFF" in formats:
        exts |= {".aif", ".aifc"}
    if "OGG" in formats:
        exts |= {".oga", ".opus"}
    return exts


def collect_inputs(songs: list[str], out: Path) -> tuple[list[Path], list[str]]:
    """Input files (given or found in folders) and the notes about files left out."""
    exts, files, notes = audio_extensions(), [], []
    out_abs = out.resolve()
    for s in songs:
        p = Path(s)
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
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, notes


def plan_outputs(files: list[Path], out: Path, stems: list[str], ext: str) -> list[dict]:
    """Output paths per input: the input's folder below the inputs' common folder."""
    parents = [f.resolve().parent for f in files]
    common = Path(os.path.commonpath([str(p) for p in parents])) if parents else Path(".")
    return [{"input": f, "outputs": {s: out / f.resolve().parent.relative_to(common) / f"{f.stem}_{s}.{ext}"
                                      for s in stems}} for f in files]


def preflight(a, jobs: list[dict]) -> list[str]:
    """Every problem that would stop or spoil the run, found before any work."""
    problems = []
    for job in jobs:
        f = job["input"]
        if not f.exists():
            problems.append(f"{f}: no such file")
            continue
        try:
            info = sf.info(str(f))
            job["frames"], job["channels"], job["sr"] = info.frames, info.channels, info.samplerate
            if info.frames <= 0 or info.channels <= 0:
                problems.append(f"{f}: holds no samples")
        except (sf.LibsndfileError, RuntimeError, TypeError) as e:
            problems.append(f"{f}: not readable audio ({e}); convert it to WAV or FLAC "
                            "(e.g. `ffmpeg -i in.m4a out.wav`) or leave it out")
    inputs = {j["input"].resolve(): j["input"] for j in jobs}
    owner: dict[Path, Path] = {}
    for job in jobs:
        for path in job["outputs"].values():
            key = path.resolve()
            if key in inputs:
                problems.append(f"{path} would replace the input {inputs[key]}; choose another --out")
            elif key in owner:
                problems.append(f"{owner[key]} and {job['input']} would both write {path}; rename one "
                                "or separate them into different --out folders")
            else:
                owner[key] = job["input"]
            if path.is_dir():
                problems.append(f"{path} is a folder; move it or choose another --out")
            elif path.exists() and not a.overwrite:
                problems.append(f"{path} exists; pass --overwrite to replace it")
    need = sum(j.get("frames", 0) * j.get("channels", 0) * BYTES[a.bits] * len(a.stems) for j in jobs)
    try:
        check_writable_dir(a.out, need_bytes=int(need * 1.05) + (1 << 20))
    except NpvaeError as e:
        problems.append(str(e))
    return problems


def separate_one(sep, job: dict, a, subtype: str) -> int:
    """Separate one file block by block into its outputs; returns the count of clipped samples."""
    model = sep.model
    block, context = block_layout(job["sr"], sep.stft_cfg.sample_rate, sep.stft_cfg.hop, model.DOWNSAMPLE,
                                  sep.stft_cfg.n_fft, a.block_seconds)
    keep = [SOURCES.index(s) for s in a.stems]
    clip = subtype.startswith("PCM")
    clipped = 0
    n = job["frames"]
    with ExitStack() as stack, sf.SoundFile(str(job["input"])) as src:
        sinks = []
        for s in a.stems:
            path = job["outputs"][s]
            tmp = stack.enter_context(atomic_path(path, path.suffix))
            sinks.append(stack.enter_context(sf.SoundFile(str(tmp), "w", job["sr"], job["channels"],
                                                          subtype=subtype, format=a.format.upper())))
        bar = tqdm(total=round(n / job["sr"], 1), desc=job["input"].name, unit="s", leave=False,
                   disable=a.no_progress, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
        run = separate_blocks(lambda x: sep.separate(x, job["sr"], wiener=a.wiener, chunk_frames=a.chunk_frames),
                              iter_file_blocks(src), n, block, context)
        for _, est in run:
            for sink, k in zip(sinks, keep):
                y = est[k]
                if clip:
                    over = np.abs(y) > 1.0
                    if over.any():
                        clipped += int(over.sum())
                        y = np.clip(y, -1.0, 1.0)
                sink.write(y)
            bar.update(round(est.shape[1] / job["sr"], 1))
        bar.close()
        for sink in sinks:
            sink.close()                                 # before atomic_path renames it
    return clipped


def main(argv=None):
    a = parse_args(argv)
    if a.formats:
        print("\n".join(f"{k.lower():6s} {v}" for k, v in sorted(sf.available_formats().items())))
        return
    out = Path(a.out)
    files, notes = collect_inputs(a.songs, out)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if not files:
        sys.exit("error: no audio files to separate")
    jobs = plan_outputs(files, out, a.stems, a.format)
    problems = preflight(a, jobs)
    if problems:
        sys.exit("error: nothing was separated, because:\n  " + "\n  ".join(problems))
    if a.model == pretrained.DEFAULT_MUSIC_MODEL and not pretrained.is_name(a.model) and not Path(a.model).exists():
        sys.exit(f"error: this installation has no shipped model {a.model!r}; pass --model RUN_DIR "
                 "(a run of scripts/train_music.py)")
    try:
        sep = load_separator(pretrained.path(a.model) if pretrained.is_name(a.model) else a.model)
    except (NpvaeError, ValueError, OSError) as e:
        sys.exit(f"error: {e}")
    subtype = SUBTYPES[(a.format, a.bits)]
    for i, job in enumerate(jobs):
        try:
            clipped = separate_one(sep, job, a, subtype)
        except (OSError, ValueError, sf.LibsndfileError) as e:
            done = f"; {i} of {len(jobs)} file(s) were finished before it" if i else ""
            sys.exit(f"error: separating {job['input']} failed: {e}. Its outputs were not written{done}.")
        for path in job["outputs"].values():
            print(path)
        if clipped:
            print(f"warning: {clipped} sample(s) of {job['input'].name}'s estimates exceeded full scale and "
                  f"were clipped in {a.bits}-bit output; use --bits float to keep them", file=sys.stderr)


if __name__ == "__main__":
    main()
