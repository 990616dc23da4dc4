#!/usr/bin/env python
"""Time a training step of three models in npvae (each kernel backend) and, when
PyTorch is installed, in PyTorch with the same shapes and initial weights, stepped
in turn in this one process.

    python scripts/bench.py                     # full sizes, table on stdout
    python scripts/bench.py --json bench.json   # also write the numbers
    python scripts/bench.py --quick             # tiny models, a few steps (a smoke test)

Cases: dense_vae, conv_vae, spectrogram (see npvae.experiments.benchmark). The ratio is the
npvae (Numba backend) median step time over PyTorch's. Threads: --threads (default
all CPUs) for BLAS, Numba and torch.set_num_threads alike.
"""
import argparse
import json
import os
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="dense_vae,conv_vae,spectrogram", help="comma-separated case names")
    p.add_argument("--backends", default=None, help="comma-separated: numba,numpy (default: every available)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per model (default 60, 20 for spectrogram)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="threads for BLAS, Numba and PyTorch")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--quick", action="store_true", help="tiny models and 3 steps: checks that it all runs")
    p.add_argument("--json", default=None, help="write the report to this JSON file")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    threads = a.threads or os.cpu_count()
    # Thread counts must be set before NumPy/OpenBLAS and Numba start their pools.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    # Idle OpenBLAS workers spin for about 0.1 s after each GEMM (the default timeout,
    # 2^28 cycles), holding a core the Numba kernels and the convolution threads need
    # next; 4 (2^4 cycles, the minimum) lets them sleep at once. Conv VAE step, measured
    # by running this script with OPENBLAS_THREAD_TIMEOUT=28 and =4: 28.8 and 20.9 ms.
    # (PyTorch does not use OpenBLAS.)
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    from npvae.experiments.benchmark import format_table, run_benchmark

    try:
        report = run_benchmark(cases=a.cases.split(","), backends=a.backends and a.backends.split(","),
                               steps=3 if a.quick and a.steps is None else a.steps,
                               warmup=1 if a.quick else a.warmup, threads=threads, use_torch=not a.no_torch,
                               size="tiny" if a.quick else "full")
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(format_table(report))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
