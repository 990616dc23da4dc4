#!/usr/bin/env python
"""Time npvae against PyTorch (same models, weights, batch and noise) in this one process:
a training step of each model (each npvae kernel backend and PyTorch, stepped in turn)
and the separation of a song with scripts/separate.py.

    python scripts/bench.py                     # full sizes, table on stdout (about 5-10 minutes)
    python scripts/bench.py --json bench.json   # also write the numbers
    python scripts/bench.py --layers            # also each convolution of the pipeline models alone
    python scripts/bench.py --quick             # tiny models, a few steps, a 2 s song (a smoke test)
    python scripts/bench.py --summarise a.json b.json   # README's table: ranges over runs

Cases (npvae_lab.benchmark): the synthetic steps dense_vae, conv_vae and
spectrogram; the models the training scripts build: mnist_dense (train_mnist.py),
mnist_unet (--model unet), mnist_unet_best (--preset best), mnist_dense_best (--preset
dense-best), music (train_music.py) and music_best (--preset best); and separation: a
3-minute 44.1 kHz stereo song through scripts/separate.py with the shipped model
music-mir1k, the network run by npvae or by a PyTorch twin. The ratio is the npvae
(Numba backend) median time over PyTorch's; "% GEMM" is a step's GEMM FLOP rate over
the BLAS GEMM rate measured at the start. Threads: --threads (default all CPUs) for
BLAS, Numba and torch.set_num_threads alike.
"""
import argparse
import json
import os
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    p.add_argument("--backends", default=None, help="comma-separated: numba,numpy (default: every available)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per model (default 60, 20 for the big ones)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="threads for BLAS, Numba and PyTorch")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--quick", action="store_true", help="tiny models and 3 steps: checks that it all runs")
    p.add_argument("--song-seconds", type=float, default=None, help="length of the separated song (default 180)")
    p.add_argument("--song-repeats", type=int, default=None, help="separations timed per network (default 3)")
    p.add_argument("--layers", action="store_true",
                   help="also time each convolution of the pipeline models alone (forward, backward)")
    p.add_argument("--json", default=None, help="write the report to this JSON file")
    p.add_argument("--summarise", nargs="+", metavar="JSON", default=None,
                   help="print the README's Markdown table (ranges) of earlier --json runs, then exit")
    a = p.parse_args(argv)
    for name in ("steps", "threads", "song_repeats"):
        if getattr(a, name) is not None and getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.song_seconds is not None and not a.song_seconds > 0:
        p.error("--song-seconds must be positive")
    return a


def main(argv=None):
    a = parse_args(argv)
    if a.summarise:
        from npvae_lab.bench_summary import load, markdown
        print(markdown(load(a.summarise)))
        return
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
    from npvae_lab.benchmark import DEFAULT_CASES, format_table, run_benchmark

    size = "tiny" if a.quick else "full"
    cases = a.cases.split(",") if a.cases else list(DEFAULT_CASES)
    try:
        report = run_benchmark(cases=cases, backends=a.backends and a.backends.split(","),
                               steps=3 if a.quick and a.steps is None else a.steps,
                               warmup=1 if a.quick else a.warmup, threads=threads, use_torch=not a.no_torch,
                               size=size, song_seconds=a.song_seconds, separation_repeats=a.song_repeats)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(format_table(report))
    if a.layers:
        from npvae_lab.benchmark import build_case
        from npvae_lab.layer_bench import format_layers, time_layers
        from npvae_lab.pipeline_cases import PIPELINE_CASES
        rows = []
        for name in [c for c in cases if c in PIPELINE_CASES and not c.startswith("mnist_dense")]:
            rows += time_layers(build_case(name, size), report["gemm_gflops_reference"], repeats=2 if a.quick else 10,
                                with_torch=report["torch"] is not None, settle_s=0.0 if a.quick else 0.2)
        report["layers"] = rows
        print()
        print(format_layers(rows, report["gemm_gflops_reference"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
