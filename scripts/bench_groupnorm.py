#!/usr/bin/env python
"""GroupNorm at the U-Nets' sizes: its kernels on one thread and on the threads, against PyTorch.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/bench_groupnorm.py

For every convolution output of the `mnist_unet_best` and `music_best` benchmark cases, a
GroupNorm (8 groups) in training mode, forward + backward, median ms of 15 calls: with
the serial kernels, with the parallel ones (whatever GROUPNORM_PARALLEL_MIN says), and
PyTorch's nn.GroupNorm on the same data (needs torch). What GROUPNORM_PARALLEL_MIN in
kernels/numba_kernels.py is chosen from.
"""
import time

import numpy as np

from npvae_lab import benchmark
from npvae_lab.layer_bench import _median_ms, _torch_norm_times, capture_inputs

import npvae.kernels.numba_kernels as nk
from npvae.layers import GroupNorm


def timed(norm, y, dy, pick) -> float:
    """Forward + backward ms of ``norm`` with the kernels ``pick`` chooses (serial or parallel)."""
    saved = nk._GroupNormKernel.__call__
    nk._GroupNormKernel.__call__ = lambda self, size, *args: pick(self)(*args)
    try:
        norm.forward(y)
        norm.backward(dy)
        time.sleep(0.1)
        forward = _median_ms(lambda: norm.forward(y), 15)
        norm.forward(y)
        return forward + _median_ms(lambda: norm.backward(dy), 15)
    finally:
        nk._GroupNormKernel.__call__ = saved


def main() -> int:
    print("case             after     input              values    serial ms  threads ms  torch ms")
    for name in ("mnist_unet_best", "music_best"):
        case = benchmark.build_case(name, "full")
        for path, conv, x in capture_inputs(case.model, case.forward_backward):
            y = conv.forward(x)
            c = y.shape[1]
            norm = GroupNorm(8 if c % 8 == 0 else 1, c, dtype=y.dtype)
            dy = np.random.default_rng(0).standard_normal(y.shape).astype(y.dtype)
            serial = timed(norm, y, dy, lambda k: k.serial)
            threads = timed(norm, y, dy, lambda k: k.parallel)
            t = _torch_norm_times(norm, y, dy, 15)
            print(f"{name:16s} {path:9s} {'x'.join(map(str, y.shape)):18s} {y.size:9d} {serial:9.3f} "
                  f"{threads:11.3f} {t['torch_forward_ms'] + t['torch_backward_ms']:9.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
