#!/usr/bin/env python
"""Train a VAE that separates MNIST digit + Fashion-MNIST mixtures (Part I).

The same as ``npvae train mnist`` (``--help`` lists every flag):

    python scripts/train_mnist.py                       # dense VAE, about 10 minutes
    python scripts/train_mnist.py --model unet          # the U-Net VAE with a consistent mask output
    python scripts/train_mnist.py --preset best         # the best recipe
    python scripts/train_mnist.py --out runs/x --resume # continue an interrupted run exactly
    mpirun -n 2 python scripts/train_mnist.py --out runs/x   # data-parallel over 2 MPI ranks
"""
import sys

from npvae.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "mnist", *sys.argv[1:]]))
