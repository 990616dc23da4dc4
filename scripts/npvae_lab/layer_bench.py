"""Each convolution of a pipeline case timed alone, forward and backward, in npvae and
PyTorch, with its GFLOP/s and the fraction of the BLAS GEMM rate it reaches
(``npvae bench --layers``); the recurrent layers likewise at Open-Unmix's sizes
(:func:`time_recurrent`); and the layers without a GEMM (dropout, pooling, upsampling)
at the U-Nets' sizes against their PyTorch twins (:func:`time_elementwise`).

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
    return _table(head, table, f"% GEMM: the layer's GFLOP/s over the BLAS GEMM rate measured here ({gemm_gflops:.0f} "
                               "GFLOP/s, 1024^3 float32); f/b: forward/backward")


def _table(head: list, table: list[list], footer: str) -> str:
    widths = [max(len(str(r[i])) for r in [head] + table) for i in range(len(head))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in table] + [footer])


# -- normalisation: BatchNorm and GroupNorm at the sizes of the convolutions' outputs ------------
def time_norm_layers(case, repeats: int = 10, with_torch: bool = True, settle_s: float = 0.2) -> list[dict]:
    """One row per (convolution of ``case``, BatchNorm / GroupNorm): the normalisation
    layer timed on that convolution's output in training mode, forward and backward
    (input and parameter gradients), as it would run after it in a normalised U-Net."""
    from npvae.layers import BatchNorm, GroupNorm
    rows = []
    for path, conv, x in capture_inputs(case.model, case.forward_backward):
        y = conv.forward(x)
        c = y.shape[1]
        for norm in (BatchNorm(c, dtype=y.dtype), GroupNorm(8 if c % 8 == 0 else 1, c, dtype=y.dtype)):
            dy = np.random.default_rng(0).standard_normal(y.shape).astype(y.dtype)
            row = {"case": case.name, "after": path, "type": type(norm).__name__, "input": list(y.shape)}
            time.sleep(settle_s)
            row["npvae_forward_ms"] = _median_ms(lambda: norm.forward(y), repeats)
            norm.forward(y)
            row["npvae_backward_ms"] = _median_ms(lambda: norm.backward(dy), repeats)
            if with_torch:
                time.sleep(settle_s)
                row.update(_torch_norm_times(norm, y, dy, repeats))
            rows.append(row)
    return rows


def _torch_norm_times(layer, x, dy, repeats: int) -> dict:
    import torch
    from .torch_twin import torch_module
    m = torch_module(layer)
    xt, dyt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dy)
    out = {"torch_forward_ms": _median_ms(lambda: m(xt), repeats)}
    y = m(xt)
    inputs = [xt, *m.parameters()]
    out["torch_backward_ms"] = _median_ms(lambda: torch.autograd.grad(y, inputs, dyt, retain_graph=True), repeats)
    return out


def format_norm_layers(rows: list[dict]) -> str:
    """Rows of :func:`time_norm_layers` as a table: ms forward/backward, and npvae / torch."""
    torch_ok = rows and "torch_forward_ms" in rows[0]
    head = ["case", "layer (after)", "input", "npvae f/b ms"] + (["torch f/b ms", "npvae/torch f+b"] if torch_ok else [])
    table = []
    for r in rows:
        t = [r["case"], f"{r['type']} ({r['after']})", "x".join(map(str, r["input"])),
             f"{r['npvae_forward_ms']:.2f}/{r['npvae_backward_ms']:.2f}"]
        if torch_ok:
            t += [f"{r['torch_forward_ms']:.2f}/{r['torch_backward_ms']:.2f}",
                  f"{(r['npvae_forward_ms'] + r['npvae_backward_ms']) / (r['torch_forward_ms'] + r['torch_backward_ms']):.2f}"]
        table.append(t)
    return _table(head, table, "training mode (batch statistics); f/b: forward/backward (input and parameter "
                               "gradients)")


# -- the layers without a GEMM: dropout, pooling, upsampling ------------------------------------
# (label, npvae layer factory, PyTorch module factory, input at full size, at tiny size). The
# full sizes are those of the U-Nets: the Part I U-Net (--preset best: batch 128, 24 and 48
# channels at 28x28 and 14x14) and the music U-Net (batch 8, 16 and 32 channels on a 512-bin
# by 64-frame spectrogram and its halves).
def _elementwise_cases():
    from npvae.layers import AvgPool2d, Dropout, MaxPool2d, Upsample
    return [
        ("Dropout(0.5)", lambda: Dropout(0.5), lambda nn: nn.Dropout(0.5), (128, 24, 28, 28), (2, 2, 4, 4)),
        ("Dropout(0.5, channels)", lambda: Dropout(0.5, channels=True), lambda nn: nn.Dropout2d(0.5),
         (8, 32, 256, 32), (2, 2, 4, 4)),
        ("MaxPool2d(2)", lambda: MaxPool2d(2), lambda nn: nn.MaxPool2d(2), (128, 24, 28, 28), (2, 2, 4, 4)),
        ("MaxPool2d(2)", lambda: MaxPool2d(2), lambda nn: nn.MaxPool2d(2), (8, 16, 512, 64), (2, 2, 6, 4)),
        ("AvgPool2d(2)", lambda: AvgPool2d(2), lambda nn: nn.AvgPool2d(2), (128, 24, 28, 28), (2, 2, 4, 4)),
        ("AvgPool2d(2)", lambda: AvgPool2d(2), lambda nn: nn.AvgPool2d(2), (8, 16, 512, 64), (2, 2, 6, 4)),
        ("Upsample(2, nearest)", lambda: Upsample(2), lambda nn: nn.Upsample(scale_factor=2),
         (128, 48, 14, 14), (2, 2, 3, 3)),
        ("Upsample(2, nearest)", lambda: Upsample(2), lambda nn: nn.Upsample(scale_factor=2),
         (8, 32, 256, 32), (2, 2, 3, 3)),
        ("Upsample(2, bilinear)", lambda: Upsample(2, "bilinear"),
         lambda nn: nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), (128, 48, 14, 14), (2, 2, 3, 3)),
        ("Upsample(size=(7, 7))", lambda: Upsample(size=(7, 7)), lambda nn: nn.Upsample(size=(7, 7)),
         (128, 96, 3, 3), (2, 2, 3, 3)),
    ]


def time_elementwise(size: str = "full", repeats: int = 10, with_torch: bool = True,
                     settle_s: float = 0.2) -> list[dict]:
    """One row per layer of :func:`_elementwise_cases`: forward and backward ms, npvae
    (a Dropout draws its mask from a seeded generator) and PyTorch, float32."""
    rows = []
    for label, make, make_torch, full, tiny in _elementwise_cases():
        shape = full if size == "full" else tiny
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        layer = make()
        layer.rng = np.random.default_rng(0)
        y = layer.forward(x)
        dy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
        time.sleep(settle_s)
        row = {"layer": label, "input": list(shape), "output": list(y.shape), "backend": kernels.backend(),
               "npvae_forward_ms": _median_ms(lambda: layer.forward(x), repeats)}
        layer.forward(x)
        row["npvae_backward_ms"] = _median_ms(lambda: layer.backward(dy), repeats)
        if with_torch:
            import torch
            m, xt, dyt = make_torch(torch.nn).train(), torch.from_numpy(x).requires_grad_(True), torch.from_numpy(dy)
            time.sleep(settle_s)
            row["torch_forward_ms"] = _median_ms(lambda: m(xt), repeats)
            yt = m(xt)
            row["torch_backward_ms"] = _median_ms(lambda: torch.autograd.grad(yt, [xt], dyt, retain_graph=True),
                                                  repeats)
        rows.append(row)
    return rows


def format_elementwise(rows: list[dict]) -> str:
    """Rows of :func:`time_elementwise` as a table, with npvae / PyTorch per pass."""
    torch_ok = rows and "torch_forward_ms" in rows[0]
    head = ["layer", "input", "npvae f/b ms"] + (["torch f/b ms", "npvae/torch f/b"] if torch_ok else [])
    table = []
    for r in rows:
        t = [r["layer"], "x".join(map(str, r["input"])), f"{r['npvae_forward_ms']:.2f}/{r['npvae_backward_ms']:.2f}"]
        if torch_ok:
            t += [f"{r['torch_forward_ms']:.2f}/{r['torch_backward_ms']:.2f}",
                  f"{r['npvae_forward_ms'] / r['torch_forward_ms']:.2f}/"
                  f"{r['npvae_backward_ms'] / r['torch_backward_ms']:.2f}"]
        table.append(t)
    return _table(head, table, "f/b: forward/backward, median ms; npvae/torch below 1: npvae faster")
