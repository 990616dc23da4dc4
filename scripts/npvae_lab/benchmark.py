"""Training-step and separation benchmark: npvae against PyTorch on the same models and weights.

Cases (:data:`DEFAULT_CASES`):

* the synthetic training steps of :mod:`.synthetic_cases` (``dense_vae``, ``conv_vae``,
  ``spectrogram``);
* the models users train, built by the pipelines (:mod:`.pipeline_cases`:
  ``mnist_dense``, ``mnist_unet``, ``mnist_unet_best``, ``mnist_dense_best``, ``music``,
  ``music_best``);
* ``separation``: a 3-minute 44.1 kHz stereo song through ``npvae separate`` with
  the shipped model (:mod:`.separation_bench`).

:func:`run_benchmark` times the npvae steps (each backend) and the PyTorch twin
interleaved in one process, so machine noise hits all of them alike, and relates
each case's GEMM FLOP rate to the BLAS GEMM rate measured here (the target: at least
60% of it for the big steps). :mod:`.layer_bench` times the convolutions one by one.
"""
from __future__ import annotations

import os
import platform
import resource
import sys
import time

import numpy as np

from npvae import kernels

from .pipeline_cases import PIPELINE_CASES, build_pipeline_case
from .synthetic_cases import SYNTHETIC_CASES, build_synthetic_case
from .torch_twin import TorchCase, torch_available

CASES = SYNTHETIC_CASES + tuple(PIPELINE_CASES)          # training steps
DEFAULT_CASES = CASES + ("separation",)
DEFAULT_STEPS = {"dense_vae": 60, "conv_vae": 60, "spectrogram": 20, "mnist_dense": 60, "mnist_unet": 20,
                 "mnist_unet_best": 10, "mnist_dense_best": 60, "music": 20, "music_best": 20}
BLOCK = {"dense_vae": 10, "conv_vae": 10, "spectrogram": 4, "mnist_dense": 10, "mnist_unet": 4,
         "mnist_unet_best": 2, "mnist_dense_best": 10, "music": 4, "music_best": 4}
SONG_SECONDS = {"full": 180.0, "tiny": 2.0}


def build_case(name: str, size: str = "full", seed: int = 0):
    """The npvae side of training-step case ``name`` (one of :data:`CASES`)."""
    if name in PIPELINE_CASES:
        return build_pipeline_case(name, size, seed)
    if name in SYNTHETIC_CASES:
        return build_synthetic_case(name, size, seed)
    raise ValueError(f"unknown case {name!r}; choose one of {DEFAULT_CASES}")


def torch_twin_of(case):
    """The PyTorch twin of a case built by :func:`build_case`."""
    if case.name in PIPELINE_CASES:
        from .torch_pipelines import TorchPipelineCase
        return TorchPipelineCase(case)
    return TorchCase(case)


# -- timing ------------------------------------------------------------------------------

