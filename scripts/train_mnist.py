#!/usr/bin/env python
"""Train a VAE that separates MNIST digit + Fashion-MNIST mixtures (Part I).

    python scripts/train_mnist.py                       # dense VAE, BCE, about 10 minutes
    python scripts/train_mnist.py --model unet          # the U-Net VAE with a consistent mask output
    python scripts/train_mnist.py --preset best         # the best recipe (npvae/presets.py; README: time, score)
    python scripts/train_mnist.py --out runs/x --resume # continue an interrupted run exactly
    mpirun -n 2 python scripts/train_mnist.py --out runs/x   # data-parallel over 2 MPI ranks

Data are found through --data-dir, then $NPVAE_DATA (holding mnist/ and fashion-mnist/),
then ~/.cache/npvae (downloaded there when missing). Every setting of
npvae.pipelines.mnist.TrainConfig has a flag of the same name.
"""
import argparse
import sys

from npvae import presets
from npvae.configflags import HelpFormatter, add_flags, dataclass_fields, flag_values
from npvae.distributed import fail
from npvae.errors import NpvaeError
from npvae.pipelines.mnist import TrainConfig, train
from npvae.schedules import SCHEDULES

HELP = {
    "model": "dense VAE, convolutional VAE, or U-Net VAE with skips and a mask output",
    "latent_dim": "size of the Gaussian latent",
    "hidden": "hidden widths, e.g. 512,256 (dense) or 256 (conv); default per model",
    "channels": "conv channels, e.g. 32,64 (conv) or 16,32,64 (unet); default per model",
    "blocks": "3x3 convolutions per U-Net level (2: the usual two; default 1)",
    "output": "decode two images (sources) or how the mixture splits (split); default per model",
    "rule": "mixing rule",
    "loss": "reconstruction loss",
    "beta": "KL weight",
    "warmup": "epochs over which beta ramps up from 0",
    "mix_weight": "weight of the mixture term",
    "sample": "sample the latent in training (--no-sample with --beta 0: a plain autoencoder)",
    "lr": "Adam learning rate",
    "lr_schedule": "cosine: constant for 60%% of the epochs, then cosine down to lr/10",
    "batch_size": "pairs per batch",
    "epochs": "default: 50 (dense), 15 (conv), 10 (unet)",
    "seed": "seed of the data split, the initial weights, the batches and the latent noise",
    "display_every": "print the loss terms and save a figure every N epochs",
    "data_dir": "folder holding mnist/ and fashion-mnist/ (else $NPVAE_DATA)",
    "out": "run directory (default runs/mnist-<model>-<time>)",
    "train_limit": "use only this many training pairs (quick runs)",
    "eval_limit": "evaluate on this many test pairs (default 10000)",
    "n_examples": "evaluation pairs stored as examples in results.h5",
    "show": "also open the figures on screen",
    "progress": "progress bar",
}
CHOICES = {"model": ("dense", "conv", "unet"), "output": ("sources", "split"), "rule": ("average", "sum"),
           "loss": ("bce", "mse", "l1"), "lr_schedule": SCHEDULES}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--preset", choices=presets.names("mnist"), default="default",
                   help="start from a named recipe of npvae/presets.py (other flags override it)")
    add_flags(p, dataclass_fields(TrainConfig), HELP, CHOICES)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that holds an old run (its files are replaced)")
    return p


def parse_args(argv=None) -> tuple[TrainConfig, bool, bool]:
    p = parser()
    p.set_defaults(**presets.get("mnist", p.parse_known_args(argv)[0].preset))   # flags override the preset
    a = p.parse_args(argv)
    if a.resume and not a.out:
        p.error("--resume needs --out RUN_DIR (the run to continue)")
    if a.resume and a.overwrite:
        p.error("--resume continues a run and --overwrite replaces it; pass one of them")
    try:
        cfg = TrainConfig(**flag_values(a, dataclass_fields(TrainConfig)))
    except ValueError as e:
        p.error(str(e))
    return cfg, a.resume, a.overwrite


def main(argv=None) -> int:
    cfg, resume, overwrite = parse_args(argv)
    try:
        train(cfg, resume=resume, overwrite=overwrite)
    except (NpvaeError, ValueError, FileNotFoundError) as exc:
        return fail(f"error: {exc}", 2)   # under MPI: ends every rank
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: python scripts/train_mnist.py --out {cfg.out or 'RUN_DIR'} --resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
