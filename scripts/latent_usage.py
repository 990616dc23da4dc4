#!/usr/bin/env python
"""What the latent of each Part I model carries, on the 10,000 test pairs.

    python scripts/latent_usage.py mnist-dense-best mnist-unet mnist-vae runs/x

For each model (a shipped name, a run folder or a model file) it prints one Markdown
row: mean PSNR per image (dB), the same with the latent at the prior mean (z = 0 for
every mixture; what remains travels around the latent), the posterior's mean KL to the
prior (nats a pair), and how many latent dimensions carry more than 0.01 nats on
average (a collapsed dimension carries about 0). Data: --data-dir or $NPVAE_DATA.
"""
import argparse
import copy
import sys

import npvae
from npvae.data.mixtures import load_mixture_data
from npvae.models.ablation import zero_latent_mean
from npvae.tasks.mnist.task import evaluate, latent_usage


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="shipped names, run folders or model files")
    parser.add_argument("--data-dir", default=None, help="folder holding mnist/ and fashion-mnist/")
    parser.add_argument("--limit", type=int, default=None, help="the first N test pairs only")
    args = parser.parse_args(argv)
    mixture, digit, fashion = load_mixture_data(args.data_dir).evaluation_set()
    if args.limit:
        mixture, digit, fashion = mixture[:args.limit], digit[:args.limit], fashion[:args.limit]
    print(f"| model | mean PSNR (dB) | latent at the prior mean (dB) | KL (nats a pair) | "
          f"dimensions above 0.01 nats | ({len(mixture):,} test pairs)")
    print("|---|---|---|---|---|")
    for name in args.models:
        model = npvae.load_model(name)
        full = evaluate(model, mixture, digit, fashion)["mean_psnr"]
        prior = evaluate(zero_latent_mean(copy.deepcopy(model)), mixture, digit, fashion)["mean_psnr"]
        use = latent_usage(model, mixture)
        print(f"| `{name}` | {full:.2f} | {prior:.2f} | {use['kl_nats']:.1f} | "
              f"{use['active_latents']} of {use['latent_size']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