def gemm_gflops(n: int = 1024, repeats: int = 7, dtype=np.float32) -> float:
    """Median GFLOP/s of an ``n x n`` by ``n x n`` BLAS GEMM in ``dtype``."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)).astype(dtype), rng.standard_normal((n, n)).astype(dtype)
    c = np.empty((n, n), dtype=dtype)
    np.matmul(a, b, out=c)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / float(np.median(times)) / 1e9


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (``getrusage``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _stats(times_s):
    t = np.asarray(times_s) * 1e3
    return {"median_ms": float(np.median(t)), "min_ms": float(t.min()), "max_ms": float(t.max()),
            "steps": int(t.size)}


def time_case(name: str, backends=("numba", "numpy"), steps: int = 30, warmup: int = 3,
              with_torch: bool = True, size: str = "full", log=None, block: int = 5,
              settle_s: float = 0.25) -> dict:
    """Time case ``name``: one npvae model per backend and the PyTorch twin, run in
    turn in blocks of ``block`` timed steps (the order rotates every round, so that
    load spikes hit all of them).

    Before each block the process sleeps ``settle_s`` and runs one untimed step: the
    previous framework's idle threads stop spinning and this one's are awake again.
    Without the pause, OpenBLAS's workers, which spin for about 0.1 s after every
    GEMM, took a core from PyTorch's next steps (its dense VAE step measured 24.5 ms
    that way and 12.5 ms when OpenBLAS's threads did not spin), and PyTorch's OpenMP threads slowed
    npvae's steps likewise.
    """
    runners = {}
    original = kernels.backend()
    for b in backends:
        runners[b] = build_case(name, size)
    case0 = next(iter(runners.values())) if runners else build_case(name, size)
    if with_torch:
        runners["torch"] = torch_twin_of(case0)
    names = list(runners)
    times = {k: [] for k in names}
    flops = case0.flops()

    def run(k, n_steps, record):
        if k != "torch":
            kernels.set_backend(k)
        for _ in range(n_steps):
            t0 = time.perf_counter()
            runners[k].step()
            if record:
                times[k].append(time.perf_counter() - t0)

    try:
        for k in names:
            run(k, warmup, record=False)
        for r in range(-(-steps // block)):
            order = names[r % len(names):] + names[:r % len(names)]
            for k in order:
                time.sleep(settle_s)
                run(k, 1, record=False)
                run(k, min(block, steps - r * block), record=True)
    finally:
        kernels.set_backend(original)
    out = {"case": name, "gflop_per_step": flops / 1e9}
    for k in names:
        s = _stats(times[k])
        s["gflops"] = flops / (s["median_ms"] / 1e3) / 1e9
        out[k] = s
    if log:
        log(f"  {name}: " + ", ".join(f"{k} {out[k]['median_ms']:.1f} ms" for k in names))
    return out


def set_threads(threads: int) -> None:
    """Hold BLAS, Numba and npvae's per-sample workers to ``threads`` (PyTorch's count is
    set by :func:`run_benchmark`). NumPy and Numba are loaded already, so their pools are
    resized here rather than through their environment variables; Numba's cannot grow
    past the ``NUMBA_NUM_THREADS`` it started with."""
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=threads, user_api="blas")
    os.environ["NPVAE_NUM_THREADS"] = str(threads)        # read by npvae.threads at each use
    import numba
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def run_benchmark(cases=DEFAULT_CASES, backends=None, steps: int | None = None, warmup: int = 3,
                  threads: int | None = None, use_torch: bool = True, size: str = "full", log=print,
                  song_seconds: float | None = None, separation_repeats: int | None = None) -> dict:
    """Time every case (``steps`` timed steps each, default :data:`DEFAULT_STEPS`; the
    separation ``separation_repeats`` times, default 3, 1 at size "tiny"); returns the
    report dict (see :func:`format_table`, ``--json``)."""
    backends = list(backends or kernels.available_backends())
    unknown = [c for c in cases if c not in DEFAULT_CASES] + [b for b in backends if b not in kernels.BACKENDS]
    if unknown:
        raise ValueError(f"unknown case or backend {unknown}; cases: {DEFAULT_CASES}, backends: {kernels.BACKENDS}")
    torch_ok, torch_info = torch_available() if use_torch else (False, "disabled with --no-torch")
    threads = threads or os.cpu_count()
    if torch_ok:
        import torch
        torch.set_num_threads(threads)
    report = {"machine": machine(), "threads": threads, "numpy": np.__version__,
              "backends": backends, "torch": torch_info if torch_ok else None,
              "torch_missing_reason": None if torch_ok else torch_info,
              "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
              "size": size, "blas": blas_info(), "gemm_gflops": gemm_gflops(), "cases": []}
    if log:
        log(f"machine: {report['machine']}; threads: {threads}; {blas_line(report['blas'])}")
    primary = "numba" if "numba" in backends else backends[0]
    for name in cases:
        if name == "separation":
            report["cases"].append(_separation_row(size, torch_ok, primary, song_seconds, separation_repeats, log))
            continue
        r = time_case(name, backends, steps or DEFAULT_STEPS[name], warmup, torch_ok, size, log=log,
                      block=BLOCK[name])
        entry = {"case": name, "npvae_ms": r[primary]["median_ms"],
                 "torch_ms": r["torch"]["median_ms"] if torch_ok else None,
                 "ratio": r[primary]["median_ms"] / r["torch"]["median_ms"] if torch_ok else None,
                 "npvae_backend": primary, "gflop_per_step": r["gflop_per_step"],
                 "peak_rss_mb": peak_rss_mb()}
        for k in (*backends, *(["torch"] if torch_ok else [])):
            entry[k] = r[k]
        report["cases"].append(entry)
    report["peak_rss_mb"] = peak_rss_mb()
    report["gemm_gflops_after"] = gemm_gflops()
    # The GEMM rate measured here swings with the machine's load: the cases are held
    # against the better of the two measurements (the lower fraction).
    report["gemm_gflops_reference"] = ref = max(report["gemm_gflops"], report["gemm_gflops_after"])
    for entry in report["cases"]:
        if entry["case"] != "separation":
            entry["gemm_fraction"] = entry[primary]["gflops"] / ref
            entry["torch_gemm_fraction"] = entry["torch"]["gflops"] / ref if torch_ok else None
    return report


def _separation_row(size, torch_ok, primary, seconds, repeats, log) -> dict:
    """The separation case, with the primary backend active."""
    from .separation_bench import time_separation
    original = kernels.backend()
    kernels.set_backend(primary)
    try:
        row = time_separation(seconds or SONG_SECONDS[size], repeats=repeats or (1 if size == "tiny" else 3),
                              with_torch=torch_ok, settle_s=0.0 if size == "tiny" else 0.5, log=log)
    finally:
        kernels.set_backend(original)
    row["npvae_backend"] = primary
    row["peak_rss_mb"] = peak_rss_mb()
    return row


def blas_info() -> list[dict]:
    """The BLAS libraries loaded in this process, as threadpoolctl sees them: which kernel
    ran the GEMMs (``internal_api`` openblas/mkl/..., its ``architecture``, the core type
    OpenBLAS chose or ``OPENBLAS_CORETYPE`` forced), ``version`` and ``num_threads``."""
    from threadpoolctl import threadpool_info
    keep = ("internal_api", "architecture", "version", "num_threads", "threading_layer", "prefix")
    return [{k: lib.get(k) for k in keep} | {"coretype_env": os.environ.get("OPENBLAS_CORETYPE")}
            for lib in threadpool_info() if lib.get("user_api") == "blas"]


def blas_line(libs: list[dict]) -> str:
    """``blas_info()`` in one line of the printed header."""
    if not libs:
        return "BLAS: none found by threadpoolctl"
    return "BLAS: " + "; ".join(
        f"{b['internal_api']} {b['version']} ({b['prefix']}), kernel {b['architecture'] or 'unknown'}"
        + (f" (OPENBLAS_CORETYPE={b['coretype_env']})" if b.get("coretype_env") else "")
        + f", {b['num_threads']} threads" for b in libs)


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} logical CPUs, {platform.system()}"


# The speed targets: (cases, largest median ratio npvae / PyTorch)
TARGETS = {"dense": (("dense_vae", "mnist_dense", "mnist_dense_best"), 0.7),
           "convolutional": (("conv_vae", "spectrogram", "mnist_unet", "mnist_unet_best", "music",
                                      "music_best"), 1.0),
           "separation": (("separation",), 0.8)}


def target_lines(report: dict) -> list[str]:
    """Which of the speed targets this report meets (ratios, the song's wall time)."""
    if report.get("size", "full") != "full":
        return [f"(sizes '{report['size']}': the speed targets are judged at full sizes only)"]
    rows = {c["case"]: c for c in report["cases"]}
    lines = []
    for kind, (names, limit) in TARGETS.items():
        got = [(n, rows[n]["ratio"]) for n in names if n in rows and rows[n]["ratio"] is not None]
        if got:
            worst = max(r for _, r in got)
            lines.append(f"target {kind} ratio <= {limit}: {'met' if worst <= limit else 'NOT met'} "
                         f"({', '.join(f'{n} {r:.2f}' for n, r in got)})")
    if "separation" in rows:
        s = rows["separation"]
        lines.append(f"target song ({s['song_seconds']:.0f} s, 44.1 kHz stereo) < {s['target_seconds']:.0f} s: "
                     f"{'met' if s['meets_target'] else 'NOT met'} (npvae {s['npvae_ms'] / 1e3:.2f} s end to end, "
                     f"{s['npvae']['network_ms'] / 1e3:.2f} s of it in the network)")
    big = [c for c in report["cases"] if "gemm_fraction" in c and c.get("gflop_per_step", 0) >= 1.0]
    if big:
        lines.append("GEMM rate reached (cases of >= 1 GFLOP a step; target >= 60%): "
                     + ", ".join(f"{c['case']} {100 * c['gemm_fraction']:.0f}%" for c in big))
    return lines


def format_table(report: dict) -> str:
    """The report as a plain-text table, with the targets met or not below it."""
    backends = report["backends"]
    torch_ok = report["torch"] is not None
    primary = "numba" if "numba" in backends else backends[0]
    head = ["case", "GFLOP"] + [f"npvae-{b} ms (min-max)" for b in backends]
    if torch_ok:
        head += ["torch ms (min-max)", "ratio"]
    head += [f"GFLOP/s {b}" for b in backends] + (["GFLOP/s torch"] if torch_ok else [])
    head += [f"% GEMM {primary}"] + (["% GEMM torch"] if torch_ok else [])
    rows = []
    for c in report["cases"]:
        sep = c["case"] == "separation"
        row = [c["case"], "-" if sep else f"{c['gflop_per_step']:.2f}"]
        for k in backends + (["torch"] if torch_ok else []):
            s = (c["npvae"] if k == primary else c.get(k) if k == "torch" else None) if sep else c[k]
            row.append("-" if s is None else f"{s['median_ms']:.1f} ({s['min_ms']:.1f}-{s['max_ms']:.1f})")
        if torch_ok:
            row.append(f"{c['ratio']:.2f}")
        if sep:
            row += ["-"] * (len(backends) + torch_ok + 1 + torch_ok)
        else:
            row += [f"{c[k]['gflops']:.0f}" for k in backends + (["torch"] if torch_ok else [])]
            row += [f"{100 * c['gemm_fraction']:.0f}"] + ([f"{100 * c['torch_gemm_fraction']:.0f}"] if torch_ok else [])
        rows.append(row)
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths))  # noqa: E731
    lines = [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
    lines.append("")
    lines.append(f"machine: {report['machine']}; threads: {report['threads']} (BLAS, Numba"
                 + (", torch.set_num_threads" if torch_ok else "") + ")"
                 + (f"; load average at start {report['load_average'][0]:.1f}" if report.get("load_average") else ""))
    if "blas" in report:
        lines.append(blas_line(report["blas"]))
    lines.append(f"BLAS GEMM 1024^3 float32: {report['gemm_gflops']:.0f} GFLOP/s before, "
                 f"{report['gemm_gflops_after']:.0f} after (% GEMM: of the higher); peak memory {report['peak_rss_mb']:.0f} MiB")
    if torch_ok:
        lines.append(f"ratio = npvae ({primary}) median / torch {report['torch']} median, same weights, batch "
                     "and noise, interleaved steps; separation: wall time of npvae separate with the "
                     "network in npvae / in torch")
    else:
        lines.append(f"no PyTorch comparison: {report['torch_missing_reason']}")
    return "\n".join(lines + target_lines(report))
