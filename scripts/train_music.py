#!/usr/bin/env python
"""Train the spectrogram VAE that separates singing voice from accompaniment.

    python scripts/train_music.py --dataset mir1k --out runs/music_mir1k
    python scripts/train_music.py --preset best --out runs/music_best   # the best recipe (npvae/presets.py)
    mpirun -n 2 python scripts/train_music.py --dataset mir1k --out runs/music_mir1k   # over 2 MPI ranks

Every --display-every epochs it prints the loss terms on training and validation
data and writes a spectrogram figure and WAV snippets of the estimates under --out;
a checkpoint is written (atomically) after every epoch, so --resume continues an
interrupted run. At the end: loss_curves.png, model.h5 and results.h5.

Every setting of npvae.pipelines.music.TrainConfig has a flag of the same name.
"""
import argparse
import os
import sys

from npvae import presets
from npvae.configflags import HelpFormatter, add_flags, flag_values
from npvae.distributed import fail
from npvae.errors import NpvaeError
from npvae.pipelines.music import TrainConfig, train
from npvae.spectral_losses import LOSSES

HELP = {
    "dataset": "mir1k, irmas or a folder of stems (see --data-dir)",
    "data_dir": "data root (holds MIR-1K/ or IRMAS-TrainingData/), or the stems folder; "
                "default: $NPVAE_DATA, then ~/.cache/npvae",
    "out": "run directory (default: a new runs/music-<dataset>-<time>)",
    "epochs": "training epochs",
    "batch_size": "excerpts per batch",
    "frames": "STFT frames per training excerpt (multiple of 8)",
    "lr": "Adam learning rate (cosine decay over the last 40%% of the epochs)",
    "seed": "seed of the initial weights, the batches and the latent noise",
    "channels": "channels of the three encoder levels, e.g. 16 32 64",
    "latent_channels": "channels of the Gaussian latent map",
    "compression": "compression of the network's input magnitudes",
    "remix": "remixed training excerpts: accompaniment of the same clip, shifted (shift) or of another clip (cross)",
    "remix_prob": "chance that an excerpt is remixed",
    "gain_db": "random accompaniment gain in [-gain_db, gain_db] dB",
    "display_every": "print loss terms, write a figure and WAV snippets every N epochs",
    "snippet_seconds": "length of the displayed example clip",
    "max_val_tracks": "validation clips scored every epoch (the first N)",
    "max_train_tracks": "train on the first N training clips only (quick runs)",
    "progress": "progress bar (--no-progress for logs)",
    "loss": "reconstruction loss on magnitudes: l1, mse, kl (generalised KL), is (Itakura-Saito)",
    "loss_compression": "compression of magnitudes inside l1/mse (power: see --loss-power)",
    "loss_power": "exponent of the power compression inside l1/mse",
    "mix_weight": "weight of the reconstructed-mixture term",
    "beta": "weight of the latent KL (nats per bin)",
    "kl_warmup": "epochs over which beta ramps up from 0",
    "sample": "sample the latent in training (--no-sample: a deterministic net with a KL code penalty)",
}
CHOICES = {"dataset": ("mir1k", "irmas", "stems"), "compression": ("log", "power"), "loss": LOSSES,
           "remix": ("shift", "cross"),
           "loss_compression": ("none", "log", "power")}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--preset", choices=presets.names("music"), default="default",
                   help="start from a named recipe of npvae/presets.py (other flags override it)")
    add_flags(p, TrainConfig.flat_fields(), HELP, CHOICES)
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that holds an old run (its files are replaced)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    return p


def parse_args(argv=None) -> tuple[TrainConfig, bool, bool]:
    p = parser()
    p.set_defaults(**presets.get("music", p.parse_known_args(argv)[0].preset))   # flags override the preset
    a = p.parse_args(argv)
    try:
        cfg = TrainConfig.from_flat(**flag_values(a, TrainConfig.flat_fields()))
    except ValueError as e:
        p.error(str(e))
    return cfg, a.resume, a.overwrite


def main(argv=None):
    cfg, resume, overwrite = parse_args(argv)
    if resume and overwrite:
        sys.exit("error: --resume continues a run and --overwrite replaces it; pass one of them")
    try:
        train(cfg, resume=resume, overwrite=overwrite)
    except (NpvaeError, ValueError, OSError) as e:
        sys.exit(fail(f"error: {e}", 1))   # under MPI: ends every rank
    except KeyboardInterrupt:
        sys.exit(f"\ninterrupted; continue with the same command and --resume (and --out RUN_DIR)")


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    main()
