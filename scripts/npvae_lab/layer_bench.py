"""Each convolution of a pipeline case timed alone, forward and backward, in npvae and
PyTorch, with its GFLOP/s and the fraction of the BLAS GEMM rate it reaches
(``npvae bench --layers``); the recurrent layers likewise at Open-Unmix's sizes
(:func:`time_recurrent`).

The inputs are those the layer sees in the case's training step (captured in one
forward pass); the backward pass is timed from the same forward state with a fixed
output gradient, filling the weight gradients and, unless the layer is the network's
first, the input gradient (PyTorch: ``torch.autograd.grad`` on a retained graph).
"""
from __future__ import annotations

import time

import numpy as np

from npvae import kernels

from npvae.layers import Conv2d, ConvTranspose2d


def capture_inputs(model, run_forward, types=(Conv2d, ConvTranspose2d)) -> list[tuple[str, object, np.ndarray]]:
    """``(path, layer, input copy)`` of every layer of ``types`` in one ``run_forward()``."""
    seen, paths = [], {id(layer): path for path, layer in model.named_layers()}
    patched = []
    for _, layer in model.named_layers():
        if isinstance(layer, types):
            def wrapped(x, *a, _layer=layer, _fwd=layer.forward, **kw):
                seen.append((paths[id(_layer)], _layer, x.copy()))
                return _fwd(x, *a, **kw)
            layer.forward = wrapped
            patched.append(layer)
    try:
        run_forward()
    finally:
        for layer in patched:
            del layer.forward
    return seen


def _flops(layer, x, y) -> int:
    kh, kw = layer.kernel_size
    spatial = y.shape[2] * y.shape[3] if isinstance(layer, Conv2d) else x.shape[2] * x.shape[3]
    return 2 * x.shape[0] * layer.in_channels * layer.out_channels * kh * kw * spatial


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def time_layers(case, gemm_gflops: float, repeats: int = 10, with_torch: bool = True, settle_s: float = 0.2) -> list[dict]:
    """One row per convolution of ``case`` (a :class:`~.pipeline_cases.PipelineCase`)."""
    rows = []
    for path, layer, x in capture_inputs(case.model, case.forward_backward):
        first = layer is case.input_layer
        saved = layer.needs_input_grad
        layer.needs_input_grad = not first
        try:
            y = layer.forward(x)
            dy = np.random.default_rng(0).standard_normal(y.shape).astype(y.dtype)
            flops = _flops(layer, x, y)
            row = {"case": case.name, "layer": path, "type": type(layer).__name__, "input": list(x.shape),
                   "output": list(y.shape), "gflop_forward": flops / 1e9,
                   "gflop_backward": flops * (1 if first else 2) / 1e9, "backend": kernels.backend()}
            time.sleep(settle_s)
            row["npvae_forward_ms"] = _median_ms(lambda: layer.forward(x), repeats)
            row["algorithm"] = getattr(layer, "algorithm", None) or "im2col"   # ConvTranspose2d: GEMMs, col2im
            layer.forward(x)
            row["npvae_backward_ms"] = _median_ms(lambda: layer.backward(dy), repeats)
        finally:
            layer.needs_input_grad = saved
        if with_torch:
            time.sleep(settle_s)
            row.update(_torch_times(layer, x, dy, first, repeats))
        rows.append(_with_rates(row, gemm_gflops, with_torch))
    return rows


def _with_rates(row: dict, gemm_gflops: float, with_torch: bool) -> dict:
    """``row`` with the GFLOP/s and fraction of the GEMM rate of each timed pass."""
    for who in ("npvae", "torch") if with_torch else ("npvae",):
        for part in ("forward", "backward"):
            rate = row[f"gflop_{part}"] / (row[f"{who}_{part}_ms"] / 1e3)
            row[f"{who}_{part}_gflops"] = rate
            row[f"{who}_{part}_gemm_fraction"] = rate / gemm_gflops
    return row


# Open-Unmix's bidirectional three-layer LSTM (hidden 512 = 2 x 256, input 512) at a MIR-1K
# batch: 16 excerpts of 64 frames.
RECURRENT_SIZES = {"full": {"batch": 16, "steps": 64, "input_size": 512, "hidden_size": 256, "num_layers": 3},
                   "tiny": {"batch": 2, "steps": 5, "input_size": 8, "hidden_size": 4, "num_layers": 2}}


