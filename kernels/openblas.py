"""OpenBLAS's thread timeout, applied after the library loaded.

After each threaded GEMM, OpenBLAS's idle workers spin for 2^28 cycles (about 0.1 s),
holding a core that the Numba kernels and the convolution threads need next. The
``OPENBLAS_THREAD_TIMEOUT`` variable shortens that, but OpenBLAS reads it once, when
the library is loaded (at ``import numpy``, usually before any npvae code runs), so
setting it from Python works only before NumPy's import. :func:`tune` applies it
afterwards, through functions the library exports, whatever the import order was:
the timeout becomes 2^4 cycles (OpenBLAS's minimum) and the workers are restarted
with it (as OpenBLAS does itself after a fork). Conv VAE step of
``npvae bench``, run with ``OPENBLAS_THREAD_TIMEOUT=28`` and ``=4``: 28.8 and
20.9 ms.

A user's own ``OPENBLAS_THREAD_TIMEOUT`` is left as it is, and so is the core type
(``OPENBLAS_CORETYPE``): the kernels OpenBLAS runs, hence the rounding of every
GEMM, stay what the environment chose. ``NPVAE_TUNE_OPENBLAS=0`` turns this off.
Other BLAS libraries (MKL, Accelerate) are not touched.
"""
from __future__ import annotations

import ctypes
import os

TIMEOUT = 4   # log2 of the cycles an idle worker spins; OpenBLAS's minimum

_done: list[dict] | None = None


def _libraries():
    """ctypes handles of the OpenBLAS libraries loaded in this process."""
    import numpy  # noqa: F401  (loads NumPy's OpenBLAS if nothing has yet)
    from threadpoolctl import ThreadpoolController
    libs = []
    for ctl in ThreadpoolController().select(internal_api="openblas").lib_controllers:
        try:
            libs.append((ctl.filepath, ctypes.CDLL(ctl.filepath, mode=getattr(os, "RTLD_NOLOAD", 0))))
        except OSError:
            continue
    return libs


def _has(lib, *symbols) -> bool:
    for s in symbols:
        try:
            getattr(lib, s)
        except AttributeError:
            return False
    return True


def thread_timeout(lib) -> int | None:
    """The thread timeout (log2 cycles) ``lib`` read from the environment, if it says."""
    if not _has(lib, "openblas_thread_timeout"):
        return None
    return int(lib.openblas_thread_timeout())


def _tune_timeout(lib) -> str | None:
    if "OPENBLAS_THREAD_TIMEOUT" in os.environ or not _has(
            lib, "openblas_read_env", "openblas_thread_timeout", "blas_thread_shutdown_"):
        return None
    before = thread_timeout(lib)
    if before == TIMEOUT:
        return None
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(TIMEOUT)
    try:
        lib.openblas_read_env()
    finally:
        del os.environ["OPENBLAS_THREAD_TIMEOUT"]
    # The workers keep the timeout they started with: stop them; the next threaded
    # call starts them again with the new one (as after a fork).
    lib.blas_thread_shutdown_()
    return f"{before} -> {thread_timeout(lib)}"


def tune(force: bool = False) -> list[dict]:
    """Set the thread timeout of every loaded OpenBLAS (once per process unless ``force``).

    Returns one dict per library: its path, its timeout now, and what changed.
    Not thread-safe: call it before other threads run BLAS (``kernels`` calls it
    at import).
    """
    global _done
    if _done is not None and not force:
        return _done
    report = []
    if os.environ.get("NPVAE_TUNE_OPENBLAS", "1").strip() not in ("0", "no", "false", "off"):
        for path, lib in _libraries():
            change = _tune_timeout(lib)
            report.append({"library": path, "thread_timeout": thread_timeout(lib),
                           "changed": {"thread_timeout": change} if change else {}})
    _done = report
    return report
