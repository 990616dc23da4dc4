"""Data-parallel training on MPI (mpi4py), and the single-process stand-in.

:func:`world` gives this process's communicator:

* :class:`SingleProcess` when the process was not started by an MPI launcher
  (``mpirun``, ``srun``), when the launcher started one process, or with
  ``NPVAE_MPI=0``. Every collective returns its input: training is exactly what it
  is without this module, and mpi4py is never imported.
* :class:`MPICommunicator` under ``mpirun -n P`` (needs ``pip install ".[mpi]"``).

One data-parallel step (what :class:`npvae.engine.loop.Trainer` does with it):

1. Every rank holds the same RNG state, so every rank draws the same global batch;
   ``comm.shard(n)`` names the contiguous part of its ``n`` items that this rank
   computes (rank 0 first, sizes differ by at most one). The union over ranks is the
   single-process batch. Latent noise comes from ``comm.noise(rng)``: a draw for the
   whole batch of which each rank keeps its rows, so it too is the single-process noise.
2. Each rank computes the mean loss over its shard and the gradients.
3. :meth:`MPICommunicator.allreduce_step` sums ``n_local * gradients`` in one flat
   contiguous buffer with ``Allreduce`` (and ``n_local * loss terms`` and ``n_local``
   in a small float64 one) and divides by the summed count: the gradient of the global
   batch's mean loss, the same on every rank, so Adam steps identically everywhere.
4. Rank 0 alone validates, writes checkpoints, figures and HDF5 files and shows the
   progress bar; at the end of every epoch it broadcasts its state (parameters,
   optimiser moments, RNG state, history), which is the checkpoint's state.

A rank that dies ends the run: mpirun sends the others SIGTERM, which here raises
:class:`~npvae.errors.DistributedError` (the trainer adds where the last checkpoint
is); every wait on another rank polls a non-blocking request and gives up after
``NPVAE_MPI_TIMEOUT`` seconds (default 600) when a rank hangs without dying. Errors
then end the whole job with ``MPI_Abort`` (:func:`fail`), never a hang. Checkpoints
are written atomically, so the last one stays intact.
"""
from __future__ import annotations

import os
import pickle
import signal
import sys
import time

import numpy as np

from .errors import DistributedError

DEFAULT_TIMEOUT = 600.0
# Variables that MPI launchers set in each process they start.
_LAUNCHER_SIZE = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS")
_LAUNCHER_RANK = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
_THREAD_VARS = ("NPVAE_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _env_int(names) -> int | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None


def launched_by_mpi() -> bool:
    """True when an MPI launcher started this process (and ``NPVAE_MPI`` is not 0)."""
    if os.environ.get("NPVAE_MPI", "").strip() == "0":
        return False
    return _env_int(_LAUNCHER_SIZE) is not None or _env_int(_LAUNCHER_RANK) is not None


def timeout_seconds() -> float:
    """How long a rank waits for the others before it gives up (``NPVAE_MPI_TIMEOUT``)."""
    value = os.environ.get("NPVAE_MPI_TIMEOUT", "").strip()
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"NPVAE_MPI_TIMEOUT={value!r} is not a number of seconds; set it to e.g. 600") from None
    if seconds <= 0:
        raise ValueError(f"NPVAE_MPI_TIMEOUT must be positive, got {seconds}")
    return seconds


class SingleProcess:
    """The communicator of a process that trains alone: rank 0 of 1; collectives are no-ops."""

    rank, size, threads = 0, 1, None
    comm_seconds = 0.0

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    def check_batch_size(self, batch_size: int) -> None:
        """Refuse a global batch that cannot give every rank at least one sample."""
        if batch_size < self.size:
            raise ValueError(f"--batch-size {batch_size} is smaller than the {self.size} MPI ranks that share "
                             "each batch; use a batch size of at least the number of ranks")

    def shard(self, n: int) -> slice:
        """This rank's part of a global batch of ``n`` items (here: all of it)."""
        return slice(0, n)

    @property
    def local_count(self) -> int | None:
        return None

    def noise(self, rng: np.random.Generator) -> np.random.Generator:
        """The generator to draw latent noise from (here: ``rng`` itself)."""
        return rng

    def allreduce_step(self, params, terms: dict | None) -> dict:
        """Gradients and loss terms of the global batch (here: as they are)."""
        return terms

    def allreduce_sum(self, a: np.ndarray) -> np.ndarray:
        """The sum of ``a`` over the ranks (here: ``a``)."""
        return a

    def bcast_object(self, obj, timeout: float | None = -1.0):
        return obj

    def bcast_arrays(self, arrays, timeout: float | None = -1.0) -> None:
        pass

    def gather_object(self, obj, timeout: float | None = -1.0) -> list:
        return [obj]

    def barrier(self, timeout: float | None = -1.0) -> None:
        pass

    def abort(self, code: int = 1):
        sys.exit(code)

    def describe(self) -> str:
        return "1 process"


