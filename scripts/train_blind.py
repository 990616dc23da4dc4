#!/usr/bin/env python
"""Train a blind separation VAE on mixtures alone (Part I, Neri et al. 2021).

    python scripts/train_blind.py                          # MNIST + Fashion-MNIST, average rule, K = 2
    python scripts/train_blind.py --task mnist-mnist --rule sum --groups 3
    python scripts/train_blind.py --out runs/x --resume    # continue an interrupted run exactly
    python scripts/train_blind.py --out runs/x --overwrite # a new run in place of the old one

The model never sees a source image while it trains; the test sources only score it,
with the best assignment of its groups to the sources for each mixture. Every field of
npvae.pipelines.blind_mnist.BlindTrainConfig is a flag (below). Data are found through
--data-dir, then $NPVAE_DATA (holding mnist/ and fashion-mnist/), then ~/.cache/npvae.
"""
import sys

from npvae import runcli
from npvae.pipelines.blind_mnist import BlindTrainConfig, train

CHOICES = {"task": ["mnist-fashion", "mnist-mnist"], "rule": ["average", "sum"], "recon": ["l1", "mse"]}
HELP = {"groups": "K latent groups decoded by one shared decoder", "hidden": "encoder widths, e.g. 512,256",
        "train_limit": "training images per set (quick runs)", "eval_limit": "test pairs scored (default 10000)",
        "display_every": "print the loss terms and save a grid every N epochs",
        "out": "run directory (default runs/blind-<task>-<rule>-K<groups>-<time>)"}


def parser():
    return runcli.parser(__doc__, BlindTrainConfig, CHOICES, HELP)


def parse_args(argv=None) -> tuple[BlindTrainConfig, bool, bool]:
    """``(settings, resume, overwrite)`` from the command line."""
    return runcli.parse_args(parser(), BlindTrainConfig, argv)


def main(argv=None) -> int:
    return runcli.run(train, *parse_args(argv), script="scripts/train_blind.py")


if __name__ == "__main__":
    sys.exit(main())
