#!/usr/bin/env python
"""LSTM against GRU, forward and backward, at Open-Unmix's sizes scaled to MIR-1K (16
excerpts of 64 frames, 512 features, hidden 256 per direction, three bidirectional
layers), on each kernel backend and in PyTorch.

    python scripts/bench_recurrent.py --threads 1 --rounds 5 [--tiny]

Every round times each layer type on each backend and in PyTorch in turn (one untimed
round first), so that a machine's changing load falls on all alike; the fastest round
of each is printed, in ms for the whole batch and per time step (forward + backward
over 64 steps). ``--threads`` sets the BLAS, Numba and PyTorch threads (before they
load). ``npvae bench --layers`` has the LSTM's row (``npvae_lab.layer_bench``).
"""
import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    p.add_argument("--threads", type=int, default=None, help="BLAS, Numba and PyTorch threads (default: all)")
    p.add_argument("--tiny", action="store_true", help="tiny sizes: check that it runs")
    a = p.parse_args(argv)
    if a.threads is not None:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "NPVAE_NUM_THREADS"):
            os.environ[var] = str(a.threads)
    import numpy as np
    from npvae import kernels
    from npvae.layers import build_layer
    from npvae_lab.layer_bench import RECURRENT_SIZES
    s = RECURRENT_SIZES["tiny" if a.tiny else "full"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((s["batch"], s["steps"], s["input_size"])).astype(np.float32)
    dy = rng.standard_normal((s["batch"], s["steps"], 2 * s["hidden_size"])).astype(np.float32)
    runs = {}
    for kind in ("LSTM", "GRU"):
        layer = build_layer({"type": kind, "input_size": s["input_size"], "hidden_size": s["hidden_size"],
                             "num_layers": s["num_layers"], "bidirectional": True}, rng=rng)
        for backend in kernels.available_backends():
            def npvae_pass(layer=layer, backend=backend):
                kernels.set_backend(backend)
                return _timed(lambda: layer.forward(x)), _timed(lambda: layer.backward(dy))
            runs[f"{kind} npvae {backend}"] = npvae_pass
        if importlib.util.find_spec("torch") is not None:
            import torch
            from npvae_lab.torch_twin import torch_module
            if a.threads is not None:
                torch.set_num_threads(a.threads)
            m, xt, dyt = torch_module(layer), torch.from_numpy(x).requires_grad_(True), torch.from_numpy(dy)

            def torch_pass(m=m):
                out = {}
                forward = _timed(lambda: out.setdefault("y", m(xt)))
                return forward, _timed(lambda: torch.autograd.grad(out["y"], [xt, *m.parameters()], dyt))
            runs[f"{kind} torch"] = torch_pass
    best = {name: [np.inf, np.inf] for name in runs}
    for r in range(a.rounds + 1):
        for name, run in runs.items():
            f, b = run()
            if r:
                best[name] = [min(best[name][0], f), min(best[name][1], b)]
    print(f"sizes {s}, bidirectional; threads {a.threads or 'all'}; fastest of {a.rounds} rounds")
    for name, (f, b) in best.items():
        print(f"{name:18s} forward {1e3 * f:8.1f} ms  backward {1e3 * b:8.1f} ms  "
              f"per step {1e3 * (f + b) / s['steps']:6.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