def time_recurrent(gemm_gflops: float, size: str = "full", kinds=("LSTM",), repeats: int = 10,
                   with_torch: bool = True, settle_s: float = 0.2) -> list[dict]:
    """One row per recurrent layer type of ``kinds`` (bidirectional, :data:`RECURRENT_SIZES`),
    forward and backward (input gradient included), against ``nn.LSTM`` / ``nn.GRU``."""
    from npvae.layers import build_layer
    s = RECURRENT_SIZES[size]
    rows = []
    for kind in kinds:
        rng = np.random.default_rng(0)
        layer = build_layer({"type": kind, "input_size": s["input_size"], "hidden_size": s["hidden_size"],
                             "num_layers": s["num_layers"], "bidirectional": True}, rng=rng)
        x = rng.standard_normal((s["batch"], s["steps"], s["input_size"])).astype(np.float32)
        y = layer.forward(x)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        flops = 2 * s["batch"] * s["steps"] * sum(p.shape[0] * p.shape[1] for path, p, _ in layer.named_parameters()
                                                  if path.endswith(("W_ih", "W_hh")))
        row = {"case": f"open-unmix {size}", "layer": kind.lower(), "type": kind, "input": list(x.shape),
               "output": list(y.shape), "gflop_forward": flops / 1e9, "gflop_backward": 2 * flops / 1e9,
               "backend": kernels.backend(), "algorithm": f"{kernels.backend()} steps"}
        time.sleep(settle_s)
        row["npvae_forward_ms"] = _median_ms(lambda: layer.forward(x), repeats)
        layer.forward(x)
        row["npvae_backward_ms"] = _median_ms(lambda: layer.backward(dy), repeats)
        if with_torch:
            time.sleep(settle_s)
            row.update(_torch_times(layer, x, dy, False, repeats))
        rows.append(_with_rates(row, gemm_gflops, with_torch))
    return rows


def _torch_times(layer, x, dy, first: bool, repeats: int) -> dict:
    import torch
    from .torch_twin import torch_module
    m = torch_module(layer)
    xt = torch.from_numpy(x).requires_grad_(not first)
    dyt = torch.from_numpy(dy)
    inputs = list(m.parameters()) + ([] if first else [xt])
    out = {"torch_forward_ms": _median_ms(lambda: m(xt), repeats)}
    y = m(xt)
    out["torch_backward_ms"] = _median_ms(lambda: torch.autograd.grad(y, inputs, dyt, retain_graph=True), repeats)
    return out


def format_layers(rows: list[dict], gemm_gflops: float) -> str:
    """Rows as a table: per layer, ms and % of the GEMM rate, forward and backward."""
    torch_ok = rows and "torch_forward_ms" in rows[0]
    head = ["case", "layer", "input", "GFLOP f/b", "npvae f/b ms", "npvae % GEMM f/b"]
    if torch_ok:
        head += ["torch f/b ms", "torch % GEMM f/b"]
    table = []
    for r in rows:
        t = [r["case"], f"{r['layer']} ({r['type'][:6]}, {r.get('algorithm', 'im2col')})",
             "x".join(map(str, r["input"])),
             f"{r['gflop_forward']:.2f}/{r['gflop_backward']:.2f}",
             f"{r['npvae_forward_ms']:.1f}/{r['npvae_backward_ms']:.1f}",
             f"{100 * r['npvae_forward_gemm_fraction']:.0f}/{100 * r['npvae_backward_gemm_fraction']:.0f}"]
        if torch_ok:
            t += [f"{r['torch_forward_ms']:.1f}/{r['torch_backward_ms']:.1f}",
                  f"{100 * r['torch_forward_gemm_fraction']:.0f}/{100 * r['torch_backward_gemm_fraction']:.0f}"]
        table.append(t)
    widths = [max(len(str(r[i])) for r in [head] + table) for i in range(len(head))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in table]
                     + [f"% GEMM: the layer's GFLOP/s over the BLAS GEMM rate measured here ({gemm_gflops:.0f} "
                        "GFLOP/s, 1024^3 float32); f/b: forward/backward"])
