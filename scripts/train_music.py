#!/usr/bin/env python
"""Train the spectrogram VAE that separates singing voice from accompaniment (Part II).

The same as ``npvae train music`` (``--help`` lists every flag):

    python scripts/train_music.py --dataset mir1k --out runs/music_mir1k
    python scripts/train_music.py --preset best --out runs/music_best   # the best recipe
    mpirun -n 2 python scripts/train_music.py --out runs/music_mir1k    # over 2 MPI ranks
"""
import sys

from npvae.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "music", *sys.argv[1:]]))
