#!/usr/bin/env python
"""Time data-parallel training steps: one process, or P MPI ranks sharing each global batch.

    python scripts/bench_mpi.py                    # 1 process (all cores)
    NPVAE_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python scripts/bench_mpi.py   # 1 core
    mpirun -n 2 python scripts/bench_mpi.py        # 2 ranks, each with its share of the cores

For each model as the training scripts build it (Part I dense, conv and U-Net VAEs at
batch 128; the Part II spectrogram U-Net VAE at batch 8 x 64 frames), on synthetic
inputs of the real shapes, it reports:

* step: median wall time of one training step of the global batch (each rank's
  forward and backward on its shard, the gradient Allreduce, Adam), and the CPU time
  the rank's process used in it (on a machine shared with other work, the CPU time of
  a one-thread rank is what the step would take on a core of its own);
* comm: median time of the gradient exchange alone (``allreduce_step``: copying the
  gradients into one flat buffer, ``Allreduce``, copying back), the ranks lined up
  by a barrier first, so waiting for a slower rank is not counted;
* the gradient's size and what exchanging it would cost over a network: a ring
  Allreduce sends and receives 2 (P - 1) / P times the buffer per rank and step.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from npvae import distributed  # noqa: I001 - npvae first (it sets OpenBLAS's thread timeout)

MNIST_BATCH = 128
MUSIC_BATCH, MUSIC_FRAMES = 8, 64


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="dense,conv,unet,music", help="comma-separated: dense,conv,unet,music")
    p.add_argument("--steps", type=int, default=30, help="timed steps per case (music: a third of them)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", default=None, help="append the results (rank 0) to this JSON-lines file")
    return p.parse_args(argv)


def mnist_case(name, comm, rng):
    from npvae.models.mnist import build_model
    from npvae.tasks.mnist import MnistConfig
    from npvae.tasks.mnist.objective import SeparationObjective
    model = build_model(name, rng=np.random.default_rng(0), **MnistConfig(model=name).model_kwargs())
    d = rng.uniform(size=(MNIST_BATCH, 28, 28)).astype(np.float32)
    f = rng.uniform(size=(MNIST_BATCH, 28, 28)).astype(np.float32)
    m = (d + f) / 2
    model.rng = comm.noise(np.random.default_rng(1))
    objective = SeparationObjective(model)

    def step():
        part = comm.shard(MNIST_BATCH)
        return objective.terms(m[part], d[part], f[part], beta=0.5)
    return model, step


def music_case(comm, rng):
    from npvae.audio.stft import STFTConfig
    from npvae.models.music import SpectrogramUNetVAE
    from npvae.tasks.music import LossConfig, MusicObjective
    from npvae.separation.separator import Normalizer, Separator
    from npvae.tasks.music import MusicConfig
    c = MusicConfig()
    model = SpectrogramUNetVAE(tuple(c.channels), c.latent_channels, rng=np.random.default_rng(0))
    model.rng = comm.noise(np.random.default_rng(1))
    stft_cfg = STFTConfig.for_dataset("mir1k")
    objective = MusicObjective(Separator(model, stft_cfg, Normalizer()), LossConfig())
    shape = (MUSIC_BATCH, stft_cfg.n_freq, MUSIC_FRAMES)
    spec = {k: (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
            for k in ("voice", "accompaniment")}
    spec["mixture"] = spec["voice"] + spec["accompaniment"]

    def step():
        part = comm.shard(MUSIC_BATCH)
        return objective.terms({k: v[part] for k, v in spec.items()}, beta=0.005)
    return model, step


def time_case(name, comm, steps, warmup):
    from npvae.optim import Adam
    from npvae.threads import worker_count
    rng = np.random.default_rng(2)
    model, step = music_case(comm, rng) if name == "music" else mnist_case(name, comm, rng)
    opt = Adam(model, lr=1e-4)

    def train_step():
        terms = comm.allreduce_step(opt.params, step())
        opt.step()
        return terms

    for _ in range(warmup):
        train_step()
    step_s, cpu_s, comm_s = [], [], []
    for _ in range(steps):
        comm.barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        train_step()
        step_s.append(time.perf_counter() - t0)
        cpu_s.append(time.process_time() - c0)
    for _ in range(steps):
        comm.shard(1)           # allreduce_step needs this rank's shard; the gradients stay as they are
        comm.barrier()
        t0 = time.perf_counter()
        comm.allreduce_step(opt.params, {"total": 0.0})
        comm_s.append(time.perf_counter() - t0)
    n_params = sum(p.size for _, p, _ in opt.params)
    grad_bytes = sum(g.nbytes for _, _, g in opt.params)
    # the slowest rank sets the pace: report the maximum over ranks of each median
    medians = comm.gather_object((float(np.median(step_s)), float(np.median(comm_s)), float(np.median(cpu_s))))
    if not comm.is_root:
        return None
    return {"case": name, "ranks": comm.size, "threads_per_rank": comm.threads or worker_count(),
            "global_batch": MUSIC_BATCH if name == "music" else MNIST_BATCH, "parameters": int(n_params),
            "gradient_bytes": int(grad_bytes), "step_ms": 1e3 * max(m[0] for m in medians),
            "step_cpu_ms": 1e3 * max(m[2] for m in medians), "load_average": os.getloadavg()[0],
            "comm_ms": 1e3 * max(m[1] for m in medians) if comm.parallel else 0.0}


def network_ms(grad_bytes, ranks, gbit):
    """Ring Allreduce: each rank sends (and receives) 2 (P - 1) / P times the buffer."""
    return 1e3 * 2 * (ranks - 1) / ranks * grad_bytes * 8 / (gbit * 1e9)


def main(argv=None):
    a = parse_args(argv)
    comm = distributed.world()
    rows = []
    for name in a.cases.split(","):
        if name not in ("dense", "conv", "unet", "music"):
            sys.exit(f"error: unknown case {name!r}; choose from dense, conv, unet, music")
        steps = max(3, a.steps // 3) if name == "music" else a.steps
        row = time_case(name, comm, steps, a.warmup)
        if row:
            rows.append(row)
            print(f"{name:6s} ranks {row['ranks']}  {row['parameters']:>9,} parameters  "
                  f"gradient {row['gradient_bytes'] / 1e6:6.2f} MB  step {row['step_ms']:8.1f} ms "
                  f"(CPU {row['step_cpu_ms']:7.1f} ms)  comm {row['comm_ms']:6.2f} ms  "
                  f"[{row['threads_per_rank']} thread(s)/rank, load {row['load_average']:.1f}]", flush=True)
    if not comm.is_root:
        return
    print("\nGradient exchange over a network (ring Allreduce, bandwidth only, per step):")
    print(f"{'case':6s} {'MB':>6s} " + " ".join(f"{f'P={p} 10G':>9s} {f'P={p} 100G':>10s}" for p in (2, 8, 64)))
    for r in rows:
        cells = " ".join(f"{network_ms(r['gradient_bytes'], p, 10):7.2f}ms {network_ms(r['gradient_bytes'], p, 100):8.2f}ms"
                         for p in (2, 8, 64))
        print(f"{r['case']:6s} {r['gradient_bytes'] / 1e6:6.2f} {cells}")
    if a.json:
        with open(a.json, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        print(f"appended to {a.json}")


if __name__ == "__main__":
    main()
