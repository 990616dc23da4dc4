"""Run per-sample work on a few threads, one BLAS thread each.

The convolution layers split a batch into chunks of samples that the threads take
in turn; a thread does all of a chunk's work (im2col, GEMMs, col2im) on its own
core while the chunk's columns are still in the CPU's cache. Inside, BLAS is
held to one thread: otherwise OpenBLAS's own workers (which spin for a while after
each GEMM) and ours would fight over the cores. With this, the spectrogram net's
step in ``npvae bench`` went from about 420 ms to about 300 ms on 2 cores.

The thread count is ``NPVAE_NUM_THREADS``, else ``NUMBA_NUM_THREADS``, else the
number of CPUs this process may use; ``with at_most(1):`` lowers it for the calling
thread (a layer too small to share, see ``npvae.layers.conv_algos``).
"""
from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_blas = None
_local = threading.local()       # .limit: a cap that at_most() set for this thread


@contextmanager
def at_most(limit: int) -> Iterator[None]:
    """Within the block, :func:`worker_count` on this thread is at most ``limit``."""
    if limit < 1:
        raise ValueError(f"at_most() needs a limit of at least 1, got {limit}")
    before = getattr(_local, "limit", None)
    _local.limit = limit if before is None else min(before, limit)
    try:
        yield
    finally:
        _local.limit = before


def worker_count() -> int:
    """Threads used for per-sample work (at least 1)."""
    limit = getattr(_local, "limit", None)
    count = _configured_count()
    return count if limit is None else min(count, limit)


def _configured_count() -> int:
    for var in ("NPVAE_NUM_THREADS", "NUMBA_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value:
            try:
                return max(1, int(value))
            except ValueError:
                raise ValueError(f"{var}={value!r} is not a whole number of threads; set it to e.g. 2") from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = ThreadPoolExecutor(workers, thread_name_prefix="npvae"), workers
        return _pool


def _single_threaded_blas():
    """A context manager that holds BLAS to one thread (threadpoolctl)."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController
        _blas = ThreadpoolController().select(user_api="blas")
    return _blas.limit(limits=1)


def for_each_chunk(n: int, step: int, work: Callable[[slice, int], None]) -> None:
    """Call ``work(part, worker)`` for ``part`` = slice(0, step), slice(step, 2*step), ...
    covering range(n); ``worker`` in [0, workers) tells which scratch buffers to use.

    Each worker takes the next chunk when it has finished one, so a core slowed by
    something else does not hold the others up. Which worker runs a chunk must not
    change its result (``worker`` only picks scratch space), so results do not depend
    on timing. Exceptions in ``work`` are re-raised here.
    """
    parts = [slice(s, min(s + step, n)) for s in range(0, n, step)]
    workers = min(worker_count(), len(parts))
    next_part = itertools.count()            # next() on a count is atomic under the GIL

    def run(worker: int) -> None:
        for i in next_part:
            if i >= len(parts):
                return
            work(parts[i], worker)

    with _single_threaded_blas():
        # The calling thread is worker 0: one thread fewer to wake.
        pool = _executor(workers - 1) if workers > 1 else None
        futures = [pool.submit(run, w) for w in range(1, workers)]
        try:
            run(0)
        finally:
            for f in futures:
                f.result()
