#!/usr/bin/env python
"""Separate the singing voice from the accompaniment of any songs.

    python scripts/separate.py SONG.wav [MORE.wav ...] --out DIR      # the shipped music model
    python scripts/separate.py SONG.wav --model RUN_DIR_OR_FILE --out DIR

writes DIR/<name>_vocals.wav and DIR/<name>_accompaniment.wav at each input's
sample rate, channel count and length. Stereo files are separated channel by
channel; long files are processed in memory-bounded chunks.
"""
import argparse
import sys
from pathlib import Path

from npvae import pretrained
from npvae.audio.io import read_audio, write_audio
from npvae.errors import DatasetError, FileFormatError
from npvae.pipelines.music import SOURCES, load_separator


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("songs", nargs="+", help="audio files (anything libsndfile reads: WAV, FLAC, OGG...)")
    p.add_argument("--model", default=pretrained.DEFAULT_MUSIC_MODEL,
                   help="run directory of train_music.py, its model.h5 / results.h5 / checkpoint.npz, or the "
                        "name of a shipped model (default: %(default)s, trained on MIR-1K; "
                        "npvae.list_models() lists them)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--wiener", action="store_true", help="Wiener-style (power ratio) refinement of the masks")
    p.add_argument("--chunk-frames", type=int, default=512,
                   help="STFT frames per network pass (multiple of 8; bounds memory)")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    try:
        model = pretrained.path(a.model) if pretrained.is_name(a.model) else a.model
        if a.model == pretrained.DEFAULT_MUSIC_MODEL and not pretrained.is_name(a.model) \
                and not Path(a.model).exists():
            sys.exit(f"error: this installation has no shipped model {a.model!r}; pass --model RUN_DIR "
                     "(a run of scripts/train_music.py)")
        sep = load_separator(model)
    except (FileFormatError, DatasetError) as e:
        sys.exit(f"error: {e}")
    out = Path(a.out)
    failed = 0
    for song in a.songs:
        try:
            audio, sr = read_audio(song)                       # (n, channels), file's own rate
        except (FileFormatError, DatasetError) as e:
            print(f"skipping {song}: {e}", file=sys.stderr)
            failed += 1
            continue
        est = sep.separate(audio, sr, wiener=a.wiener, chunk_frames=a.chunk_frames)  # (2, n, ch)
        for name, wave in zip(SOURCES, est):
            path = write_audio(out / f"{Path(song).stem}_{name}.wav", wave, sr, subtype="FLOAT")
            print(path)
    if failed:
        sys.exit(f"{failed} of {len(a.songs)} file(s) could not be read")


if __name__ == "__main__":
    main()
