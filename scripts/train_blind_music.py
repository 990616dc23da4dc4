#!/usr/bin/env python
"""Train a blind separation VAE on MIR-1K mixtures alone (Part II).

    python scripts/train_blind_music.py                    # K = 2 groups, 20 epochs
    python scripts/train_blind_music.py --groups 3 --frames 16
    python scripts/train_blind_music.py --out runs/x --resume      # continue an interrupted run exactly
    python scripts/train_blind_music.py --out runs/x --overwrite   # a new run in place of the old one

Training reads the training clips' mixtures only; the validation clips' sources score
the model, each clip's groups assigned to voice and accompaniment by least magnitude
MSE. Every field of npvae.pipelines.blind_music.BlindMusicConfig is a flag (below).
"""
import sys

from npvae import runcli
from npvae.pipelines.blind_music import BlindMusicConfig, train

CHOICES = {"dataset": ["mir1k", "irmas", "stems"], "recon": ["l1", "mse"]}
HELP = {"groups": "K latent groups decoded by one shared decoder", "hidden": "encoder widths, e.g. 512,256",
        "frames": "STFT frames per patch", "max_train_tracks": "first N training clips only (quick runs)",
        "out": "run directory (default runs/blind-music-<dataset>-K<groups>)"}


def parser():
    return runcli.parser(__doc__, BlindMusicConfig, CHOICES, HELP)


def parse_args(argv=None) -> tuple[BlindMusicConfig, bool, bool]:
    """``(settings, resume, overwrite)`` from the command line."""
    return runcli.parse_args(parser(), BlindMusicConfig, argv)


def main(argv=None) -> int:
    return runcli.run(train, *parse_args(argv), script="scripts/train_blind_music.py")


if __name__ == "__main__":
    sys.exit(main())
