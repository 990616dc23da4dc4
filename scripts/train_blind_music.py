#!/usr/bin/env python
"""Train a blind separation VAE on MIR-1K mixtures alone (Part II).

    python scripts/train_blind_music.py                    # K = 2 groups, 20 epochs
    python scripts/train_blind_music.py --groups 3 --frames 16
    python scripts/train_blind_music.py --out runs/x --resume

Training reads the training clips' mixtures only; the validation clips' sources score
the model, each clip's groups assigned to voice and accompaniment by least magnitude
MSE. Every field of npvae.pipelines.blind_music.BlindMusicConfig is a flag (below).
"""
import argparse
import sys

from npvae.configflags import add_config_flags, parse_config
from npvae.errors import NpvaeError
from npvae.pipelines.blind_music import BlindMusicConfig, train

CHOICES = {"dataset": ["mir1k", "irmas", "stems"], "recon": ["l1", "mse"]}
HELP = {"groups": "K latent groups decoded by one shared decoder", "hidden": "encoder widths, e.g. 512,256",
        "frames": "STFT frames per patch", "max_train_tracks": "first N training clips only (quick runs)",
        "out": "run directory (default runs/blind-music-<dataset>-K<groups>)"}


def parse_args(argv=None) -> tuple[BlindMusicConfig, bool]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(p, BlindMusicConfig, CHOICES, HELP)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    cfg, rest = parse_config(p, BlindMusicConfig, argv)
    if rest.resume and not cfg.out:
        p.error("--resume needs --out RUN_DIR (the run to continue)")
    return cfg, rest.resume


def main(argv=None) -> int:
    cfg, resume = parse_args(argv)
    try:
        train(cfg, resume=resume)
    except (NpvaeError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: python scripts/train_blind_music.py --out {cfg.out or 'RUN_DIR'} --resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
