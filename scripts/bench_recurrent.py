#!/usr/bin/env python
"""LSTM against GRU, forward and backward, at Open-Unmix's sizes scaled to MIR-1K (16
excerpts of 64 frames, 512 features, hidden 256 per direction, three bidirectional
layers), on each kernel backend and in PyTorch.

    python scripts/bench_recurrent.py --rounds 5 [--backends numba] [--tiny]

Prints the median milliseconds of a whole pass and per time step (forward + backward
over the 64 steps of one excerpt batch). Uses ``npvae_lab.layer_bench.time_recurrent``,
the rows of ``npvae bench --layers``.
"""
import argparse
import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="timed rounds of each pass (default 5)")
    p.add_argument("--tiny", action="store_true", help="tiny sizes: check that it runs")
    p.add_argument("--backends", nargs="+", default=None, help="kernel backends to time (default: every available)")
    a = p.parse_args(argv)
    from npvae import kernels
    from npvae_lab.layer_bench import RECURRENT_SIZES, time_recurrent
    size = "tiny" if a.tiny else "full"
    with_torch = importlib.util.find_spec("torch") is not None
    steps = RECURRENT_SIZES[size]["steps"]
    print(f"{size} sizes {RECURRENT_SIZES[size]}, bidirectional; median ms of {a.rounds} rounds")
    for backend in a.backends or kernels.available_backends():
        kernels.set_backend(backend)
        for r in time_recurrent(1.0, size, kinds=("LSTM", "GRU"), repeats=a.rounds, with_torch=with_torch,
                                settle_s=0.0 if a.tiny else 0.2):
            line = (f"{r['type']:4s} {backend:5s}  forward {r['npvae_forward_ms']:7.1f}  backward "
                    f"{r['npvae_backward_ms']:7.1f}  per step {(r['npvae_forward_ms'] + r['npvae_backward_ms']) / steps:6.2f}")
            if with_torch:
                line += (f"   |  torch forward {r['torch_forward_ms']:7.1f}  backward {r['torch_backward_ms']:7.1f}"
                         f"  per step {(r['torch_forward_ms'] + r['torch_backward_ms']) / steps:6.2f}")
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