class _ShardNoise(np.random.Generator):
    """A Generator sharing ``rng``'s bit generator whose ``standard_normal`` (latent noise)
    and ``random`` (dropout masks) widen a draw shaped like this rank's shard (first axis
    = local count) to the global batch and return this rank's rows: every rank advances
    the RNG as the single process would, and the union of the ranks' draws is the
    single-process draw."""

    def __init__(self, rng: np.random.Generator, comm: "MPICommunicator"):
        super().__init__(rng.bit_generator)
        self._comm = comm

    def _shard_rows(self, draw, size, dtype, out):
        part = self._comm._shard
        if (part is not None and out is None and size is not None and np.ndim(size) == 1 and len(size)
                and int(size[0]) == part[1] - part[0] and part[2] != part[1] - part[0]):
            start, stop, n = part
            full = draw((n, *tuple(size)[1:]), dtype=dtype)
            return np.ascontiguousarray(full[start:stop])
        return draw(size, dtype=dtype, out=out)

    def standard_normal(self, size=None, dtype=np.float64, out=None):
        return self._shard_rows(super().standard_normal, size, dtype, out)

    def random(self, size=None, dtype=np.float64, out=None):
        return self._shard_rows(super().random, size, dtype, out)


class MPICommunicator(SingleProcess):
    """MPI_COMM_WORLD through mpi4py: see the module docstring for the protocol."""

    def __init__(self, comm=None):
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = comm or MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout = timeout_seconds()
        self._shard: tuple[int, int, int] | None = None
        self._buffer: np.ndarray | None = None
        self._term_keys: list[str] | None = None
        self.comm_seconds = 0.0     # time in allreduce_step (copies and waiting), summed
        self.threads = self._share_cores()
        self._install_handlers()

    # -- set-up ----------------------------------------------------------------------
    def _share_cores(self) -> int:
        """Threads per rank: the CPUs this rank may use, split between the ranks of its
        node. Applied to BLAS, Numba and the conv workers unless a thread variable is set."""
        local = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
        local_size = local.Get_size()
        local.Free()
        try:
            mine = len(os.sched_getaffinity(0))
        except AttributeError:
            mine = os.cpu_count() or 1
        threads = max(1, min(mine, (os.cpu_count() or 1) // local_size))
        if any(os.environ.get(v) for v in _THREAD_VARS):
            return threads
        os.environ["NPVAE_NUM_THREADS"] = str(threads)
        from threadpoolctl import threadpool_limits
        self._limits = threadpool_limits(limits=threads)
        if "numba" in sys.modules:
            import numba
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        return threads

    def _install_handlers(self) -> None:
        # mpirun sends SIGTERM to the other ranks when one dies: turn it into an error
        # the trainer can explain (our waits poll, so the handler gets to run).
        def on_term(signum, frame):
            raise DistributedError("the MPI job was told to stop (SIGTERM): another rank died, or the job was "
                                   "cancelled")
        try:
            signal.signal(signal.SIGTERM, on_term)
        except ValueError:      # not the main thread
            pass
        previous = sys.excepthook

        def on_uncaught(kind, value, tb):
            previous(kind, value, tb)
            self.abort(1)        # a normal exit would leave the other ranks waiting
        sys.excepthook = on_uncaught

    def describe(self) -> str:
        return f"MPI rank {self.rank} of {self.size} ({self.threads} thread(s) per rank)"

    # -- waiting with a deadline ----------------------------------------------------
    def _wait(self, requests, what: str, timeout: float | None = -1.0) -> None:
        """Poll ``requests`` until all complete; DistributedError after ``timeout`` s
        (-1: NPVAE_MPI_TIMEOUT; None: no limit)."""
        limit = self.timeout if timeout == -1.0 else timeout
        start = time.monotonic()
        polls = 0
        while not self.MPI.Request.Testall(requests):
            polls += 1
            if polls > 200:      # spin briefly (a step's partner is usually close), then sleep-poll
                time.sleep(0.0005 if limit is not None else 0.01)
                if limit is not None and time.monotonic() - start > limit:
                    raise DistributedError(
                        f"no answer from the other ranks for {limit:.0f} s "
                        f"while {what}: a rank hangs or its node is unreachable (NPVAE_MPI_TIMEOUT sets the limit)")

    # -- batches ---------------------------------------------------------------------
    def shard(self, n: int) -> slice:
        n = int(n)
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        stop = start + base + (self.rank < extra)
        self._shard = (start, stop, n)
        return slice(start, stop)

    @property
    def local_count(self) -> int | None:
        return None if self._shard is None else self._shard[1] - self._shard[0]

    def noise(self, rng: np.random.Generator) -> np.random.Generator:
        return _ShardNoise(rng, self)

    # -- the step --------------------------------------------------------------------
    def allreduce_step(self, params, terms: dict | None) -> dict:
        """Replace every gradient by the global batch's and return the global mean terms.

        params : ``(path, param, grad)`` triples in the same order on every rank.
        terms : this shard's mean loss terms, or None when the shard is empty (the
        gradients are then taken as zero).
        """
        if self._shard is None:
            raise DistributedError("under MPI every batch must be split with comm.shard(n) before the step; "
                                   "the pipeline's batches did not call it")
        t0 = time.perf_counter()
        n = self._shard[1] - self._shard[0]
        self._shard = None
        grads = [g for _, _, g in params]
        size = sum(g.size for g in grads)
        if self._buffer is None or self._buffer.size != size:
            self._buffer = np.empty(size, np.result_type(*grads))
        if terms is not None:
            self._term_keys = list(terms)
        elif self._term_keys is None:
            raise DistributedError("this rank's first batch was empty; use a batch size of at least the number "
                                   "of ranks")
        keys = self._term_keys
        buf, off = self._buffer, 0
        for g in grads:
            view = buf[off:off + g.size].reshape(g.shape)
            if n:
                np.multiply(g, n, out=view, casting="unsafe")
            else:
                view[...] = 0
            off += g.size
        scalars = np.array([n * float(terms[k]) if n else 0.0 for k in keys] + [n], np.float64)
        MPI = self.MPI
        reqs = [self.comm.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM),
                self.comm.Iallreduce(MPI.IN_PLACE, scalars, op=MPI.SUM)]
        self._wait(reqs, "summing gradients")
        total = scalars[-1]
        scale = buf.dtype.type(1.0 / total)
        off = 0
        for g in grads:
            np.multiply(buf[off:off + g.size].reshape(g.shape), scale, out=g)
            off += g.size
        self.comm_seconds += time.perf_counter() - t0
        return {k: float(v / total) for k, v in zip(keys, scalars[:-1])}

    def allreduce_sum(self, a: np.ndarray) -> np.ndarray:
        """The sum of the float64 array ``a`` over the ranks, in a new array (BatchNorm's
        statistics, :func:`npvae.layers.batch_sums`); counted in ``comm_seconds``."""
        t0 = time.perf_counter()
        out = np.array(a, np.float64)
        self._wait([self.comm.Iallreduce(self.MPI.IN_PLACE, out, op=self.MPI.SUM)], "summing batch statistics")
        self.comm_seconds += time.perf_counter() - t0
        return out

    # -- state from rank 0 ----------------------------------------------------------
    def bcast_object(self, obj, timeout: float | None = -1.0):
        """Rank 0's ``obj`` on every rank (pickled; for small things and one-off state)."""
        MPI = self.MPI
        data = np.frombuffer(pickle.dumps(obj, protocol=5), np.uint8) if self.is_root else None
        length = np.array([0 if data is None else data.size], np.int64)
        self._wait([self.comm.Ibcast(length, root=0)], "receiving state from rank 0", timeout)
        if not self.is_root:
            data = np.empty(int(length[0]), np.uint8)
        else:
            data = data.copy()
        self._wait([self.comm.Ibcast([data, MPI.BYTE], root=0)], "receiving state from rank 0", timeout)
        return obj if self.is_root else pickle.loads(data.tobytes())

    def bcast_arrays(self, arrays, timeout: float | None = -1.0) -> None:
        """Overwrite ``arrays`` (same shapes and order on every rank) with rank 0's, in
        one flat buffer per dtype."""
        by_dtype: dict = {}
        for a in arrays:
            by_dtype.setdefault(a.dtype, []).append(a)
        for dtype, group in by_dtype.items():
            flat = np.concatenate([a.ravel() for a in group]) if self.is_root else \
                np.empty(sum(a.size for a in group), dtype)
            self._wait([self.comm.Ibcast(flat, root=0)], "receiving parameters from rank 0", timeout)
            if not self.is_root:
                off = 0
                for a in group:
                    a[...] = flat[off:off + a.size].reshape(a.shape)
                    off += a.size

    def gather_object(self, obj, timeout: float | None = -1.0) -> list | None:
        """Every rank's ``obj``, in rank order, on rank 0 (None elsewhere)."""
        MPI = self.MPI
        data = np.frombuffer(pickle.dumps(obj, protocol=5), np.uint8).copy()
        sizes = np.zeros(self.size, np.int64)
        self._wait([self.comm.Iallgather(np.array([data.size], np.int64), sizes)], "gathering results", timeout)
        out = np.empty(int(sizes.sum()), np.uint8) if self.is_root else None
        recv = [out, (sizes, np.concatenate([[0], np.cumsum(sizes)[:-1]])), MPI.BYTE] if self.is_root else None
        self._wait([self.comm.Igatherv([data, MPI.BYTE], recv, root=0)], "gathering results", timeout)
        if not self.is_root:
            return None
        offs = np.concatenate([[0], np.cumsum(sizes)])
        return [pickle.loads(out[offs[i]:offs[i + 1]].tobytes()) for i in range(self.size)]

    def barrier(self, timeout: float | None = -1.0) -> None:
        self._wait([self.comm.Ibarrier()], "waiting for the other ranks", timeout)

    def abort(self, code: int = 1):
        sys.stderr.flush()
        sys.stdout.flush()
        self.comm.Abort(code)


_WORLD: SingleProcess | None = None


def world() -> SingleProcess:
    """This process's communicator (created once)."""
    global _WORLD
    if _WORLD is None:
        _WORLD = _make_world()
    return _WORLD


def _make_world() -> SingleProcess:
    if not launched_by_mpi():
        return SingleProcess()
    size = _env_int(_LAUNCHER_SIZE) or _env_int(("SLURM_STEP_NUM_TASKS",))   # srun --mpi=pmix: PMIX_RANK only
    if size == 1:
        return SingleProcess()
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise DistributedError(
            f"this process was started by an MPI launcher ({size or 'several'} processes) but mpi4py is not "
            "installed, so every process would train alone and write the same files: install it with "
            "pip install \".[mpi]\" (and an MPI runtime, e.g. apt-get install openmpi-bin), or run without "
            "mpirun (NPVAE_MPI=0 makes npvae ignore the launcher)") from None
    comm = MPICommunicator()
    return comm if comm.size > 1 else SingleProcess()


def fail(message: str, code: int = 2) -> int:
    """Print ``message`` to stderr and end: under MPI the whole job (``MPI_Abort``, so no
    rank is left waiting); alone, return ``code`` for the script to exit with."""
    comm = _WORLD
    if comm is not None and comm.parallel:
        print(f"[rank {comm.rank}/{comm.size}] {message}", file=sys.stderr, flush=True)
        comm.abort(code)
    print(message, file=sys.stderr, flush=True)
    return code


__all__ = ["world", "fail", "launched_by_mpi", "timeout_seconds", "SingleProcess", "MPICommunicator"]
