#!/usr/bin/env python
"""Train the spectrogram VAE that separates singing voice from accompaniment.

    python scripts/train_music.py --dataset mir1k --out runs/music_mir1k
    python scripts/train_music.py --preset best --out runs/music_best   # the best recipe (npvae/presets.py)
    mpirun -n 2 python scripts/train_music.py --dataset mir1k --out runs/music_mir1k   # over 2 MPI ranks

Every --display-every epochs it prints the loss terms on training and validation
data and writes a spectrogram figure and WAV snippets of the estimates under --out;
a checkpoint is written (atomically) after every epoch, so --resume continues an
interrupted run. At the end: loss_curves.png, model.h5 and results.h5.
"""
import argparse
import os
import sys

from npvae import presets
from npvae.distributed import fail
from npvae.errors import NpvaeError
from npvae.pipelines.music import TrainConfig, train
from npvae.spectral_losses import LOSSES


def parse_args(argv=None):
    d = TrainConfig()
    dl = d.objective
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=presets.names("music"), default="default",
                   help="start from a named recipe of npvae/presets.py (other flags override it)")
    p.add_argument("--dataset", choices=("mir1k", "irmas", "stems"), default=d.dataset)
    p.add_argument("--data-dir", default=None,
                   help="data root (holds MIR-1K/ or IRMAS-TrainingData/), or the stems folder; "
                        "default: $NPVAE_DATA, then ~/.cache/npvae")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--display-every", type=int, default=d.display_every, metavar="N",
                   help="print loss terms, write a figure and WAV snippets every N epochs")
    p.add_argument("--loss", choices=LOSSES, default=dl.loss,
                   help="reconstruction loss on magnitudes: l1, mse, kl (generalised KL), is (Itakura-Saito)")
    p.add_argument("--loss-compression", choices=("none", "log", "power"), default=dl.compression,
                   help="compression of magnitudes inside l1/mse (power: square root)")
    p.add_argument("--compression", choices=("log", "power"), default=d.compression,
                   help="compression of the network's input magnitudes")
    p.add_argument("--beta", type=float, default=dl.beta, help="weight of the latent KL (nats per bin)")
    p.add_argument("--mix-weight", type=float, default=dl.mix_weight,
                   help="weight of the reconstructed-mixture term")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--frames", type=int, default=d.frames, help="STFT frames per training patch (multiple of 8)")
    p.add_argument("--channels", type=int, nargs=3, default=list(d.channels))
    p.add_argument("--latent-channels", type=int, default=d.latent_channels)
    p.add_argument("--remix", choices=("shift", "cross"), default=d.remix,
                   help="remixed training excerpts: accompaniment of the same clip, shifted (shift) "
                        "or of another clip (cross)")
    p.add_argument("--remix-prob", type=float, default=d.remix_prob, help="chance that an excerpt is remixed")
    p.add_argument("--gain-db", type=float, default=d.gain_db,
                   help="random accompaniment gain in [-G, G] dB")
    p.add_argument("--out", default=d.out, help="run directory (default: a new runs/music-<dataset>-<time>)")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that holds an old run (its files are replaced)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs)")
    pre, _ = p.parse_known_args(argv)
    preset = presets.get("music", pre.preset)
    dests = {action.dest for action in p._actions}
    p.set_defaults(**{k: (list(v) if isinstance(v, tuple) else v) for k, v in preset.items() if k in dests})
    a = p.parse_args(argv)
    a.preset_extra = {k: v for k, v in preset.items() if k not in dests}   # settings without a flag
    return a


def main(argv=None):
    a = parse_args(argv)
    if a.resume and a.overwrite:
        sys.exit("error: --resume continues a run and --overwrite replaces it; pass one of them")
    try:
        cfg = TrainConfig.from_flat(**a.preset_extra, dataset=a.dataset, data_dir=a.data_dir, out=a.out,
                                    epochs=a.epochs, batch_size=a.batch_size, frames=a.frames, lr=a.lr, seed=a.seed,
                                    channels=tuple(a.channels), latent_channels=a.latent_channels,
                                    compression=a.compression, loss=a.loss, loss_compression=a.loss_compression,
                                    mix_weight=a.mix_weight, beta=a.beta, remix=a.remix, remix_prob=a.remix_prob,
                                    gain_db=a.gain_db, display_every=a.display_every, progress=not a.no_progress)
    except ValueError as e:
        sys.exit(f"error: {e}")
    try:
        train(cfg, resume=a.resume, overwrite=a.overwrite)
    except (NpvaeError, ValueError, OSError) as e:
        sys.exit(fail(f"error: {e}", 1))   # under MPI: ends every rank
    except KeyboardInterrupt:
        sys.exit(f"\ninterrupted; continue with the same command and --resume (and --out RUN_DIR)")


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    main()
