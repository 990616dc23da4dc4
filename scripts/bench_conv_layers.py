#!/usr/bin/env python
"""Forward and backward time of single Conv2d layers under each convolution algorithm.

    python scripts/bench_conv_layers.py --algorithms im2col winograd --threads 2

Each layer shape (the first and the strided layers of the shipped networks: the Part I
U-Nets' 3x3 first layers and 4x4 stride-2 layers at batch 128, the Part II networks' 5x5
stride-2 layers at batch 8 x 512 x 64; ``--layers`` keeps those whose name contains one
of the words given) is
timed with every algorithm named (``NPVAE_CONV_ALGO`` names, see
``npvae.layers.conv_algos``) on the same layer, input and output gradient: one untimed
round, then ``--rounds`` rounds with the algorithms in turn, and the median forward and
backward milliseconds of each are printed (wall-clock; ``--cpu`` takes the process's
CPU time instead, steadier on a machine busy with other jobs). An algorithm that cannot
run a layer is skipped for it. Set the thread count with ``--threads`` (it sets
NPVAE_NUM_THREADS before npvae is imported).
"""
import argparse
import os
import time

# (batch, in channels, height, width, out channels, kernel, stride, padding), name
SHAPES = [
    ((128, 1, 28, 28, 16, 3, 1, 1), "Part I U-Net VAE 16-32-64: enc1"),
    ((128, 1, 28, 28, 24, 3, 1, 1), "Part I --preset best: enc1"),
    ((128, 16, 28, 28, 32, 4, 2, 1), "Part I U-Net VAE 16-32-64: enc2"),
    ((128, 32, 14, 14, 64, 4, 2, 1), "Part I U-Net VAE 16-32-64: enc3"),
    ((128, 24, 28, 28, 48, 4, 2, 1), "Part I --preset best: enc2"),
    ((128, 48, 14, 14, 96, 4, 2, 1), "Part I --preset best: enc3"),
    ((8, 1, 512, 64, 16, 5, 2, 2), "Part II default: enc1"),
    ((8, 16, 256, 32, 32, 5, 2, 2), "Part II default: enc2"),
    ((8, 32, 128, 16, 64, 5, 2, 2), "Part II default: enc3"),
    ((8, 1, 512, 64, 24, 5, 2, 2), "Part II --preset best: enc1"),
    ((8, 24, 256, 32, 48, 5, 2, 2), "Part II --preset best: enc2"),
    ((8, 48, 128, 16, 96, 5, 2, 2), "Part II --preset best: enc3"),
    ((8, 96, 64, 8, 128, 5, 2, 2), "Part II --preset best: enc4"),
    ((8, 128, 32, 4, 128, 5, 2, 2), "Part II --preset best: enc5"),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algorithms", nargs="+", default=["im2col"], help="algorithm names to compare")
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: as npvae chooses)")
    p.add_argument("--rounds", type=int, default=15, help="timed rounds of each algorithm (default 15)")
    p.add_argument("--layers", nargs="+", default=None,
                   help="only the layers whose name contains one of these (e.g. 'Part II' enc2)")
    p.add_argument("--cpu", action="store_true", help="time the process's CPU time, not the wall clock")
    a = p.parse_args(argv)
    if a.threads is not None:
        os.environ["NPVAE_NUM_THREADS"] = str(a.threads)
    import numpy as np
    import npvae
    from npvae.layers import conv_algos
    unknown = [n for n in a.algorithms if n not in conv_algos.CHOICES or n == "auto"]
    if unknown:
        p.error(f"unknown algorithm(s) {unknown}; choose from {', '.join(conv_algos.CHOICES[1:])}")
    algos = [conv_algos.by_name(n) for n in a.algorithms]
    print(f"npvae {npvae.__version__}, backend {npvae.backend()}, {npvae.threads.worker_count()} threads; "
          f"median {'CPU' if a.cpu else 'wall'} ms of {a.rounds} rounds, forward / backward")
    clock = time.process_time if a.cpu else time.perf_counter
    shapes = [(shape, name) for shape, name in SHAPES if a.layers is None or any(word in name for word in a.layers)]
    for (n, c, h, w, o, k, s, pad), name in shapes:
        rng = np.random.default_rng(0)
        layer = npvae.Conv2d(c, o, k, s, pad, rng=rng)
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        dy = rng.standard_normal((n, o, *layer.output_shape(h, w))).astype(np.float32)
        usable = [al for al in algos if al.valid(layer)]
        times = {al.name: [] for al in usable}
        for r in range(a.rounds + 1):
            for al in usable:
                t0 = clock()
                layer._forward_with(al, x)
                t1 = clock()
                layer.backward(dy)
                if r:                                   # round 0 compiles and allocates
                    times[al.name].append((t1 - t0, clock() - t1))
        cells = "  ".join(f"{algo} {np.median([f for f, _ in t]) * 1e3:.1f} / {np.median([b for _, b in t]) * 1e3:.1f}"
                          for algo, t in times.items())
        print(f"{name}, {n}x{c}x{h}x{w} -> {o}, {k}x{k}/{s}: {cells}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
