"""Several runs of ``npvae bench --json`` as one Markdown table of ranges (docs/speed.md's
speed table): ``npvae bench --summarise run1.json run2.json ...``."""
from __future__ import annotations

import json

from .benchmark import TARGETS

LABELS = {
    "dense_vae": "dense VAE, synthetic (784-512-256-32, two decoders, batch 128)",
    "conv_vae": "conv VAE, synthetic (batch 64, 28x28)",
    "spectrogram": "spectrogram net, synthetic (batch 16, 1x512x128)",
    "mnist_dense": "`npvae train mnist` dense VAE (batch 128)",
    "mnist_unet": "`npvae train mnist --model unet` U-Net VAE 16-32-64 (batch 128)",
    "mnist_unet_best": "`npvae train mnist --preset best` U-Net VAE 24-48-96, two convolutions a level (batch 128)",
    "mnist_dense_best": "`npvae train mnist --preset dense-best` (batch 128)",
    "music": "`npvae train music` U-Net VAE 16-32-64 (batch 8 x 512 x 64)",
    "music_best": "`npvae train music --preset best` (the shipped model; 24-48-96-128-128 since run 13, 24-48-96 before)",
    "separation": "separation: 3-min 44.1 kHz stereo song, `npvae separate` end to end",
}


def _range(values, fmt="{:.1f}") -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"


def load(paths) -> list[dict]:
    """The reports of ``npvae bench --json`` runs; a file that is missing, unreadable or
    not such a report is an error naming it (OSError, ValueError)."""
    reports = []
    for p in paths:
        with open(p) as f:
            try:
                report = json.load(f)
            except ValueError as e:
                raise ValueError(f"{p} is not a JSON file ({e}); pass files written by npvae bench --json") from None
        if not isinstance(report, dict) or not isinstance(report.get("cases"), list):
            raise ValueError(f"{p} is not a report of npvae bench --json (no list of cases in it)")
        reports.append(report)
    return reports


def markdown(reports: list[dict]) -> str:
    """One row per case: npvae and PyTorch medians and the ratio, as min-max over the runs;
    the target each ratio is held to; the fastest single step (or separation) of any run;
    % of the GEMM rate for the training steps."""
    target_of = {c: limit for names, limit in TARGETS.values() for c in names}
    seen = {c["case"] for r in reports for c in r["cases"]}
    names = [n for n in LABELS if n in seen] + sorted(seen - set(LABELS))
    lines = ["| case | npvae ms | PyTorch ms | ratio | target | fastest npvae / PyTorch ms | npvae % of GEMM rate |",
             "|---|---|---|---|---|---|---|"]
    for name in names:
        rows = [c for r in reports for c in r["cases"] if c["case"] == name]
        if any(c["ratio"] is None for c in rows):
            continue
        frac = "-" if name == "separation" else _range([100 * c["gemm_fraction"] for c in rows], "{:.0f}")
        target = f"<= {target_of[name]}" if name in target_of else "-"
        who = ("npvae", "torch") if name == "separation" else (rows[0].get("npvae_backend", "numba"), "torch")
        fastest = " / ".join(f"{min(c[k]['min_ms'] for c in rows):.1f}" for k in who)
        lines.append(f"| {LABELS.get(name, name)} | {_range([c['npvae_ms'] for c in rows])} | "
                     f"{_range([c['torch_ms'] for c in rows])} | {_range([c['ratio'] for c in rows], '{:.2f}')} | "
                     f"{target} | {fastest} | {frac} |")
    gemm = [g for r in reports for g in (r["gemm_gflops"], r["gemm_gflops_after"])]
    loads = [r["load_average"][0] for r in reports if r.get("load_average")]
    lines.append("")
    lines.append(f"{len(reports)} runs on {reports[0]['machine']}, {reports[0]['threads']} threads; "
                 f"BLAS GEMM 1024^3 float32 {min(gemm):.0f}-{max(gemm):.0f} GFLOP/s; "
                 + (f"load average at the start {min(loads):.1f}-{max(loads):.1f}" if loads else ""))
    kernels = sorted({f"{b['internal_api']} {b['architecture']}" for r in reports for b in r.get("blas", [])})
    if kernels:
        lines[-1] += f"; BLAS kernel {', '.join(kernels)}"
    return "\n".join(lines)


def _layer_ms(reports: list[dict], who: str) -> dict:
    """(case, layer) -> (algorithm, median over the runs of forward + backward ms)."""
    times: dict = {}
    for r in reports:
        for row in r.get("layers") or []:
            ms = row.get(f"{who}_forward_ms"), row.get(f"{who}_backward_ms")
            if None not in ms:
                key = (row["case"], row["layer"])
                times.setdefault(key, (row.get("algorithm", "-"), []))[1].append(sum(ms))
    return {k: (algo, sorted(v)[len(v) // 2]) for k, (algo, v) in times.items()}


def scaling_markdown(reports: list[dict]) -> str:
    """Per convolution, forward + backward ms on one thread and on the most threads of
    the runs given, and the speed-up, for npvae and PyTorch; "" unless the runs have
    layer timings (--layers) at two thread counts."""
    by_threads: dict = {}
    for r in reports:
        if r.get("layers"):
            by_threads.setdefault(r["threads"], []).append(r)
    if 1 not in by_threads or len(by_threads) < 2:
        return ""
    many = max(by_threads)
    one = {w: _layer_ms(by_threads[1], w) for w in ("npvae", "torch")}
    multi = {w: _layer_ms(by_threads[many], w) for w in ("npvae", "torch")}
    lines = [f"| case | layer (algorithm) | npvae ms, 1 / {many} threads | speed-up | "
             f"PyTorch ms, 1 / {many} threads | speed-up |", "|---|---|---|---|---|---|"]
    for key, (algo, ms1) in one["npvae"].items():
        if key not in multi["npvae"]:
            continue
        msn = multi["npvae"][key][1]
        t1, tn = one["torch"].get(key, (None, None))[1], multi["torch"].get(key, (None, None))[1]
        torch_cells = f"{t1:.1f} / {tn:.1f} | {t1 / tn:.2f}" if t1 and tn else "- | -"
        lines.append(f"| {key[0]} | {key[1]} ({multi['npvae'][key][0]}) | {ms1:.1f} / {msn:.1f} | {ms1 / msn:.2f} | "
                     f"{torch_cells} |")
    return "\n".join(lines)
