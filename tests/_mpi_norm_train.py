"""Trains a tiny model with BatchNorm layers: ``python tests/_mpi_norm_train.py OUT [EPOCHS [MODEL]]``,
MODEL "tiny" (a Sequential, SGD) or "unet" (a BatchNorm U-Net, Adam).

Started alone and under ``mpirun -n 2`` by tests/test_norm_layers.py: each rank computes
its shard of every global batch, BatchNorm sums its statistics over the ranks. Rank 0
writes the checkpoint; every rank writes the running statistics it held after each step
to ``OUT/stats<rank>.npz``.
"""
import sys

import numpy as np

import npvae
from npvae.distributed import fail, world
from npvae.layers import BatchNorm, Conv2d, Flatten, GroupNorm, ReLU, Sequential
from npvae.engine.loop import Trainer
from npvae.models.mnist import UNetSeparationVAE

N, BATCH = 44, 10       # the last batch holds 4 samples: 2 per rank


def tiny():
    """A Sequential whose Dense keeps its bias before the last BatchNorm: SGD, not Adam (a
    bias before a BatchNorm has a gradient of zero plus rounding, which Adam's scaling
    would turn into steps of size lr that differ between 1 and 2 ranks)."""
    model = Sequential(Conv2d(1, 4, 3, padding=1, rng=np.random.default_rng(1)), BatchNorm(4), ReLU(),
                       Conv2d(4, 4, 3, stride=2, padding=1, rng=np.random.default_rng(2)), GroupNorm(2, 4), ReLU(),
                       Flatten(), npvae.Dense(16, 3, rng=np.random.default_rng(3)), BatchNorm(3, momentum=0.3))
    data = np.random.default_rng(4).standard_normal((N, 1, 4, 4)).astype(np.float32) * 2 + 0.5
    target = np.random.default_rng(5).standard_normal((N, 3)).astype(np.float32)
    return model, npvae.SGD(model, lr=0.05, momentum=0.9), data, target, model.forward


def unet(norm_bias=False, dtype=np.float32):
    """A BatchNorm U-Net (its convolutions before a BatchNorm without a bias unless
    ``norm_bias``) trained with Adam; z is the posterior mean, so that no rank draws
    noise the others do not."""
    model = UNetSeparationVAE(latent_dim=4, channels=(4, 8), blocks=2, norm="batch", norm_bias=norm_bias,
                              rng=np.random.default_rng(1), dtype=dtype)
    data = np.random.default_rng(4).uniform(0, 1, (N, 28, 28)).astype(dtype)
    target = np.random.default_rng(5).uniform(0, 1, (N, 2, 28, 28)).astype(dtype)
    return model, npvae.Adam(model, lr=0.01), data, target, lambda x: model.forward(x, sample=False)


MODELS = {"tiny": tiny, "unet": unet, "unet64": lambda: unet(dtype=np.float64),
          "unet_biased": lambda: unet(norm_bias=True)}


def main(out, epochs, kind):
    comm = world()
    rng = np.random.default_rng(0)
    model, opt, data, target, forward = MODELS[kind]()
    seen = []

    def batches(r):
        order = r.permutation(N)
        for i in range(0, N, BATCH):
            idx = order[i:i + BATCH]
            part = idx[comm.shard(len(idx))]
            yield data[part], target[part]

    def step(batch, epoch):
        x, t = batch
        model.zero_grad()
        loss, grad = npvae.losses.mse(forward(x), t)
        model.backward(grad)
        seen.append(np.concatenate([b.ravel() for _, b in model.named_buffers()]))
        return {"total": loss}

    def validate():
        return {"total": npvae.losses.mse(forward(data), target)[0]}

    trainer = Trainer(model, opt, rng, out, progress=False, log=lambda s: None, comm=comm)
    trainer.fit(epochs, batches, -(-N // BATCH), step, validate)
    np.savez(f"{out}/stats{comm.rank}.npz", steps=np.array(seen))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3,
                      sys.argv[3] if len(sys.argv) > 3 else "tiny"))
    except Exception as exc:    # end every rank, never a hang
        sys.exit(fail(f"error: {exc}", 2))
