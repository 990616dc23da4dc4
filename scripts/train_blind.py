#!/usr/bin/env python
"""Train a blind separation VAE on mixtures alone (Part I, Neri et al. 2021).

    python scripts/train_blind.py                          # MNIST + Fashion-MNIST, average rule, K = 2
    python scripts/train_blind.py --task mnist-mnist --rule sum --groups 3
    python scripts/train_blind.py --out runs/x --resume    # continue an interrupted run exactly

The model never sees a source image while it trains; the test sources only score it,
with the best assignment of its groups to the sources for each mixture. Every field of
npvae.pipelines.blind_mnist.BlindTrainConfig is a flag (below). Data are found through
--data-dir, then $NPVAE_DATA (holding mnist/ and fashion-mnist/), then ~/.cache/npvae.
"""
import argparse
import sys

from npvae.configflags import add_config_flags, parse_config
from npvae.errors import NpvaeError
from npvae.pipelines.blind_mnist import BlindTrainConfig, train

CHOICES = {"task": ["mnist-fashion", "mnist-mnist"], "rule": ["average", "sum"], "recon": ["l1", "mse"]}
HELP = {"groups": "K latent groups decoded by one shared decoder", "hidden": "encoder widths, e.g. 512,256",
        "train_limit": "training images per set (quick runs)", "eval_limit": "test pairs scored (default 10000)",
        "display_every": "print the loss terms and save a grid every N epochs",
        "out": "run directory (default runs/blind-<task>-<rule>-K<groups>-<time>)"}


def parse_args(argv=None) -> tuple[BlindTrainConfig, bool]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(p, BlindTrainConfig, CHOICES, HELP)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    cfg, rest = parse_config(p, BlindTrainConfig, argv)
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
        print(f"\ninterrupted; continue with: python scripts/train_blind.py --out {cfg.out or 'RUN_DIR'} --resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
