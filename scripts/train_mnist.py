#!/usr/bin/env python
"""Train a VAE that separates MNIST digit + Fashion-MNIST mixtures (Part I).

    python scripts/train_mnist.py                       # dense VAE, BCE, about 10 minutes
    python scripts/train_mnist.py --model unet          # the U-Net VAE with a consistent mask output
    python scripts/train_mnist.py --preset best         # the best recipe (npvae/presets.py; README: time, score)
    python scripts/train_mnist.py --out runs/x --resume # continue an interrupted run exactly
    mpirun -n 2 python scripts/train_mnist.py --out runs/x   # data-parallel over 2 MPI ranks

Data are found through --data-dir, then $NPVAE_DATA (holding mnist/ and fashion-mnist/),
then ~/.cache/npvae (downloaded there when missing).
"""
import argparse
import sys

from npvae import presets
from npvae.distributed import fail
from npvae.errors import NpvaeError
from npvae.pipelines.mnist import TrainConfig, train
from npvae.schedules import SCHEDULES


def ints(text):
    return tuple(int(t) for t in text.split(",") if t)


def parse_args(argv=None) -> tuple[TrainConfig, bool]:
    d = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=presets.names("mnist"), default="default",
                   help="start from a named recipe of npvae/presets.py (other flags override it)")
    p.add_argument("--model", choices=["dense", "conv", "unet"], default=d.model,
                   help="dense VAE (default), convolutional VAE, or U-Net VAE with skips and a mask output")
    p.add_argument("--latent-dim", type=int, default=d.latent_dim)
    p.add_argument("--hidden", type=ints, help="hidden widths, e.g. 512,256 (dense) or 256 (conv)")
    p.add_argument("--channels", type=ints, help="conv channels, e.g. 32,64 (conv) or 16,32,64 (unet)")
    p.add_argument("--output", choices=["sources", "split"],
                   help="decode two images (sources) or how the mixture splits (split); default per model")
    p.add_argument("--rule", choices=["average", "sum"], default=d.rule, help="mixing rule")
    p.add_argument("--loss", choices=["bce", "mse", "l1"], default=d.loss, help="reconstruction loss")
    p.add_argument("--beta", type=float, default=d.beta, help="KL weight")
    p.add_argument("--warmup", type=float, default=d.warmup, help="epochs over which beta ramps up from 0")
    p.add_argument("--mix-weight", type=float, default=d.mix_weight, help="weight of the mixture term")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--lr-schedule", choices=SCHEDULES, default=d.lr_schedule,
                   help="cosine: constant for 60%% of the epochs, then cosine down to lr/10")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--epochs", type=int, help="default: 50 (dense), 15 (conv), 10 (unet)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--display-every", type=int, default=d.display_every, metavar="N",
                   help="print the loss terms and save a figure every N epochs")
    p.add_argument("--data-dir", help="folder holding mnist/ and fashion-mnist/ (else $NPVAE_DATA)")
    p.add_argument("--out", help="run directory (default runs/mnist-<model>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that holds an old run (its files are replaced)")
    p.add_argument("--train-limit", type=int, help="use only this many training pairs (quick runs)")
    p.add_argument("--eval-limit", type=int, help="evaluate on this many test pairs (default 10000)")
    p.add_argument("--show", action="store_true", help="also open the figures on screen")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    pre, _ = p.parse_known_args(argv)
    preset = presets.get("mnist", pre.preset)
    dests = {action.dest for action in p._actions}
    p.set_defaults(**{k: v for k, v in preset.items() if k in dests})
    a = p.parse_args(argv)
    if a.resume and not a.out:
        p.error("--resume needs --out RUN_DIR (the run to continue)")
    if a.resume and a.overwrite:
        p.error("--resume continues a run and --overwrite replaces it; pass one of them")
    extra = {k: v for k, v in preset.items() if k not in dests}   # settings without a flag
    try:
        cfg = TrainConfig(**extra, model=a.model, latent_dim=a.latent_dim, hidden=a.hidden, channels=a.channels,
                          output=a.output, rule=a.rule, loss=a.loss, beta=a.beta, warmup=a.warmup,
                          mix_weight=a.mix_weight, lr=a.lr, lr_schedule=a.lr_schedule, batch_size=a.batch_size,
                          epochs=a.epochs, seed=a.seed, display_every=a.display_every, data_dir=a.data_dir,
                          out=a.out, train_limit=a.train_limit, eval_limit=a.eval_limit, show=a.show,
                          progress=not a.no_progress)
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
